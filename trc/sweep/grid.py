"""What a sweep varies: a grid over named ``trc train`` flags, or a documented search space.

``--grid process_weight=0,0.1,1 --grid seed=0,1`` names train flags; each value is parsed with the
flag's own type and choices, so a grid never holds a value ``trc train`` would refuse.  Without a
grid, Optuna's TPE sampler searches :data:`SEARCH_SPACE`.
"""

from __future__ import annotations

import argparse
import itertools
import math
from typing import Any

import optuna

from trc.errors import TRCError

# Flags a sweep decides itself or that must stay the same in every trial.
NOT_SWEPT = ("data", "problem", "output_dir", "device", "resume", "quiet", "help")

# The TPE search space (used without --grid): name -> (kind, low/choices, high).
#   lr              log-uniform in [3e-4, 1e-2]
#   process_weight  0 (behavior cloning) or log-uniform in [0.01, 10]
#   model_size      small or medium
#   iterations      K in 1..4
SEARCH_SPACE: dict[str, tuple] = {
    "lr": ("log", 3e-4, 1e-2),
    "process_weight": ("log_or_zero", 0.01, 10.0),
    "model_size": ("choice", ("small", "medium")),
    "iterations": ("int", 1, 4),
}


def _flag_actions(train_parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in train_parser._actions if a.option_strings and a.dest not in NOT_SWEPT}


def _parse_value(action: argparse.Action, text: str) -> Any:
    name = action.dest
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # the value of its dest
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise TRCError(f"--grid {name}: {text!r} is not true or false")
        return lowered in ("true", "1")
    try:
        value = (action.type or str)(text.strip())
    except argparse.ArgumentTypeError as e:  # a type that explains itself (--seed)
        raise TRCError(f"--grid {name}: {e}") from None
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value")
        raise TRCError(f"--grid {name}: {text!r} is not a valid {kind}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise TRCError(f"--grid {name}: {text!r} is not a finite number")
    if action.choices is not None and value not in action.choices:
        raise TRCError(f"--grid {name}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def parse_grid(specs: list[str], train_parser: argparse.ArgumentParser) -> dict[str, list]:
    """``["name=v1,v2", ...]`` as ``{name: [v1, v2]}``, each value of the train flag's type.

    Raises:
        TRCError: a spec without ``=``, an unknown or repeated flag, a repeated or invalid value.
    """
    actions, grid = _flag_actions(train_parser), {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name or not values.strip():
            raise TRCError(f"--grid {spec!r} is not of the form name=v1,v2,...")
        if name not in actions:
            raise TRCError(f"--grid {name!r} is not a train flag a sweep can vary; those are: "
                           f"{', '.join(sorted(actions))}")
        if name in grid:
            raise TRCError(f"--grid {name!r} is given twice")
        parsed = [_parse_value(actions[name], v) for v in values.split(",")]
        if len(set(parsed)) != len(parsed):
            raise TRCError(f"--grid {name}: a value is repeated in {values!r}")
        grid[name] = parsed
    return grid


def grid_cells(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last flag varying fastest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def suggest(trial: optuna.Trial, grid: dict[str, list] | None) -> dict[str, Any]:
    """The train flags of ``trial``: its grid cell, or a TPE sample of :data:`SEARCH_SPACE`."""
    if grid:
        return {name: trial.suggest_categorical(name, values) for name, values in grid.items()}
    flags = {}
    for name, (kind, *spec) in SEARCH_SPACE.items():
        if kind == "log":
            flags[name] = trial.suggest_float(name, spec[0], spec[1], log=True)
        elif kind == "log_or_zero":
            zero = trial.suggest_categorical(f"{name}_is_zero", (False, True))
            flags[name] = 0.0 if zero else trial.suggest_float(name, spec[0], spec[1], log=True)
        elif kind == "int":
            flags[name] = trial.suggest_int(name, spec[0], spec[1])
        else:
            flags[name] = trial.suggest_categorical(name, spec[0])
    return flags
