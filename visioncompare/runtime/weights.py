"""Weights, one system for every service: specs, resolved weights, verification, loading,
and the official files `fetch-weights` downloads into a local cache.

- A weights setting is a `WeightsSpec`: `scheme:value` (`file:/path`, `torchvision:COCO_V1`)
  or a bare name (`random`, `shapes`, `official`, an open_clip tag). Each service keeps a
  table of resolvers by scheme (what its networks can load) and resolves a spec through it.
- A resolver returns `Weights`: what to load (a file, or none for random init), its label for
  Capabilities, the SHA-256 it must have, what every answer says of it, its model card (Mask
  R-CNN's return its ResolvedWeights, the loaded state dict, built on the same parts).
- `Weights.check` verifies the file (`verify_sha256`, the one SHA-256 check at start-up);
  `load_state_dict` is the services' one `torch.load`, with `weights_only=True` (open_clip's
  own loader reads CLIP files, also with `weights_only=True`: samclip's `load_clip_state`).
- Services never download at run time; they read the cache. `fetch-weights` fills it, for
  users with internet and for image builds, from what each service registers:

    fetch-weights --cache-dir /models maskrcnn samclip                   # every official file
    fetch-weights --cache-dir /models --from-settings maskrcnn           # what MASKRCNN_* name

  With --from-settings, only the files the service's settings (its environment, read as the
  service reads it) name: nothing for the shapes weights, which ship with the code, so a
  deployment on them starts with no network. The deployments fetch that way.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visioncompare.runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Where services register their downloadable files (see `registry`).
ENTRY_POINT_GROUP = "visioncompare.weights"
#: Where services register what their settings need (see `settings_registry`).
SETTINGS_ENTRY_POINT_GROUP = "visioncompare.weights.settings"


@dataclass(frozen=True)
class WeightFile:
    """One downloadable checkpoint. `subdir` is relative to the cache root."""

    name: str
    url: str
    sha256: str | None  # full hex digest; None: only `sha256_prefix` is known
    filename: str
    subdir: str = ""
    sha256_prefix: str | None = None  # torchvision names carry the first hex digits

    def path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / self.subdir / self.filename

    def matches(self, digest: str) -> bool:
        if self.sha256 is not None:
            return digest == self.sha256
        return self.sha256_prefix is not None and digest.startswith(self.sha256_prefix)


class ChecksumError(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights setting: `scheme:value`, or a bare name (`random`, an open_clip tag)."""

    scheme: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> WeightsSpec:
        scheme, _, value = text.strip().partition(":")
        return cls(scheme, value)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}" if self.value else self.scheme


@dataclass(frozen=True)
class Weights:
    """Resolved weights of one network: a file to load, or none for the (seeded) random init."""

    label: str  # shown in Capabilities, e.g. "segment-anything:sam_vit_b_01ec64.pth"
    path: Path | None
    pretrained: bool
    fetch_hint: str = ""  # how to get the file when it is missing
    sha256: str | None = None  # the digest the file must have (a model card's), checked by `check`
    note: str = ""  # what every answer says about these weights, e.g. "shapes reference weights, ..."
    card: dict[str, Any] | None = None  # the model card shipped beside the weights

    def check(self, what: str) -> None:
        """Fail at start-up, saying what to fetch, when the file is missing or not the expected one."""
        if self.path is None:
            return
        if not self.path.is_file():
            raise ConfigurationError(f"{what} weights not found: {self.path}. {self.fetch_hint}".strip())
        if self.sha256 is not None:
            verify_sha256(self.path, self.sha256, f"{what} weights", self.fetch_hint, source="the model card's")


def verify_sha256(path: Path, expected: str, what: str, hint: str = "", *, source: str = "the expected") -> None:
    """The one SHA-256 check of a weights file against the digest it must have (`source` says
    whose digest that is, e.g. "the model card's")."""
    actual = sha256_of(path)
    if actual != expected:
        raise ConfigurationError(
            f"{what} {path}: SHA-256 {actual} does not match {source} {expected}; "
            f"the file is damaged or was replaced. {hint}".strip()
        )


def load_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """`torch.load(weights_only=True)` of a state dict, unwrapping {"model": ...} training checkpoints
    (torchvision's reference scripts, segment-anything's); ConfigurationError for anything else."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling and zip errors alike: the file is unusable
        raise ConfigurationError(
            f"cannot load {what} weights from {path.name}: not a weights-only torch checkpoint (a state dict): {exc}"
        ) from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConfigurationError(
            f"cannot load {what} weights from {path.name}: it does not hold a state dict (a mapping of names to "
            "tensors); save one with torch.save(model.state_dict(), path)"
        )
    return loaded


def fetch(file: WeightFile, cache_dir: Path, *, timeout_s: float = 60.0) -> Path:
    """Download `file` into the cache unless a verified copy is there already.

    The download goes to a temporary file in the same directory and is moved into
    place only after its checksum matches, so a corrupt download is never cached.
    """
    dest = file.path(cache_dir)
    if file.sha256 is None and file.sha256_prefix is None:  # e.g. an open_clip tag on Hugging Face
        if dest.is_file():
            log.info("cached (no digest is known to verify it against): %s", dest)
            return dest
        raise ChecksumError(
            f"{file.name}: no SHA-256 is known for {file.url}, so its download cannot be verified; "
            f"download it into {dest} yourself"
        )
    if dest.is_file() and file.matches(sha256_of(dest)):
        log.info("cached and verified: %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.filename}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(file.url, timeout=timeout_s) as resp:
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if not file.matches(digest):
            expected = file.sha256 or f"{file.sha256_prefix}..."
            raise ChecksumError(
                f"{file.name}: SHA-256 of the download from {file.url} is {digest}, "
                f"expected {expected}; the file was discarded"
            )
        os.replace(tmp, dest)
        log.info("fetched %s -> %s", file.url, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def registry() -> dict[str, list[WeightFile]]:
    """Official files by service, as the services register them: each names its list of
    `WeightFile`s (or a function returning one) under the `ENTRY_POINT_GROUP` entry-point
    group of its distribution, e.g. in pyproject.toml

        [project.entry-points."visioncompare.weights"]
        myservice = "myservice.weights:WEIGHT_FILES"

    The runtime names no service: a new one registers itself. Loaded lazily, so the
    runtime has no model deps; services sorted by name.
    """
    found: dict[str, list[WeightFile]] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name in found:  # the same distribution seen twice on sys.path: the first wins
            continue
        files = ep.load()
        found[ep.name] = list(files() if callable(files) else files)
    return found


def settings_registry() -> dict[str, Callable[[], list[WeightFile]]]:
    """What each service's settings need, as the services register it: a function taking no
    argument that reads the service's settings from the environment (as the service does) and
    returns the official files they name (none for weights that ship with the code), under
    `SETTINGS_ENTRY_POINT_GROUP`, e.g.

        [project.entry-points."visioncompare.weights.settings"]
        myservice = "myservice.fetch:files_for_settings"
    """
    found: dict[str, Callable[[], list[WeightFile]]] = {}
    for ep in sorted(entry_points(group=SETTINGS_ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        found.setdefault(ep.name, ep.load())
    return found


def fetch_main(argv: Sequence[str] | None = None) -> int:
    """Console script `fetch-weights`."""
    files_by_service = registry()
    parser = argparse.ArgumentParser(
        prog="fetch-weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("services", nargs="*", help=f"any of {sorted(files_by_service)}; default: all")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("TORCH_HOME", "models")))
    parser.add_argument(
        "--from-settings",
        action="store_true",
        help="only the files each service's settings (its environment, e.g. MASKRCNN_*) name",
    )
    parser.add_argument("--only", action="append", default=[], help="file name(s) to fetch")
    parser.add_argument("--list", action="store_true", help="list files and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not files_by_service:
        parser.error(
            f"no service registers weight files (entry-point group {ENTRY_POINT_GROUP!r}); "
            "install the project first: pip install -e ."
        )
    unknown = sorted(set(args.services) - set(files_by_service))
    if unknown:
        parser.error(f"unknown service(s) {unknown}; choose from {sorted(files_by_service)}")
    services = args.services or sorted(files_by_service)
    if args.from_settings:
        needed = settings_registry()
        unregistered = [s for s in services if s not in needed]
        if unregistered:
            parser.error(
                f"{unregistered}: nothing registered in {SETTINGS_ENTRY_POINT_GROUP!r}; fetch without --from-settings"
            )
        chosen = []
        for service in services:
            try:
                named = needed[service]()
            except (ValueError, ConfigurationError) as exc:  # pydantic's ValidationError is a ValueError
                print(f"fetch-weights: {service}: its settings are invalid: {exc}", file=sys.stderr)
                return 2
            log.info("%s: its settings name %s", service, ", ".join(f.name for f in named) or "no file to fetch")
            chosen += named
    else:
        chosen = [f for s in services for f in files_by_service[s]]
    if args.only:
        chosen = [f for f in chosen if f.name in args.only]
    if args.list:
        for f in chosen:
            print(f"{f.name}\t{f.path(args.cache_dir)}\t{f.url}")
        return 0
    failed = 0
    for f in chosen:
        try:
            fetch(f, args.cache_dir)
        except (OSError, ChecksumError) as exc:
            print(f"fetch-weights: {f.name}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
