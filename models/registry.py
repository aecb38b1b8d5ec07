"""Model families by name, as the config's `model.family` selects them."""

from __future__ import annotations

from collections.abc import Callable

from models import cnn, mlp

BUILDERS: dict[str, Callable] = {"mlp": mlp.build_model, "cnn": cnn.build_model}

# The hyperparameters each family's build_model reads, in search order: the tuner
# gets exactly these from the config's search space.
SEARCH_KEYS: dict[str, tuple[str, ...]] = {"mlp": mlp.HPARAMS, "cnn": cnn.HPARAMS}


def builder(family: str) -> Callable:
    """Returns `build_model(hparams, spec, vocab_sizes, num_classes)` for a family."""
    if family not in BUILDERS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[family]
