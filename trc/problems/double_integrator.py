"""Double integrator ``x1' = x2, x2' = u``: linear, so clipped LQR is optimal when unclipped."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trc.problems.base import ControlProblem, diag


@dataclass(frozen=True)
class DoubleIntegrator(ControlProblem):
    """Position and velocity driven by a bounded force."""

    name: str = "double_integrator"
    n_x: int = 2
    n_u: int = 1
    dt: float = 0.33
    horizon: int = 15
    u_max: float = 4.0
    x0_low: tuple[float, ...] = (-2.0, -2.0)
    x0_high: tuple[float, ...] = (2.0, 2.0)
    target: tuple[float, ...] = (0.0, 0.0)
    Q: tuple = diag(10.0, 5.0)
    R: tuple = diag(0.1)
    Qf: tuple = diag(200.0, 100.0)
    success_tol: float = 0.1

    def dynamics(self, x, u):
        return torch.stack([x[:, 1], u[:, 0]], dim=-1)

    def acceleration(self, q, v, u, out):
        out.copy_(u)

    def jacobians(self, x, u):
        B = x.shape[0]
        A = x.new_zeros(B, 2, 2)
        A[:, 0, 1] = 1.0
        Bu = x.new_zeros(B, 2, 1)
        Bu[:, 1, 0] = 1.0
        return A, Bu
