"""The one exception type ``trc`` raises for bad input, and the one check of each numeric parameter.

A parameter that several entry points take (``epochs``, ``lr``, ``process_weight`` ... in the
library, ``trc train`` and the book's experiments) is checked by :func:`check` against its
rule in :data:`PARAMETERS`, so that every entry point accepts and refuses the same values
with the same sentence.  Choices are checked where they are looked up (``get_problem``,
``PROCESS_VARIANTS``, ``EXPERTS``, ``preset_config``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class TRCError(ValueError):
    """Bad input (argument, file, checkpoint, dataset), explained in one sentence.

    The CLI turns it into a one-line message on stderr and exit status 2.
    """


def is_integer(v: Any) -> bool:
    """Whether ``v`` is an integer: Python's or numpy's (``numbers.Integral``), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# rule -> (test, what a valid value is)
RULES = {
    "count": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "count0": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: _number(v) and v > 0, "a positive number"),
    "nonnegative": (lambda v: _number(v) and v >= 0, "a finite number >= 0"),
    "fraction": (lambda v: _number(v) and 0 < v < 1, "between 0 and 1 (exclusive)"),
}

# parameter -> rule, for every numeric parameter that more than one entry point takes
PARAMETERS = {
    "epochs": "count", "batch_size": "count", "iterations": "count", "num_outer_cycles": "count",
    "H_cycles": "count", "L_cycles": "count", "num_samples": "count", "num_train": "count", "num_test": "count",
    "latent_dim": "count", "hidden_dim": "count", "num_layers": "count", "feedback_points": "count0",
    "adapter_rank": "count0",
    "lr": "positive", "process_weight": "nonnegative", "value_weight": "nonnegative", "val_fraction": "fraction",
    "steps": "count0", "eval_every": "count", "max_grad_norm": "positive",
    "replan_every": "count", "truncate": "count0", "val_starts": "count0", "critic": "nonnegative",
}


def check(name: str, value: Any, prefix: str = "") -> Any:
    """``value`` if it is a valid ``name`` (its rule in :data:`PARAMETERS`), else one :class:`TRCError`.

    Args:
        name: the parameter.
        value: its value.
        prefix: put before the name in the message, e.g. ``"--"`` for a flag or ``"model config: "``.
    """
    test, what = RULES[PARAMETERS[name]]
    if not test(value):
        raise TRCError(f"{prefix}{name} must be {what}, got {value!r}")
    return int(value) if test is is_integer or isinstance(value, numbers.Integral) else value
