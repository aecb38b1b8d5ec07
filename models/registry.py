"""Model families by name, as the config's `model.family` selects them."""

from __future__ import annotations

from collections.abc import Callable

from models import mlp

BUILDERS: dict[str, Callable] = {"mlp": mlp.build_model}


def builder(family: str) -> Callable:
    """Returns `build_model(hparams, spec, vocab_sizes, num_classes)` for a family."""
    if family not in BUILDERS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[family]
