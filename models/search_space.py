"""The tuner's search space as keras_tuner HyperParameters, built from a plain dict.

A model family may say that some of its hyperparameters matter only for some values of
another (the sequence family's `num_heads` only for `encoder: transformer`): given those
conditions, a key none of whose values the space can choose is left out, and one that
only some of the choices read is declared in keras_tuner's `conditional_scope`, so the
Bayesian search neither varies nor models it in trials that ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner

_SCALARS = (bool, int, float, str)


def hyperparameters(
    space: Mapping[str, Any],
    conditions: Mapping[str, tuple[str, Sequence[Any]]] | None = None,
) -> keras_tuner.HyperParameters:
    """Declares the search space, one entry per key in the dict's order, parents first.

    Args:
      space: hyperparameter name to one of
        - `{"min", "max", "step"}` (ints): an integer range, `hp.Int`, or `hp.Fixed`
          when min == max;
        - `{"min", "max", "sampling"}` (floats; sampling "linear" or "log"): a float
          range, `hp.Float`, or `hp.Fixed` when min == max;
        - a list of values of one type (str, int, float or bool): `hp.Choice`; a list
          of booleans is `hp.Boolean` (keras_tuner's Choice would store them as 0/1),
          or `hp.Fixed` when it holds one value;
        - a scalar (bool, int, float, str): `hp.Fixed`.
      conditions: key to `(parent, values)`: the key is read only when the parent key
        takes one of `values`. Such a key is left out when the
        parent can take none of them, declared as usual when every value the parent can
        take is among them, and otherwise declared under
        `hp.conditional_scope(parent, <those of values the parent can take>)`.

    Returns:
      HyperParameters holding one entry per key that is not left out; `values` holds
      those active for the parents' defaults (keras_tuner leaves inactive ones out).

    Raises:
      ValueError: a value of none of these forms, or a condition on a parent the space
        lacks or that is a range; the message names the key.
    """
    hp = keras_tuner.HyperParameters()
    conditions = conditions or {}
    # Parents first: a conditional_scope needs its parent declared, and the dict's order
    # may not say so (custom_config travels as JSON with its keys sorted).
    parents = {parent for parent, _ in conditions.values()}
    ordered = [k for k in space if k in parents] + [k for k in space if k not in parents]
    for key in ordered:
        value = space[key]
        if key not in conditions:
            _declare(hp, key, value)
            continue
        parent, values = conditions[key]
        choices = _parent_choices(space, key, parent)
        # repr: a condition on True must not match the choice 1.
        active = [choice for choice in choices if repr(choice) in set(map(repr, values))]
        if len(active) == len(choices):
            _declare(hp, key, value)
        elif active:
            with hp.conditional_scope(parent, active):
                _declare(hp, key, value)
    return hp


def _parent_choices(space: Mapping[str, Any], key: str, parent: str) -> list:
    """The values the parent of a conditional key can take: its choices or fixed value."""
    if parent not in space:
        raise ValueError(
            f"search space {key!r}: it is read only for some values of {parent!r}, which "
            f"the search space lacks"
        )
    value = space[parent]
    if isinstance(value, Mapping):
        raise ValueError(
            f"search space {key!r}: its parent {parent!r} must be a list of choices or a "
            f"scalar, not a range"
        )
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _declare(hp: keras_tuner.HyperParameters, key: str, value: Any) -> None:
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


def _range(hp: keras_tuner.HyperParameters, key: str, r: Mapping[str, Any]) -> None:
    keys = set(r)
    if keys not in ({"min", "max", "step"}, {"min", "max", "sampling"}):
        raise ValueError(
            f"search space {key!r}: a range has keys min, max and step (ints) or min, max "
            f"and sampling (floats), got {sorted(keys)}"
        )
    # A range of one value is fixed: the Bayesian search has nothing to vary there.
    if r["min"] == r["max"]:
        hp.Fixed(key, r["min"])
    elif "step" in keys:
        hp.Int(key, r["min"], r["max"], step=r["step"])
    else:
        hp.Float(key, r["min"], r["max"], sampling=r["sampling"])


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
