"""Closed loop: plan from where the system is, apply the first controls, plan again.

An open-loop plan must be exact where the dynamics are unstable (the upright
pendulum's errors grow like ``e^{3.1 t}``); a controller that replans does not.
:func:`closed_loop` runs a planner as a receding-horizon controller on the true
simulator, batched over starts:

    for t = 0, r, 2r, ... < T:
        U_plan = planner(x_t)                  # [B, T, n_u]: a full horizon T from x_t
        apply clip(U_plan[:, :r]) to the simulator, one step at a time

with ``r = replan_every``.  Every plan spans the full horizon ``T`` (receding
horizon, what the planner was trained for), not the time left to ``T``: a
planner only ever sees the problem it learned.  The realised trajectory
``X [B, T+1, n_x]`` and controls ``U [B, T, n_u]`` are then scored like any
open-loop plan, with the problem's cost, final error and success, so the
realised cost compares directly with the open-loop optimum's from the same
start (which no controller can beat).  ``replan_every = T`` is open loop.

The planner sees the state in the problem's canonical coordinates
(:meth:`~trc.problems.ControlProblem.wrap_state`: the pendulum's angle wrapped
to ``(-pi, pi]``) with ``hysteresis``: an angle keeps the representative nearest
the one shown at the last plan while that stays within ``hysteresis`` of the
interval, and is wrapped again beyond it.  Without it a pendulum hanging near
``+-pi`` is shown an angle that jumps between ``+pi`` and ``-pi`` as it rocks, and
a planner that pumps towards the side it is shown reverses its torque at every
crossing: from starts near hanging the realised swing-ups arrived late (misses
crossed the bottom about 5 times, successes 1.5).  On the pendulum's recipe
(seed 0) and two splits of 1000 starts of our own (seeds 4242 and 777), the
closed-loop success of the same trained planners went

======================  ===========  ===========  ===========  ===========
hysteresis              0            0.15         0.25         0.4
======================  ===========  ===========  ===========  ===========
recipe                  96.8 / 96.4  98.3 / 98.4  98.0 / 98.2  96.9 / 96.6
recipe, box curriculum  86.4 / 86.3  91.3 / 91.3  94.8 / 95.4  95.2 / 94.3
======================  ===========  ===========  ===========  ===========

(:data:`HYSTERESIS` is the default; problems without angles ignore it).  With
it in the closed-loop tuning as well, the pendulum's recipe went from 95.0 +- 2.9 %
at 1.17 +- 0.09x the optimum's cost to 96.3 +- 2.5 % at 1.10 +- 0.02x (5 seeds,
the benchmark's 1000 test starts, ``benchmarks/beyond_teacher.py``).  The
simulator integrates in float64 and the planner runs under ``no_grad`` in its
own dtype.

A loop of your own can call ``model.plan(x)`` on the simulator's raw state: a model
reads an angle more than :data:`HYSTERESIS` past its canonical interval (after full
turns) as the same physical state wrapped, and a raw angle is continuous where the
bottom is crossed.  On chapter 10's recipe pendulum such a loop, simulated by
``benchmarks/independent.py`` (NumPy, no trc code), judges 99.6 % of 500 starts as this
one does (96.4 % success both, mean cost 156.4 against 155.7); wrapping every angle to
``(-pi, pi]`` first loses the hysteresis (94.0 %, 163.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from trc.errors import TRCError
from trc.problems.base import HYSTERESIS

Tensor = torch.Tensor
Planner = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ClosedLoopResult:
    """What :func:`closed_loop` realised; subscriptable (``result["cost"]``) like ``problem.evaluate``.

    Attributes:
        X: realised trajectory ``[B, T+1, n_x]`` (float64).
        U: applied (clipped) controls ``[B, T, n_u]``.
        cost: the problem's cost of ``(X, U)``, ``[B]``.
        final_error: ``[B]``; success: ``[B]`` bool.
        replan_every: controls applied per plan; plans: planner calls made.
    """

    X: Tensor
    U: Tensor
    cost: Tensor
    final_error: Tensor
    success: Tensor
    replan_every: int
    plans: int

    def __getitem__(self, key: str):
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def summary(self, optimal_costs=None, expert_costs=None) -> dict[str, float | None]:
        """``success_rate`` (%), ``mean_final_error``, ``mean_cost`` and, given per-start costs
        ``[B]`` of the open-loop optimum or the expert, ``cost_over_optimum`` and
        ``cost_over_expert`` (mean cost over their mean cost, as :func:`trc.evaluation.summarize`)."""
        c = self.cost.double().mean().item()

        def ratio(ref):
            return None if ref is None else c / float(torch.as_tensor(ref, dtype=torch.float64).mean())
        return {"success_rate": 100.0 * self.success.double().mean().item(), "mean_cost": c,
                "mean_final_error": self.final_error.double().mean().item(),
                "cost_over_optimum": ratio(optimal_costs), "cost_over_expert": ratio(expert_costs)}


def as_planner(model) -> Planner:
    """``(x [B, n_x], target [B, n_x]) -> U [B, T, n_u]`` from a model (its own dtype and
    device, ``no_grad``, eval mode) or any such callable, returned in ``x``'s dtype."""
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters())

        def plan(x: Tensor, target: Tensor) -> Tensor:
            with torch.no_grad():
                U = model(x.to(param.device, param.dtype), target.to(param.device, param.dtype)).controls
            return U.to(x.device, x.dtype)
        return plan
    if not callable(model):
        raise TRCError(f"closed_loop needs a model or a planner callable, got {type(model).__name__}")
    return model


def closed_loop(model, x0: Tensor, replan_every: int = 1, target: Tensor | None = None,
                problem=None, hysteresis: float = HYSTERESIS) -> ClosedLoopResult:
    """Run ``model`` as a receding-horizon controller from every start (module docstring).

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl` (or any
            module whose call returns ``.controls [B, T, n_u]``), or a planner
            ``(x [B, n_x], target [B, n_x]) -> U [B, T', n_u]`` with ``T' >= replan_every``.
        x0: start states ``[B, n_x]`` (tensor or array).
        replan_every: controls applied from each plan before planning again, ``1..T``
            (1: replan every step; ``T``: open loop).
        target: ``[B, n_x]`` or ``[n_x]``; default the problem's.
        problem: the problem simulated; default ``model.problem``.
        hysteresis: how far beyond its canonical interval an angle is shown before it is
            wrapped (module docstring); 0 wraps at every plan.

    Returns:
        A :class:`ClosedLoopResult` over the problem's horizon ``T``.
    """
    problem = problem if problem is not None else getattr(model, "problem", None)
    if problem is None:
        raise TRCError("closed_loop needs a problem: pass problem= or a model with .problem")
    T = problem.horizon
    if isinstance(replan_every, bool) or not isinstance(replan_every, int) or not 1 <= replan_every <= T:
        raise TRCError(f"replan_every must be an integer from 1 to the horizon {T}, got {replan_every!r}")
    if not (isinstance(hysteresis, (int, float)) and not isinstance(hysteresis, bool) and 0 <= hysteresis < 3.14):
        raise TRCError(f"hysteresis must be a number of radians in [0, pi), got {hysteresis!r}")
    x = torch.as_tensor(x0).to(torch.float64)
    if x.dim() != 2 or x.shape[1] != problem.n_x:
        raise TRCError(f"start states must have shape [B, {problem.n_x}] for problem {problem.name!r}, "
                       f"got {list(x.shape)}")
    tgt = problem.target_like(x, None if target is None else torch.as_tensor(target))
    planner = as_planner(model)
    training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    X, U, plans, shown = [x], [], 0, None
    try:
        for t0 in range(0, T, replan_every):
            shown = problem.wrap_state(x, near=shown, margin=hysteresis)
            plan = planner(shown, tgt)
            plans += 1
            n = min(replan_every, T - t0)
            if plan.dim() != 3 or plan.shape[0] != x.shape[0] or plan.shape[1] < n or plan.shape[2] != problem.n_u:
                raise TRCError(f"the planner returned controls of shape {list(plan.shape)}; closed loop "
                               f"needs [{x.shape[0]}, >= {n}, {problem.n_u}]")
            for u in problem.clip(plan[:, :n].detach().to(torch.float64)).unbind(1):
                with torch.no_grad():
                    x = problem.step(x, u)
                X.append(x)
                U.append(u)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(training)
    X, U = torch.stack(X, 1), torch.stack(U, 1)
    return ClosedLoopResult(X=X, U=U, cost=problem.cost(X, U, tgt), final_error=problem.final_error(X, tgt),
                            success=problem.success(X, tgt), replan_every=replan_every, plans=plans)
