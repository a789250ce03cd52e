"""The shipped shapes reference weights: where they are, their model cards and checksums.

A card is `<weights>.json` beside the weights: what they are, how they were trained, their
held-out metrics and their SHA-256. The lab writes them (`shapes.stages`); this leaf only
reads them."""

from __future__ import annotations

import json
from pathlib import Path

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.weights import Weights

WEIGHTS_DIR = Path(__file__).parent / "weights"
DESCRIPTION = "shapes reference weights, synthetic data"


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
    weights = shipped(stem, stem, "Restore visioncompare/shapes_models/weights/ from the repository.")
    weights.check(stem)
    assert weights.path is not None
    return weights.path
