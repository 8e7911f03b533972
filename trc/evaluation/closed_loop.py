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

In a loop of your own, :class:`Controller` is the same controller one step at a time
(``u = controller(x)``), the hysteresis included.  A model also reads a raw angle (a
simulator's, after full turns) more than :data:`HYSTERESIS` past its canonical interval as the
same physical state wrapped, so ``model.plan(x)`` on a raw state plans sensibly too; but only the
controller keeps the hysteresis.  Simulated by ``benchmarks/independent.py`` (NumPy, no trc
code) on the pendulum recipe's seeds 0-2, 500 starts each, a loop through the controller agrees
with this one on every start; one planning from the raw state trails it by 0-3.4 points of
success, and one that wraps every angle to ``(-pi, pi]`` first by 1.4-6.0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from trc.errors import TRCError, is_integer
from trc.problems import get_problem
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


def as_planner(model, iterations: int | None = None, halt: bool | str | None = False) -> Planner:
    """``(x [B, n_x], target [B, n_x]) -> U [B, T, n_u]`` from a model (its own dtype and
    device, ``no_grad``, eval mode) or any such callable, returned in ``x``'s dtype.

    A model runs ``iterations`` refinements (default its ``K``) and, with ``halt``, stops each start
    as :meth:`~trc.models.tiny_recursive_control.TinyRecursiveControl.plan` does (True: the model's
    own rule; a string names one; default False: every iteration, also for a halting model).
    """
    if iterations is not None and (not is_integer(iterations) or iterations < 0):
        raise TRCError(f"iterations must be an integer >= 0, got {iterations!r}")
    iterations = None if iterations is None else int(iterations)
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters())
        if iterations is not None or halt is not False:
            if not hasattr(model, "plan"):
                raise TRCError(f"iterations and halt need a trc model; {type(model).__name__} has no plan()")
            model._halt_rule(halt)  # a rule the model cannot follow: one sentence now, not at the first step

        def plan(x: Tensor, target: Tensor) -> Tensor:
            training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    x_, t_ = x.to(param.device, param.dtype), target.to(param.device, param.dtype)
                    if iterations is None and halt is False:
                        U = model(x_, t_).controls
                    else:
                        U = model.plan(x_, t_, iterations=iterations, halt=halt)
            finally:
                model.train(training)   # the caller's mode, whatever it was
            return U.to(x.device, x.dtype)
        return plan
    if not callable(model):
        raise TRCError(f"closed_loop needs a model or a planner callable, got {type(model).__name__}")
    if iterations is not None or halt is not False:
        raise TRCError("iterations and halt apply to a trc model, not to a planner callable (it plans as it does)")
    return model


def _shape_error(problem, x: Tensor) -> TRCError:
    return TRCError(f"start states must have shape [B, {problem.n_x}] for problem {problem.name!r}, "
                    f"got {list(x.shape)}")


class Controller:
    """A planner as a receding-horizon controller, one step at a time: for a loop of your own.

        controller = Controller(model)      # plan every step; the angle shown with hysteresis
        for t in range(T):
            u = controller(x)               # [B, n_u] (or [n_u] for one state), clipped to the bound
            x = your_simulator(x, u)
        controller.reset()                  # before the next episode

    Every ``replan_every`` calls it plans ``T`` steps from the state it is given (shown to the
    planner in the problem's canonical coordinates, with ``hysteresis`` as in the module
    docstring) and then hands out that plan's controls one per call.  It remembers the plan and
    the angle it showed last, so one controller serves one batch of episodes at a time.
    :func:`closed_loop` is this controller on the problem's own simulator.

    Args:
        model, replan_every, target, problem, hysteresis, iterations, halt: as in :func:`closed_loop`.

    Attributes:
        plans: planner calls since the last :meth:`reset`.
    """

    def __init__(self, model, replan_every: int = 1, target=None, problem=None, hysteresis: float = HYSTERESIS,
                 iterations: int | None = None, halt: bool | str | None = False):
        if hasattr(model, "planners"):   # a multi-problem model: the planner of the problem named
            if problem is None:
                raise TRCError(f"this model plans for several problems ({', '.join(model.problem_names)}); "
                               f"pass problem=NAME")
            model = model.planner(problem)
            problem = model.problem
        problem = problem if problem is not None else getattr(model, "problem", None)
        problem = get_problem(problem) if isinstance(problem, str) else problem
        if problem is None:
            raise TRCError("closed_loop needs a problem: pass problem= or a model with .problem")
        T = problem.horizon
        if not is_integer(replan_every) or not 1 <= replan_every <= T:
            raise TRCError(f"replan_every must be an integer from 1 to the horizon {T}, got {replan_every!r}")
        replan_every = int(replan_every)
        if not (isinstance(hysteresis, (int, float)) and not isinstance(hysteresis, bool) and 0 <= hysteresis < 3.14):
            raise TRCError(f"hysteresis must be a number of radians in [0, pi), got {hysteresis!r}")
        self.model, self.problem, self.replan_every, self.hysteresis = model, problem, replan_every, hysteresis
        self.target = None if target is None else torch.as_tensor(target)
        self._planner = as_planner(model, iterations, halt)
        self.reset()

    def reset(self) -> None:
        """Forget the plan and the angle shown last: the next call plans afresh."""
        self._plan, self._shown, self._used, self.plans = None, None, 0, 0

    def __call__(self, x):
        """The control ``u [B, n_u]`` to apply at state ``x [B, n_x]`` (or ``[n_u]`` for ``[n_x]``),
        a numpy array for an array, else a tensor in ``x``'s floating dtype."""
        as_numpy = not torch.is_tensor(x)
        given = torch.as_tensor(x)
        xb = given.to(torch.float64)
        xb = xb.unsqueeze(0) if xb.dim() == 1 else xb
        if xb.dim() != 2 or xb.shape[1] != self.problem.n_x:
            raise _shape_error(self.problem, given)
        if self._plan is not None and self._plan.shape[0] != xb.shape[0]:
            raise TRCError(f"this controller is running {self._plan.shape[0]} episodes, not {xb.shape[0]}; "
                           f"call reset() before another batch")
        if self._plan is None or self._used == self.replan_every:
            self._shown = self.problem.wrap_state(xb, near=self._shown, margin=self.hysteresis)
            plan = self._planner(self._shown, self.problem.target_like(xb, self.target))
            r, n_u = self.replan_every, self.problem.n_u
            if plan.dim() != 3 or plan.shape[0] != xb.shape[0] or plan.shape[1] < r or plan.shape[2] != n_u:
                raise TRCError(f"the planner returned controls of shape {list(plan.shape)}; closed loop "
                               f"needs [{xb.shape[0]}, >= {r}, {n_u}]")
            self._plan, self._used = self.problem.clip(plan[:, :r].detach().to(torch.float64)), 0
            self.plans += 1
        u = self._plan[:, self._used]
        self._used += 1
        u = u[0] if given.dim() == 1 else u
        if as_numpy:
            return u.numpy()
        return u.to(given.dtype) if given.is_floating_point() else u


def closed_loop(model, x0: Tensor, replan_every: int = 1, target: Tensor | None = None,
                problem=None, hysteresis: float = HYSTERESIS, iterations: int | None = None,
                halt: bool | str | None = False) -> ClosedLoopResult:
    """Run ``model`` as a receding-horizon controller from every start (module docstring).

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl` (or any
            module whose call returns ``.controls [B, T, n_u]``), or a planner
            ``(x [B, n_x], target [B, n_x]) -> U [B, T', n_u]`` with ``T' >= replan_every``.
        x0: start states ``[B, n_x]`` (tensor or array).
        replan_every: controls applied from each plan before planning again, ``1..T``
            (1: replan every step; ``T``: open loop).
        target: ``[B, n_x]`` or ``[n_x]``; default the problem's.
        problem: the problem simulated; default ``model.problem``.  For a multi-problem model,
            the problem (or its name) whose planner runs.
        hysteresis: how far beyond its canonical interval an angle is shown before it is
            wrapped (module docstring); 0 wraps at every plan.
        iterations: refinement iterations of every plan (default: the model's ``K``; more is
            allowed, as in ``model.plan``).  A model only, not a planner callable.
        halt: stop each plan's refinement per start, as ``model.plan(halt=...)`` does: True uses
            the model's halting rule, a string names one, None does what ``model.plan`` does by
            default.  Default False: every iteration, also for a halting model (whose ``plan``
            halts by default).

    Returns:
        A :class:`ClosedLoopResult` over the problem's horizon ``T``.
    """
    controller = Controller(model, replan_every, target, problem, hysteresis, iterations, halt)
    problem = controller.problem
    try:
        x = torch.as_tensor(x0)
    except (ValueError, TypeError, RuntimeError):
        raise TRCError("start states must be an array or tensor of real numbers [B, n_x]") from None
    if x.is_complex() or x.dtype == torch.bool:
        raise TRCError(f"start states must be real numbers, got dtype {x.dtype}")
    x = x.to(torch.float64)
    if x.dim() != 2 or x.shape[1] != problem.n_x:
        raise _shape_error(problem, x)
    X, U = [x], []
    for t in range(problem.horizon):
        u = controller(x)
        with torch.no_grad():
            x = problem.step(x, u)
        finite = torch.isfinite(x.to(torch.float32)).all(1)   # beyond float32's range no planner reads it
        if not finite.all():
            bad = int((~finite).nonzero()[0])
            raise TRCError(f"the closed loop diverges (states beyond float32's range) at step {t + 1} from start "
                           f"{bad}, x0 = {[round(v, 4) for v in X[0][bad].tolist()]}; problem {problem.name!r} "
                           f"starts in {problem.start_box}")
        X.append(x)
        U.append(u)
    X, U = torch.stack(X, 1), torch.stack(U, 1)
    tgt = problem.target_like(x, controller.target)
    return ClosedLoopResult(X=X, U=U, cost=problem.cost(X, U, tgt), final_error=problem.final_error(X, tgt),
                            success=problem.success(X, tgt), replan_every=replan_every, plans=controller.plans)
