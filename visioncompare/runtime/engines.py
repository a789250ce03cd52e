"""ONNX Runtime as an inference engine: execution providers without silent fallback,
threads that leave torch alone, and exported graphs cached under the weights' SHA-256.

A model service with `engine=onnxruntime` exports its networks to ONNX once, from the
weights it is configured with, into `cache_dir/onnx/<SHA-256 of the weights>/`, each
file beside a manifest holding the file's own SHA-256 (checked every time it is loaded)
and what it was exported from. `cached_export` does that; `OrtRunner.session` opens one
file with the providers `plan_providers` chose, and fails unless ONNX Runtime really runs
on them (it quietly falls back to CPU when, say, the CUDA libraries do not match).

Nothing here imports onnxruntime or torch until it is called: the runtime has no model
dependencies. Every import of onnxruntime goes through `onnxruntime_module`, which turns ONNX
Runtime's telemetry off first (ORT_DISABLE_TELEMETRY=1 for the process and its children, then
`disable_telemetry_events()`): a model service never calls home, whatever its environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.weights import sha256_of

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ONNX_SUBDIR = "onnx"
#: Where services register their ONNX export: a function (cache_dir: Path | None, *, skip_torch: bool)
#: -> list[ExportedFile] that exports (or verifies) the files of the networks its settings configure;
#: with skip_torch, it raises ExportSkipped where those settings run torch.
ENTRY_POINT_GROUP = "visioncompare.onnx"
MANIFEST_VERSION = 1
#: ONNX Runtime reads it when it starts: 1 turns its telemetry off (the images, compose, the
#: Kubernetes settings and the test run set it too; `onnxruntime_module` sets it regardless).
TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def onnxruntime_module() -> Any:
    """`import onnxruntime`, with its telemetry off: ORT_DISABLE_TELEMETRY=1 in this process's
    environment (before the first import; child processes inherit it) and telemetry events
    disabled. Every use of onnxruntime in the runtime comes through here."""
    os.environ[TELEMETRY_ENV] = "1"
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort


# --- providers and sessions ------------------------------------------------------


@dataclass(frozen=True)
class ProviderPlan:
    """The execution providers asked of ONNX Runtime, best first, for one device."""

    device: str  # "cpu" or "cuda:N", as the torch side runs
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, str], ...]
    allow_fallback: bool

    @property
    def device_id(self) -> int:
        return int(self.device.partition(":")[2] or 0) if self.device.startswith("cuda") else 0


def plan_providers(
    device: str, *, tensorrt: bool = False, allow_fallback: bool = False, available: list[str] | None = None
) -> tuple[ProviderPlan, tuple[str, ...]]:
    """The providers for a resolved torch device ("cpu", "cuda", "cuda:N"), and warnings.

    CUDA needs the `onnxruntime-gpu` package: with plain `onnxruntime` installed, a CUDA
    device is a configuration error (or, with `allow_fallback`, CPU and a warning).
    """
    ort = onnxruntime_module()
    have = list(ort.get_available_providers() if available is None else available)
    warnings: list[str] = []
    if device.startswith("cuda"):
        device = device if ":" in device else "cuda:0"
        device_id = device.partition(":")[2]
        if CUDA not in have:
            message = (
                f"device={device} with engine=onnxruntime needs the CUDA execution provider, which this "
                f"onnxruntime ({ort.__version__}, providers: {', '.join(have)}) lacks: install onnxruntime-gpu "
                "instead of onnxruntime, or use engine=torch"
            )
            if not allow_fallback:
                raise ConfigurationError(message)
            warnings.append(f"{message}; running ONNX Runtime on CPU (onnx_allow_provider_fallback)")
            return ProviderPlan("cpu", (CPU,), ({},), allow_fallback), tuple(warnings)
        providers: list[str] = [CUDA, CPU]
        options: list[dict[str, str]] = [{"device_id": device_id}, {}]
        if tensorrt:
            if TENSORRT not in have:
                raise ConfigurationError(
                    f"onnx_tensorrt=true but this onnxruntime has no TensorRT execution provider ({', '.join(have)})"
                )
            providers.insert(0, TENSORRT)
            options.insert(0, {"device_id": device_id})
        return ProviderPlan(device, tuple(providers), tuple(options), allow_fallback), ()
    return ProviderPlan("cpu", (CPU,), ({},), allow_fallback), ()


def check_providers(asked: tuple[str, ...], got: list[str], what: str) -> str | None:
    """None if ONNX Runtime runs on every provider asked for; else what went missing."""
    missing = [p for p in asked if p not in got]
    if not missing:
        return None
    return (
        f"ONNX Runtime could not load {', '.join(missing)} for {what} and runs on {', '.join(got)} instead "
        "(are the CUDA/cuDNN libraries the ones this onnxruntime-gpu was built for?)"
    )


def session_options(threads: int) -> onnxruntime.SessionOptions:
    """Sequential execution on `threads` intra-op threads that sleep when idle.

    ONNX Runtime's pool spins between runs by default: in a process where torch also
    computes (the parts of a model that stay in torch), spinning threads would take the
    cores torch needs.
    """
    ort = onnxruntime_module()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    return so


class OrtRunner:
    """Opens ONNX Runtime sessions for one model service and says how they run.

    `warnings` collects what every answer must carry (a provider fallback that the
    settings allowed); anything else that does not match the plan raises
    ConfigurationError at start-up.
    """

    def __init__(self, plan: ProviderPlan, threads: int, warnings: tuple[str, ...] = ()) -> None:
        self.plan = plan
        self.threads = threads
        self.warnings: list[str] = list(warnings)

    def session(self, path: Path, what: str) -> onnxruntime.InferenceSession:
        ort = onnxruntime_module()
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options(self.threads),
            providers=list(zip(self.plan.providers, self.plan.provider_options, strict=True)),
        )
        problem = check_providers(self.plan.providers, session.get_providers(), what)
        if problem:
            if not self.plan.allow_fallback:
                raise ConfigurationError(
                    f"{problem}; set onnx_allow_provider_fallback=true to run anyway, or use engine=torch"
                )
            if problem not in self.warnings:
                self.warnings.append(problem)
                log.warning("%s", problem)
        return session

    @property
    def providers(self) -> str:
        return "+".join(p.removesuffix("ExecutionProvider") for p in self.plan.providers)


def ort_runner(device: str, settings: Any, torch_threads: int) -> OrtRunner:
    """An OrtRunner from a ModelServerSettings (`onnx_*` fields) and the torch device."""
    plan, warnings = plan_providers(
        device, tensorrt=settings.onnx_tensorrt, allow_fallback=settings.onnx_allow_provider_fallback
    )
    return OrtRunner(plan, settings.onnx_threads or max(1, torch_threads), warnings)


def fp32_plan(plan: Any, precision: str) -> Any:
    """A torch DevicePlan for a service running ONNX Runtime: the exports are fp32, so a
    precision other than fp32 runs fp32, and every answer says so."""
    from dataclasses import replace

    if plan.precision == "fp32":
        return plan
    warning = f"precision={precision} needs engine=torch: ONNX Runtime runs the fp32 export"
    return replace(plan, precision="fp32", warnings=(*plan.warnings, warning))


def ort_version() -> str:
    return str(onnxruntime_module().__version__)


# --- exporting ---------------------------------------------------------------------

#: The ONNX opset exports are written at.
OPSET = 17


def torch_export(
    module: Any,
    inputs: tuple[Any, ...],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = OPSET,
) -> None:
    """torch.onnx's TorchScript-based exporter (`dynamo=False`): the path torchvision's
    detection models and segment_anything's ONNX example export on; it needs no onnxscript."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def ort_inputs(session: Any, *tensors: Any) -> dict[str, Any]:
    """A session's feed from torch tensors, in its input order (host memory, float32 kept)."""
    import numpy as np

    return {
        i.name: np.ascontiguousarray(t.detach().cpu().numpy())
        for i, t in zip(session.get_inputs(), tensors, strict=True)
    }


# --- the export cache --------------------------------------------------------------


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (for weights that have no
    file, e.g. seeded random ones)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_sha256(path: Path | None, state_dict: Mapping[str, Any] | None = None) -> str:
    """The key exports are cached under: the weight file's SHA-256, else the state dict's."""
    if path is not None:
        return sha256_of(path)
    if state_dict is None:
        raise ValueError("weights_sha256 needs a file or a state dict")
    return state_dict_sha256(state_dict)


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    sha256: str
    exported: bool  # False: found in the cache and verified
    seconds: float


def _config_digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def export_path(cache_dir: Path, weights_digest: str, name: str, config: Mapping[str, Any]) -> Path:
    """Where `name` exported from weights `weights_digest` with `config` is cached."""
    return Path(cache_dir) / ONNX_SUBDIR / weights_digest / f"{name}-{_config_digest(config)}.onnx"


def temp_cache_dir() -> Path:
    """Where exports go when the service's cache_dir cannot be written."""
    return Path(tempfile.gettempdir()) / "visioncompare"


def _writable(directory: Path) -> bool:
    """Whether `directory` exists or can be made, and files can be created in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _verified(path: Path, weights_digest: str) -> str | None:
    """The file's SHA-256 if it and its manifest agree; None if either is missing or altered."""
    manifest = path.with_suffix(".json")
    if not path.is_file() or not manifest.is_file():
        return None
    try:
        card = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    digest = sha256_of(path)
    if card.get("sha256") != digest or card.get("weights_sha256") != weights_digest:
        return None
    return digest


def cached_export(
    cache_dir: Path,
    weights_digest: str,
    name: str,
    config: Mapping[str, Any],
    export: Callable[[Path], None],
    *,
    service: str = "",
) -> ExportedFile:
    """The ONNX file of `name` for these weights and this export config, verified.

    A cached file is used only if its SHA-256 matches its manifest's and the manifest names
    these weights; otherwise (missing, or altered) `export(tmp_path)` writes it again, into a
    temporary file moved into place with its manifest once complete, and the log says so.
    Where `cache_dir` cannot be written (a weights volume mounted read-only), the file is
    exported under the temporary directory instead (`temp_cache_dir()`), with a warning:
    `export-onnx` run where the cache is writable keeps it across restarts.
    """
    path = export_path(cache_dir, weights_digest, name, config)
    fallback = export_path(temp_cache_dir(), weights_digest, name, config)
    start = time.perf_counter()
    who = service or name
    for candidate in (path, fallback):
        digest = _verified(candidate, weights_digest)
        if digest is not None:
            log.info("%s: ONNX file %s verified (SHA-256 %s...)", who, candidate, digest[:12])
            return ExportedFile(candidate, digest, False, time.perf_counter() - start)
    if path.exists():
        log.warning("%s: %s does not match its manifest: exporting it again", who, path)
    if not _writable(path.parent):
        log.warning(
            "%s: the ONNX cache %s cannot be written (a read-only weights volume?): exporting %s to %s, "
            "which lasts only as long as that directory; run `export-onnx` where %s is writable to keep it",
            who, path.parent, name, fallback.parent, cache_dir,
        )  # fmt: skip
        path = fallback
    log.info(
        "%s: no ONNX file for %s of weights %s... in %s: exporting it (once; later starts load the cached file)",
        who, name, weights_digest[:12], path.parent,
    )  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the ONNX cache {path.parent}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export(tmp)
        digest = sha256_of(tmp)
        card = {
            "manifest_version": MANIFEST_VERSION,
            "name": name,
            "sha256": digest,
            "weights_sha256": weights_digest,
            "config": dict(config),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest_tmp = tmp.with_suffix(".json")
        manifest_tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
        os.replace(manifest_tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".json").unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log.info("%s: exported %s to %s in %.1f s (SHA-256 %s...)", who, name, path, seconds, digest[:12])
    return ExportedFile(path, digest, True, seconds)


# --- the command ---------------------------------------------------------------------


class ExportSkipped(Exception):
    """Raised by a service's exporter under `export-onnx --skip-torch` when its settings run
    torch (engine=torch, or engine=auto resolving to torch on its device): nothing to export."""


def skip_unless_onnxruntime(settings: Any) -> None:
    """ExportSkipped unless `settings` (a ModelServerSettings) run ONNX Runtime on their device,
    resolved as the service resolves it at start (device=auto: CUDA if this process sees one)."""
    from visioncompare.runtime.device import plan_device

    device = plan_device(settings.device, settings.precision).device.type
    engine = settings.resolved_engine(device)
    if engine != "onnxruntime":
        raise ExportSkipped(f"engine={settings.engine} runs {engine} on {device}: nothing to export")


def exporters() -> dict[str, Callable[..., list[ExportedFile]]]:
    """The services' exporters, by name, as registered under ENTRY_POINT_GROUP."""
    found: dict[str, Callable[..., list[ExportedFile]]] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        found.setdefault(ep.name, ep.load())
    return found


def export_main(argv: Sequence[str] | None = None) -> int:
    """Console script `export-onnx`: export each service's networks to ONNX from the weights its
    settings (environment variables, e.g. MASKRCNN_WEIGHTS) name, into its cache directory
    (cache_dir/onnx/<SHA-256 of the weights>/), or verify the files already there. With
    --skip-torch (the deployments' one-shot step, run with the service's own environment), a
    service whose settings run torch on this machine's device is skipped."""
    found = exporters()
    parser = argparse.ArgumentParser(prog="export-onnx", description=export_main.__doc__)
    parser.add_argument("services", nargs="*", help=f"any of {sorted(found)}; default: all")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: each service's cache_dir setting")
    parser.add_argument(
        "--skip-torch",
        action="store_true",
        help="skip a service whose settings run torch (engine=torch, or auto resolving to torch on its device)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not found:
        parser.error(f"no service registers an ONNX export (entry-point group {ENTRY_POINT_GROUP!r}); pip install -e .")
    unknown = sorted(set(args.services) - set(found))
    if unknown:
        parser.error(f"unknown service(s) {unknown}; choose from {sorted(found)}")
    failed = 0
    for name in args.services or sorted(found):
        try:
            files = found[name](args.cache_dir, skip_torch=args.skip_torch)
        except ExportSkipped as exc:
            print(f"{name}\tskipped: {exc}")
            continue
        except (ConfigurationError, ValueError, OSError) as exc:
            print(f"export-onnx: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        for f in files:
            what = f"exported in {f.seconds:.1f} s" if f.exported else "cached, verified"
            size = f.path.stat().st_size / 1e6
            print(f"{name}\t{f.path}\t{size:.1f} MB\tsha256 {f.sha256[:16]}\t{what}")
    return 1 if failed else 0
