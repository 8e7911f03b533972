"""Adaptive halting: when to stop refining a start's plan.

A halting model runs up to ``K_max`` refinement iterations and stops each start
on its own.  After iteration ``k`` (``k >= 1``) it reads ``z_k [B, d]``, the latent
that decoded ``U_k``, with the share of ``K_max`` done and the simulated costs the
iteration saw (the cost of ``U_{k-1}`` and how much it fell from ``U_{k-2}``), and
decides whether ``U_k`` is final.  Three rules:

``"halt"`` (the default)
    the halting head's ``q_halt`` logit is positive.  ``q_halt`` learns (binary
    cross-entropy) the target :func:`stop_targets`: stopping after iteration ``k``
    is right when no later iterate of the same run is cheaper by more than the
    fraction ``tol``, ``c_k <= (1 + tol) min_{j >= k} c_j``.
``"q"``
    TRM's Q-learning rule, ``q_halt > q_continue``.  ``q_continue`` learns the value
    of going on, bootstrapped from the next iteration's own prediction:
    ``sigmoid(q_continue_k) -> gamma * max(sigmoid(q_halt_{k+1}), sigmoid(q_continue_{k+1}))``
    (:func:`continue_targets`); the discount ``gamma < 1`` charges every extra
    iteration, so a start whose plan is already final halts.
``"value"``
    no halting head: the value head's predicted ``log(1 + cost)`` fell by less than
    ``tol`` over the last iteration (the predicted improvement is small).

Costs come from training runs of all ``K_max`` iterations (every start explores the
longest run), so the targets of every iteration are exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trc.errors import TRCError

Tensor = torch.Tensor

HALT_RULES = ("halt", "q", "value")
DEFAULT_TOLERANCE = 1e-3   # relative cost a refinement must still win for going on to be right
DISCOUNT = 0.9             # gamma of the Q-learning target


class HaltingHead(nn.Module):
    """``features [..., n] -> (q_halt, q_continue)`` logits ``[..., 2]``: ``Linear -> SiLU -> Linear``."""

    def __init__(self, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2))
        with torch.no_grad():  # untrained: halt nowhere (q_halt < 0), continue everywhere
            self.net[-1].weight.zero_()
            self.net[-1].bias.copy_(torch.tensor([-2.0, 2.0]))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def stop_targets(costs: Tensor, tol: float = DEFAULT_TOLERANCE) -> Tensor:
    """Whether stopping after each iterate is right: ``c_k <= (1 + tol) min_{j >= k} c_j``.

    Args:
        costs: ``[B, K+1]``, iterate 0 first.
        tol: relative improvement below which going on is not worth it.

    Returns:
        ``[B, K+1]`` floats in ``{0, 1}``; the last iterate is always 1.
    """
    if costs.dim() != 2:
        raise TRCError(f"costs must be [B, K+1], got shape {tuple(costs.shape)}")
    suffix_min = costs.flip(1).cummin(1).values.flip(1)
    return (costs <= (1 + tol) * suffix_min).to(costs.dtype)


def continue_targets(logits: Tensor, gamma: float = DISCOUNT) -> Tensor:
    """TRM's bootstrapped target of ``q_continue``: ``gamma * max(sigmoid q_halt, sigmoid q_continue)`` one step on.

    Args:
        logits: the head's detached output for ``n`` iterates in order, ``[B, n, 2]``.
        gamma: discount per extra iteration.

    Returns:
        ``[B, n-1]``: targets of all but the last iterate (which cannot continue).
    """
    nxt = torch.sigmoid(logits[:, 1:].detach())                    # (B, K, 2)
    last = torch.zeros_like(nxt[..., 1])
    last[:, -1] = 1.0   # beyond the last iterate only halting is possible: its continue value is not used
    value = torch.where(last.bool(), nxt[..., 0], nxt.max(-1).values)
    return gamma * value


def halting_loss(logits: Tensor, costs: Tensor, tol: float = DEFAULT_TOLERANCE,
                 gamma: float = DISCOUNT) -> Tensor:
    """BCE of ``q_halt`` to :func:`stop_targets` plus BCE of ``q_continue`` to :func:`continue_targets`.

    Args:
        logits: ``[B, K, 2]`` for iterates ``1..K`` (halting is decided from iterate 1 on).
        costs: ``[B, K+1]`` (iterate 0 first).

    Returns:
        A scalar.
    """
    halt = F.binary_cross_entropy_with_logits(logits[..., 0], stop_targets(costs, tol)[:, 1:])
    cont = F.binary_cross_entropy_with_logits(logits[:, :-1, 1], continue_targets(logits, gamma))
    return halt + cont


def should_halt(rule: str, logits: Tensor | None = None, value: Tensor | None = None,
                previous_value: Tensor | None = None, tol: float = DEFAULT_TOLERANCE) -> Tensor:
    """The decision ``[B]`` bool of one rule (see the module docstring).

    Args:
        rule: one of :data:`HALT_RULES`.
        logits: the halting head's ``[B, 2]`` (rules ``halt`` and ``q``).
        value, previous_value: the value head's ``log(1 + cost)`` now and one iteration earlier, ``[B]``.
        tol: the value rule's threshold on the predicted relative improvement.
    """
    if rule == "halt":
        return logits[:, 0] > 0
    if rule == "q":
        return logits[:, 0] > logits[:, 1]
    if rule == "value":
        return previous_value - value < tol
    raise TRCError(f"unknown halting rule {rule!r}; known: {', '.join(HALT_RULES)}")


def first_halt(halt_probability: Tensor, threshold: float = 0.5) -> Tensor:
    """Where the ``halt`` rule with another threshold would stop each start, from a run of all iterations.

    A halted start's plan is frozen, so stopping after iteration ``k`` returns iterate ``k``
    of the full run: one full run answers every threshold.

    Args:
        halt_probability: ``sigmoid(q_halt)`` of every iterate, ``[N, K+1]`` (iterate 0 is ignored).
        threshold: halt at the first ``k >= 1`` whose probability exceeds it (0.5 is ``q_halt > 0``).

    Returns:
        ``[N]`` long: the iterations used, ``K`` where no iterate exceeds the threshold.
    """
    over = halt_probability[:, 1:] > threshold                     # (N, K)
    over[:, -1] = True
    return over.float().argmax(1) + 1
