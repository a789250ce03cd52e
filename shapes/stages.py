"""Training I/O of the shapes lab: the model card written beside each stage's weights, and
the weights (and card) a training run continues from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visioncompare.runtime.weights import load_state_dict, sha256_of


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
    card_file = path.with_suffix(".json")
    previous = json.loads(card_file.read_text()) if card_file.exists() else None
    return dict(load_state_dict(path, "the stage's")), previous
