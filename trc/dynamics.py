"""Batched, differentiable simulation of continuous-time control systems.

Notation (used throughout ``trc``; batch first everywhere):

==========  ===================  ==========================================
name        shape                meaning
==========  ===================  ==========================================
``x``       ``[B, n_x]``         a state per sample
``u``       ``[B, n_u]``         a control per sample
``x0``      ``[B, n_x]``         start states
``U``       ``[B, T, n_u]``      an open-loop control sequence per sample
``X``       ``[B, T+1, n_x]``    the trajectory, ``X[:, 0] == x0``
``dt``      scalar               sampling time; ``u`` is held over each step
==========  ===================  ==========================================

Dynamics are pure functions ``f(x, u) -> xdot`` with explicit parameters.
:func:`rk4` turns one into a one-step map ``x_{t+1} = step(x_t, u_t)`` by the
classical fourth-order Runge-Kutta rule with zero-order-hold controls, and
:func:`rollout` applies a step map along a control sequence.  Both are plain
autograd code: differentiable, any dtype, any device, and the reference that
:func:`trc.adjoint.rk4_rollout` (what ``ControlProblem.rollout`` uses) must
match, faster.
"""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor
Dynamics = Callable[[Tensor, Tensor], Tensor]
Step = Callable[[Tensor, Tensor], Tensor]


def rk4(f: Dynamics, dt: float) -> Step:
    """Return the RK4 one-step map of ``xdot = f(x, u)`` with ``u`` held for ``dt``.

    Args:
        f: continuous dynamics, ``f(x [B, n_x], u [B, n_u]) -> xdot [B, n_x]``.
        dt: step length.

    Returns:
        ``step(x [B, n_x], u [B, n_u]) -> x_next [B, n_x]``.
    """

    def step(x: Tensor, u: Tensor) -> Tensor:
        k1 = f(x, u)
        k2 = f(x + 0.5 * dt * k1, u)
        k3 = f(x + 0.5 * dt * k2, u)
        k4 = f(x + dt * k3, u)
        return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return step


def rollout(step: Step, x0: Tensor, U: Tensor) -> Tensor:
    """Simulate ``x_{t+1} = step(x_t, u_t)`` from ``x0`` along ``U``.

    Args:
        step: one-step map, for example from :func:`rk4`.
        x0: start states ``[B, n_x]``.
        U: controls ``[B, T, n_u]``.

    Returns:
        The trajectory ``X [B, T+1, n_x]`` with ``X[:, 0] == x0``.
    """
    xs = [x0]
    x = x0
    for t in range(U.shape[1]):
        x = step(x, U[:, t])
        xs.append(x)
    return torch.stack(xs, dim=1)
