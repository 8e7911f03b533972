"""Quadratic trajectory cost and final error, as plain batched functions.

Shapes as in :mod:`trc.dynamics`: ``X [B, T+1, n_x]``, ``U [B, T, n_u]``,
``target [B, n_x]`` (or ``[n_x]``, broadcast).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def quad(e: Tensor, M: Tensor) -> Tensor:
    """``e' M e`` over the last axis: ``e [..., n]``, ``M [n, n]`` -> ``[...]``."""
    return torch.einsum("...i,ij,...j->...", e, M, e)


def trajectory_cost(X: Tensor, U: Tensor, target: Tensor, Q: Tensor, R: Tensor, Qf: Tensor) -> Tensor:
    """``sum_t e_t'Q e_t + u_t'R u_t`` over ``t < T`` plus ``e_T'Qf e_T``, per sample ``[B]``.

    Args:
        X: trajectory ``[B, T+1, n_x]``.
        U: controls ``[B, T, n_u]``.
        target: ``[B, n_x]`` or ``[n_x]``; ``e_t = x_t - target``.
        Q, R, Qf: ``[n_x, n_x]``, ``[n_u, n_u]``, ``[n_x, n_x]``.
    """
    if X.dim() != 3 or U.dim() != 3 or X.shape[0] != U.shape[0] or X.shape[1] != U.shape[1] + 1:
        from trc.errors import TRCError

        raise TRCError(f"trajectory_cost needs X [B, T+1, n_x] and U [B, T, n_u] with the same B and T, "
                       f"got X {list(X.shape)} and U {list(U.shape)}")
    E = X - target.unsqueeze(-2)
    stage = quad(E[:, :-1], Q).sum(-1) + quad(U, R).sum(-1)
    return stage + quad(E[:, -1], Qf)


def final_error(X: Tensor, target: Tensor) -> Tensor:
    """``||x_T - target||_2`` per sample, ``[B]``."""
    return torch.linalg.vector_norm(X[:, -1] - target, dim=-1)
