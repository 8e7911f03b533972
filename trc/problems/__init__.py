"""Registry of control problems: ``get_problem(name, **overrides)``.

Adding a problem: write a small module with a :class:`ControlProblem`
subclass (see :mod:`trc.problems.vanderpol`), then add one line to
``PROBLEMS`` below mapping its name to a factory.
"""

from __future__ import annotations

from typing import Any, Callable

from trc.errors import TRCError
from trc.problems.base import ControlProblem, diag
from trc.problems.double_integrator import DoubleIntegrator
from trc.problems.pendulum import Pendulum
from trc.problems.vanderpol import VanDerPol, simulate_vanderpol_torch, vanderpol_constrained

PROBLEMS: dict[str, Callable[..., ControlProblem]] = {
    "double_integrator": DoubleIntegrator,
    "pendulum": Pendulum,
    "vanderpol": VanDerPol,
    "vanderpol_constrained": vanderpol_constrained,
}


def get_problem(name: str, **overrides: Any) -> ControlProblem:
    """The registered problem ``name`` with parameters changed by ``overrides``.

    ``get_problem(**problem.to_dict())`` rebuilds a problem exactly.
    """
    if name not in PROBLEMS:
        raise TRCError(f"unknown problem {name!r}; known problems: {', '.join(sorted(PROBLEMS))}")
    default = PROBLEMS[name]()
    overrides = {k: v for k, v in overrides.items() if k != "name"}
    return default.replace(**overrides) if overrides else default


__all__ = ["PROBLEMS", "ControlProblem", "DoubleIntegrator", "Pendulum", "VanDerPol", "diag", "get_problem",
           "simulate_vanderpol_torch", "vanderpol_constrained"]
