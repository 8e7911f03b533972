"""The simulator of one run: the problem's rollout and cost, or the caller's in their place.

The seed document's trainer and evaluator take a ``dynamics_fn`` and ``cost_params``::

    dynamics_fn(x0 [B, n_x], U [B, T, n_u]) -> X [B, T+1, n_x]
    cost_params = {"Q": [n_x, n_x], "R": [n_u, n_u], "Q_final": [n_x, n_x]}   # any of the three

A :class:`Simulator` holds them once, checked, and stands in for the problem wherever a run
simulates: the losses, validation, the evaluator and the model's own feedback
(:meth:`trc.models.tiny_recursive_control.TinyRecursiveControl.simulated_by`).  It has the
problem's interface (``rollout``, ``cost_matrices``, ``cost``, ``u_max``, ``success_tol``, ...):
the rest it asks the problem (with the given matrices, so that ``cost``, ``cost_matrices``
and a problem's own ``stage_cost`` read them).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Mapping

import torch

from trc.errors import TRCError

Tensor = torch.Tensor
Rollout = Callable[[Tensor, Tensor], Tensor]
COST_KEYS = ("Q", "R", "Q_final")


class Simulator:
    """``problem`` with ``dynamics_fn`` and ``cost_params`` (each optional) in place of its own.

    Args:
        problem: a :class:`~trc.problems.ControlProblem`.
        dynamics_fn: ``(x0 [B, n_x], U [B, T, n_u]) -> X [B, T+1, n_x]`` replacing ``problem.rollout``.
        cost_params: ``Q``, ``R``, ``Q_final`` (any of them) replacing the problem's ``Q, R, Qf``.
    """

    def __init__(self, problem, dynamics_fn: Rollout | None = None, cost_params: Mapping | None = None):
        if isinstance(problem, Simulator):
            dynamics_fn = dynamics_fn or problem.dynamics_fn
            cost_params = {**(problem.cost_params or {}), **(cost_params or {})} or None
            problem = problem.problem
        if dynamics_fn is not None and not callable(dynamics_fn):
            raise TRCError(f"dynamics_fn must be a function (x0, U) -> X, got {type(dynamics_fn).__name__}")
        if cost_params is not None and not isinstance(cost_params, Mapping):
            raise TRCError(f"cost_params must be a dict with keys Q, R, Q_final, got {type(cost_params).__name__}")
        own = dict(zip(COST_KEYS, problem.cost_matrices(torch.float64)))
        unknown = sorted(set(cost_params or {}) - set(own))
        if unknown:
            raise TRCError(f"cost_params has unknown key {unknown[0]!r}; known keys: {', '.join(COST_KEYS)}")
        for key, value in (cost_params or {}).items():
            shape = tuple(torch.as_tensor(value).shape)
            if shape != tuple(own[key].shape):
                raise TRCError(f"cost_params[{key!r}] must have shape {tuple(own[key].shape)}, got {shape}")
        self.problem, self.dynamics_fn, self.cost_params = problem, dynamics_fn, cost_params
        # the problem with the given matrices: its own cost (quadratic or not) reads them
        self.costed = problem.replace(**{name: torch.as_tensor(cost_params[key], dtype=torch.float64).tolist()
                                         for key, name in zip(COST_KEYS, ("Q", "R", "Qf"))
                                         if key in cost_params}) if cost_params else problem

    def __getattr__(self, name: str) -> Any:  # the rest of the problem's interface, with the matrices
        if name in ("problem", "costed"):
            raise AttributeError(name)
        return getattr(self.costed, name)

    def __repr__(self) -> str:
        return (f"Simulator({self.problem.name!r}, dynamics_fn={self.dynamics_fn!r}, "
                f"cost_params={sorted(self.cost_params or {})})")

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """``X [B, T+1, n_x]`` of ``U [B, T, n_u]`` from ``x0 [B, n_x]``, by ``dynamics_fn`` if given."""
        if self.dynamics_fn is None:
            return self.problem.rollout(x0, U)
        X = self.dynamics_fn(x0, U)
        expected = (x0.shape[0], U.shape[1] + 1, x0.shape[1])
        if not torch.is_tensor(X) or tuple(X.shape) != expected:
            got = list(X.shape) if torch.is_tensor(X) else type(X).__name__
            raise TRCError(f"dynamics_fn must return states [B, T+1, n_x] = {list(expected)}, got {got}")
        return X

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """One step ``x [B, n_x], u [B, n_u] -> x_next [B, n_x]``: ``dynamics_fn`` over one control if given."""
        if self.dynamics_fn is None:
            return self.problem.step(x, u)
        return self.rollout(x, u.unsqueeze(1))[:, -1]


def simulator(problem, dynamics_fn: Rollout | None = None, cost_params: Mapping | None = None):
    """``problem`` itself when nothing replaces its rollout or cost, else a :class:`Simulator`."""
    if dynamics_fn is None and cost_params is None:
        return problem
    return Simulator(problem, dynamics_fn, cost_params)


def simulated_by(model, sim):
    """A context in which ``model``'s own feedback simulates with ``sim`` (a problem or a
    :class:`Simulator`); nothing changes when ``sim`` is the model's problem or the model
    has no feedback to redirect."""
    use = getattr(model, "simulated_by", None)
    return nullcontext() if use is None or sim is getattr(model, "problem", None) else use(sim)
