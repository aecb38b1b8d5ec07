"""Model families by name, as the config's `model.family` selects them."""

from __future__ import annotations

from collections.abc import Callable

from models import cnn, mlp, sequence

BUILDERS: dict[str, Callable] = {
    "mlp": mlp.build_model,
    "cnn": cnn.build_model,
    "sequence": sequence.build_model,
}

# The hyperparameters each family's build_model reads, in search order: the tuner
# gets exactly these from the config's search space.
SEARCH_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": mlp.HPARAMS,
    "cnn": cnn.HPARAMS,
    "sequence": sequence.HPARAMS,
}

# Hyperparameters read only for some values of another (key -> (parent, values)): the
# tuner leaves out or conditions them (models/search_space.py).
CONDITIONS: dict[str, dict[str, tuple[str, tuple]]] = {
    "mlp": {},
    "cnn": {},
    "sequence": sequence.CONDITIONS,
}

# The hyperparameters a backbone fixes (transfer learning): the tuner leaves them out.
BACKBONE_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": (),
    "cnn": cnn.ENCODER_HPARAMS,
    "sequence": (),
}


def builder(family: str) -> Callable:
    """Returns `build_model(hparams, spec, vocab_sizes, num_classes, **keywords)` for a family.

    Every family takes the keywords `steps_per_epoch` and `epochs` (a decaying learning
    rate needs them); cnn also takes `backbone`.
    """
    if family not in BUILDERS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[family]
