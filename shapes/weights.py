"""The shipped shapes reference weights: where they are, their model cards and checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"
DESCRIPTION = "shapes reference weights, synthetic data"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_card(weights: Path, **card: Any) -> Path:
    """Write `<weights>.json` beside the weights: what, how, metrics and the SHA-256."""
    out = weights.with_suffix(".json")
    out.write_text(json.dumps({"file": weights.name, "sha256": sha256_of(weights), **card}, indent=2) + "\n")
    return out


def card(name: str) -> dict[str, Any]:
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def verified_path(name: str, suffix: str = ".pth") -> Path:
    """The path of shipped weights `name`, after checking the SHA-256 in its model card."""
    path = WEIGHTS_DIR / f"{name}{suffix}"
    expected = card(name)["sha256"]
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"{path}: SHA-256 {actual} does not match its model card ({expected})")
    return path
