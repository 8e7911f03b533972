"""Closed-loop tuning: the planner trained on the cost it realises when it replans every step.

Process supervision charges the cost of open-loop plans.  Where the dynamics are
unstable (the pendulum's upright, errors growing like ``e^{3.1 t}``) a planner is
used in closed loop (:func:`trc.evaluation.closed_loop.closed_loop`), and what
counts is the cost of the trajectory it realises, each step's control being the
first of a new plan from the state reached.  That closed loop is itself a
differentiable program: the simulator is, and so is the planner.  Closed-loop
tuning descends it, after the usual training:

    x_0 ~ the problem's start box                          # [B, n_x], fresh every step
    u_t = clip(model(x_t).controls[:, 0]),  x_{t+1} = f(x_t, u_t)   for t < T  (replan_every = 1)
    loss = mean_b J_b / mean_b J_b.detach()               # J: the problem's cost of (X, U)

The gradient flows through every plan and every simulator step (the feedback
stabilises the unstable directions that make open-loop gradients useless here),
or, with ``truncate``, back through at most that many steps of the trajectory:
the state is detached from its past every ``truncate`` steps (truncated
backpropagation through time), so a plan answers for the cost of the next
stretch of the trajectory and no gradient compounds a swing-up's sensitivity
over the whole horizon.  The loss is the mean cost scaled to about 1, so that
``max_grad_norm`` means the same at every cost.  No plan is optimised: only the
model's weights change, from starts it has never seen, as in training.  Every ``eval_every`` steps the model is
judged in closed loop on the validation starts (those given and ``val_starts``
fresh ones from the start box), and the cheapest state (step 0, the trained model,
included) is what the tuning returns: tuning never leaves a model worse on
validation than it found it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from trc.errors import TRCError, check

Tensor = torch.Tensor
VALIDATION_STREAM = 1_000_003  # the fresh validation starts are drawn with this + seed, the training starts with seed


@dataclass(frozen=True)
class ClosedLoopTuning:
    """Settings of :func:`tune_closed_loop` (``trc train --closed_loop_steps``).

    Attributes:
        steps: gradient steps (0: no tuning).
        batch_size: start states per step, drawn from the problem's start box.
        lr: Adam's learning rate (constant).
        max_grad_norm: gradients are clipped to this norm (the closed loop's gradients are large
            where a swing-up changes course).
        eval_every: steps between validations; the cheapest validated state is kept.
        replan_every: steps between the plans of a training rollout, each plan's first
            ``replan_every`` controls applied (validation always replans every step).  Fewer plans
            make a step cheaper: on the pendulum 800 steps replanning every 4 cost about what 200
            replanning every step do, and kept 96.6 and 89.8 % closed-loop success (two draws of the
            training starts) where 200 replanning every step kept 81.4 % (``benchmarks/beyond_teacher.py``).
        truncate: the gradient flows back through the trajectory's state for at most this many steps:
            the state is detached at the first plan at or after every multiple of ``truncate``
            (0: through the whole horizon).  On the pendulum, 40 (cut at steps 40 and 80) kept 92.4
            and 87.8 % closed-loop success (seeds 1 and 2, 500 starts of a split of our own) where the
            whole horizon kept 89.6 and 83.2 %, at 8-10 % lower cost; 20 kept 88.0 and 79.8 %
            (``benchmarks/beyond_teacher.py``).
        val_starts: fresh starts from the problem's start box added to the validation starts given
            (drawn from a stream of their own, apart from the training starts').  A state is kept on
            a mean cost whose failed swing-ups cost several times the others, and 100 starts pick it
            poorly: on the pendulum they kept step 125 of a tuning whose states scored 87.6 % on 500
            held-out starts there and 90.2-90.4 % at the steps 600 starts pick (350, 475).
    """

    steps: int = 0
    batch_size: int = 64
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    eval_every: int = 25
    replan_every: int = 1
    truncate: int = 0
    val_starts: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "lr", "max_grad_norm", "replan_every", "truncate",
                     "val_starts"):
            check(name, getattr(self, name), "closed-loop tuning: ")


def kept_record(log: list[dict]) -> dict:
    """The validation record of the state :func:`tune_closed_loop` kept: the cheapest, the earliest of equals."""
    return min((r for r in log if "cost" in r), key=lambda r: r["cost"])


def closed_loop_rollout(model: nn.Module, x0: Tensor, target: Tensor, replan_every: int = 1, truncate: int = 0
                        ) -> tuple[Tensor, Tensor]:
    """The closed loop with its graph: ``(X [B, T+1, n_x], U [B, T, n_u])``.

    As :func:`trc.evaluation.closed_loop.closed_loop` (a new plan every ``replan_every`` steps,
    its first controls applied), in the model's dtype and with gradients through every plan and
    simulator step; with ``truncate > 0`` the state is detached from its past at the first plan
    at or after every multiple of ``truncate`` steps (the values are the same).
    """
    problem = model.problem
    x, X, U = x0, [x0], []
    for t in range(0, problem.horizon, replan_every):
        if truncate and t and t // truncate != (t - replan_every) // truncate:  # a multiple of truncate passed
            x = x.detach()
        plan = problem.clip(model(problem.wrap_state(x), target).controls)
        for u in plan[:, :min(replan_every, problem.horizon - t)].unbind(1):
            x = problem.step(x, u)
            X.append(x)
            U.append(u)
    return torch.stack(X, 1), torch.stack(U, 1)


def tune_closed_loop(model: nn.Module, val_x0: Tensor, config: ClosedLoopTuning, seed: int = 0,
                     val_target: Tensor | None = None, state: dict | None = None,
                     save: Callable[[dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Tune ``model`` on its closed-loop cost (module docstring); returns it at its best validated state.

    Args:
        model: a single-problem model (``model.problem`` supplies the start box and the simulator).
        val_x0: validation start states ``[N, n_x]``; the closed loop from them and from
            ``config.val_starts`` fresh ones (replanning every step, the problem's float64 simulator)
            picks the state kept.
        config: the settings.
        seed: draws the training starts, and the fresh validation starts from a stream of their own.
        val_target: ``[N, n_x]`` or None (the problem's target); the fresh starts aim at the problem's target.
        state: what an earlier call handed ``save``, to continue from (resuming an interrupted run).
        save: called after every validation with a state of tensors, numbers, lists and dicts.

    Returns:
        The model (the best validated weights loaded, eval mode) and the log: one record per
        validation, ``{"step", "cost", "success"}``, and per training step its ``train_cost``.
    """
    from trc.evaluation.closed_loop import closed_loop

    if hasattr(model, "planners"):
        raise TRCError("closed-loop tuning trains a single-problem model")
    problem = model.problem
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    fresh = problem.sample_initial_states(config.val_starts, torch.Generator().manual_seed(VALIDATION_STREAM + seed),
                                          dtype=val_x0.dtype).to(val_x0.device)
    if val_target is not None:
        val_target = torch.cat([problem.target_like(val_x0, val_target), problem.target_like(fresh, None)])
    val_x0 = torch.cat([val_x0, fresh])

    def validate(step: int) -> dict:
        result = closed_loop(model, val_x0, replan_every=1, target=val_target)
        return {"step": step, "cost": result.cost.double().mean().item(),
                "success": result.success.double().mean().item()}

    if state is None:
        log, step = [validate(0)], 0
        best = {"cost": log[0]["cost"], "weights": copy.deepcopy(model.state_dict())}
    else:
        judged_on = state["config"].get("val_starts", 0)
        if judged_on != config.val_starts:  # its best cost was measured on other starts
            raise TRCError(f"closed-loop tuning: cannot continue a state validated with {judged_on} fresh starts, "
                           f"this version of trc uses {config.val_starts} (val_starts); tune afresh")
        model.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        log, step = list(state["log"]), int(state["step"])
        best = {"cost": float(state["best_cost"]), "weights": state["best_weights"]}
    while step < config.steps:
        model.train()
        x0 = problem.sample_initial_states(config.batch_size, generator, dtype=dtype).to(device)
        target = problem.target_like(x0, None)
        X, U = closed_loop_rollout(model, x0, target, config.replan_every, config.truncate)
        cost = problem.cost(X, U, target)
        loss = (cost / cost.detach().mean()).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        step += 1
        log.append({"step": step, "train_cost": cost.detach().double().mean().item()})
        if step % config.eval_every == 0 or step == config.steps:
            record = validate(step)
            log.append(record)
            if record["cost"] < best["cost"]:
                best = {"cost": record["cost"], "weights": copy.deepcopy(model.state_dict())}
            if save is not None:
                save({"weights": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "log": log, "step": step,
                      "best_cost": best["cost"], "best_weights": best["weights"], "config": asdict(config)})
    model.load_state_dict(best["weights"])
    model.eval()
    return model, log


__all__ = ["VALIDATION_STREAM", "ClosedLoopTuning", "closed_loop_rollout", "kept_record", "tune_closed_loop"]
