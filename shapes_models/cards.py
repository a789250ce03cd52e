"""The shipped shapes reference weights: where they are, their model cards and checksums.

A card is `<weights>.json` beside the weights: what they are, how they were trained, their
held-out metrics and their SHA-256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.runtime.weights import sha256_of

WEIGHTS_DIR = Path(__file__).parent / "weights"
DESCRIPTION = "shapes reference weights, synthetic data"


def write_card(weights: Path, *, continued_from: dict[str, Any] | None = None, **card: Any) -> Path:
    """Write `<weights>.json` beside the weights: what, how, metrics and the SHA-256; a
    continued training run nests the card of the stage it started from."""
    out = weights.with_suffix(".json")
    if continued_from:
        card["continued_from"] = continued_from
    out.write_text(json.dumps({"file": weights.name, "sha256": sha256_of(weights), **card}, indent=2) + "\n")
    return out


def load_stage(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The weights a training run continues from (a state dict, loaded weights_only) and
    their model card, when there is one beside them."""
    import torch

    card_file = path.with_suffix(".json")
    previous = json.loads(card_file.read_text()) if card_file.exists() else None
    return torch.load(path, map_location="cpu", weights_only=True), previous


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
