"""The gateway image carries no torch and no weights, checked without a Docker engine.

The build is replayed from its inputs, without a Docker engine: the build context
is what `deploy/docker/gateway.Dockerfile.dockerignore` lets through (BuildKit reads it instead
of the root `.dockerignore` for that Dockerfile; the legacy builder reads the root one, which both
images share and which lets through only what their COPY lines take), the build stage's COPY lines are applied to
it, the wheel `pip install ".[gateway]"` would build is built from that copy (offline, no
dependencies), and a fresh venv holding that wheel plus only the distributions the `gateway`
extra requires (resolved from the installed metadata, as pip would) runs the gateway: a
Compare over gRPC and over HTTP through it to a model service, with torch not installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from visioncompare.testing.processes import ServiceProcess, tiny_service

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "gateway.Dockerfile"
MODELS_DOCKERFILE = ROOT / "deploy" / "docker" / "models.Dockerfile"
IGNORE_FILE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
WORKDIR = "/src"
# What the gateway must neither ship nor import: the model frameworks, the model services, the shapes
# reference models and the shapes lab; and the vcompare tools with what only their extra installs (TOOLS_ONLY).
MODEL_ONLY = (
    "torch",
    "torchvision",
    "segment_anything",
    "open_clip",
    "onnxruntime",
    "shapes",
    "visioncompare.shapes_models",
    "visioncompare.maskrcnn",
    "visioncompare.samclip",
)
TOOLS_ONLY = ("visioncompare.tools", "visioncompare.testing", "typer", "yaml", "matplotlib", "faster_coco_eval")
NOT_IN_GATEWAY = MODEL_ONLY + TOOLS_ONLY
WEIGHT_SUFFIXES = (".pth", ".pt", ".onnx", ".safetensors", ".ckpt", ".bin", ".npz")
CONTEXT_LIMIT_BYTES = 4 * 1024 * 1024  # the sources above: well under 1 MB; shapes_models/ alone: 20 MB


# --- the Dockerfile and its ignore file, read as BuildKit reads them --------------------------


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage index, KEYWORD, arguments) for each instruction, continuation lines joined."""
    out: list[tuple[int, str, str]] = []
    stage, pending = -1, ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment line inside a continuation is dropped
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        pending = ""
        stage += keyword.upper() == "FROM"
        out.append((stage, keyword.upper(), args.strip()))
    return out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match with `**` (moby/patternmatcher): `*` and `?` stay within one path element."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """A .dockerignore: the last pattern matching a path, or any of its parent directories, decides."""

    def __init__(self, path: Path) -> None:
        self.patterns: list[tuple[re.Pattern[str], bool, str]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            cleaned = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.patterns.append((_pattern_regex(cleaned), negated, cleaned))

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for regex, negated, _ in self.patterns:
            if any(regex.match(p) for p in prefixes):
                result = not negated
        return result

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception (`!pattern`) could bring back something under an excluded directory."""
        return any(
            negated and (raw.startswith(directory + "/") or any(c in raw.split("/")[0] for c in "*?["))
            for _, negated, raw in self.patterns
        )


def context_files(root: Path, ignore: DockerIgnore) -> dict[str, int]:
    """Path (relative, with /) -> size of every file the build context holds."""
    files: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for d in dirnames:
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if not ignore.excluded(rel) or ignore.may_include_below(rel):
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            if not ignore.excluded(rel) and os.path.isfile(os.path.join(dirpath, f)):
                files[rel] = os.path.getsize(os.path.join(dirpath, f))
    return files


def context_copies(dockerfile: Path = DOCKERFILE) -> list[tuple[int, list[str], str]]:
    """(stage, sources, destination) of each COPY/ADD from the build context (not --from a stage)."""
    copies = []
    for stage, keyword, args in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        copies.append((stage, words[:-1], words[-1]))
    return copies


def apply_copies(context: dict[str, int], dest_root: Path) -> list[str]:
    """Replay the context COPY lines into dest_root (the WORKDIR); returns the paths copied there."""
    copied = []
    for _, sources, dest in context_copies():
        into_dir = dest.endswith("/") or len(sources) > 1
        for src in sources:
            src = os.path.normpath(src)
            under = [f for f in context if f.startswith(src + "/")]
            assert src in context or under, f"COPY {src}: not in the build context (the build would fail)"
            pairs = (
                [(f, f"{dest.rstrip('/')}/{os.path.relpath(f, src)}") for f in under]
                if under
                else [(src, f"{dest.rstrip('/')}/{Path(src).name}" if into_dir else dest)]
            )
            for origin, target in pairs:
                target = os.path.normpath(target)
                (dest_root / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / origin, dest_root / target)
                copied.append(target)
    return copied


def is_outside_the_gateway(path: str) -> bool:
    module = path.removesuffix(".py").replace("/", ".")
    return any(module == m or module.startswith(m + ".") for m in NOT_IN_GATEWAY) or path.endswith(WEIGHT_SUFFIXES)


# --- the replayed build -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context() -> dict[str, int]:
    assert IGNORE_FILE.exists(), f"{IGNORE_FILE.name} keeps the shapes weights out of the gateway's context"
    return context_files(ROOT, DockerIgnore(IGNORE_FILE))


@pytest.fixture(scope="module")
def staged(context: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    src = tmp_path_factory.mktemp("gateway-build") / WORKDIR.strip("/")
    src.mkdir()
    return src, apply_copies(context, src)


@pytest.fixture(scope="module")
def wheel(staged: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(out),
            str(staged[0]),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("visioncompare-*.whl")
    return built


def requirement_closure(requirements: list[str], extras: set[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions pip would install for these requirements (markers evaluated)."""
    found: dict[str, metadata.Distribution] = {}

    def add(raw: str, active: set[str]) -> None:
        req = Requirement(raw)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in active | {""}):
            return
        name = canonicalize_name(req.name)
        if name in found:
            return
        dist = metadata.distribution(req.name)
        found[name] = dist
        for sub in dist.requires or []:
            add(sub, set(req.extras))

    for raw in requirements:
        add(raw, extras)
    return found


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def link_distribution(dist: metadata.Distribution, site: Path) -> None:
    """Make one installed distribution importable from `site` (symlinks to its files' top entries)."""
    origin = Path(str(dist.locate_file("")))
    tops: set[tuple[str, ...]] = set()
    for f in dist.files or []:
        parts = Path(f).parts
        if not parts or parts[0] == ".." or parts[0] == "__pycache__":
            continue
        if (
            len(parts) > 2
            and not (origin / parts[0] / "__init__.py").exists()
            and not parts[0].endswith((".dist-info", ".libs", ".data"))
        ):
            tops.add(parts[:2])  # a namespace package (google/...): link its members, not the shared folder
        else:
            tops.add(parts[:1])
    for top in tops:
        link = site.joinpath(*top)
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(origin.joinpath(*top))


@pytest.fixture(scope="module")
def gateway_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv as `pip install ".[gateway]"` leaves it: the wheel, and the gateway extra's closure only."""
    venv = tmp_path_factory.mktemp("gateway-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    for dist in requirement_closure(wheel_requirements(wheel), {"gateway"}).values():
        link_distribution(dist, site)
    return python


@pytest.fixture(scope="module")
def model_service() -> Iterator[ServiceProcess]:
    service = tiny_service("tiny").start()
    try:
        yield service
    finally:
        service.stop()


# --- the build context and the Dockerfile ------------------------------------------------------------


def test_the_context_holds_only_what_the_gateway_installs(context: dict[str, int]) -> None:
    assert {
        "pyproject.toml",
        "README.md",
        "visioncompare/gateway/server.py",
        "visioncompare/runtime/server.py",
    } <= context.keys()
    leaked = sorted(f for f in context if is_outside_the_gateway(f) or f.startswith(("tests/", "bench/", ".venv/")))
    assert not leaked, f"the gateway's build context holds {leaked[:10]}"
    assert sum(context.values()) < CONTEXT_LIMIT_BYTES, f"{sum(context.values())} bytes of context"


def test_the_ignore_matcher_reads_the_root_dockerignore_as_docker_does() -> None:
    """The root .dockerignore (the model images' context) keeps the weights: why the gateway has its own."""
    root_context = context_files(ROOT, DockerIgnore(ROOT / ".dockerignore"))
    assert any(f.startswith("visioncompare/shapes_models/weights/") and f.endswith(".pth") for f in root_context)
    assert not any(f.startswith((".venv/", ".git/", "tests/", "bench/", "deploy/k8s/")) for f in root_context)
    assert not any("__pycache__" in f for f in root_context)


def test_the_root_dockerignore_sends_both_images_what_they_copy_and_nothing_else() -> None:
    """The legacy builder (no BuildKit) reads only the root .dockerignore, for both images: it lets
    through the sources the two Dockerfiles' COPY lines take, the shapes weights the model images
    ship, and nothing else (no tests, caches, .venv, lab or documentation)."""
    root_context = context_files(ROOT, DockerIgnore(ROOT / ".dockerignore"))
    sources = {
        os.path.normpath(src)
        for f in (DOCKERFILE, MODELS_DOCKERFILE)
        for _, srcs, _ in context_copies(f)
        for src in srcs
    }
    for src in sources:
        assert src in root_context or any(f.startswith(src + "/") for f in root_context), (
            f"COPY {src}: not in the context"
        )
    extra = sorted(f for f in root_context if not any(f == s or f.startswith(s + "/") for s in sources))
    assert not extra, f"the root .dockerignore lets through what no image copies: {extra[:10]}"
    weights = sum(size for f, size in root_context.items() if f.startswith("visioncompare/shapes_models/weights/"))
    assert sum(root_context.values()) - weights < CONTEXT_LIMIT_BYTES


def test_no_dockerfile_needs_a_registry_to_build() -> None:
    """No `# syntax=` line: BuildKit would pull that frontend image from Docker Hub (a build with no
    registry fails); the builtin frontend reads these Dockerfiles. The base image is a build arg
    (the air-gapped path passes a local one) and pip's index settings are build args too."""
    for dockerfile in (DOCKERFILE, MODELS_DOCKERFILE):
        text = dockerfile.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), dockerfile.name
        steps = instructions(dockerfile)
        stages: list[str] = []
        for _stage, keyword, args in steps:
            if keyword == "FROM":
                base, _, name = args.partition(" AS ")
                assert base == "${PYTHON_IMAGE}" or base in stages, (dockerfile.name, args)
                stages.append(name.strip())
        for stage in {s for s, k, a in steps if k == "RUN" and "pip install" in a}:
            declared = {a.split("=")[0] for s, k, a in steps if s == stage and k == "ARG"}
            assert {"PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"} <= declared, (dockerfile.name, stage)


def stage_steps(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (KEYWORD, arguments)."""
    names: dict[int, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    for stage, keyword, args in instructions(dockerfile):
        if keyword == "FROM":
            names[stage] = args.partition(" AS ")[2].strip() or f"stage{stage}"
        if stage >= 0:
            out.setdefault(names[stage], []).append((keyword, args))
    return out


def test_the_model_image_keeps_its_dependencies_in_a_layer_no_source_change_touches() -> None:
    """Every source change reinstalled 3.3 GB (the source was copied before pip install), and the
    final image took the whole venv again (6 GB). Now the locked dependencies are installed in a
    stage that copies nothing but the locks; the image is that stage itself (its gigabytes are
    not copied) with the project as one small layer on top."""
    stages = stage_steps(MODELS_DOCKERFILE)
    deps = stages["deps"]
    assert [shlex.split(a)[:-1] for k, a in deps if k == "COPY"] == [
        ["requirements/pip.txt", "requirements/models-gpu.txt", "requirements/models-cpu.txt"]
    ]
    [install] = [a for k, a in deps if k == "RUN" and "pip install" in a]
    assert "--require-hashes -r pip.txt" in install and '--require-hashes -r "models-${ONNXRUNTIME}.txt"' in install
    build = stages["build"]
    assert build[0] == ("FROM", "deps AS build") and not [a for k, a in build if k == "RUN" and "-r " in a]
    [install_project] = [a for k, a in build if k == "RUN"]
    assert install_project.startswith("pip install --no-deps --prefix /opt/project . ")
    runtime = stages["runtime"]
    assert runtime[0] == ("FROM", "deps AS runtime")
    assert [shlex.split(a) for k, a in runtime if k == "COPY"] == [["--from=build", "/opt/project/", "/opt/venv/"]]
    assert not [c for c in context_copies(MODELS_DOCKERFILE) if c[0] != 0 and c[1][0].startswith("requirements/")]


def test_the_model_image_carries_neither_the_gateway_nor_the_tools_nor_the_lab() -> None:
    """models.Dockerfile copied visioncompare/gateway/ into the model images, and the package's vision-gateway
    and vcompare scripts came with it. Now the build copies only the runtime, the model services
    and the shapes models, removes the scripts whose modules it did not copy, and the image's own
    check fails if gateway, vcompare or the shapes lab can be imported."""
    copied = {src for _, sources, _ in context_copies(MODELS_DOCKERFILE) for src in sources}
    wanted = {"visioncompare/v1", "visioncompare/oip", "visioncompare/runtime", "visioncompare/maskrcnn"}
    assert wanted | {"visioncompare/samclip", "visioncompare/shapes_models"} <= copied
    unwanted = ("visioncompare/gateway", "visioncompare/tools", "visioncompare/testing", "shapes")
    assert not [src for src in copied if src.startswith(unwanted)]
    [install_project] = [a for k, a in stage_steps(MODELS_DOCKERFILE)["build"] if k == "RUN"]
    removed = shlex.split(install_project.split("&&")[1])
    assert removed == ["rm", "/opt/project/bin/vision-gateway", "/opt/project/bin/vcompare"]
    [check] = [a for k, a in stage_steps(MODELS_DOCKERFILE)["runtime"] if k == "RUN" and "find_spec" in a]
    assert "('visioncompare.gateway', 'visioncompare.tools', 'visioncompare.testing', 'shapes')" in check


def test_the_cpu_torch_path_installs_the_rest_of_the_lock_by_hash(tmp_path: Path) -> None:
    """TORCH_INDEX_URL set: the lock without torch, torchvision and the CUDA packages (replayed
    with the Dockerfile's own awk), then torch and torchvision at the locked versions."""
    [install] = [a for k, a in stage_steps(MODELS_DOCKERFILE)["deps"] if k == "RUN" and "pip install" in a]
    awk = re.search(r"awk '([^']+)'", install)
    assert awk is not None
    lock = (ROOT / "requirements" / "models-cpu.txt").read_text()
    kept = subprocess.run(["awk", awk.group(1)], input=lock, capture_output=True, text=True, check=True).stdout
    pins = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M))
    kept_pins = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", kept, re.M))
    dropped = set(pins) - set(kept_pins)
    assert {"torch", "torchvision", "triton"} <= dropped and any(d.startswith("nvidia-") for d in dropped)
    assert all(re.match(r"(torch|torchvision|triton|nvidia-|cuda-)", d) for d in dropped), dropped
    assert {"onnxruntime", "numpy", "open-clip-torch"} <= set(kept_pins)
    assert kept.count("--hash=sha256:") == sum(
        block.count("--hash=sha256:")
        for block in re.split(r"\n(?=[A-Za-z0-9])", lock)
        if not re.match(r"(torch|torchvision|triton|nvidia-|cuda-)[^=]*==", block)
    )
    for name in ("torch", "torchvision"):
        expression = re.search(rf'"{name}==\$\(sed -n \'([^\']+)\'', install)
        assert expression is not None, name
        found = subprocess.run(
            ["sed", "-n", expression.group(1)], input=lock, capture_output=True, text=True, check=True
        )
        assert found.stdout.strip() == pins[name]


def test_the_dockerfile_copies_no_model_service_shapes_or_weights(staged: tuple[Path, list[str]]) -> None:
    _, copied = staged
    assert not [f for f in copied if is_outside_the_gateway(f)]
    for module in (
        "visioncompare/gateway/server.py",
        "visioncompare/gateway/http.py",
        "visioncompare/runtime/images.py",
        "visioncompare/v1/comparison_service_pb2.py",
    ):
        assert module in copied


def project_install() -> str:
    """The RUN that installs the project itself (its dependencies came from the lock before)."""
    [run] = [
        args for _, keyword, args in instructions(DOCKERFILE) if keyword == "RUN" and "pip install --no-deps" in args
    ]
    return run


def test_the_image_installs_the_gateway_lock_and_only_the_venv_reaches_the_final_stage() -> None:
    steps = instructions(DOCKERFILE)
    final = max(stage for stage, _, _ in steps)
    installs = [args for _, keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 2, installs
    locked, project = installs
    assert re.findall(r"pip install (--require-hashes -r \S+)", locked) == [
        "--require-hashes -r requirements/pip.txt",
        "--require-hashes -r requirements/gateway.txt",
    ]
    # the project itself: not editable, no extra (the lock above is all its dependencies)
    assert project == project_install() and project.startswith("pip install --no-deps . && pip check")
    assert not [c for c in context_copies() if c[0] == final], "the final stage copies from the context"
    finals = [shlex.split(a) for s, k, a in steps if s == final and k == "COPY"]
    assert finals == [["--from=build", "/opt/venv", "/opt/venv"]]


# --- what the build makes of it ----------------------------------------------------------------------


def test_the_wheel_holds_no_model_service_shapes_or_weights(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    leaked = [n for n in names if is_outside_the_gateway(n)]
    assert not leaked, leaked
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"visioncompare"}
    assert "visioncompare/gateway/web/index.html" in names and "visioncompare/runtime/tasks.py" in names


def test_the_replayed_venv_is_the_gateway_lock(wheel: Path) -> None:
    """The replay links the `gateway` extra's closure from this venv: the image installs the
    gateway lock, which holds exactly those distributions, at this venv's versions (setup.txt's)."""
    closure = requirement_closure(wheel_requirements(wheel), {"gateway"})
    lock = {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", (ROOT / "requirements" / "gateway.txt").read_text(), re.M
        )
    }
    assert {n: d.version for n, d in closure.items()} == lock


def test_the_gateway_extra_pulls_in_no_model_framework(wheel: Path) -> None:
    closure = requirement_closure(wheel_requirements(wheel), {"gateway"})
    assert {"fastapi", "uvicorn", "grpcio", "pillow"} <= closure.keys()
    frameworks = {
        canonicalize_name(m) for m in ("torch", "torchvision", "segment-anything", "open_clip_torch", "onnxruntime")
    }
    assert not frameworks & closure.keys()
    tools = {canonicalize_name(m) for m in ("typer", "pyyaml", "matplotlib", "faster-coco-eval")}
    assert not tools & closure.keys(), "the gateway extra pulls in the vcompare tools' dependencies"


CHILD = r"""
import asyncio, base64, io, json, sys, urllib.request

import grpc
from PIL import Image
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

import visioncompare.gateway.http  # noqa: F401  (the web page, as vision-gateway serves it)
from visioncompare.gateway.server import GatewayServer
from visioncompare.gateway.settings import GatewaySettings


def png():
    image = Image.new("RGB", (64, 48))
    image.paste((255, 255, 255), (10, 10, 30, 30))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


async def main():
    settings = GatewaySettings(host="127.0.0.1", port=0, http_port=0, metrics_port=None, log_json=False,
                               health_retry_s=0.3, targets={"tiny": sys.argv[1]})
    server = GatewayServer(settings)
    await server.start()
    try:
        await server.registry.wait_serving(["tiny"], 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            response = await cs_grpc.ComparisonServiceStub(channel).Compare(
                cs.CompareRequest(image=pb.Image(encoded=png()), task=pb.TASK_OBJECT_DETECTION), timeout=30)
        base = f"http://127.0.0.1:{server.http_port}"

        def http():
            body = json.dumps({"image_base64": base64.b64encode(png()).decode(), "task": "object-detection"})
            request = urllib.request.Request(base + "/v1/compare", body.encode(), {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                compared = json.load(answer)
            with urllib.request.urlopen(base + "/", timeout=30) as answer:
                return compared, answer.status

        compared, page = await asyncio.to_thread(http)
    finally:
        await server.stop(0)
    loaded = sorted(sys.modules)
    print(json.dumps({
        "grpc": [[r.model_name, r.status.code, len(r.detect.instances)] for r in response.results],
        "http": [[r["model_name"], len(r.get("detect", {}).get("instances", []))] for r in compared["results"]],
        "page": page,
        "modules": loaded,
        "files": {m: getattr(sys.modules[m], "__file__", None) or "" for m in loaded
                  if m.split(".")[0] == "visioncompare"},
    }))


asyncio.run(main())
"""


def run_isolated(python: Path, args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_torch_is_not_installed_in_the_gateway_venv(gateway_venv: Path, tmp_path: Path) -> None:
    probe = f"import importlib.util as u, json; print(json.dumps([m for m in {NOT_IN_GATEWAY!r} if u.find_spec(m)]))"
    result = run_isolated(gateway_venv, ["-I", "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_gateway_compares_from_the_wheel_without_torch(
    gateway_venv: Path, model_service: ServiceProcess, tmp_path: Path
) -> None:
    script = tmp_path / "gateway_smoke.py"
    script.write_text(CHILD)
    result = run_isolated(gateway_venv, ["-I", str(script), model_service.address], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["grpc"] == [["tiny", 0, 1]]
    assert report["http"] == [["tiny", 1]]
    assert report["page"] == 200
    loaded = [m for m in report["modules"] if is_outside_the_gateway(m.replace(".", "/"))]
    assert not loaded, f"the gateway imported {loaded}"
    site = str(gateway_venv.parent.parent)
    outside = {m: f for m, f in report["files"].items() if f and not f.startswith(site)}
    assert not outside, f"modules loaded from outside the gateway venv: {outside}"


def test_the_dockerfile_s_own_checks_pass_in_the_gateway_venv_and_fail_beside_torch(
    gateway_venv: Path, tmp_path: Path
) -> None:
    words = shlex.split(project_install())
    commands, current = [], []
    for word in [*words, "&&"]:
        if word == "&&":
            commands.append(current)
            current = []
        else:
            current.append(word)
    checks = [c for c in commands if c[0] == "python"]
    assert len(checks) == 2, commands
    for check in checks:
        result = run_isolated(gateway_venv, check[1:], tmp_path)
        assert result.returncode == 0, (check, result.stderr[-4000:])
    # The same check in the development venv (torch installed, shapes importable) fails: it can bite.
    beside_torch = run_isolated(Path(sys.executable), checks[1][1:], ROOT)
    assert beside_torch.returncode != 0 and "torch" in beside_torch.stderr


def test_the_image_keeps_only_console_scripts_that_work_there(gateway_venv: Path, tmp_path: Path) -> None:
    """The package's [project.scripts] all land in the venv. The Dockerfile removes those that cannot
    work without the model services (`--help` already fails: their modules, or the services their
    entry points name, are not there); every one it keeps loads."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    removed = {Path(w).name for w in shlex.split(project_install()) if w.startswith("/opt/venv/bin/")}
    assert removed <= scripts.keys()
    assert {"vision-gateway", "vc-healthcheck"} <= scripts.keys() - removed
    assert "vcompare" in removed  # the tools are not in the image (visioncompare/tools/ is not copied)
    for name in sorted(scripts):
        load = f"import importlib.metadata as md, sys; [ep] = md.entry_points(group='console_scripts', name={name!r})"
        call = "; sys.argv = [ep.name, '--help']; sys.exit(ep.load()())" if name in removed else "; ep.load()"
        probe = run_isolated(gateway_venv, ["-I", "-c", load + call], tmp_path)
        assert (probe.returncode == 0) == (name not in removed), (name, probe.stderr[-2000:])


def test_the_replay_runs_the_image_s_python_version() -> None:
    """The replay builds and runs with this interpreter: the image's Python minor version."""
    [base] = [args for _, keyword, args in instructions(DOCKERFILE) if keyword == "ARG" and "PYTHON_IMAGE" in args]
    version = re.search(r"python:(\d+\.\d+)", base)
    assert version and version.group(1) == sysconfig.get_python_version()
