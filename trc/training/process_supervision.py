"""Training losses as plain functions: behavior cloning, process supervision, value prediction.

Notation as in :mod:`trc.dynamics`; ``K`` is the number of refinement
iterations, so a model returns ``K+1`` control sequences
``all_controls [B, K+1, T, n_u]`` (index 0: the first guess ``U_0``).
``c_k`` is the trajectory cost of ``U_k`` (clipped to the bound, simulated
from ``x0``); ``U*`` the expert's controls; ``sg`` stops the gradient.

**Behavior cloning** (``process_weight = 0``, every variant): every iterate
imitates the expert, ``mean_k MSE(U_k, U*)`` (TRM's deep supervision: with
gradient truncation each iteration is trained as a step of its own).  With
``final_only=True`` only the last iterate does, ``MSE(U_K, U*)``: the seed's
baseline (``train_trc.py``), whose gradient reaches the network only through ``U_K``.

**Process supervision** (``process_weight = lambda > 0``) is an imitation
term plus ``lambda`` times a term on the costs; the pair is a *variant*:

``"seed"``
    The seed document's loss, ``MSE(U_K, U*) + lambda * P`` with
    ``P = -mean_k (c_{k-1} - c_k) / (c_0 + 1e-6)``: the seed writes
    ``-mean(cost[k-1] - cost[k])``; here the improvements are divided by the first
    cost, so that ``lambda`` does not scale with the problem's cost.  The differences
    telescope, ``P = -(c_0 - c_K) / (K (c_0 + 1e-6))``: iterates ``1..K-1``
    get no gradient, and since ``c_0`` is not detached ``P`` also falls when
    the first guess gets worse.
``"ratio"``
    ``MSE(U_0, U*) + lambda * P`` with ``P = mean_{k=0..K} c_k / sg(c_{k-1}) / T``
    (``c_{-1} = c_0``): the expert teaches the first guess, the cost teaches
    every refinement, each iterate rewarded for improving on the one before it
    with a normaliser that cannot be gamed.  ``P`` is divided by the horizon
    ``T`` because the cost sums ``T`` stage costs while the imitation term
    averages over them; then ``lambda = 1`` balances the two.
``"monotone"``
    ``"ratio"`` plus a hinge on every refinement of every sample,
    ``P = [mean_k r_k + w mean_{k=1..K} relu(r_k - (1 - m))] / T`` with
    ``r_k = c_k / sg(c_{k-1})``, ``w = 10``, ``m = 1e-3``.  The ratio term rewards
    the *mean* ratio, so a sample whose cost rises a little is paid for by others
    that fall a lot; the hinge charges each refinement that does not cut its own
    sample's cost by at least the fraction ``m``.  The default: with it, Van der Pol's default recipe lowers the cost at
    every iteration for 95.7 +- 1.7 % of the test states (5 seeds, ``benchmarks/beyond_teacher.py``;
    chapter 3 of the book compares it with ``"ratio"`` on one seed).  The network learns to refine cautiously, and where the refinements must
    move far from a weak teacher's plans (``vanderpol_constrained``) that caution
    costs more: there ``"ratio"`` ends closer to the optimum (chapters 3 and 8 of
    the book).
``"cost"``
    The ratio term alone, ``lambda * P_ratio``: no imitation at all (the imitation
    term of ``U_0`` is still reported).  The expert's plans are not used by the loss;
    the ablation that shows what the teacher contributes (chapter 8 of the book).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from trc.cost import trajectory_cost
from trc.errors import TRCError, check
from trc.simulator import simulator

Tensor = torch.Tensor
Rollout = Callable[[Tensor, Tensor], Tensor]


def behavior_cloning_loss(controls: Tensor, expert_controls: Tensor) -> Tensor:
    """Mean squared error of the controls to the expert's (of every iterate, if given all).

    Args:
        controls: ``[B, T, n_u]``, or every iterate ``[B, K+1, T, n_u]``.
        expert_controls: ``[B, T, n_u]``.

    Returns:
        A scalar.
    """
    if controls.dim() == expert_controls.dim() + 1:
        expert_controls = expert_controls.unsqueeze(1).expand_as(controls)
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

    Both on the same scale (a value head may predict ``log(1 + cost)``; pass
    the actual costs on that scale, e.g. ``ValuePredictor.target(costs)``).

    Args:
        predicted: ``[B]`` (or ``[B, K+1]``).
        actual_costs: same shape; no gradient flows into them.

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


def step_ratios(costs: Tensor) -> Tensor:
    """``r_k = c_k / sg(c_{k-1})`` per sample, with ``c_{-1} = c_0``: ``[B, K+1]`` (``r_0`` is 1 in value)."""
    previous = torch.cat([costs[:, :1], costs[:, :-1]], dim=1).detach()
    return costs / previous


def ratio_process_term(costs: Tensor, horizon: int = 1) -> Tensor:
    """Every iterate's cost relative to the detached previous one: ``mean_k c_k / sg(c_{k-1}) / horizon``.

    ``c_0`` enters as ``c_0 / sg(c_0)`` (value 1, gradient ``1 / c_0``).

    Args:
        costs: ``[B, K+1]``, ``K >= 1``.
        horizon: ``T``, the number of stage costs each ``c_k`` sums.

    Returns:
        A scalar; ``1 / horizon`` when every iterate costs what the one before it cost (more where
        costs rise, less where they fall).
    """
    return step_ratios(costs).mean() / horizon


def monotone_process_term(costs: Tensor, horizon: int = 1, weight: float = 10.0,
                          margin: float = 1e-3) -> Tensor:
    """:func:`ratio_process_term` plus a per-sample hinge on every refinement that does not improve.

    ``[mean_k r_k + weight * mean_{b, k>=1} relu(r_bk - (1 - margin))] / horizon`` with
    ``r_bk = c_bk / sg(c_b,k-1)``: a refinement that cuts its sample's cost by less than the
    fraction ``margin`` (or raises it) is charged ``weight`` times its excess ratio.

    Args:
        costs: ``[B, K+1]``, ``K >= 1``.
        horizon: ``T``, the number of stage costs each ``c_k`` sums.
        weight: ``w >= 0``; 0 gives :func:`ratio_process_term`.
        margin: ``m``, the relative improvement each refinement is asked for.

    Returns:
        A scalar.
    """
    ratios = step_ratios(costs)
    hinge = torch.relu(ratios[:, 1:] - (1 - margin)).mean()
    return (ratios.mean() + weight * hinge) / horizon


# variant -> (process term of the costs [B, K+1] and the horizon T, iterate that imitates the expert,
# or None: no imitation)
PROCESS_VARIANTS: dict[str, tuple[Callable[[Tensor, int], Tensor], int | None]] = {
    "seed": (lambda costs, horizon: seed_process_term(costs), -1),
    "ratio": (ratio_process_term, 0),
    "monotone": (monotone_process_term, 0),
    "cost": (ratio_process_term, None),
}
DEFAULT_VARIANT = "monotone"


def check_loss_settings(process_weight: float, variant: str = DEFAULT_VARIANT, value_weight: float = 0.01,
                        final_only: bool = False, prefix: str = "") -> None:
    """The one check of the loss's settings (the losses, the trainers, ``trc train``, the book's experiments).

    Raises:
        TRCError: ``process_weight`` or ``value_weight`` not a finite number >= 0, an unknown
            ``variant``, or ``final_only`` with ``process_weight > 0``.  ``prefix`` goes before the
            names (``"--"`` for flags).
    """
    check("process_weight", process_weight, prefix)
    check("value_weight", value_weight, prefix)
    if variant not in PROCESS_VARIANTS:
        raise TRCError(f"unknown loss variant {variant!r}; "
                       f"known: {', '.join(sorted(PROCESS_VARIANTS))}")
    if final_only and process_weight != 0:
        raise TRCError(f"final_only is behavior cloning of the final controls: it needs {prefix}process_weight 0, "
                       f"got {process_weight}")


class _ProjectedClip(torch.autograd.Function):
    """Clip to ``[-bound, bound]``; backward keeps only gradients whose descent step points inside.

    At a control on (or beyond) its bound, a gradient asking to push it further out has no
    effect on the clipped value and is dropped; one asking to move it back in is passed on,
    so a saturated control can still leave the bound.
    """

    @staticmethod
    def forward(ctx, U: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(U)
        ctx.bound = bound
        return U.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (U,) = ctx.saved_tensors
        outward = ((U >= ctx.bound) & (grad < 0)) | ((U <= -ctx.bound) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None


def clip_to_bound(problem, U: Tensor) -> Tensor:
    """``problem.clip(U)`` with a projected gradient (see :class:`_ProjectedClip`)."""
    return _ProjectedClip.apply(U, float(problem.u_max))


def iteration_costs(problem, all_controls: Tensor, initial_states: Tensor, target_states: Tensor,
                    dynamics_fn: Rollout | None = None, cost_params: Mapping | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Cost and final error of every iterate, all simulated in one batched call.

    The ``K+1`` sequences are clipped to the bound (:func:`clip_to_bound`) and
    stacked on the batch axis, so the simulator runs once on ``B (K+1)`` samples.

    Args:
        problem: a :class:`~trc.problems.ControlProblem` (bound, cost, simulator) or a
            :class:`~trc.simulator.Simulator` standing in for one.
        all_controls: ``[B, K+1, T, n_u]``.
        initial_states: ``x0 [B, n_x]``.
        target_states: ``[B, n_x]``.
        dynamics_fn: ``(x0 [N, n_x], U [N, T, n_u]) -> X [N, T+1, n_x]``; default ``problem.rollout``.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's.

    Returns:
        ``costs [B, K+1]`` and ``final_errors [B, K+1]``.
    """
    sim = simulator(problem, dynamics_fn, cost_params)
    B, K1, T, n_u = all_controls.shape
    U = clip_to_bound(problem, all_controls).reshape(B * K1, T, n_u)
    x0 = initial_states.repeat_interleave(K1, dim=0)                      # (B(K+1), n_x)
    target = target_states.to(x0.dtype).repeat_interleave(K1, dim=0)      # (B(K+1), n_x)
    X = sim.rollout(x0, U)                                                # (B(K+1), T+1, n_x)
    costs = sim.cost(X, U, target).view(B, K1)
    errors = sim.final_error(X, target).view(B, K1)
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
    value_predictor: Callable | None = None,
    all_latents: Tensor | None = None,
    value_weight: float = 0.01,
    final_only: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Behavior cloning (``process_weight = 0``) or process supervision: see the module docstring.

    Args:
        problem: the control problem (bound, cost matrices, simulator).
        all_controls: every iterate, ``[B, K+1, T, n_u]``, ``K >= 1``.
        expert_controls: ``[B, T, n_u]``.
        initial_states: ``x0 [B, n_x]``.
        target_states: ``[B, n_x]``.
        process_weight: ``lambda >= 0``; 0 is behavior cloning of every iterate (the costs are
            still reported, computed without gradient).
        dynamics_fn: simulator ``(x0, U) -> X``; default ``problem.rollout``.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's.
        variant: a key of :data:`PROCESS_VARIANTS`.
        value_predictor: optional value head ``latent [B, K+1, d] -> [B, K+1]``, trained to
            predict every iterate's cost (on its own ``target`` scale when it has one).
        all_latents: the latent behind every iterate, ``[B, K+1, d]`` (needed with a value head).
        value_weight: weight of the value loss.
        final_only: behavior cloning of the final iterate only, ``MSE(U_K, U*)`` (the seed's
            baseline); needs ``process_weight = 0``.

    Returns:
        The loss (scalar) and detached parts: ``bc`` (the imitation term), ``process`` (the
        cost term, also reported when ``lambda = 0``), ``success`` (fraction of final
        iterates within tolerance), ``iteration_costs`` (mean cost per iterate, ``[K+1]``)
        and, with a value head, ``value``.
    """
    check_loss_settings(process_weight, variant, value_weight, final_only)
    if all_controls.dim() != 4 or all_controls.shape[1] < 2:
        raise TRCError("process supervision needs all iterations [B, K+1, T, n_u] with K >= 1, "
                       f"got shape {tuple(all_controls.shape)}")
    term, imitated = PROCESS_VARIANTS[variant]
    T = all_controls.shape[2]
    if process_weight == 0:  # behavior cloning: report costs without a graph through the simulator
        bc = behavior_cloning_loss(all_controls[:, -1] if final_only else all_controls, expert_controls)
        with torch.no_grad():
            costs, errors = iteration_costs(problem, all_controls, initial_states, target_states,
                                            dynamics_fn, cost_params)
        process, loss = term(costs, T), bc
    else:
        bc = behavior_cloning_loss(all_controls[:, 0 if imitated is None else imitated], expert_controls)
        costs, errors = iteration_costs(problem, all_controls, initial_states, target_states,
                                        dynamics_fn, cost_params)
        process = term(costs, T)
        loss = process_weight * process if imitated is None else bc + process_weight * process
    parts = {
        "bc": bc.detach(),
        "process": process.detach(),
        "success": (errors[:, -1] < problem.success_tol).float().mean(),
        "iteration_costs": costs.detach().mean(0),
    }
    if value_predictor is not None:
        if all_latents is None:
            raise TRCError("a value predictor needs the latents of every iteration (all_latents)")
        target = getattr(value_predictor, "target", lambda c: c)(costs.detach())
        value = compute_value_prediction_loss(value_predictor(all_latents), target)
        loss = loss + value_weight * value
        parts["value"] = value.detach()
    return loss, parts
