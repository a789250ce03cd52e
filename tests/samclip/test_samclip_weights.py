"""SAM-CLIP weights, start-up failures, and the small helpers (regions, LRU)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.samclip.architectures import tiny_clip, tiny_sam
from visioncompare.samclip.cache import ByteLru
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.regions import _label_components_numpy, remove_small_regions
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.samclip.weights import (
    DEFAULT_CLIP_FILE,
    SAM_FILES,
    WEIGHT_FILES,
    clip_weight_file,
    resolve_clip_weights,
    resolve_sam_weights,
)

ROOT = Path(__file__).resolve().parents[2]


def tiny(**overrides: Any) -> SamClipSettings:
    base: dict[str, Any] = dict(
        backend="composed",
        sam_variant="tiny",
        clip_model="tiny",
        sam_weights="random",
        clip_pretrained="random",
        device="cpu",
    )
    return SamClipSettings(**{**base, **overrides})


# --- the official files -----------------------------------------------------------------------


def test_weight_files_are_the_official_checkpoints_with_full_digests() -> None:
    names = {f.name: f for f in WEIGHT_FILES}
    assert set(names) == {"sam_vit_b", "sam_vit_l", "sam_vit_h", "open_clip_ViT-B-32_laion2b_e16"}
    for variant, stem in (("vit_b", "01ec64"), ("vit_l", "0b3195"), ("vit_h", "4b8939")):
        f = SAM_FILES[variant]
        assert f.url == f"https://dl.fbaipublicfiles.com/segment_anything/sam_{variant}_{stem}.pth"
        assert f.sha256 is not None and len(f.sha256) == 64
    assert DEFAULT_CLIP_FILE.sha256_prefix == "af8dbd0c" and DEFAULT_CLIP_FILE.matches("af8dbd0c" + "0" * 56)
    # the listed CLIP file is exactly what the default tag resolves to
    assert clip_weight_file("ViT-B-32", "laion2b_e16") == DEFAULT_CLIP_FILE


def test_clip_tags_resolve_to_files_in_the_cache(tmp_path: Path) -> None:
    source = resolve_clip_weights("laion2b_e16", "ViT-B-32", tmp_path)
    assert source.path == tmp_path / "open_clip/ViT-B-32/laion2b_e16/vit_b_32-laion2b_e16-af8dbd0c.pth"
    assert source.pretrained and source.label == "open_clip:ViT-B-32:laion2b_e16"
    assert source.preprocess and source.preprocess["mean"][0] == pytest.approx(0.4814, abs=1e-3)
    openai = clip_weight_file("ViT-B-32", "openai")
    assert openai is not None and openai.sha256 is not None and len(openai.sha256) == 64
    hub = resolve_clip_weights("laion2b_s34b_b79k", "ViT-B-32", tmp_path)
    assert hub.path is not None and hub.path.name == "open_clip_pytorch_model.bin"
    with pytest.raises(ConfigurationError, match="huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        hub.check("CLIP")
    with pytest.raises(ConfigurationError, match="not an open_clip tag"):
        resolve_clip_weights("no_such_tag", "ViT-B-32", tmp_path)
    assert not resolve_clip_weights("random", "ViT-B-32", tmp_path).pretrained


def test_missing_official_weights_say_what_to_fetch(tmp_path: Path) -> None:
    source = resolve_sam_weights("official", "vit_b", tmp_path)
    assert source.path == tmp_path / "segment_anything" / "sam_vit_b_01ec64.pth"
    with pytest.raises(ConfigurationError) as err:
        SamClipModel(tiny(sam_variant="vit_b", sam_weights="official", cache_dir=tmp_path)).load()
    message = str(err.value)
    assert "sam_vit_b_01ec64.pth" in message and "fetch-weights" in message and "--only sam_vit_b" in message
    with pytest.raises(ConfigurationError, match="--only open_clip_ViT-B-32_laion2b_e16"):
        SamClipModel(tiny(clip_model="ViT-B-32", clip_pretrained="laion2b_e16", cache_dir=tmp_path)).load()
    with pytest.raises(ConfigurationError, match="no official weights"):
        resolve_sam_weights("official", "tiny", tmp_path)


# --- loading checkpoints --------------------------------------------------------------------


def test_sam_and_clip_checkpoints_load_from_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sam, (clip, _) = tiny_sam(), tiny_clip()
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    files = {"sam_weights": f"file:{tmp_path}/sam.pth", "clip_pretrained": f"file:{tmp_path}/clip.pt"}
    model = SamClipModel(tiny(**files, engine="torch"))  # torch: its networks' state dicts are compared
    model.load()
    backend: Any = model.backend
    for name, value in sam.state_dict().items():
        assert torch.equal(backend.sam.state_dict()[name], value), name
    for name, value in clip.state_dict().items():
        assert torch.equal(backend.clip.state_dict()[name], value), name
    caps = model.capabilities()
    sam_part, clip_part = caps.runtime.components
    assert sam_part.pretrained and sam_part.weights == f"file:{tmp_path}/sam.pth"
    assert clip_part.pretrained and caps.runtime.pretrained
    assert not any("random weights" in w for w in caps.runtime.warnings)


def test_only_the_random_part_is_reported_untrained(tmp_path: Path) -> None:
    torch.save(tiny_sam().state_dict(), tmp_path / "sam.pth")
    model = SamClipModel(tiny(sam_weights=f"file:{tmp_path}/sam.pth"))
    model.load()
    caps = model.capabilities()
    assert [c.pretrained for c in caps.runtime.components] == [True, False]
    assert caps.runtime.pretrained is False
    assert [w for w in caps.runtime.warnings if "random weights" in w] == [
        "random weights: open_clip tiny (labels and scores are not meaningful)"
    ]


def test_a_bad_checkpoint_fails_at_load(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match="cannot load SAM weights"):
        SamClipModel(tiny(sam_weights=f"file:{tmp_path}/junk.pth")).load()
    torch.save({"unexpected": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigurationError, match="cannot load CLIP weights"):
        SamClipModel(tiny(clip_pretrained=f"file:{tmp_path}/wrong.pth")).load()
    with pytest.raises(ConfigurationError, match="not found"):
        SamClipModel(tiny(sam_weights=f"file:{tmp_path}/absent.pth")).load()


# --- the console script ------------------------------------------------------------------------


def service(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMCLIP_")}
    return subprocess.run(
        [sys.executable, "-m", "visioncompare.samclip"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_settings_exit_2_with_one_line() -> None:
    done = service({"SAMCLIP_SAM_VARIANT": "vit_x"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "SAMCLIP_SAM_VARIANT" in lines[0]


def test_missing_weights_exit_2_saying_what_to_fetch(tmp_path: Path) -> None:
    official = {
        "SAMCLIP_BACKEND": "composed",
        "SAMCLIP_SAM_VARIANT": "vit_b",
        "SAMCLIP_SAM_WEIGHTS": "official",
        "SAMCLIP_CLIP_MODEL": "ViT-B-32",
        "SAMCLIP_CLIP_PRETRAINED": "laion2b_e16",
    }  # as deployed
    done = service({**official, "SAMCLIP_CACHE_DIR": str(tmp_path), "SAMCLIP_METRICS_PORT": "0", "SAMCLIP_PORT": "0"})
    assert done.returncode == 2
    assert "fetch-weights" in done.stderr and "sam_vit_b" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_merged_vit_b_service_starts_with_no_sam_checkpoint(tmp_path: Path) -> None:
    """The merged backend checks its own weights (merged + CLIP text tower), not the
    composition's: with no SAM ViT-B checkpoint in the cache it starts and serves."""
    from visioncompare.testing.processes import ServiceProcess, free_port

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMCLIP_")}
    env = {
        "SAMCLIP_BACKEND": "merged",
        "SAMCLIP_SAM_VARIANT": "vit_b",
        "SAMCLIP_MERGED_WEIGHTS": "random",
        "SAMCLIP_CLIP_MODEL": "ViT-B-32",
        "SAMCLIP_CLIP_PRETRAINED": "random",
        "SAMCLIP_ENGINE": "torch",
        "SAMCLIP_CACHE_DIR": str(tmp_path),
        "SAMCLIP_PORT": str(port),
        "SAMCLIP_METRICS_PORT": "0",
    }
    assert not any(tmp_path.iterdir())
    process = ServiceProcess("samclip", ["-m", "visioncompare.samclip"], port, env=env)
    process.env = {**clean, **env}
    try:
        process.start(timeout=240)
    finally:
        assert process.stop() == 0


# --- helpers ------------------------------------------------------------------------------------


def bfs_components(mask: np.ndarray) -> list[int]:
    """Sorted component sizes by breadth-first search, 8-connectivity."""
    seen = np.zeros_like(mask)
    sizes = []
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, size = deque([(y, x)]), 0
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        sizes.append(size)
    return sorted(sizes)


@pytest.mark.parametrize("seed", range(6))
def test_numpy_components_match_breadth_first_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < [0.2, 0.4, 0.5, 0.6, 0.9, 0.0][seed]
    labels, sizes = _label_components_numpy(mask)
    assert sorted(sizes.tolist()) == bfs_components(mask)
    assert ((labels > 0) == mask).all()
    for k, size in enumerate(sizes, start=1):
        assert (labels == k).sum() == size


def test_small_holes_and_islands_are_removed() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a one-pixel hole
    mask[16:18, 16:18] = True  # a four-pixel island
    filled, changed = remove_small_regions(mask, 5, "holes")
    assert changed and filled[5, 5] and filled[16:18, 16:18].all()
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[16:18, 16:18].any() and cleaned[2:12, 2:12].all()
    assert remove_small_regions(cleaned, 5, "islands") == (cleaned, False)


def test_byte_lru_evicts_least_recent_and_refuses_oversized() -> None:
    cache: ByteLru[bytes] = ByteLru(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # evicts b
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.bytes == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 2)
