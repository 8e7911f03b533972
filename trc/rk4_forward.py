"""The RK4 forward loop without a graph, in as few torch operations as possible.

On CPU a batched rollout costs about 2-3 microseconds per torch operation,
whatever the batch: a Van der Pol rollout of ``T = 100`` steps through
:func:`trc.dynamics.rollout` runs some 5400 of them.  Both loops here compute
``rollout(rk4(f, dt), x0, U)`` (to rounding) in inference mode, writing every
stage into preallocated buffers (``out=``) instead of allocating.  Both return
``X [B, T+1, n_x]`` as a view of their time-major buffer, not a contiguous
copy: besides the copy it saves, an error ``X - target [B, 1, n_x]`` is then
2.5-4 times faster (batch 64 to 1000; the broadcast runs along the batch, which is
contiguous, instead of along ``n_x = 2`` numbers at a time).

:func:`rk4_forward` (any dynamics) calls ``f(x [B, n_x], u [B, n_u])`` four
times per step and combines the stages with fused ``add`` calls.

:func:`second_order_forward` is for problems whose state is positions and
velocities, ``x = (q, v)`` with ``q' = v`` and ``v' = a(q, v, u)``
(``n_x = 2 m``), which supply the acceleration ``a`` row-major (see
:meth:`trc.problems.ControlProblem.acceleration`).  It keeps the state as rows
``[n_x, B]`` and each RK4 stage ``s`` in one buffer of rows ``(q_s, v_s, a_s)``,
so that the stage's state ``(q_s, v_s)`` and its slope ``k_s = (v_s, a_s)`` are
two overlapping views: a stage costs one ``add`` for the next stage's state
plus the few operations of ``a``.  Van der Pol: 23 operations a step instead of
about 60, three times faster (``benchmarks/rollout.py``).
"""

from __future__ import annotations

from typing import Callable

import torch

from trc.dynamics import Dynamics
from trc.errors import TRCError

Tensor = torch.Tensor
# acceleration(q [m, B], v [m, B], u [n_u, B], out [m, B]) writes v' into out
Acceleration = Callable[[Tensor, Tensor, Tensor, Tensor], None]


def rk4_forward(f: Dynamics, dt: float, x0: Tensor, U: Tensor) -> Tensor:
    """``X [B, T+1, n_x]`` of ``xdot = f(x, u)`` from ``x0 [B, n_x]`` along ``U [B, T, n_u]``, no graph."""
    B, T, _ = U.shape
    h2, h6 = 0.5 * dt, dt / 6.0
    X = x0.new_empty(T + 1, B, x0.shape[1])                      # time-major while filling
    with torch.inference_mode():
        X[0] = x0
        xs, us = X.unbind(0), U.transpose(0, 1).contiguous().unbind(0)  # contiguous u_t: cheaper reads in f
        for t in range(T):
            x, u = xs[t], us[t]
            k1 = f(x, u)
            k2 = f(torch.add(x, k1, alpha=h2), u)
            k3 = f(torch.add(x, k2, alpha=h2), u)
            k4 = f(torch.add(x, k3, alpha=dt), u)
            s = torch.add(k1, k4)
            s.add_(k2, alpha=2.0).add_(k3, alpha=2.0)
            torch.add(x, s, alpha=h6, out=xs[t + 1])
    return X.transpose(0, 1)


def second_order_forward(acceleration: Acceleration, dt: float, x0: Tensor, U: Tensor) -> Tensor:
    """Like :func:`rk4_forward` for ``x = (q, v)``, ``q' = v``, ``v' = acceleration(q, v, u)``.

    Args:
        acceleration: writes ``v' [m, B]`` into ``out`` given ``q, v [m, B]``, ``u [n_u, B]``.
        dt: step length.
        x0: start states ``[B, n_x]``, ``n_x = 2 m``.
        U: controls ``[B, T, n_u]``.

    Returns:
        ``X [B, T+1, n_x]``.
    """
    B, T, _ = U.shape
    n = x0.shape[1]
    if n % 2:
        raise TRCError(f"a second-order state holds positions and velocities (n_x = 2 m), got n_x = {n}")
    m = n // 2
    h2, h6 = 0.5 * dt, dt / 6.0
    # rows (q_t, v_t, a_t) of every step: a_t = acceleration at x_t, the first stage's slope
    Xa = x0.new_empty(T + 1, n + m, B)
    S = x0.new_empty(3, n + m, B)     # rows (q_s, v_s, a_s) of stages s = 2, 3, 4
    k_sum = x0.new_empty(n, B)
    with torch.inference_mode():
        Xa[0, :n] = x0.t()
        us = U.permute(1, 2, 0).contiguous().unbind(0)                # u_t [n_u, B]
        # views made once: x = rows :n, k = (v, a) = rows m:, q, v, a
        x, k, q, v, a = (Xa[:, :n].unbind(0), Xa[:, m:].unbind(0), Xa[:, :m].unbind(0),
                         Xa[:, m:n].unbind(0), Xa[:, n:].unbind(0))
        zs, ks, qs, vs, as_ = (S[:, :n].unbind(0), S[:, m:].unbind(0), S[:, :m].unbind(0),
                               S[:, m:n].unbind(0), S[:, n:].unbind(0))
        for t in range(T):
            u, xt = us[t], x[t]
            acceleration(q[t], v[t], u, a[t])                           # k1 = k[t]
            torch.add(xt, k[t], alpha=h2, out=zs[0])
            acceleration(qs[0], vs[0], u, as_[0])                       # k2 = ks[0]
            torch.add(xt, ks[0], alpha=h2, out=zs[1])
            acceleration(qs[1], vs[1], u, as_[1])                       # k3 = ks[1]
            torch.add(xt, ks[1], alpha=dt, out=zs[2])
            acceleration(qs[2], vs[2], u, as_[2])                       # k4 = ks[2]
            torch.add(k[t], ks[2], out=k_sum)
            k_sum.add_(ks[0], alpha=2.0).add_(ks[1], alpha=2.0)
            torch.add(xt, k_sum, alpha=h6, out=x[t + 1])
    return Xa[:, :n].permute(2, 0, 1)
