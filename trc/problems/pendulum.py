"""Torque-limited pendulum swing-up, ``theta`` measured from upright.

``theta' = omega``, ``omega' = (g/l) sin(theta) - b/(m l^2) omega + u/(m l^2)``
with ``m = l = 1``, ``g = 9.81``, ``b = 0.1`` and ``|u| <= 3``: the torque cannot
hold the pendulum level (it would need ``m g l = 9.81``), so from hanging it must
swing up.  Start states ``theta ~ U[-pi, pi]``, ``omega ~ U[-1, 1]``.

The cost is periodic in the angle, so that neither the swing direction nor a
full turn is punished: with the chord ``c = 2 sin((theta - theta*)/2)``
(``c^2 = 2 (1 - cos(theta - theta*))``) and ``e = (c, omega - omega*)``,

    l(x, u) = e' Q e + u' R u,    l_f(x) = e' Qf e,

which with ``Q = diag(1, 0.1)``, ``R = 0.01``, ``Qf = diag(100, 10)`` is
``2 (1 - cos theta) + 0.1 omega^2 + 0.01 u^2`` per step and
``100 * 2 (1 - cos theta_T) + 10 omega_T^2`` at the end, and near the top the
quadratic cost of those matrices.  Success: ``||(wrap(theta_T), omega_T)|| < 0.2``
with the angle error wrapped to ``(-pi, pi]``.

The optimal expert starts from the classic swing-up controller
(:meth:`Pendulum.swing_up_controls`) besides its generic guesses: clipped LQR
alone never swings, and the "don't swing" local minimum traps a local solver.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from trc.cost import quad
from trc.problems.base import ControlProblem, diag


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to ``(-pi, pi]``."""
    return math.pi - torch.remainder(math.pi - a, 2.0 * math.pi)


@dataclass(frozen=True)
class Pendulum(ControlProblem):
    """Damped pendulum with a bounded torque, to be swung up and balanced (see the module docstring)."""

    name: str = "pendulum"
    n_x: int = 2
    n_u: int = 1
    dt: float = 0.05
    horizon: int = 100
    u_max: float = 3.0
    x0_low: tuple[float, ...] = (-math.pi, -1.0)
    x0_high: tuple[float, ...] = (math.pi, 1.0)
    target: tuple[float, ...] = (0.0, 0.0)
    Q: tuple = diag(1.0, 0.1)
    R: tuple = diag(0.01)
    Qf: tuple = diag(100.0, 10.0)
    success_tol: float = 0.2
    m: float = 1.0
    l: float = 1.0
    g: float = 9.81
    b: float = 0.1

    def dynamics(self, x, u):
        theta, omega = x[:, 0], x[:, 1]
        ml2 = self.m * self.l * self.l
        return torch.stack([omega, (self.g / self.l) * torch.sin(theta) - (self.b / ml2) * omega
                            + u[:, 0] / ml2], dim=-1)

    def acceleration(self, q, v, u, out):
        ml2 = self.m * self.l * self.l
        torch.sin(q, out=out)
        # times a cached 0-dim tensor: the same numbers as times the float, without converting it on every call
        out.mul_(_constant(self.g / self.l, out.dtype, out.device))
        out.add_(v, alpha=-self.b / ml2).add_(u, alpha=1.0 / ml2)

    def jacobians(self, x, u):
        J = x.new_zeros(2, 3, x.shape[0])  # [df/dx | df/du], in contiguous rows like VanDerPol's
        ml2 = self.m * self.l * self.l
        J[0, 1] = 1.0
        J[1, 0] = (self.g / self.l) * torch.cos(x[:, 0])
        J[1, 1] = -self.b / ml2
        J[1, 2] = 1.0 / ml2
        J = J.permute(2, 0, 1)
        return J[:, :, :2], J[:, :, 2:]

    def state_error(self, x, target):
        e = x - target
        return torch.cat([wrap_angle(e[..., :1]), e[..., 1:]], -1)

    def wrap_state(self, x, near=None, margin=0.0):
        theta = wrap_angle(x[..., :1])
        if near is not None and margin > 0:
            near = near[..., :1].detach()
            kept = near + wrap_angle(x[..., :1] - near)
            theta = torch.where(kept.abs() <= math.pi + margin, kept, theta)
        return torch.cat([theta, x[..., 1:]], -1)

    def features(self, x):
        """``(cos theta, sin theta, omega / (2 sqrt(g / l)))``: the speed on the scale a fall from the top reaches."""
        theta, omega = x[..., :1], x[..., 1:]
        return torch.cat([torch.cos(theta), torch.sin(theta), omega / (2 * math.sqrt(self.g / self.l))], -1)

    def _chord_error(self, x, target):
        e = x - target
        return torch.cat([2.0 * torch.sin(0.5 * e[..., :1]), e[..., 1:]], -1)

    def stage_cost(self, x, u, target):
        Q, R, _ = self.cost_matrices(x.dtype, x.device)
        return quad(self._chord_error(x, target), Q) + quad(u, R)

    def terminal_cost(self, x, target):
        return quad(self._chord_error(x, target), self.cost_matrices(x.dtype, x.device)[2])

    def swing_up_controls(self, x0, target, gain: float = 10.0, catch: float = 0.5):
        """The classic swing-up controller, simulated from ``x0 [B, n_x]``: ``U [B, T, n_u]``.

        Energy pumping, ``u = b omega + gain (E* - E) omega`` clipped, with
        ``E = I omega^2 / 2 + m g l (cos theta - 1)`` (``E* = 0``: upright at rest; then
        ``dE/dt = omega (u - b omega)``, so energy rises while ``E < E*``); at rest ``omega`` is
        taken as ``1e-3``, so the pumping starts from a small positive push (``gain |E| 1e-3``)
        and grows it; within ``catch`` radians of the top, the LQR gain of the
        upright (its first finite-horizon gain) takes over and balances.
        """
        from trc.data.experts import lqr_gains

        K = lqr_gains(self, target[:1].double())[0][0, 0].to(x0.dtype)     # (n_u, n_x)
        inertia, mgl = self.m * self.l ** 2, self.m * self.g * self.l
        x, U = x0, []
        for _ in range(self.horizon):
            e = self.state_error(x, target)
            energy = 0.5 * inertia * x[:, 1] ** 2 + mgl * (torch.cos(e[:, 0]) - 1.0)
            omega = torch.where(x[:, 1].abs() < 1e-3, torch.full_like(x[:, 1], 1e-3), x[:, 1])
            pump = self.b * x[:, 1] - gain * energy * omega
            u = torch.where(e[:, 0].abs() < catch, -(e @ K.T)[:, 0], pump).clamp(-self.u_max, self.u_max)
            x = self.step(x, u[:, None])
            U.append(u)
        return torch.stack(U, 1).unsqueeze(-1)

    def warm_starts(self, x0, target):
        return self.swing_up_controls(x0, target)[None]

    def cost_derivatives(self, X, U, target):
        """Closed form of the base class's autograd derivatives (2-7 times faster for the DDP: 7x at
        batch 16, 2.4x at batch 1000 in float64).

        With ``e = (c, omega - omega*)``, ``c = 2 sin(d/2)``, ``d = theta - theta*`` and
        ``S = Q + Q'``: ``l_x = J' S e`` with ``J = diag(cos(d/2), 1)``, and
        ``l_xx = J' S J + diag(-(S e)_0 sin(d/2) / 2, 0)``.
        """
        Q, R, Qf = self.cost_matrices(X.dtype, X.device)
        T = U.shape[1]
        W = torch.cat([(Q + Q.T).expand(T, 2, 2), (Qf + Qf.T)[None]])              # (T+1, 2, 2)
        half = 0.5 * (X[..., 0] - target[:, None, 0])                                 # (B, T+1)
        e = self._chord_error(X, target.unsqueeze(1))                               # (B, T+1, 2)
        Se = (W @ e.unsqueeze(-1)).squeeze(-1)                                      # (B, T+1, 2)
        j = torch.stack([torch.cos(half), torch.ones_like(half)], -1)               # diag of J
        lxx = W * j.unsqueeze(-1) * j.unsqueeze(-2)
        lxx[..., 0, 0] -= 0.5 * Se[..., 0] * torch.sin(half)
        Rs = R + R.T
        return {"lx": j * Se, "lxx": lxx, "lu": U @ Rs, "luu": Rs.expand(*U.shape[:2], 1, 1),
                "lux": U.new_zeros(*U.shape[:2], 1, 2)}


@functools.lru_cache(maxsize=64)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-dim tensor (read only): multiplying by it skips the conversion a float costs."""
    return torch.tensor(value, dtype=dtype, device=device)
