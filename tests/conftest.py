"""What every test shares: ONNX exports go to one temporary cache for the whole run.

With `engine=auto` the model services run ONNX Runtime on CPU and export their networks at
first start into `cache_dir/onnx` (the repository's models/ by default), or under the
temporary directory where that cannot be written. Every test that builds a model without a
cache directory of its own would leave exports there (about 1.4 GB after a few runs, one
folder per set of random weights). Here any cache directory outside pytest's temporary
directories is replaced, for exports only (weights are still read from it), by one
session-wide temporary cache, so that tests on the same weights share one export within the
run; and the run fails if models/onnx gained files anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from visioncompare.runtime import engines

# ONNX Runtime's telemetry off for the whole run, before any test module imports onnxruntime
# (the runtime turns it off itself; tests/deploy/test_no_calls_home.py checks both), and for every
# service process a test starts.
os.environ[engines.TELEMETRY_ENV] = "1"

ROOT = Path(__file__).resolve().parent.parent
REPO_ONNX = ROOT / "models" / engines.ONNX_SUBDIR


#: The runtime's own fallback directory for unwritable caches (the session replaces it).
SYSTEM_TEMP_CACHE_DIR = engines.temp_cache_dir


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file()} if directory.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's ONNX cache: where exports for a cache_dir outside pytest's temporary
    directories go (the services' default ./models, TORCH_HOME, the shared temporary directory)."""
    basetemp = tmp_path_factory.getbasetemp().resolve()
    cache = tmp_path_factory.mktemp("onnx-cache")
    export_path = engines.export_path

    def in_session_cache(cache_dir: Path, weights_digest: str, name: str, config: Mapping[str, Any]) -> Path:
        if not Path(cache_dir).resolve().is_relative_to(basetemp):
            cache_dir = cache
        return export_path(cache_dir, weights_digest, name, config)

    # The fallback for unwritable caches gets its own directory: were it the system's temporary
    # directory, redirected above, a model would find there (and load) another test's export
    # of the same weights instead of exporting into its own cache.
    fallback = tmp_path_factory.mktemp("onnx-fallback")
    before = _files(REPO_ONNX)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(engines, "export_path", in_session_cache)
        m.setattr(engines, "temp_cache_dir", lambda: fallback)
        yield cache
    gained = sorted(str(p.relative_to(ROOT)) for p in _files(REPO_ONNX) - before)
    if gained:
        pytest.fail(f"the tests left {len(gained)} ONNX file(s) in models/onnx: {gained[:4]}", pytrace=False)


@pytest.fixture
def system_temp_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test of the fallback itself: the runtime's own temp_cache_dir again."""
    monkeypatch.setattr(engines, "temp_cache_dir", SYSTEM_TEMP_CACHE_DIR)
