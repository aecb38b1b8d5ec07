"""The tuner's search space as keras_tuner HyperParameters, built from a plain dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras_tuner

_SCALARS = (bool, int, float, str)


def hyperparameters(space: Mapping[str, Any]) -> keras_tuner.HyperParameters:
    """Declares the search space, one entry per key in the dict's order.

    Args:
      space: hyperparameter name to one of
        - `{"min", "max", "step"}` (ints): an integer range, `hp.Int`;
        - `{"min", "max", "sampling"}` (floats; sampling "linear" or "log"): a float
          range, `hp.Float`, or `hp.Fixed` when min == max;
        - a list of values of one type (str, int, float or bool): `hp.Choice`; a list
          of booleans is `hp.Boolean` (keras_tuner's Choice would store them as 0/1),
          or `hp.Fixed` when it holds one value;
        - a scalar (bool, int, float, str): `hp.Fixed`.

    Returns:
      HyperParameters holding one entry per key.

    Raises:
      ValueError: a value of none of these forms; the message names its key.
    """
    hp = keras_tuner.HyperParameters()
    for key, value in space.items():
        if isinstance(value, Mapping):
            _range(hp, key, value)
        elif isinstance(value, (list, tuple)):
            _choice(hp, key, list(value))
        elif isinstance(value, _SCALARS):
            hp.Fixed(key, value)
        else:
            raise ValueError(
                f"search space {key!r}: expected a range dict, a list or a scalar, got {value!r}"
            )
    return hp


def _range(hp: keras_tuner.HyperParameters, key: str, r: Mapping[str, Any]) -> None:
    keys = set(r)
    if keys == {"min", "max", "step"}:
        hp.Int(key, r["min"], r["max"], step=r["step"])
    elif keys == {"min", "max", "sampling"}:
        if r["min"] == r["max"]:
            hp.Fixed(key, r["min"])
        else:
            hp.Float(key, r["min"], r["max"], sampling=r["sampling"])
    else:
        raise ValueError(
            f"search space {key!r}: a range has keys min, max and step (ints) or min, max "
            f"and sampling (floats), got {sorted(keys)}"
        )


def _choice(hp: keras_tuner.HyperParameters, key: str, values: list) -> None:
    if not values:
        raise ValueError(f"search space {key!r}: an empty list has nothing to choose from")
    if all(isinstance(v, bool) for v in values):
        if len(set(values)) == 1:
            hp.Fixed(key, values[0])
        else:
            hp.Boolean(key, default=values[0])
        return
    hp.Choice(key, values)
