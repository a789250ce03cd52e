"""The compose stack built and run for real: `.ci/run` runs this after `make test`.

    .venv/bin/python deploy/e2e/compose_e2e.py [--keep] [--no-build]

As root, on a machine with no container registry within reach:

1. the Docker engine: Debian's docker.io where `dockerd` is missing; `dockerd` started if it does
   not answer; Compose v2.24+ (Debian trixie's docker-compose, a static binary) where missing;
2. the base image: Debian bookworm's python3 (3.11) made with debootstrap from Debian's mirror
   (`--variant=minbase`) and imported as an image (kept: a later run reuses it), standing in for
   the official python image as PYTHON_IMAGE;
3. a wheelhouse from the lock files (pip download on the host, which can reach the indexes;
   kept), served on 127.0.0.1 to the builds, which run with the host's network;
4. the images from the repository's Dockerfiles (legacy builder: no BuildKit, no frontend image),
   the model image in its CPU flavour (plain onnxruntime);
5. `docker compose up` with the shapes weights (deploy/local.env) and no network
   (deploy/compose.offline.yml), under its own project name and volume;
6. waits until the gateway is healthy, then one Compare over gRPC and one over HTTP, each with
   all three models OK (and /docs with its assets, served by the gateway);
7. crashes one model (its process killed from the host): the gateway reports it UNAVAILABLE while
   the others answer, its restart policy brings it back and it rejoins; then `docker kill`
   (Docker leaves that down: stopped by hand) and `docker start`; then `docker compose stop`
   of that model, timed (its drain no longer waits for the gateway's health watch);
8. `docker compose down -v`.

It prints the build time, the image sizes, the time to healthy, the Compare latency and the kill
and rejoin times. Nothing leaves the machine but the set-up's downloads from Debian's mirror and the
package indexes (steps 1-3, skipped when done before); the stack's traffic stays on 127.0.0.1 and
the compose project's networks.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

ROOT = Path(__file__).resolve().parents[2]

CACHE = Path(os.environ.get("VC_E2E_CACHE", "/var/cache/visioncompare-e2e"))
BASE_IMAGE = os.environ.get("VC_E2E_BASE_IMAGE", "visioncompare-e2e/python:3.11-bookworm")
DEBIAN_MIRROR = os.environ.get("VC_E2E_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PROJECT = "vc-e2e"
VERSION = "0.1.0"
MODELS = ("maskrcnn", "samclip", "sam-clip-composed")
KILLED = "maskrcnn"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.cpu.yml", "deploy/compose.offline.yml")
ENV_FILE = "deploy/local.env"
GRPC_ADDRESS, HTTP_BASE = "127.0.0.1:50050", "http://127.0.0.1:8080"
PUBLISHED_PORTS = (50050, 8080, 9092)
SCENE = ROOT / "visioncompare" / "gateway" / "samples" / "shapes-scene.png"
#: the base image's packages: Python 3.11 with venv (python:3.11-slim's `python`), and libgomp
BASE_PACKAGES = "python3,python3-venv,python-is-python3,libgomp1,ca-certificates"
#: the images: tag -> (Dockerfile, target). The model images are docker-compose.cpu.yml's -cpu ones,
#: here with plain onnxruntime and PyPI's torch (PyTorch's CPU index is not within reach)
IMAGES = {
    f"visioncompare/maskrcnn:{VERSION}-cpu": ("deploy/docker/models.Dockerfile", "maskrcnn"),
    f"visioncompare/gateway:{VERSION}": ("deploy/docker/gateway.Dockerfile", None),
    f"visioncompare/samclip:{VERSION}-cpu": ("deploy/docker/models.Dockerfile", "samclip"),
}
LOCKS = ("requirements/pip.txt", "requirements/models-cpu.txt", "requirements/gateway.txt")
#: what building the project itself takes (pyproject.toml's build-system; pip builds in isolation)
BUILD_TOOLS = ("setuptools>=77", "wheel")
MODEL_BUILD_ARGS = {"ONNXRUNTIME": "cpu"}

figures: dict[str, str] = {}


def say(text: str) -> None:
    print(f"[compose-e2e {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(*argv: str, check: bool = True, capture: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=capture, **kwargs)


def output(*argv: str) -> str:
    return run(*argv, capture=True).stdout.strip()


def works(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


def apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages, env=env)


# --- 1. the engine and Compose ---------------------------------------------------------------


def ensure_packages() -> None:
    """Debian's docker.io and debootstrap where missing, in one apt run."""
    missing = [
        pkg for pkg, tool in (("docker.io", "dockerd"), ("debootstrap", "debootstrap")) if not shutil.which(tool)
    ]
    if missing and not (missing == ["docker.io"] and works("docker", "info")):
        say(f"installing {', '.join(missing)} from Debian")
        apt_install(*missing)


def ensure_engine() -> None:
    if works("docker", "info"):
        figures["engine"] = "Docker " + output("docker", "version", "--format", "{{.Server.Version}}")
        return
    if not works("docker", "info"):
        say("starting dockerd")
        log = open(CACHE / "dockerd.log", "ab")  # noqa: SIM115 - the daemon keeps it
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not works("docker", "info"):
            if time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not answer within 60 s; see {CACHE / 'dockerd.log'}")
            time.sleep(1)
    figures["engine"] = "Docker " + output("docker", "version", "--format", "{{.Server.Version}}") + " (started)"


def compose_version() -> tuple[int, ...]:
    try:
        text = output("docker", "compose", "version", "--short")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return ()
    return tuple(int(p) for p in text.lstrip("v").split("-")[0].split(".")[:3] if p.isdigit())


def ensure_compose() -> None:
    """Compose v2.24+ (`!reset`): Debian trixie's docker-compose, a static binary, where missing."""
    if compose_version() >= (2, 24):
        figures["compose"] = ".".join(map(str, compose_version()))
        return
    say("installing Compose v2 from Debian trixie's docker-compose package")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sources.list").write_text(f"deb {DEBIAN_MIRROR} trixie main\n")
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "cache" / "archives" / "partial").mkdir(parents=True)
        options = [
            f"-oDir::Etc::SourceList={work / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={work / 'lists'}",
            f"-oDir::Cache={work / 'cache'}",
            "-oAPT::Sandbox::User=root",
        ]
        run("apt-get", *options, "update", "-qq")
        run("apt-get", *options, "download", "docker-compose", cwd=work)
        [deb] = work.glob("docker-compose_*.deb")
        run("dpkg-deb", "-x", str(deb), str(work / "x"))
        plugins = Path("/usr/local/lib/docker/cli-plugins")
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "x/usr/libexec/docker/cli-plugins/docker-compose", plugins / "docker-compose")
    if compose_version() < (2, 24):
        raise SystemExit(f"Compose {compose_version()} is older than 2.24")
    figures["compose"] = ".".join(map(str, compose_version()))


# --- 2. the base image -------------------------------------------------------------------------


class BaseImage:
    """Debian bookworm (python3 is 3.11) by debootstrap, imported: no registry needed. debootstrap
    runs in the background (`start`) while Compose and the wheelhouse are fetched; `finish` imports."""

    def __init__(self) -> None:
        self.present = works("docker", "image", "inspect", BASE_IMAGE)
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.present:
            say(f"base image {BASE_IMAGE}: present")
            return
        self.started = time.monotonic()
        self.tmp = tempfile.TemporaryDirectory(dir=CACHE)
        self.rootfs = Path(self.tmp.name) / "rootfs"
        self.log = CACHE / "debootstrap.log"
        say(f"debootstrap bookworm ({BASE_PACKAGES}) from {DEBIAN_MIRROR}, in the background")
        argv = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(self.rootfs)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([*argv, DEBIAN_MIRROR], stdout=log, stderr=subprocess.STDOUT)

    def finish(self) -> None:
        if self.process is None or self.tmp is None:
            return
        if self.process.wait() != 0:
            raise SystemExit(f"debootstrap failed; see {self.log}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            for entry in (self.rootfs / junk).glob("*"):
                if entry.is_symlink() or entry.is_file():
                    entry.unlink()
                elif entry.is_dir() and entry.name != "partial":
                    shutil.rmtree(entry)
        tar = subprocess.Popen(["tar", "-C", str(self.rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("docker", "import", "-", BASE_IMAGE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the debootstrap tree failed")
        self.tmp.cleanup()
        figures["base image"] = f"{BASE_IMAGE}, made in {time.monotonic() - self.started:.0f} s (debootstrap)"


# --- 3. the wheelhouse -------------------------------------------------------------------------


def ensure_wheelhouse() -> Path:
    """Every locked wheel, downloaded (hash-checked) by the host's pip into the cache."""
    wheelhouse = CACHE / "wheels"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    download = [sys.executable, "-m", "pip", "download", "-qq", "--disable-pip-version-check"]
    download += ["--only-binary=:all:", "-d", str(wheelhouse)]
    run(*download, "--no-deps", *[arg for lock in LOCKS for arg in ("-r", str(ROOT / lock))])
    run(*download, *BUILD_TOOLS)
    size = sum(f.stat().st_size for f in wheelhouse.iterdir())
    figures["wheelhouse"] = (
        f"{size / 1e9:.2f} GB, {len(list(wheelhouse.iterdir()))} files ({time.monotonic() - start:.0f} s)"
    )
    return wheelhouse


#: the wheelhouse's port: fixed, since its URL is a build arg, hence part of every cached layer's key
WHEELS_PORT = int(os.environ.get("VC_E2E_WHEELS_PORT", "38765"))


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """The wheelhouse as a find-links page on 127.0.0.1 (the builds run with the host's network)."""
    port = WHEELS_PORT
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"127.0.0.1:{port} is taken: set VC_E2E_WHEELS_PORT to a free port")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2).close()
                break
            if time.monotonic() > deadline:
                raise SystemExit("the wheelhouse server did not start")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(10)


# --- 4. the images ---------------------------------------------------------------------------


def build_command(tag: str, wheels_url: str) -> list[str]:
    dockerfile, target = IMAGES[tag]
    args = {"PYTHON_IMAGE": BASE_IMAGE, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels_url}
    argv = ["docker", "build", "--network", "host", "-f", dockerfile, "-t", tag]
    if target is not None:
        args |= MODEL_BUILD_ARGS
        argv += ["--target", target]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, "."]


def build_images(wheels_url: str) -> None:
    """Mask R-CNN's image and the gateway's side by side (the first is mostly unpacking wheels),
    then SAM-CLIP's, which shares every layer but the last with Mask R-CNN's."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: works with no buildx and no registry
    total = time.monotonic()
    for batch in (list(IMAGES)[:2], list(IMAGES)[2:]):
        running = {}
        for tag in batch:
            say(f"building {tag}")
            log = CACHE / f"build-{tag.split('/')[1].split(':')[0]}.log"
            out = open(log, "w")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                build_command(tag, wheels_url), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            running[tag] = (process, out, log, time.monotonic())
        while running:
            for tag, (process, out, log, start) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                out.close()
                del running[tag]
                if code:
                    sys.stdout.write(log.read_text()[-6000:])
                    raise SystemExit(f"building {tag} failed; the log: {log}")
                figures[f"build {tag}"] = f"{time.monotonic() - start:.0f} s"
            time.sleep(0.5)
    figures["build time"] = f"{time.monotonic() - total:.0f} s (all three images)"
    # earlier builds' untagged stages (the tagged images keep their dependency layers, the cache)
    run("docker", "image", "prune", "--force", stdout=subprocess.DEVNULL)
    for tag in IMAGES:
        size = int(output("docker", "image", "inspect", "-f", "{{.Size}}", tag))
        figures[f"image {tag}"] = f"{size / 1e9:.2f} GB"
    image_costs()


#: what PyPI's CUDA torch brings that PyTorch's CPU build does not (the CPU image: TORCH_INDEX_URL)
CUDA_ONLY = ("nvidia", "triton", "cuda", "cuda_bindings", "cuda_pathfinder", "cuda_toolkit")
#: torch's CPU build installed (2.13.0+cpu measured; 2.14.1+cpu is not reachable from here)
TORCH_CPU_GB = 0.70


def image_costs() -> None:
    """The model image's largest parts, and what the CPU image would weigh without them."""
    site = "/opt/venv/lib/python3.11/site-packages"
    image = next(iter(IMAGES))
    listing = output(
        "docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image,
        "-c", f"cd {site} && du -s -k -- * | sort -n -r",
    )  # fmt: skip
    sizes = {line.split("\t", 1)[1]: int(line.split("\t", 1)[0]) * 1024 / 1e9 for line in listing.splitlines()}
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    figures["model image's largest parts"] = ", ".join(f"{k} {v:.2f} GB" for k, v in top)
    total = int(output("docker", "image", "inspect", "-f", "{{.Size}}", image)) / 1e9
    cuda = sum(sizes.get(k, 0.0) for k in CUDA_ONLY)
    cpu = total - cuda - sizes.get("torch", 0.0) + TORCH_CPU_GB
    figures["CPU image (TORCH_INDEX_URL=.../whl/cpu), estimated"] = (
        f"{cpu:.2f} GB (without {cuda:.2f} GB of CUDA libraries; torch {TORCH_CPU_GB:.2f} GB instead of "
        f"{sizes.get('torch', 0.0):.2f} GB)"
    )


# --- 5-8. the stack ----------------------------------------------------------------------------


def compose(*argv: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    files = [a for f in COMPOSE_FILES for a in ("-f", f)]
    return run(
        "docker",
        "compose",
        "-p",
        PROJECT,
        "--env-file",
        ENV_FILE,
        *files,
        *argv,
        check=check,
        capture=capture,
        cwd=ROOT,
    )


def container(service: str) -> str:
    cid = compose("ps", "-a", "-q", service, capture=True).stdout.strip()
    if not cid:
        raise RuntimeError(f"no container for {service}")
    return cid


def state(service: str) -> dict[str, Any]:
    return dict(json.loads(output("docker", "inspect", "-f", "{{json .State}}", container(service))))


def wait_healthy(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, subprocess.CalledProcessError):
            if state("gateway").get("Health", {}).get("Status") == "healthy":
                return
        time.sleep(1)
    raise RuntimeError(f"the gateway was not healthy within {timeout:.0f} s")


def compare_grpc(timeout: float = 120) -> tuple[dict[str, int], float]:
    """One Compare over gRPC: {model: status code}, seconds."""
    request = cs.CompareRequest(image=pb.Image(encoded=SCENE.read_bytes()), task=pb.TASK_INSTANCE_SEGMENTATION)
    with grpc.insecure_channel(GRPC_ADDRESS) as channel:
        start = time.perf_counter()
        response = cs_grpc.ComparisonServiceStub(channel).Compare(request, timeout=timeout)
        took = time.perf_counter() - start
    return {r.model_name: r.status.code for r in response.results}, took


def compare_http(timeout: float = 120) -> tuple[dict[str, int], float]:
    body = json.dumps({"image_base64": base64.b64encode(SCENE.read_bytes()).decode(), "task": "instance-segmentation"})
    request = urllib.request.Request(f"{HTTP_BASE}/v1/compare", body.encode(), {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        results = json.load(answer)["results"]
    took = time.perf_counter() - start
    return {r["model_name"]: int(r.get("status", {}).get("code", 0)) for r in results}, took


def all_ok(statuses: dict[str, int]) -> bool:
    return set(statuses) == set(MODELS) and not any(statuses.values())


def check_docs() -> None:
    """/docs and the assets it names, all from the gateway (nothing from a CDN)."""
    import re

    with urllib.request.urlopen(f"{HTTP_BASE}/docs", timeout=30) as answer:
        html = answer.read().decode()
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    outside = [a for a in assets if re.match(r"(https?:)?//", a)]
    if not assets or outside:
        raise RuntimeError(f"/docs names {assets}: outside the gateway: {outside}")
    for asset in assets:
        with urllib.request.urlopen(HTTP_BASE + asset, timeout=30) as answer:
            if answer.status != 200 or not answer.read():
                raise RuntimeError(f"/docs asset {asset}: HTTP {answer.status}")


def wait_for(what: str, condition: Any, timeout: float, every: float = 0.5) -> float:
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        try:
            last = condition()
            if last:
                return time.monotonic() - start
        except (grpc.RpcError, OSError) as exc:
            last = exc
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s (last: {last})")


def reported() -> bool:
    """The gateway answers for the others and reports the killed model UNAVAILABLE."""
    statuses, _ = compare_grpc(60)
    others_ok = all(statuses.get(m) == 0 for m in MODELS if m != KILLED)
    return statuses.get(KILLED) == grpc.StatusCode.UNAVAILABLE.value[0] and others_ok


def kill_and_rejoin() -> None:
    """A crash (its process killed from the host): its restart policy brings it back. Then
    `docker kill`: the engine counts that as stopped by hand (no restart), so `docker start`."""
    restarts = int(output("docker", "inspect", "-f", "{{.RestartCount}}", container(KILLED)))
    os.kill(int(state(KILLED)["Pid"]), signal.SIGKILL)
    crashed_at = time.monotonic()
    seen = wait_for("reported", reported, 60, 0.1)
    wait_for(
        "restart", lambda: int(output("docker", "inspect", "-f", "{{.RestartCount}}", container(KILLED))) > restarts, 60
    )
    wait_for("rejoin", lambda: all_ok(compare_grpc(60)[0]), 180)
    back = time.monotonic() - crashed_at
    figures[f"{KILLED} crashed (SIGKILL)"] = (
        f"reported after {seen:.1f} s; restarted by its policy, rejoined after {back:.1f} s"
    )
    run("docker", "kill", container(KILLED), stdout=subprocess.DEVNULL)
    seen = wait_for("reported", reported, 60, 0.1)
    time.sleep(2)
    how = "restarted by its policy"
    if not state(KILLED).get("Running"):  # Docker counts `docker kill` as stopped by hand
        run("docker", "start", container(KILLED), stdout=subprocess.DEVNULL)
        how = "stayed down; docker start"
    started = time.monotonic()
    wait_for("rejoin", lambda: all_ok(compare_grpc(60)[0]), 180)
    back = time.monotonic() - started
    figures[f"{KILLED} docker kill"] = f"reported after {seen:.1f} s; {how}; rejoined {back:.1f} s after"


def check_ports_free() -> None:
    for port in PUBLISHED_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"127.0.0.1:{port} is taken: the stack publishes the gateway there")


def run_stack(keep: bool) -> None:
    check_ports_free()
    compose("down", "-v", "--remove-orphans", check=False, capture=True)
    start = time.monotonic()
    try:
        compose("up", "-d", "--no-build", "--pull", "never", "--quiet-pull")
        wait_healthy(600)
        figures["time to healthy"] = f"{time.monotonic() - start:.0f} s (empty models volume: exports included)"
        statuses, first = compare_grpc()
        if not all_ok(statuses):
            raise RuntimeError(f"Compare over gRPC: {statuses}")
        statuses, grpc_s = compare_grpc()
        http_statuses, http_s = compare_http()
        if not all_ok(http_statuses):
            raise RuntimeError(f"Compare over HTTP: {http_statuses}")
        figures["Compare latency (instance segmentation, 3 models, CPU)"] = (
            f"gRPC {grpc_s * 1000:.0f} ms (first call {first * 1000:.0f} ms), HTTP {http_s * 1000:.0f} ms"
        )
        check_docs()
        figures["/docs"] = "Swagger UI and its assets served by the gateway"
        kill_and_rejoin()
        start_stop = time.monotonic()
        compose("stop", KILLED, capture=True)
        figures[f"docker compose stop {KILLED}"] = (
            f"{time.monotonic() - start_stop:.1f} s (drain grace 20 s; the gateway's health watch holds none of it)"
        )
    except Exception:
        compose("ps", "-a", check=False)
        compose("logs", "--tail", "40", check=False)
        if not keep:
            compose("down", "-v", check=False)
        raise
    if not keep:
        start = time.monotonic()
        compose("down", "-v")
        figures["down"] = f"{time.monotonic() - start:.0f} s"
        leftovers = output("docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}")
        if leftovers:
            raise RuntimeError(f"containers left after down: {leftovers}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("compose-e2e installs and starts the Docker engine: run it as root")
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    ensure_engine()
    base = BaseImage()
    base.start()
    ensure_compose()
    wheelhouse = None if args.no_build else ensure_wheelhouse()
    base.finish()
    figures["set-up (engine, Compose, base image, wheelhouse)"] = f"{time.monotonic() - started:.0f} s"
    if wheelhouse is not None:
        with serving(wheelhouse) as url:
            build_images(url)
    run_stack(args.keep)
    figures["total"] = f"{time.monotonic() - started:.0f} s"
    say("PASS")
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
