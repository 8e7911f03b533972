"""Training losses as plain functions: behavior cloning, process supervision, value prediction.

Notation as in :mod:`trc.dynamics`; ``K`` is the number of refinement
iterations, so a model returns ``K+1`` control sequences
``all_controls [B, K+1, T, n_u]`` (index 0: the first guess ``U_0``).
``c_k`` is the trajectory cost of ``U_k`` (clipped to the bound, simulated
from ``x0``).

Process supervision adds to the behavior-cloning loss a term on the costs
``c_0 .. c_K``; which term is a *variant*, chosen by name:

``"seed"``
    The seed document's formula, kept exactly:
    ``-mean_k (c_{k-1} - c_k) / (c_0 + 1e-6)``.  The differences telescope, so
    it equals ``-(c_0 - c_K) / (K (c_0 + 1e-6))``: iterates ``1..K-1`` get no
    gradient, and since ``c_0`` is not detached the term can also fall by
    making the first guess worse.
``"ratio"``
    ``mean_k c_k / sg(c_{k-1})`` for ``k = 1..K`` (``sg``: stop-gradient), plus
    ``c_0 / sg(c_0)``: every iterate is pushed down, each relative to the one
    before it, and no normaliser can be gamed.  The default.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from trc.cost import trajectory_cost
from trc.errors import TRCError

Tensor = torch.Tensor
Rollout = Callable[[Tensor, Tensor], Tensor]


def behavior_cloning_loss(controls: Tensor, expert_controls: Tensor) -> Tensor:
    """Mean squared error of the controls to the expert's.

    Args:
        controls: ``[B, T, n_u]``.
        expert_controls: ``[B, T, n_u]``.

    Returns:
        A scalar.
    """
    return F.mse_loss(controls, expert_controls)


def compute_trajectory_cost(states: Tensor, controls: Tensor, target_state: Tensor,
                            Q: Tensor, R: Tensor, Q_final: Tensor) -> Tensor:
    """The quadratic trajectory cost per sample (the seed's name for :func:`trc.cost.trajectory_cost`).

    Args:
        states: ``X [B, T+1, n_x]``.
        controls: ``U [B, T, n_u]``.
        target_state: ``[B, n_x]`` or ``[n_x]``.
        Q, R, Q_final: ``[n_x, n_x]``, ``[n_u, n_u]``, ``[n_x, n_x]``.

    Returns:
        ``[B]``.
    """
    return trajectory_cost(states, controls, target_state, Q, R, Q_final)


def compute_value_prediction_loss(predicted: Tensor, actual_costs: Tensor) -> Tensor:
    """Mean squared error of predicted costs to the (detached) actual ones.

    Args:
        predicted: ``[B]``.
        actual_costs: ``[B]``; no gradient flows into them.

    Returns:
        A scalar.
    """
    return F.mse_loss(predicted, actual_costs.detach())


def seed_process_term(costs: Tensor) -> Tensor:
    """The seed's process reward: ``-mean over b, k of (n_{k-1} - n_k)``, ``n_k = c_k / (c_0 + 1e-6)``.

    Args:
        costs: ``[B, K+1]``, ``K >= 1``.

    Returns:
        A scalar.
    """
    normalised = costs / (costs[:, :1] + 1e-6)
    improvements = normalised[:, :-1] - normalised[:, 1:]
    return -improvements.mean()


def ratio_process_term(costs: Tensor) -> Tensor:
    """Every iterate's cost relative to the detached previous one: ``mean_k c_k / sg(c_{k-1})``.

    ``c_0`` enters as ``c_0 / sg(c_0)`` (value 1, gradient ``1 / c_0``).

    Args:
        costs: ``[B, K+1]``, ``K >= 1``.

    Returns:
        A scalar; 1 when no iterate improves on the previous one.
    """
    previous = torch.cat([costs[:, :1], costs[:, :-1]], dim=1).detach()
    return (costs / previous).mean()


PROCESS_VARIANTS: dict[str, Callable[[Tensor], Tensor]] = {
    "seed": seed_process_term,
    "ratio": ratio_process_term,
}
DEFAULT_VARIANT = "ratio"


def cost_matrices(problem, cost_params: Mapping | None, dtype, device) -> tuple[Tensor, Tensor, Tensor]:
    """``(Q, R, Q_final)``: the problem's, with any of ``cost_params`` (keys ``Q``, ``R``, ``Q_final``) instead."""
    matrices = dict(zip(("Q", "R", "Q_final"), problem.cost_matrices(dtype, device)))
    unknown = sorted(set(cost_params or {}) - set(matrices))
    if unknown:
        raise TRCError(f"cost_params has unknown key {unknown[0]!r}; known keys: Q, R, Q_final")
    for key, value in (cost_params or {}).items():
        value = torch.as_tensor(value, dtype=dtype, device=device)
        if value.shape != matrices[key].shape:
            raise TRCError(f"cost_params[{key!r}] must have shape {tuple(matrices[key].shape)}, "
                           f"got {tuple(value.shape)}")
        matrices[key] = value
    return matrices["Q"], matrices["R"], matrices["Q_final"]


def iteration_costs(problem, all_controls: Tensor, initial_states: Tensor, target_states: Tensor,
                    dynamics_fn: Rollout | None = None, cost_params: Mapping | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Cost and final error of every iterate, all simulated in one batched call.

    The ``K+1`` sequences are clipped to the bound and stacked on the batch
    axis, so the simulator runs once on ``B (K+1)`` samples.

    Args:
        problem: a :class:`~trc.problems.ControlProblem` (bound, cost, simulator).
        all_controls: ``[B, K+1, T, n_u]``.
        initial_states: ``x0 [B, n_x]``.
        target_states: ``[B, n_x]``.
        dynamics_fn: ``(x0 [N, n_x], U [N, T, n_u]) -> X [N, T+1, n_x]``; default ``problem.rollout``.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's.

    Returns:
        ``costs [B, K+1]`` and ``final_errors [B, K+1]``.
    """
    B, K1, T, n_u = all_controls.shape
    U = problem.clip(all_controls).reshape(B * K1, T, n_u)
    x0 = initial_states.repeat_interleave(K1, dim=0)                      # (B(K+1), n_x)
    target = target_states.to(x0.dtype).repeat_interleave(K1, dim=0)      # (B(K+1), n_x)
    X = (dynamics_fn or problem.rollout)(x0, U)                           # (B(K+1), T+1, n_x)
    Q, R, Qf = cost_matrices(problem, cost_params, X.dtype, X.device)
    costs = trajectory_cost(X, U, target, Q, R, Qf).view(B, K1)
    errors = torch.linalg.vector_norm(X[:, -1] - target, dim=-1).view(B, K1)
    return costs, errors


def compute_process_supervision_loss(
    problem,
    all_controls: Tensor,
    expert_controls: Tensor,
    initial_states: Tensor,
    target_states: Tensor,
    process_weight: float = 1.0,
    dynamics_fn: Rollout | None = None,
    cost_params: Mapping | None = None,
    variant: str = DEFAULT_VARIANT,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``MSE(U_K, expert) + process_weight * process_term(c_0 .. c_K)``.

    Args:
        problem: the control problem (bound, cost matrices, simulator).
        all_controls: every iterate, ``[B, K+1, T, n_u]``, ``K >= 1``.
        expert_controls: ``[B, T, n_u]``.
        initial_states: ``x0 [B, n_x]``.
        target_states: ``[B, n_x]``.
        process_weight: ``lambda >= 0``; with 0 the loss is behavior cloning
            (the costs are still reported).
        dynamics_fn: simulator ``(x0, U) -> X``; default ``problem.rollout``.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's.
        variant: a key of :data:`PROCESS_VARIANTS` (see the module docstring).

    Returns:
        The loss (scalar) and detached parts: ``bc``, ``process``, ``success``
        (fraction of final iterates within tolerance) and ``iteration_costs``
        (mean cost per iterate, ``[K+1]``).
    """
    if variant not in PROCESS_VARIANTS:
        raise TRCError(f"unknown process-supervision variant {variant!r}; "
                       f"known: {', '.join(sorted(PROCESS_VARIANTS))}")
    if all_controls.dim() != 4 or all_controls.shape[1] < 2:
        raise TRCError("process supervision needs all iterations [B, K+1, T, n_u] with K >= 1, "
                       f"got shape {tuple(all_controls.shape)}")
    bc = behavior_cloning_loss(all_controls[:, -1], expert_controls)
    if process_weight == 0:  # behavior cloning: report costs without a graph through the simulator
        with torch.no_grad():
            costs, errors = iteration_costs(problem, all_controls, initial_states, target_states,
                                            dynamics_fn, cost_params)
        process, loss = PROCESS_VARIANTS[variant](costs), bc
    else:
        costs, errors = iteration_costs(problem, all_controls, initial_states, target_states,
                                        dynamics_fn, cost_params)
        process = PROCESS_VARIANTS[variant](costs)
        loss = bc + process_weight * process
    parts = {
        "bc": bc.detach(),
        "process": process.detach(),
        "success": (errors[:, -1] < problem.success_tol).float().mean(),
        "iteration_costs": costs.detach().mean(0),
    }
    return loss, parts
