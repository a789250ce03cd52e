"""The comparison page in a real browser (Debian's chromium driven by Playwright).

Runs against a real local stack: two tiny model services as processes and the
gateway with its HTTP server. Saves a screenshot to artifacts/web-page.png.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.gateway_support import GatewayThread
from tests.images import encode, scene
from tests.processes import ROOT, ServiceProcess, tiny_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

if not Path(CHROMIUM).exists():
    pytest.fail("chromium is not installed: run `make setup` (it installs Debian's chromium)", pytrace=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayThread, dict[str, ServiceProcess]]]:
    tasks = "OBJECT_DETECTION,INSTANCE_SEGMENTATION,PROMPTED_SEGMENTATION"
    procs = {"north": tiny_service("north", tasks=tasks), "south": tiny_service("south", tasks=tasks)}
    for p in procs.values():
        p.start()
    try:
        with GatewayThread({n: f"dns:///{p.address}" for n, p in procs.items()}, http_port=0) as gw:
            gw.wait_serving()
            yield gw, procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack: tuple[GatewayThread, dict[str, ServiceProcess]], tmp_path: Path) -> Iterator[Page]:
    gw, _ = stack
    assert gw.server is not None
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.goto(f"http://127.0.0.1:{gw.server.http_port}/")
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene(160, 120, (40, 30, 110, 90))))
    page.set_input_files("#file", str(image))
    expect(page.locator("#status")).to_contain_text("image 160×120")
    yield page
    page.close()


CHANGED_PIXELS = """canvas => {
  const ref = document.createElement("canvas");
  ref.width = canvas.width; ref.height = canvas.height;
  ref.getContext("2d").drawImage(state.image, 0, 0);
  const a = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const b = ref.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let changed = 0;
  for (let i = 0; i < a.length; i += 4) if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) changed++;
  return changed;
}"""


def test_compare_shows_both_panels_agreement_and_table(page: Page) -> None:
    options = page.locator("#task option")
    expect(options).to_have_count(3)
    assert "(comparable)" in page.locator("#task option[value=TASK_INSTANCE_SEGMENTATION]").inner_text()
    page.click("#run")
    panels = page.locator(".panel")
    expect(panels).to_have_count(2)
    for name in ("north", "south"):
        panel = page.locator(f".panel[data-model={name}]")
        expect(panel.locator("h3")).to_have_text(name)
        expect(panel.locator(".meta").first).to_contain_text(" ms · OK")
        expect(panel.locator(".warn")).to_contain_text("random weights")
        assert panel.locator("canvas").evaluate(CHANGED_PIXELS) > 500  # mask tint and box drawn
    table = page.locator("#agreement-table")
    expect(table).to_contain_text("north vs south")
    expect(table.locator("tr").nth(1)).to_contain_text("1.000")
    rows = page.locator("#capabilities th")
    expect(rows).to_contain_text(["Model", "Organization", "Category", "Modality", "Release Date", "Parameters",
                                  "License", "Tasks", "Features", "State", "Device", "Weights"])
    expect(page.locator("#capabilities")).to_contain_text("Bright spot (north)")
    page.locator("#highlight-unmatched").check()
    expect(page.locator(".panel canvas")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_click_adds_a_point_prompt_in_image_pixels(page: Page) -> None:
    page.select_option("#task", "TASK_PROMPTED_SEGMENTATION")
    canvas = page.locator("#prompt-canvas")
    expect(canvas).to_be_visible()
    size = canvas.bounding_box()
    assert size is not None
    # Click at image pixel (120, 30): the canvas may be displayed scaled.
    canvas.click(position={"x": 120 * size["width"] / 160, "y": 30 * size["height"] / 120})
    canvas.click(position={"x": 10 * size["width"] / 160, "y": 10 * size["height"] / 120}, modifiers=["Shift"])
    expect(page.locator("#prompt-summary")).to_have_text("2 point(s), 0 box(es)")
    page.click("#run")
    expect(page.locator(".panel")).to_have_count(2)
    points = page.evaluate("() => state.points")
    assert [p["positive"] for p in points] == [True, False]
    box = page.evaluate("() => state.result.results[0].segment.instances[0].mask.bbox")
    assert abs((box["x1"] + box["x2"]) / 2 - 120) <= 1.5 and abs((box["y1"] + box["y2"]) / 2 - 30) <= 1.5


def test_labels_are_hidden_when_no_model_is_open_vocabulary(page: Page) -> None:
    expect(page.locator("#labels-row")).to_be_hidden()


def test_a_stopped_service_shows_an_error_panel(
    page: Page, stack: tuple[GatewayThread, dict[str, ServiceProcess]]
) -> None:
    gw, procs = stack
    procs["south"].stop()
    gw.wait_down("south")
    page.click("#run")
    expect(page.locator(".panel")).to_have_count(2)
    expect(page.locator(".panel[data-model=south].error .error-text")).to_contain_text("unavailable")
    north = page.locator(".panel[data-model=north]")
    expect(north.locator(".meta").first).to_contain_text("OK")
    assert north.locator("canvas").evaluate(CHANGED_PIXELS) > 500
