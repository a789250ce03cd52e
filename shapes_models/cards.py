"""The shipped shapes reference weights: where they are, their model cards and checksums.

A card is `<weights>.json` beside the weights: what they are, how they were trained, their
held-out metrics and their SHA-256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.runtime.errors import ConfigurationError
from services.runtime.weights import Weights, sha256_of

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


def shipped(stem: str, what: str, hint: str) -> Weights:
    """The shipped weights `stem` (in WEIGHTS_DIR) as the runtime's `Weights`: the file, the SHA-256
    its model card names (checked by `Weights.check`), the note every answer carries, the card.
    `hint` says how to get the file back; a missing or unreadable card is a ConfigurationError."""
    path, card_path = WEIGHTS_DIR / f"{stem}.pth", WEIGHTS_DIR / f"{stem}.json"
    try:
        card = json.loads(card_path.read_text())
        sha256 = str(card["sha256"])
    except FileNotFoundError:
        raise ConfigurationError(f"{what} shapes model card not found: {card_path}. {hint}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{what} shapes model card {card_path} is unreadable or has no sha256: {exc}") from exc
    return Weights(
        label=f"shapes:{path.name} ({DESCRIPTION})",
        path=path,
        pretrained=True,  # trained, on synthetic data: the note and the card say which
        fetch_hint=hint,
        sha256=sha256,
        note=DESCRIPTION,
        card=card,
    )


def verified_path(stem: str) -> Path:
    """The path of shipped weights `stem`, after checking the SHA-256 in its model card."""
    weights = shipped(stem, stem, "Restore shapes_models/weights/ from the repository.")
    weights.check(stem)
    assert weights.path is not None
    return weights.path
