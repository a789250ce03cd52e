"""The synthetic "shapes" world: a scene generator and the reference models trained on it."""
