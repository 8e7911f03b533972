"""Forced Van der Pol oscillator ``x1' = x2, x2' = mu (1 - x1^2) x2 - x1 + u``.

With ``mu = 1`` the origin is an unstable focus surrounded by a stable limit
cycle: an open-loop plan must steer the state onto the origin and hold it there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trc.problems.base import ControlProblem, diag


@dataclass(frozen=True)
class VanDerPol(ControlProblem):
    """Van der Pol oscillator with a bounded additive force on the velocity."""

    name: str = "vanderpol"
    n_x: int = 2
    n_u: int = 1
    dt: float = 0.05
    horizon: int = 100
    u_max: float = 2.0
    x0_low: tuple[float, ...] = (-2.0, -2.0)
    x0_high: tuple[float, ...] = (2.0, 2.0)
    target: tuple[float, ...] = (0.0, 0.0)
    Q: tuple = diag(10.0, 5.0)
    R: tuple = diag(0.1)
    Qf: tuple = diag(200.0, 100.0)
    success_tol: float = 0.2
    mu: float = 1.0

    def dynamics(self, x, u):
        x1, x2 = x[:, 0], x[:, 1]
        return torch.stack([x2, self.mu * (1.0 - x1 * x1) * x2 - x1 + u[:, 0]], dim=-1)

    def acceleration(self, q, v, u, out):
        # v' = u + mu v - q - mu q (q v) = mu (1 - q^2) v - q + u, in four operations
        qv = q * v
        torch.add(u, v, alpha=self.mu, out=out)
        out.sub_(q).addcmul_(q, qv, value=-self.mu)

    def jacobians(self, x, u):
        x1, x2 = x[:, 0], x[:, 1]
        # built entry by entry in contiguous rows (about twice as fast for the
        # fast adjoint's many rows), returned as [B, 2, 2] and [B, 2, 1] views
        J = x.new_zeros(2, 3, x.shape[0])  # [df/dx | df/du]
        J[0, 1] = 1.0
        J[1, 0] = -2.0 * self.mu * x1 * x2 - 1.0
        J[1, 1] = self.mu * (1.0 - x1 * x1)
        J[1, 2] = 1.0
        J = J.permute(2, 0, 1)
        return J[:, :, :2], J[:, :, 2:]


def vanderpol_constrained(**overrides) -> VanDerPol:
    """Van der Pol with a tight bound (|u| <= 1) and a wider start box ([-3, 3]^2).

    Here clipped LQR is far from optimal: the case where learning from the true
    cost must beat imitation.
    """
    params = dict(name="vanderpol_constrained", u_max=1.0, x0_low=(-3.0, -3.0), x0_high=(3.0, 3.0))
    params.update(overrides)
    return VanDerPol(**params)


def simulate_vanderpol_torch(initial_state: torch.Tensor, controls: torch.Tensor,
                             mu: float = 1.0, dt: float = 0.05) -> torch.Tensor:
    """Differentiable Van der Pol simulation (the seed document's name).

    Args:
        initial_state: ``[B, 2]``.
        controls: ``[B, T, 1]``, used as given (not clipped).
        mu: damping parameter.
        dt: RK4 step length.

    Returns:
        states ``[B, T+1, 2]``.
    """
    problem = VanDerPol(mu=mu, dt=dt, horizon=controls.shape[1])
    return problem.rollout(initial_state, controls)
