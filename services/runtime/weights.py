"""Official weight files: download into a local cache with SHA-256 verification.

Services never download at run time; they read the cache. `fetch-weights`
fills it, for users with internet and for image builds:

    fetch-weights --cache-dir /models maskrcnn samclip
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Where services register their downloadable files (see `registry`).
ENTRY_POINT_GROUP = "visioncompare.weights"


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


def fetch(file: WeightFile, cache_dir: Path, *, timeout_s: float = 60.0) -> Path:
    """Download `file` into the cache unless a verified copy is there already.

    The download goes to a temporary file in the same directory and is moved into
    place only after its checksum matches, so a corrupt download is never cached.
    """
    dest = file.path(cache_dir)
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


def fetch_main(argv: Sequence[str] | None = None) -> int:
    """Console script `fetch-weights`."""
    files_by_service = registry()
    parser = argparse.ArgumentParser(prog="fetch-weights", description=__doc__)
    parser.add_argument("services", nargs="*", help=f"any of {sorted(files_by_service)}; default: all")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("TORCH_HOME", "models")))
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
    chosen = [f for s in (args.services or files_by_service) for f in files_by_service[s]]
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
