"""The comparison page in a real browser (Debian's chromium driven by Playwright).

Runs against a real local stack: three small model services as processes, named as
in the real one (visioncompare/testing/playground_model.py: "maskrcnn" with a fixed vocabulary,
"sam-clip-composed" and "samclip" open-vocabulary), and the gateway with its HTTP
server. Checks each part of the page with DOM assertions, runs axe-core on it, and
saves screenshots to artifacts/web-page*.png.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from visioncompare.testing.gateway_support import GatewayThread
from visioncompare.testing.images import encode, scene
from visioncompare.testing.processes import ROOT, ServiceProcess, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODELS = ("maskrcnn", "sam-clip-composed", "samclip")
OPEN_MODELS = MODELS[1:]
# name -> (vocabulary, pre-processing/inference/post-processing sleeps in ms, score of the "dark" instance)
SERVICES = {
    "maskrcnn": ("fixed", "1,8,1", 0.4),
    "sam-clip-composed": ("open", "4,60,4", 0.55),
    "samclip": ("open", "2,25,2", 0.7),
}
WIDTH, HEIGHT, BRIGHT = 160, 120, (40, 30, 110, 90)  # the uploaded scene: one bright rectangle
PANEL_BOX = 400  # the page fits every image into a 400 x 400 px box

if not Path(CHROMIUM).exists():
    pytest.fail("chromium is not installed: run `make setup` (it installs Debian's chromium)", pytrace=False)


def playground(name: str) -> ServiceProcess:
    vocabulary, stage_ms, dark_score = SERVICES[name]
    port = free_port()
    args = [
        "-m",
        "visioncompare.testing.playground_service",
        "--port",
        str(port),
        "--name",
        name,
        "--vocabulary",
        vocabulary,
        "--stage-ms",
        stage_ms,
        "--dark-score",
        str(dark_score),
    ]
    return ServiceProcess(name, args, port)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayThread, dict[str, ServiceProcess]]]:
    procs = {name: playground(name) for name in MODELS}
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


def base_url(stack: tuple[GatewayThread, dict[str, ServiceProcess]]) -> str:
    gw, _ = stack
    assert gw.server is not None
    return f"http://127.0.0.1:{gw.server.http_port}"


@pytest.fixture
def page(browser: Browser, stack: tuple[GatewayThread, dict[str, ServiceProcess]], tmp_path: Path) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(base_url(stack) + "/")
    expect(page.locator("#status")).to_contain_text("(shapes-scene.png)")  # a new visitor starts on the sample
    image = tmp_path / "scene.png"
    image.write_bytes(encode(scene(WIDTH, HEIGHT, BRIGHT)))
    page.set_input_files("#file", str(image))
    expect(page.locator("#status")).to_contain_text("image 160×120")
    yield page
    page.close()


def compare(page: Page, task: str = "TASK_INSTANCE_SEGMENTATION", models: tuple[str, ...] = MODELS) -> None:
    page.select_option("#task", task)
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("done")
    expect(page.locator(".panel")).to_have_count(len(models))


def panel(page: Page, model: str):  # noqa: ANN201 - a Locator
    return page.locator(f'.panel[data-model="{model}"]')


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# How many pixels of a panel's canvas differ from the bare image drawn the same way.
CHANGED_PIXELS = """canvas => {
  const ref = document.createElement("canvas");
  ref.width = canvas.width; ref.height = canvas.height;
  const ctx = ref.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(state.request.image, 0, 0, ref.width, ref.height);
  const a = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const b = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let changed = 0;
  for (let i = 0; i < a.length; i += 4) if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) changed++;
  return changed;
}"""

# The RGBA of a canvas at image pixel (x, y).
PIXEL = """(canvas, [x, y]) => {
  const s = canvas.width / state.request.image.width;
  return Array.from(canvas.getContext("2d").getImageData(Math.floor(x * s), Math.floor(y * s), 1, 1).data);
}"""


def pixel(page: Page, model: str, x: float, y: float) -> list[int]:
    return panel(page, model).locator("canvas").evaluate(PIXEL, [x, y])


def serious_violations(page: Page) -> list[dict]:
    results = Axe().run(page)
    violations = results.response["violations"]
    for v in violations:  # minor and moderate ones are reported, not failed
        print(f"axe: {v['id']} ({v['impact']}): {len(v['nodes'])} node(s): {v['help']}")
    return [v for v in violations if v["impact"] in ("serious", "critical")]


# --- the comparison ---------------------------------------------------------------------------


def test_three_models_compare_side_by_side_in_one_row(page: Page) -> None:
    options = page.locator("#task option")
    expect(options).to_have_count(6)
    assert "(comparable)" in page.locator("#task option[value=TASK_INSTANCE_SEGMENTATION]").inner_text()
    compare(page)
    boxes = []
    for name in MODELS:
        p = panel(page, name)
        expect(p.locator("h3")).to_have_text(name)
        expect(p.locator(".meta").first).to_contain_text(" ms · OK")
        assert p.locator("canvas").evaluate(CHANGED_PIXELS) > 2000  # masks, boxes and labels drawn
        boxes.append(p.bounding_box())
    expect(panel(page, "maskrcnn").locator(".warn")).to_contain_text("playground weights")
    # One consistent size, all three in one row on a 1400-px screen.
    assert len({round(b["width"]) for b in boxes}) == 1 and boxes[0]["width"] <= 440
    assert len({round(b["y"]) for b in boxes}) == 1
    assert all(b["x"] + b["width"] <= 1400 for b in boxes)
    canvas = panel(page, "samclip").locator("canvas").bounding_box()
    assert (round(canvas["width"]), round(canvas["height"])) == (PANEL_BOX, PANEL_BOX * HEIGHT // WIDTH)
    table = page.locator("#agreement-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table).to_contain_text("maskrcnn vs sam-clip-composed")
    expect(table.locator("tbody tr").first).to_contain_text("1.000")
    rows = page.locator("#capabilities th")
    expect(rows).to_contain_text(
        [
            "Model",
            "Organization",
            "Category",
            "Modality",
            "Release Date",
            "Parameters",
            "License",
            "Tasks",
            "Features",
            "State",
            "Device",
            "Weights",
        ]
    )
    expect(page.locator("#capabilities")).to_contain_text("Playground (samclip)")
    page.locator("#highlight-unmatched").check()
    expect(page.locator(".panel canvas")).to_have_count(3)
    screenshot(page, "web-page.png")


def test_a_task_one_model_serves_gets_a_panel_of_the_same_size(page: Page) -> None:
    compare(page)
    width = panel(page, "samclip").bounding_box()["width"]
    compare(page, "TASK_KEYPOINT_DETECTION", ("maskrcnn",))
    only = panel(page, "maskrcnn")
    assert round(only.bounding_box()["width"]) == round(width)  # not stretched to the page
    assert only.locator("canvas").evaluate("c => c.getBoundingClientRect().width") == PANEL_BOX
    corner = pixel(page, "maskrcnn", BRIGHT[0], BRIGHT[1])  # a keypoint drawn on the top-left corner
    assert corner != [230, 230, 230, 255]
    expect(page.locator("#agreement")).to_contain_text("fewer than two models")


def test_a_click_on_a_panel_opens_the_full_resolution_view(page: Page) -> None:
    compare(page)
    panel(page, "sam-clip-composed").locator("button.view").click()
    dialog = page.locator("#viewer")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("data-model", "sam-clip-composed")
    expect(page.locator("#viewer-title")).to_have_text("sam-clip-composed: full resolution")
    expect(page.locator("#viewer-note")).to_contain_text("160×120 px, enlarged")
    size = page.locator("#viewer-canvas").bounding_box()
    assert size["width"] > PANEL_BOX and size["width"] / size["height"] == pytest.approx(WIDTH / HEIGHT, rel=0.02)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    focused = page.evaluate("() => document.activeElement.closest('.panel')?.dataset.model")
    assert focused == "sam-clip-composed"  # focus back on the panel that opened it


# --- legends and classes ----------------------------------------------------------------------


def test_label_maps_have_a_legend_with_colour_and_share_of_pixels(page: Page) -> None:
    page.select_option("#task", "TASK_SEMANTIC_SEGMENTATION")
    # No fixed-vocabulary model serves the task: maskrcnn's vocabulary is offered.
    expect(page.locator("#labels")).to_have_value("bright, dark")
    expect(page.locator("#labels-source")).to_contain_text("maskrcnn's labels")
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    bright = 70 * 60 / (WIDTH * HEIGHT)
    dark = (80 * 60 - 40 * 30) / (WIDTH * HEIGHT)  # the top-left quadrant less the bright part
    for name in OPEN_MODELS:
        legend = panel(page, name).locator(".legend")
        expect(legend.locator("li")).to_have_count(3)
        expect(legend.locator("li[data-class=bright]")).to_contain_text(f"{100 * bright:.1f}%")
        expect(legend.locator("li[data-class=dark]")).to_contain_text(f"{100 * dark:.1f}%")
        expect(legend.locator("li[data-class=background]")).to_contain_text(f"{100 * (1 - bright - dark):.1f}%")
        swatch = legend.locator("li[data-class=bright] .swatch").evaluate("s => getComputedStyle(s).backgroundColor")
        assert swatch.startswith("rgb") and swatch != "rgba(0, 0, 0, 0)"
    screenshot(page, "web-page-semantic.png")
    # A class no pixel has: 0.0% in the legend, no toggle; each class keeps its colour across tasks.
    colours = page.locator("#class-list .swatch").evaluate_all("ss => ss.map(s => s.style.background)")
    page.fill("#labels", "bright, dark, moon")
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    expect(panel(page, "samclip").locator(".legend li[data-class=moon]")).to_contain_text("0.0%")
    expect(page.locator("#class-list input")).to_have_count(2)
    compare(page)
    assert page.locator("#class-list .swatch").evaluate_all("ss => ss.map(s => s.style.background)") == colours


def test_class_toggles_hide_a_class_in_every_panel(page: Page) -> None:
    compare(page)
    toggles = page.locator("#class-list input[type=checkbox]")
    expect(toggles).to_have_count(2)
    dark_spot = (10, 10)  # inside the "dark" instance of every model, outside "bright"
    before = {name: pixel(page, name, *dark_spot) for name in MODELS}
    assert all(p[:3] != [20, 20, 20] for p in before.values()), before  # tinted
    page.locator("#class-list input[data-class=dark]").uncheck()
    for name in MODELS:
        assert pixel(page, name, *dark_spot)[:3] == [20, 20, 20]  # the bare image again
        expect(panel(page, name).locator(".shown")).to_have_text("1 of 2 instances shown")
        assert panel(page, name).locator("canvas").get_attribute("data-shown") == "1"
    page.locator("#class-list input[data-class=dark]").check()
    expect(panel(page, "maskrcnn").locator(".shown")).to_have_text("2 of 2 instances shown")
    # On label maps too: the legend marks the class hidden.
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    page.locator("#class-list input[data-class=bright]").uncheck()
    for name in OPEN_MODELS:
        expect(panel(page, name).locator(".legend li[data-class=bright]")).to_have_class("off")
        assert pixel(page, name, 75, 60)[:3] == [230, 230, 230]


def test_label_maps_have_an_opacity_control_and_an_outline_view(page: Page) -> None:
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    expect(page.locator("#labelmap-tool")).to_be_visible()
    expect(page.locator("#threshold-tool")).to_be_hidden()  # label maps have no scores
    legend = panel(page, "samclip").locator(".legend li")
    shares = legend.evaluate_all("items => items.map(i => i.dataset.share)")
    inside, edge = (75, 60), (BRIGHT[0], 60)  # the bright box's middle, and a pixel of its left edge
    r, g, b, _ = pixel(page, "samclip", *inside)
    assert (r, g, b) != (230, 230, 230) and g < 200  # tinted at the default opacity, 0.5
    page.locator("#labelmap-opacity").fill("0")
    expect(page.locator("#labelmap-opacity-value")).to_have_text("0.00")
    for name in OPEN_MODELS:
        assert panel(page, name).locator("canvas").evaluate(CHANGED_PIXELS) == 0  # the bare image
    page.locator("#labelmap-opacity").fill("1")
    r, g, b, _ = pixel(page, "samclip", *inside)
    assert r > 200 and g < 60 and b < 60, (r, g, b)  # the class's own colour, opaque
    filled = panel(page, "samclip").locator("canvas").evaluate(CHANGED_PIXELS)
    page.locator("#labelmap-outline").check()
    assert pixel(page, "samclip", *inside)[:3] == [230, 230, 230]  # outlines only: the middle is the image
    r, g, b, _ = pixel(page, "samclip", *edge)
    assert r > 200 and g < 60 and b < 60, (r, g, b)  # ... and the edge is drawn
    outlined = panel(page, "samclip").locator("canvas").evaluate(CHANGED_PIXELS)
    assert 0 < outlined < filled / 4
    assert legend.evaluate_all("items => items.map(i => i.dataset.share)") == shares  # the legend keeps its shares
    panel(page, "samclip").locator("button.view").click()  # the full-resolution view draws the same way
    viewer = page.locator("#viewer-canvas")
    assert viewer.evaluate(PIXEL, list(inside))[:3] == [230, 230, 230]
    assert viewer.evaluate(PIXEL, list(edge))[1] < 60
    page.keyboard.press("Escape")
    screenshot(page, "web-page-semantic-outlines.png")


# --- agreement for every output ------------------------------------------------------------------


def test_label_maps_agreement_is_per_class_iou_and_pixel_agreement(page: Page) -> None:
    page.fill("#labels", "bright, dark, moon")  # moon: no pixel in either map, so no class of the agreement
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    expect(page.locator("#agreement")).not_to_contain_text("fewer than two models")
    table = page.locator("#agreement-table")
    expect(table.locator("thead th")).to_have_text(["Models", "Pixel agreement", "Mean IoU", "IoU per class"])
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr td")).to_have_text(
        ["sam-clip-composed vs samclip", "100.0%", "1.000 over 2 classes", "bright 1.00 · dark 1.00"]
    )
    expect(page.locator("#agreement-caption")).to_contain_text("pixel by pixel")


def test_classification_agreement_has_the_rank_correlation(page: Page) -> None:
    page.select_option("#task", "TASK_ZERO_SHOT_CLASSIFICATION")
    page.fill("#labels", "bright, dark, moon")
    compare(page, "TASK_ZERO_SHOT_CLASSIFICATION", OPEN_MODELS)
    table = page.locator("#agreement-table")
    expect(table.locator("thead th")).to_have_text(["Models", "Top-1", "Top-k overlap", "Rank correlation"])
    expect(table.locator("tbody tr td")).to_have_text(
        ["sam-clip-composed vs samclip", "agrees", "top-3: 1.00", "1.00 over 3 shared labels"]
    )


# --- open-vocabulary labels -------------------------------------------------------------------------


def test_labels_can_go_to_the_open_vocabulary_models_only(page: Page) -> None:
    expect(page.locator("#labels-scope")).to_be_visible()  # maskrcnn (fixed) serves instance segmentation too
    page.fill("#labels", "moon, sun")
    page.locator("#labels-scope-open").check()
    compare(page)
    assert page.evaluate("() => state.request.options") == {}  # no labels for maskrcnn to filter by
    assert page.evaluate("() => state.result.labels_used") == ["moon", "sun"]  # the gateway got them
    found = {
        r["model_name"]: sorted(i["label"]["name"] for i in r["segment"]["instances"])
        for r in page.evaluate("() => state.result.results")
    }
    assert found == {"maskrcnn": ["bright", "dark"], "sam-clip-composed": ["moon", "sun"], "samclip": ["moon", "sun"]}
    expect(panel(page, "maskrcnn").locator(".meta").first).to_contain_text("ms · OK")
    expect(page.locator("#agreement")).to_contain_text(
        "Labels the gateway sent to open-vocabulary models: 2 (moon, sun)"
    )
    # Only open-vocabulary models serve semantic segmentation: no choice to make, the labels go to them.
    page.select_option("#task", "TASK_SEMANTIC_SEGMENTATION")
    expect(page.locator("#labels-scope")).to_be_hidden()


# --- the page's own assets ---------------------------------------------------------------------------


def test_the_page_loads_with_no_missing_asset_and_has_an_icon(
    browser: Browser, stack: tuple[GatewayThread, dict[str, ServiceProcess]]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(base_url(stack) + "/")
    expect(page.locator("#status")).to_contain_text("(shapes-scene.png)")
    icon = page.evaluate("""async () => {
        const link = document.querySelector("link[rel=icon]");
        const answers = await Promise.all([link.href, "/favicon.ico"].map((u) => fetch(u)));
        return answers.map((a) => [a.status, a.headers.get("content-type")]);
    }""")
    assert [status for status, _ in icon] == [200, 200] and all(t.startswith("image/svg+xml") for _, t in icon)
    assert failed == []
    page.close()


# --- score threshold ----------------------------------------------------------------------------


def test_score_threshold_filters_live_for_all_or_one_model(page: Page) -> None:
    compare(page)
    caption = page.locator("#agreement-caption")
    expect(caption).to_contain_text("each model's default score threshold (none sent)")
    page.locator("#threshold-all").fill("0.5")
    expect(page.locator("#threshold-all-value")).to_have_text("0.50")
    shown = {"maskrcnn": "1 of 2", "sam-clip-composed": "2 of 2", "samclip": "2 of 2"}  # dark scores .4, .55, .7
    for name, text in shown.items():
        expect(panel(page, name).locator(".shown")).to_have_text(f"{text} instances shown")
    panel(page, "samclip").locator("input.threshold").fill("0.8")  # one model only
    expect(panel(page, "samclip").locator(".shown")).to_have_text("1 of 2 instances shown")
    expect(panel(page, "sam-clip-composed").locator(".shown")).to_have_text("2 of 2 instances shown")
    assert page.locator("#panels canvas").evaluate_all("cs => cs.map(c => c.dataset.shown)") == ["1", "2", "1"]
    # The agreement says it counts every instance; recompute at the slider's threshold.
    expect(page.locator("#stale-note")).to_contain_text("The panels show scores ≥ 0.50")
    with page.expect_request("**/v1/compare"):
        page.click("#recompute")
    expect(caption).to_contain_text("score ≥ 0.50 (sent with the request)")
    assert page.evaluate("() => state.request.options") == {"labels": ["bright", "dark"], "score_threshold": 0.5}
    expect(page.locator("#score-threshold")).to_have_value("0.50")
    expect(panel(page, "maskrcnn").locator(".shown")).to_have_text("1 of 1 instances shown")
    expect(page.locator("#agreement-table tbody tr").first).to_contain_text("maskrcnn vs sam-clip-composed")
    expect(page.locator("#stale-note")).to_be_empty()


# --- prompts ----------------------------------------------------------------------------------


def test_prompt_canvas_matches_the_panels_and_prompts_are_drawn_on_every_panel(page: Page) -> None:
    page.select_option("#task", "TASK_PROMPTED_SEGMENTATION")
    canvas = page.locator("#prompt-canvas")
    expect(canvas).to_be_visible()
    size = canvas.bounding_box()
    assert (round(size["width"]), round(size["height"])) == (PANEL_BOX, PANEL_BOX * HEIGHT // WIDTH)
    s = size["width"] / WIDTH
    canvas.click(position={"x": 120 * s, "y": 30 * s})
    canvas.click(position={"x": 10 * s, "y": 100 * s}, modifiers=["Shift"])
    page.mouse.move(size["x"] + 20 * s, size["y"] + 60 * s)  # drag a box
    page.mouse.down()
    page.mouse.move(size["x"] + 50 * s, size["y"] + 90 * s, steps=4)
    page.mouse.up()
    expect(page.locator("#prompt-summary")).to_have_text("2 point(s), 1 box(es)")
    expect(page.locator("#prompt-list li")).to_have_count(3)
    compare(page, "TASK_PROMPTED_SEGMENTATION", OPEN_MODELS)
    assert [p["positive"] for p in page.evaluate("() => state.points")] == [True, False]
    box = page.evaluate("() => state.result.results[0].segment.instances[0].mask.bbox")
    assert box["x2"] >= 124 and box["y1"] <= 26  # the mask holds the square at (120, 30)
    for name in OPEN_MODELS:
        p = panel(page, name)
        expect(p.locator(".prompt-note")).to_have_text("Prompts drawn: 1 positive point, 1 negative point, 1 box")
        r, g, b, _ = pixel(page, name, 120 + 4 / s, 30)  # in the green disc, beside its "+"
        assert g > 130 and g > r + 60 and g > b + 40, (r, g, b)
        r, g, b, _ = pixel(page, name, 10 + 4 / s, 100)  # the red one
        assert r > 180 and r > g + 90 and r > b + 90, (r, g, b)
        edge = [pixel(page, name, 35, 60 + dy / s) for dy in (-1, 0, 1)]  # the box's top edge, yellow
        assert any(r > 200 and g > 140 and b < 80 for r, g, b, _ in edge), edge
    screenshot(page, "web-page-prompts.png")


def test_prompts_by_keyboard(page: Page) -> None:
    page.select_option("#task", "TASK_PROMPTED_SEGMENTATION")
    canvas = page.locator("#prompt-canvas")
    canvas.focus()
    page.keyboard.press("Enter")  # the cross starts at the centre
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("n")
    page.keyboard.press("b")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("b")
    expect(page.locator("#prompt-summary")).to_have_text("2 point(s), 1 box(es)")
    points = page.evaluate("() => state.points")
    assert points == [{"x": 80, "y": 60, "positive": True}, {"x": 64, "y": 60, "positive": False}]
    assert page.evaluate("() => state.boxes") == [{"x1": 64, "y1": 60, "x2": 67, "y2": 63}]
    page.keyboard.press("Backspace")
    expect(page.locator("#prompt-summary")).to_have_text("2 point(s), 0 box(es)")
    page.locator("#prompt-list button").first.click()
    expect(page.locator("#prompt-summary")).to_have_text("1 point(s), 0 box(es)")


# --- timing, downloads ----------------------------------------------------------------------------


def test_timing_breakdown_is_a_bar_per_model_on_one_scale(page: Page) -> None:
    compare(page)
    results = {r["model_name"]: r for r in page.evaluate("() => state.result.results")}
    slowest = max(r["latency_ms"] for r in results.values())
    widths: dict[str, float] = {}
    inference: dict[str, float] = {}
    for name in MODELS:
        bar = panel(page, name).locator(".timing")
        segments = bar.locator(".seg")
        expect(segments).to_have_count(5)
        timing = results[name]["segment"]["info"]["timing"]
        ms = [float(v) for v in segments.evaluate_all("ss => ss.map(s => s.dataset.ms)")]
        stages = ("queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms")
        assert ms[:4] == pytest.approx([timing.get(k, 0) for k in stages])
        assert sum(ms) == pytest.approx(results[name]["latency_ms"])
        expect(bar).to_have_attribute(
            "aria-label",
            f"{name} took {results[name]['latency_ms']:.1f} ms: "
            + ", ".join(
                f"{w} {v:.1f} ms"
                for w, v in zip(
                    ("queue", "pre-processing", "inference", "post-processing", "transport and gateway"),
                    ms,
                    strict=True,
                )
            ),
        )
        widths[name] = bar.bounding_box()["width"]
        inference[name] = segments.nth(2).bounding_box()["width"]
        assert inference[name] == pytest.approx(widths[name] * ms[2] / sum(ms), abs=1.5)
    for name in MODELS:  # one scale: the bars' lengths are the latencies' ratios
        assert widths[name] / max(widths.values()) == pytest.approx(results[name]["latency_ms"] / slowest, abs=0.02)
    assert inference["sam-clip-composed"] > 2 * inference["maskrcnn"]  # 60 ms of inference vs 8, seen side by side


def test_downloads_the_json_and_the_side_by_side_png(page: Page) -> None:
    compare(page)
    with page.expect_download() as json_download:
        page.click("#download-json")
    assert json_download.value.suggested_filename == "comparison-instance-segmentation.json"
    saved = json.loads(Path(json_download.value.path()).read_text())
    assert saved == page.evaluate("() => state.result")
    with page.expect_download() as png_download:
        page.click("#download-png")
    assert png_download.value.suggested_filename == "side_by_side-instance-segmentation.png"
    picture = Image.open(io.BytesIO(Path(png_download.value.path()).read_bytes()))
    assert picture.format == "PNG"
    # Three panels, each the 160x120 scene scaled to 480 px wide (visioncompare/gateway/render.py), 8 px apart.
    assert picture.width == 3 * 480 + 2 * 8
    expect(page.locator("#status")).to_have_text("side-by-side PNG downloaded")


# --- labels, required inputs, errors ------------------------------------------------------------


def test_labels_are_prefilled_from_the_sample_and_fixed_vocabularies(page: Page) -> None:
    expect(page.locator("#labels")).to_have_value("bright, dark")  # instance segmentation: maskrcnn's vocabulary
    expect(page.locator("#labels-source")).to_contain_text("maskrcnn's fixed vocabulary")
    page.select_option("#sample", "shapes-scene.png")
    expect(page.locator("#status")).to_contain_text("image 245×252 (shapes-scene.png)")
    page.select_option("#task", "TASK_SEMANTIC_SEGMENTATION")
    expect(page.locator("#labels")).to_have_value("circle, square, triangle, star, cross")
    expect(page.locator("#labels-source")).to_contain_text("the classes in the sample shapes-scene.png")
    page.select_option("#task", "TASK_ZERO_SHOT_CLASSIFICATION")
    expect(page.locator("#labels")).to_have_value("circle, square, triangle, star, cross")
    page.fill("#labels", "star, moon")  # typed labels stay across open-vocabulary tasks
    expect(page.locator("#labels-reset")).to_be_visible()
    page.select_option("#task", "TASK_SEMANTIC_SEGMENTATION")
    expect(page.locator("#labels")).to_have_value("star, moon")
    page.click("#labels-reset")
    expect(page.locator("#labels")).to_have_value("circle, square, triangle, star, cross")
    compare(page, "TASK_ZERO_SHOT_CLASSIFICATION", OPEN_MODELS)
    expect(panel(page, "samclip").locator(".scores li")).to_have_count(5)
    expect(panel(page, "samclip").locator(".scores li").first).to_contain_text("circle 60.0%")


def test_required_inputs_are_checked_before_anything_is_sent(page: Page) -> None:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/compare" in r.url else None)
    page.select_option("#task", "TASK_SEMANTIC_SEGMENTATION")
    page.fill("#labels", "")
    page.click("#run")
    errors = page.locator("#form-errors")
    expect(errors).to_contain_text("Semantic segmentation needs labels")
    expect(page.locator("#labels")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#labels")).to_be_focused()
    page.fill("#labels", "cat, cat")
    page.click("#run")
    expect(errors).to_contain_text("Labels repeat cat")
    page.select_option("#task", "TASK_PROMPTED_SEGMENTATION")
    expect(errors).to_be_empty()
    page.click("#run")
    expect(errors).to_contain_text("Prompted segmentation needs a prompt")
    expect(page.locator("#prompt-canvas")).to_be_focused()
    page.locator("#prompt-canvas").press("n")
    page.click("#run")
    expect(errors).to_contain_text("Add a positive point or a box")
    assert sent == []
    page.locator("#prompt-canvas").press("Enter")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("done")
    expect(errors).to_be_empty()
    assert len(sent) == 1


def test_no_image_is_said_before_sending(
    browser: Browser, stack: tuple[GatewayThread, dict[str, ServiceProcess]]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.route("**/v1/samples", lambda route: route.fulfill(json=[]))  # no sample to start on
    page.goto(base_url(stack) + "/")
    expect(page.locator("#task option")).to_have_count(6)
    page.click("#run")
    expect(page.locator("#form-errors")).to_contain_text("Choose an image")
    expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
    page.close()


def test_errors_show_the_status_name_and_message_without_the_number(page: Page) -> None:
    page.fill("#labels", "bright, moon")  # the fixed-vocabulary model refuses "moon"
    compare(page)
    error = panel(page, "maskrcnn").locator(".error-text")
    expect(error).to_have_text("INVALID_ARGUMENT: unknown label 'moon'; valid labels: bright, dark")
    expect(panel(page, "maskrcnn").locator(".meta").first).to_contain_text("ms · INVALID_ARGUMENT")
    expect(panel(page, "samclip").locator(".meta").first).to_contain_text("ms · OK")
    page.evaluate("""async () => {  // an upload the browser reads, but whose bytes the gateway refuses
        state.blob = new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0])]);
    }""")
    page.click("#run")
    status = page.locator("#status")
    expect(status).to_contain_text("error: INVALID_ARGUMENT: ")
    assert "400" not in status.inner_text()


# --- accessibility --------------------------------------------------------------------------------


def test_axe_finds_no_serious_violations_before_and_after_a_comparison(page: Page, tmp_path: Path) -> None:
    assert serious_violations(page) == []
    compare(page)
    page.locator("#threshold-all").fill("0.5")
    assert serious_violations(page) == []
    compare(page, "TASK_SEMANTIC_SEGMENTATION", OPEN_MODELS)
    assert serious_violations(page) == []
    page.select_option("#task", "TASK_PROMPTED_SEGMENTATION")
    page.locator("#prompt-canvas").press("Enter")
    compare(page, "TASK_PROMPTED_SEGMENTATION", OPEN_MODELS)
    panel(page, "samclip").locator("button.view").click()
    expect(page.locator("#viewer")).to_be_visible()
    assert serious_violations(page) == []
    page.keyboard.press("Escape")
    big = tmp_path / "big.png"  # its full-resolution view scrolls
    big.write_bytes(encode(scene(1600, 1200, (400, 300, 1200, 900))))
    page.set_input_files("#file", str(big))
    expect(page.locator("#status")).to_contain_text("image 1600×1200")
    compare(page)
    panel(page, "maskrcnn").locator("button.view").click()
    expect(page.locator("#viewer-note")).to_contain_text("1 image pixel per screen pixel")
    assert serious_violations(page) == []


def test_every_control_is_reachable_by_keyboard(page: Page) -> None:
    compare(page)
    page.locator("body").click(position={"x": 5, "y": 5})
    reached = []
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("""() => {
            const e = document.activeElement;
            return e.id || (e.dataset.class && `class:${e.dataset.class}`) || (e.closest('.panel') &&
                `${e.closest('.panel').dataset.model}:${e.className}`) || e.tagName;
        }""")
        )
    wanted = [
        "file",
        "sample",
        "task",
        "labels",
        "score-threshold",
        "run",
        "threshold-all",
        "highlight-unmatched",
        "download-json",
        "download-png",
        "class:bright",
        "class:dark",
    ]
    wanted += [f"{m}:{c}" for m in MODELS for c in ("view", "threshold")]
    missing = [w for w in wanted if w not in reached]
    assert not missing, reached
    # The page's controls all answer the keyboard: Enter on a panel opens its view.
    panel(page, "maskrcnn").locator("button.view").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-close")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_hidden()


# Last: it stops a service.
def test_a_stopped_service_shows_an_error_panel(
    page: Page, stack: tuple[GatewayThread, dict[str, ServiceProcess]]
) -> None:
    gw, procs = stack
    procs["samclip"].stop()
    gw.wait_down("samclip")
    page.click("#run")
    expect(page.locator(".panel")).to_have_count(3)
    error = page.locator('.panel[data-model="samclip"].error .error-text')
    expect(error).to_contain_text("UNAVAILABLE: model unavailable")
    north = panel(page, "maskrcnn")
    expect(north.locator(".meta").first).to_contain_text("OK")
    assert north.locator("canvas").evaluate(CHANGED_PIXELS) > 500
