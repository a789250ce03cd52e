"""`fetch` / `fetch-weights` against an HTTP server on loopback serving files the test makes."""

from __future__ import annotations

import hashlib
import http.server
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from visioncompare.runtime import weights
from visioncompare.runtime.weights import ChecksumError, WeightFile, fetch, fetch_main

GOOD = b"pretend checkpoint " * 5000  # ~95 kB, several reads
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 and counts GET requests by path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests[self.path] += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def torchvision_style(server: FileServer, body: bytes, served: bytes | None = None) -> WeightFile:
    """A file named like torchvision's, `<name>-<first 8 hex of its SHA-256>.pth`."""
    prefix = hashlib.sha256(body).hexdigest()[:8]
    filename = f"toy_{prefix}-{prefix}.pth"
    server.files[f"/models/{filename}"] = body if served is None else served
    return WeightFile(
        name=f"toy_{prefix}",
        url=server.url(f"/models/{filename}"),
        sha256=None,
        filename=filename,
        subdir="hub/checkpoints",
        sha256_prefix=prefix,
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_downloads_verifies_and_then_uses_the_cache(server: FileServer, tmp_path: Path) -> None:
    file = torchvision_style(server, GOOD)
    path = fetch(file, tmp_path)
    assert path == tmp_path / "hub" / "checkpoints" / file.filename
    assert path.read_bytes() == GOOD
    assert fetch(file, tmp_path) == path  # verified copy in the cache: no second download
    assert server.requests == {f"/models/{file.filename}": 1}


def test_full_sha256_is_checked_too(server: FileServer, tmp_path: Path) -> None:
    server.files["/full.bin"] = GOOD
    file = WeightFile("full", server.url("/full.bin"), GOOD_SHA, "full.bin")
    assert fetch(file, tmp_path).read_bytes() == GOOD
    wrong = WeightFile("full", server.url("/full.bin"), "0" * 64, "other.bin")
    with pytest.raises(ChecksumError):
        fetch(wrong, tmp_path)
    assert leftovers(tmp_path) == ["full.bin"]


def test_corrupt_download_is_rejected_and_not_cached(server: FileServer, tmp_path: Path) -> None:
    file = torchvision_style(server, GOOD, served=GOOD[:-10] + b"corrupted!")
    with pytest.raises(ChecksumError, match=f"expected {file.sha256_prefix}.*discarded"):
        fetch(file, tmp_path)
    assert leftovers(tmp_path / "hub" / "checkpoints") == []  # neither the file nor a temporary
    with pytest.raises(ChecksumError):  # nothing cached: it downloads (and rejects) again
        fetch(file, tmp_path)
    assert server.requests[f"/models/{file.filename}"] == 2


def test_a_corrupt_cached_file_is_replaced(server: FileServer, tmp_path: Path) -> None:
    file = torchvision_style(server, GOOD)
    dest = file.path(tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert fetch(file, tmp_path).read_bytes() == GOOD
    assert server.requests[f"/models/{file.filename}"] == 1


def test_fetch_weights_command(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = torchvision_style(server, GOOD)
    bad = torchvision_style(server, b"other bytes", served=b"tampered bytes")
    missing = WeightFile("missing", server.url("/missing.pth"), GOOD_SHA, "missing.pth")
    monkeypatch.setattr(weights, "registry", lambda: {"maskrcnn": [good, bad], "other": [missing]})

    assert fetch_main(["maskrcnn", "--cache-dir", str(tmp_path)]) == 1  # one file failed
    err = capsys.readouterr().err
    assert f"fetch-weights: {bad.name}:" in err and "SHA-256" in err
    assert good.path(tmp_path).read_bytes() == GOOD and not bad.path(tmp_path).exists()

    assert fetch_main(["maskrcnn", "--cache-dir", str(tmp_path), "--only", good.name]) == 0
    assert server.requests[f"/models/{good.filename}"] == 1  # cached, verified, not fetched again

    assert fetch_main(["other", "--cache-dir", str(tmp_path)]) == 1  # HTTP 404
    assert "fetch-weights: missing:" in capsys.readouterr().err
    assert not (tmp_path / "missing.pth").exists()

    with pytest.raises(SystemExit):
        fetch_main(["nosuchservice"])


def test_fetch_weights_lists_the_torchvision_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_main(["maskrcnn", "--list", "--cache-dir", str(tmp_path)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(name, Path(path).name) for name, path, _ in lines] == [
        ("maskrcnn_resnet50_fpn_coco", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
        ("maskrcnn_resnet50_fpn_v2_coco", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
        ("keypointrcnn_resnet50_fpn_coco", "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"),
    ]
    assert all(Path(path).parent == tmp_path / "hub" / "checkpoints" for _, path, _ in lines)
    assert all(url.startswith("https://download.pytorch.org/models/") for *_, url in lines)


def test_a_service_registers_its_files_through_the_entry_point_group(
    server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A third service needs no change to the runtime: its distribution names its files in the group."""
    file = torchvision_style(server, GOOD)
    site = tmp_path / "site"
    site.mkdir()
    (site / "third_service_weights.py").write_text(
        "from visioncompare.runtime.weights import WeightFile\n\n\n"
        "def weight_files():\n"
        f"    return [WeightFile({file.name!r}, {file.url!r}, None, {file.filename!r}, {file.subdir!r}, "
        f"{file.sha256_prefix!r})]\n"
    )
    dist_info = site / "third_service-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: third-service\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{weights.ENTRY_POINT_GROUP}]\nthird = third_service_weights:weight_files\n"
    )
    monkeypatch.syspath_prepend(str(site))  # an installed distribution; invalidates import caches
    request.addfinalizer(lambda: sys.modules.pop("third_service_weights", None))

    found = weights.registry()
    assert sorted(found) == ["maskrcnn", "samclip", "third"]  # the project's own services register alike
    assert found["third"] == [file]
    cache = tmp_path / "cache"
    assert fetch_main(["third", "--cache-dir", str(cache)]) == 0
    assert file.path(cache).read_bytes() == GOOD


def test_fetch_weights_says_when_no_service_is_registered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(weights, "entry_points", lambda group: [])
    with pytest.raises(SystemExit):
        fetch_main(["--list"])
    assert "no service registers weight files" in capsys.readouterr().err


# --- the one check and the one loader every service uses -------------------------------------------


def test_weights_check_verifies_the_file_against_its_digest(tmp_path: Path) -> None:
    from visioncompare.runtime.errors import ConfigurationError
    from visioncompare.runtime.weights import Weights, sha256_of

    path = tmp_path / "w.pth"
    path.write_bytes(b"weights")
    good = Weights(label="file", path=path, pretrained=True, sha256=sha256_of(path), fetch_hint="Fetch it again.")
    good.check("toy")  # passes
    Weights(label="random", path=None, pretrained=False).check("toy")  # nothing to check
    with pytest.raises(ConfigurationError, match=r"toy weights .*w\.pth: SHA-256 .* does not match .*Fetch it again\."):
        Weights(label="file", path=path, pretrained=True, sha256="0" * 64, fetch_hint="Fetch it again.").check("toy")
    with pytest.raises(ConfigurationError, match=r"toy weights not found: .*nope\.pth\. Fetch it again\."):
        Weights(label="file", path=tmp_path / "nope.pth", pretrained=True, fetch_hint="Fetch it again.").check("toy")


def test_load_state_dict_is_weights_only_and_unwraps_training_checkpoints(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from visioncompare.runtime.errors import ConfigurationError
    from visioncompare.runtime.weights import load_state_dict

    state = {"w": torch.ones(2)}
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pth")
    assert torch.equal(load_state_dict(tmp_path / "ckpt.pth", "toy")["w"], state["w"])
    torch.save(np.zeros(2), tmp_path / "pickled.pth")  # a global that weights_only refuses
    with pytest.raises(ConfigurationError, match="from pickled.pth: not a weights-only") as err:
        load_state_dict(tmp_path / "pickled.pth", "toy")
    assert str(tmp_path) not in str(err.value)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ConfigurationError, match="does not hold a state dict"):
        load_state_dict(tmp_path / "list.pth", "toy")


# --- fetch-weights --from-settings: only what the services' settings name -------------------------


def test_from_settings_fetches_only_what_the_settings_name(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needed, unneeded = torchvision_style(server, GOOD), torchvision_style(server, b"another checkpoint")
    monkeypatch.setattr(weights, "registry", lambda: {"maskrcnn": [needed, unneeded], "samclip": [unneeded]})
    monkeypatch.setattr(weights, "settings_registry", lambda: {"maskrcnn": lambda: [needed], "samclip": list})
    assert fetch_main(["--from-settings", "--cache-dir", str(tmp_path)]) == 0
    assert needed.path(tmp_path).read_bytes() == GOOD and not unneeded.path(tmp_path).exists()
    assert set(server.requests) == {f"/models/{needed.filename}"}


def test_from_settings_with_nothing_to_fetch_needs_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shapes weights ship with the code: a service on them fetches nothing, offline."""

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    for key in [k for k in os.environ if k.startswith(("MASKRCNN_", "SAMCLIP_"))]:
        monkeypatch.delenv(key)
    assert fetch_main(["--from-settings", "--cache-dir", str(tmp_path), "maskrcnn", "samclip"]) == 0
    monkeypatch.setenv("MASKRCNN_WEIGHTS", "torchvision:COCO_V1")
    assert fetch_main(["--from-settings", "--cache-dir", str(tmp_path), "maskrcnn"]) == 1  # offline: fails


def test_from_settings_refuses_invalid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASKRCNN_WEIGHTS", "nosuchscheme:x")
    assert fetch_main(["--from-settings", "--cache-dir", str(tmp_path), "maskrcnn"]) == 2
    assert "maskrcnn: its settings are invalid" in capsys.readouterr().err


def test_the_services_register_what_their_settings_need() -> None:
    assert set(weights.settings_registry()) == {"maskrcnn", "samclip"}


def test_mask_rcnn_settings_name_their_torchvision_checkpoints() -> None:
    from visioncompare.maskrcnn.fetch import files_for_settings
    from visioncompare.maskrcnn.settings import MaskRCNNSettings

    def names(**given: object) -> list[str]:
        return [f.name for f in files_for_settings(MaskRCNNSettings(**given))]  # type: ignore[arg-type]

    assert names() == [] and names(weights="shapes") == [] and names(weights="random") == []
    assert names(weights="torchvision:COCO_V1") == ["maskrcnn_resnet50_fpn_coco"]
    assert names(weights="torchvision:COCO_V1", variant="v2", keypoints_enabled=True) == [
        "maskrcnn_resnet50_fpn_v2_coco",
        "keypointrcnn_resnet50_fpn_coco",
    ]


def test_sam_clip_settings_name_their_official_files() -> None:
    from visioncompare.samclip.fetch import files_for_settings
    from visioncompare.samclip.settings import SamClipSettings

    def names(**given: object) -> list[str]:
        return [f.name for f in files_for_settings(SamClipSettings(**given))]  # type: ignore[arg-type]

    assert names() == []  # the shapes preset: merged, both teachers shapes
    assert names(preset="official") == ["sam_vit_b", "open_clip_ViT-B-32_laion2b_e16"]
    assert names(backend="composed", sam_variant="vit_l", sam_weights="official", clip_pretrained="random") == [
        "sam_vit_l"
    ]
    # the merged model loads no SAM checkpoint: only its text tower's teacher, when it is a tag
    assert names(backend="merged", merged_weights="random", sam_variant="vit_b", sam_weights="official") == []


def test_a_file_without_a_known_digest_is_not_downloaded(server: FileServer, tmp_path: Path) -> None:
    file = WeightFile("hf", server.url("/hf.bin"), None, "hf.bin")
    server.files["/hf.bin"] = GOOD
    with pytest.raises(ChecksumError, match="no SHA-256 is known"):
        fetch(file, tmp_path)
    assert not server.requests
    file.path(tmp_path).write_bytes(GOOD)  # put there by hand: kept as it is
    assert fetch(file, tmp_path) == file.path(tmp_path)
