"""ONNX Runtime's telemetry stays off wherever ONNX Runtime runs.

ONNX Runtime looked up Microsoft's telemetry host about every 5 s in every container that runs
it (the model services and their export steps); ORT_DISABLE_TELEMETRY=1 stops that. The runtime
sets it and disables telemetry events itself whenever it imports onnxruntime, and every place
that starts a process running it sets the variable too: the model image, compose (the services,
their fetch and export steps, hence the local stack), Kubernetes (every container of a model
pod), and this test run (tests/conftest.py). Each test here fails if one of them loses it.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from tests.deploy.test_deploy import MODELS, ONE_SHOT_STEPS, by_kind, kustomize
from tests.deploy.test_images_docker import MODELS_DOCKERFILE, instructions
from visioncompare.runtime import engines
from visioncompare.runtime.engines import (
    CPU,
    OrtRunner,
    ProviderPlan,
    onnxruntime_module,
    plan_providers,
    session_options,
)
from visioncompare.tools.compose import ROOT, compose_services
from visioncompare.tools.stack import LocalStack

VARIABLE = engines.TELEMETRY_ENV
#: where the project's Python code lies (tests may import onnxruntime themselves: the run sets the variable)
CODE = ("visioncompare", "shapes", "bench", "tools")


@pytest.fixture
def telemetry_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The variable unset, and each call of onnxruntime.disable_telemetry_events recorded."""
    import onnxruntime

    calls: list[str] = []
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append("disabled"))
    return calls


def tiny_onnx(path: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_runtime_turns_telemetry_off_before_it_uses_onnxruntime(telemetry_calls: list[str]) -> None:
    onnxruntime_module()
    assert os.environ[VARIABLE] == "1" and telemetry_calls == ["disabled"]


@pytest.mark.parametrize("use", ["plan_providers", "session_options", "session"])
def test_every_way_into_onnxruntime_turns_telemetry_off(use: str, telemetry_calls: list[str], tmp_path: Path) -> None:
    if use == "plan_providers":
        plan_providers("cpu")
    elif use == "session_options":
        session_options(1)
    else:
        os.environ.pop(VARIABLE, None)  # session_options, evaluated first, would set it
        runner = OrtRunner(ProviderPlan("cpu", (CPU,), ({},), allow_fallback=False), 1)
        runner.session(tiny_onnx(tmp_path / "tiny.onnx"), "tiny")
    assert os.environ.get(VARIABLE) == "1" and telemetry_calls


def test_only_the_runtime_imports_onnxruntime() -> None:
    """Any other import of onnxruntime in the project's code would bypass `onnxruntime_module`."""
    allowed = ROOT / "visioncompare" / "runtime" / "engines.py"
    offenders = []
    for top in CODE:
        for path in (ROOT / top).rglob("*.py"):
            if path == allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n == "onnxruntime" or n.startswith("onnxruntime.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"import onnxruntime through visioncompare.runtime.engines.onnxruntime_module: {offenders}"


def test_this_test_run_has_telemetry_off() -> None:
    """tests/conftest.py sets it for the run and every service process a test starts."""
    assert os.environ.get(VARIABLE) == "1"


def test_the_model_image_sets_it() -> None:
    envs = [args for _, keyword, args in instructions(MODELS_DOCKERFILE) if keyword == "ENV"]
    assert any(f"{VARIABLE}=1" in e.split() for e in envs), envs


def test_compose_sets_it_for_every_container_that_runs_a_model() -> None:
    """The model services, their fetch and export steps (all on the model images), in the
    compose file and in the local stack, which runs the same services as processes."""
    services = compose_services({})
    for name in (*MODELS, *ONE_SHOT_STEPS):
        assert services[name].environment.get(VARIABLE) == "1", name
    stack = LocalStack(env_file=ROOT / "deploy" / "local.env")
    for name in MODELS:
        assert stack.service_env(name)[VARIABLE] == "1", name


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_kubernetes_sets_it_for_every_container_of_a_model_pod(overlay: str) -> None:
    docs = kustomize(overlay)
    [config] = by_kind(docs, "ConfigMap").values()
    assert config["data"][VARIABLE] == "1"
    config_name = config["metadata"]["name"]
    for name in MODELS:
        pod = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
        for container in [*pod["initContainers"], *pod["containers"]]:
            env: dict[str, Any] = {e["name"]: e.get("value") for e in container.get("env", [])}
            from_config = any(
                ref.get("configMapRef", {}).get("name") == config_name for ref in container.get("envFrom", [])
            )
            assert env.get(VARIABLE, "1" if from_config else None) == "1", (name, container["name"])
