"""The generated code matches protos/, and the contract has what the services rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from visioncompare.runtime.types import Task
from visioncompare.v1 import common_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_stale_generated_code_is_detected(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    stale = tmp_path / "v1"
    shutil.copytree(ROOT / "visioncompare" / "v1", stale, ignore=shutil.ignore_patterns("__pycache__"))
    target = stale / "common_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    fresh = tmp_path / "fresh"
    gen.generate(fresh)
    assert gen.differences(fresh / "visioncompare" / "v1", ROOT / "visioncompare" / "v1") == []
    assert gen.differences(fresh / "visioncompare" / "v1", stale) == ["differs: common_pb2.py"]


def test_domain_task_enum_mirrors_the_proto() -> None:
    proto = {name.removeprefix("TASK_"): value for name, value in pb.Task.items() if value}
    assert proto == {t.name: t.value for t in Task}
