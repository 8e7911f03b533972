"""Fast RK4 rollout: a graph-free forward loop and a hand-written discrete adjoint.

On CPU a batched rollout is dominated by the fixed cost of each torch
operation (a few microseconds), not by arithmetic: a Van der Pol rollout of
``T = 100`` steps runs about 5400 small operations forward and half as many again
backward through autograd.  :func:`rk4_rollout` computes the same trajectory
and the same gradients with far fewer operations.

**Forward.**  The RK4 loop without a graph, in few operations
(:mod:`trc.rk4_forward`; fused further for second-order problems that
supply their acceleration).  It keeps only the trajectory; the backward pass
recomputes the stage states of all steps at once from it,

    z1 = x_t,  z2 = x_t + h/2 k1,  z3 = x_t + h/2 k2,  z4 = x_t + h k3,
    k_s = f(z_s, u_t),  x_{t+1} = x_t + h/6 (k1 + 2 k2 + 2 k3 + k4),

as four batched calls of ``f`` on the ``c B`` rows of a run of ``c`` steps.

**Backward (discrete adjoint).**  With ``A_s = df/dx`` and ``B_s = df/du``
at ``(z_s, u_t)``, the Jacobians of one step follow by the chain rule through
the stages, written for the block ``J_s = [dk_s/dx_t | dk_s/du_t]``
(``n_x x (n_x + n_u)``):

    J1 = [A1 | B1],  J2 = [A2 | B2] + h/2 A2 J1,
    J3 = [A3 | B3] + h/2 A3 J2,  J4 = [A4 | B4] + h A4 J3,
    W_t = [Phi_t | Gamma_t] = [I | 0] + h/6 (J1 + 2 J2 + 2 J3 + J4).

None of this depends on the gradient, so it is computed for many steps and
all samples at once: one call of the problem's ``jacobians`` on the ``4 c B``
recomputed stage states of ``c`` steps (``c B`` about :data:`CHUNK_ROWS`, so that the
temporaries stay in cache), then elementwise products on an entry-major
layout (one contiguous row per matrix entry), much faster than ``bmm`` on
tiny matrices.  What remains serial is ``n_x`` multiply-adds per step: with
``g_t = dL/dx_t`` and row vectors ``lambda_t``,

    lambda_T = g_T,  [lambda_t | dL/du_t] = [g_t | 0] + lambda_{t+1} W_t,

and ``dL/dx_0 = lambda_0``.  This is exactly the derivative of the discrete
RK4 map (not of the continuous ODE), so gradients agree with autograd through
the loop to rounding.

Limits: the dynamics ``f`` must have no trainable parameters (gradients flow to
``x0`` and ``U`` only), and double backward is not supported (it raises).
Problems without analytic Jacobians fall back to plain autograd.  Jacobians
built entry by entry (see :class:`trc.problems.VanDerPol`) are the cheapest
to evaluate and to read here.  ``benchmarks/rollout.py`` measures the gain.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from trc.dynamics import Dynamics, rk4, rollout
from trc.rk4_forward import Acceleration, rk4_forward, second_order_forward

Tensor = torch.Tensor
Jacobians = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

CHUNK_ROWS = 8192  # step-sample pairs whose step Jacobians are computed together


def rk4_rollout(f: Dynamics, dt: float, x0: Tensor, U: Tensor,
                jacobians: Jacobians | None = None, acceleration: Acceleration | None = None) -> Tensor:
    """Simulate ``xdot = f(x, u)`` by RK4 along ``U``; fast forward and backward.

    Equal to ``rollout(rk4(f, dt), x0, U)`` (to rounding), including gradients.

    Args:
        f: continuous dynamics ``f(x [B, n_x], u [B, n_u]) -> xdot [B, n_x]``,
            without trainable parameters.
        dt: step length; ``u_t`` is held over each step.
        x0: start states ``[B, n_x]``.
        U: controls ``[B, T, n_u]``, same dtype and device as ``x0``.
        jacobians: ``(x, u) -> (df/dx [B, n_x, n_x], df/du [B, n_x, n_u])``.
            With it, gradients come from the hand-written adjoint; without
            it, from autograd through the loop.
        acceleration: for a second-order ``f`` (``x = (q, v)``, ``q' = v``), ``v'``
            row-major as :func:`trc.rk4_forward.second_order_forward` takes it:
            the forward loop then runs fused.

    Returns:
        The trajectory ``X [B, T+1, n_x]`` with ``X[:, 0] == x0``.
    """
    if not (torch.is_grad_enabled() and (x0.requires_grad or U.requires_grad)):
        return _forward(f, dt, x0, U, acceleration)
    if jacobians is None or U.shape[1] == 0:
        return rollout(rk4(f, dt), x0, U)
    return _RK4Adjoint.apply(x0, U, f, jacobians, acceleration, dt)


def _forward(f: Dynamics, dt: float, x0: Tensor, U: Tensor, acceleration: Acceleration | None) -> Tensor:
    """The trajectory without a graph, by the fused loop where the problem allows it."""
    if acceleration is not None:
        return second_order_forward(acceleration, dt, x0, U)
    return rk4_forward(f, dt, x0, U)


def _stage_states(f: Dynamics, dt: float, X: Tensor, U: Tensor) -> Tensor:
    """The RK4 stage states ``z1..z4`` of steps ``x_t -> x_{t+1}``, all computed at once.

    Args:
        f: the dynamics.
        dt: step length.
        X: the states ``x_t`` of ``c`` steps, ``[c, B, n_x]``.
        U: their controls ``[c, B, n_u]``.

    Returns:
        ``Z [4, c, B, n_x]`` (stage-major).
    """
    c, B, n = X.shape
    u = U.reshape(c * B, -1)
    Z = X.new_empty(4, c * B, n)
    Z[0] = X.reshape(c * B, n)
    for s, a in ((1, 0.5 * dt), (2, 0.5 * dt), (3, dt)):
        torch.add(Z[0], f(Z[s - 1], u), alpha=a, out=Z[s])
    return Z.view(4, c, B, n)


def _step_jacobians(jacobians: Jacobians, Z: Tensor, U: Tensor, dt: float) -> Tensor:
    """``W_t = [Phi_t | Gamma_t]`` for a run of ``c`` steps and all samples, entry-major.

    Args:
        jacobians: the problem's analytic Jacobians.
        Z: stage states ``[4, c, B, n_x]`` (stage-major).
        U: controls of those steps, time-major ``[c, B, n_u]``.
        dt: step length.

    Returns:
        ``W [n_x, n_x + n_u, c, B]``, ``W[i, j, t, b]`` = entry ``(i, j)`` of ``W_t``
        for sample ``b``.
    """
    _, c, B, n = Z.shape
    m = U.shape[2]
    M = c * B
    A, Bu = jacobians(Z.view(4 * M, n), U.expand(4, c, B, m).reshape(4 * M, m))
    F = _entry_major(A.unflatten(0, (4, M)).permute(2, 3, 0, 1), Bu.unflatten(0, (4, M)).permute(2, 3, 0, 1))

    def next_stage(s: int, J: Tensor, a: float) -> Tensor:
        """``[A_s | B_s] + a A_s J``, entry-major ``[n, n + m, M]``."""
        out = torch.addcmul(F[:, :, s], F[:, 0, s].unsqueeze(1), J[0].unsqueeze(0), value=a)
        for k in range(1, n):
            out.addcmul_(F[:, k, s].unsqueeze(1), J[k].unsqueeze(0), value=a)
        return out

    J1 = F[:, :, 0]
    J2 = next_stage(1, J1, 0.5 * dt)
    J3 = next_stage(2, J2, 0.5 * dt)
    # W = J1 + 2 J2 + 2 J3 + J4 with J4 = [A4 | B4] + h A4 J3 added in place
    W = torch.add(J1, F[:, :, 3])
    W.add_(J2, alpha=2.0).add_(J3, alpha=2.0)
    for k in range(n):
        W.addcmul_(F[:, k, 3].unsqueeze(1), J3[k].unsqueeze(0), value=dt)
    W.diagonal(dim1=0, dim2=1).add_(6.0 / dt)  # + I, before the scaling by dt/6
    return W.mul_(dt / 6.0).view(n, n + m, c, B)


def _entry_major(A: Tensor, Bu: Tensor) -> Tensor:
    """``F [n, n + m, 4, M]`` with ``F[:, :n] = A``, ``F[:, n:] = Bu``, contiguous rows.

    A view when ``A`` and ``Bu`` already are the two parts of one such block (as
    :meth:`trc.problems.VanDerPol.jacobians` returns them), else a copy.
    """
    n, m = A.shape[1], Bu.shape[1]
    s = A.stride()
    if (Bu.stride() == s and s[3] == 1 and s[2] == A.shape[3] and s[0] == (n + m) * s[1]
            and Bu.data_ptr() == A.data_ptr() + n * s[1] * A.element_size()):
        return A.as_strided((n, n + m) + A.shape[2:], s)
    F = A.new_empty((n, n + m) + A.shape[2:])
    F[:, :n].copy_(A)
    F[:, n:].copy_(Bu)
    return F


class _RK4Adjoint(torch.autograd.Function):
    """RK4 rollout with the discrete adjoint as its backward (see module docstring)."""

    @staticmethod
    def forward(ctx, x0: Tensor, U: Tensor, f: Dynamics, jacobians: Jacobians,
                acceleration: Acceleration | None, dt: float) -> Tensor:
        X = _forward(f, dt, x0, U, acceleration)
        ctx.f, ctx.jacobians, ctx.dt = f, jacobians, dt
        ctx.save_for_backward(x0, U, X)  # unpacking checks that none was changed in place
        return X

    @staticmethod
    @once_differentiable
    def backward(ctx, gX: Tensor):
        _, U, X = ctx.saved_tensors
        n = gX.shape[2]
        with torch.inference_mode():
            Y = _adjoint(ctx.f, ctx.jacobians, ctx.dt, X, gX, U)
        # copies made outside inference mode are ordinary tensors
        gx0 = Y[0, :n].t().clone() if ctx.needs_input_grad[0] else None
        gU = Y[:, n:].permute(2, 0, 1).clone(memory_format=torch.contiguous_format) \
            if ctx.needs_input_grad[1] else None
        return gx0, gU, None, None, None, None


def _adjoint(f: Dynamics, jacobians: Jacobians, dt: float, X: Tensor, gX: Tensor, U: Tensor) -> Tensor:
    """The backward recursion ``[lambda_t | dL/du_t] = [g_t | 0] + lambda_{t+1} W_t``.

    Args:
        f: the dynamics (to recompute the stage states).
        jacobians: the problem's analytic Jacobians.
        dt: step length.
        X: the trajectory ``[B, T+1, n_x]``.
        gX: ``dL/dX [B, T+1, n_x]``.
        U: controls ``[B, T, n_u]``.

    Returns:
        ``Y [T, n_x + n_u, B]``, ``Y[t] = [lambda_t | dL/du_t]`` entry-major, so
        ``dL/dx0 = Y[0, :n_x].t()``.
    """
    B, T, m = U.shape
    n = gX.shape[2]
    G = gX.new_empty(T, n + m, B)  # G[t] = [g_t | 0]
    G[:, :n].copy_(gX[:, :T].permute(1, 2, 0))
    G[:, n:].zero_()
    Y = torch.empty_like(G)
    Gs, Ys = G.unbind(0), Y.unbind(0)
    rows = [Y[:, k:k + 1].unbind(0) for k in range(n)]  # rows[k][t] = lambda_t[k], [1, B]
    lam = [gX[:, T, k].unsqueeze(0) for k in range(n)]
    Xt, Ut = X.transpose(0, 1).contiguous(), U.transpose(0, 1).contiguous()
    c = max(1, CHUNK_ROWS // B)  # steps whose W is computed together (bounds memory)
    for t1 in range(T, 0, -c):
        t0 = max(0, t1 - c)
        Z = _stage_states(f, dt, Xt[t0:t1], Ut[t0:t1])
        W = _step_jacobians(jacobians, Z, Ut[t0:t1], dt)
        Wk = [W[k].unbind(1) for k in range(n)]  # Wk[k][t - t0] = row k of W_t, [n + m, B]
        for t in range(t1 - 1, t0 - 1, -1):
            y = torch.addcmul(Gs[t], lam[0], Wk[0][t - t0], out=Ys[t])
            for k in range(1, n):
                y.addcmul_(lam[k], Wk[k][t - t0])
            lam = [r[t] for r in rows]
    return Y
