"""The control problem: everything problem-specific in one small object.

A problem fixes the dynamics ``f(x, u)``, the sampling time ``dt``, the horizon
``T``, the control bound ``|u| <= u_max`` (elementwise), the box that start
states are drawn from, the default target, and the quadratic cost

    J(X, U) = sum_{t=0}^{T-1} [ e_t' Q e_t + u_t' R u_t ] + e_T' Qf e_T,
    e_t = x_t - target.

Success means the final error ``||x_T - target||_2`` is below ``success_tol``.
Shapes follow :mod:`trc.dynamics`; every method is batched and differentiable.

To add a problem, subclass :class:`ControlProblem` in a small file, implement
:meth:`~ControlProblem.dynamics` (and, for the fast simulator,
:meth:`~ControlProblem.jacobians` and, for a second-order system,
:meth:`~ControlProblem.acceleration`; without them autograd does the work), and
name it ``"module:Name"`` wherever a problem is named (``get_problem``, ``--problem``),
register it through the ``trc.problems`` entry points, or add one line to the
registry in :mod:`trc.problems`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from trc.adjoint import rk4_rollout
from trc.cost import quad, sum_over_time, trajectory_cost
from trc.dynamics import rk4
from trc.errors import TRCError

Tensor = torch.Tensor
HYSTERESIS = 0.25  # radians an angle may be shown beyond its canonical interval (ControlProblem.wrap_state)
Matrix = tuple[tuple[float, ...], ...]


def diag(*values: float) -> Matrix:
    """A diagonal matrix as nested tuples (hashable and JSON-able)."""
    n = len(values)
    return tuple(tuple(float(values[i]) if i == j else 0.0 for j in range(n)) for i in range(n))


@dataclass(frozen=True)
class ControlProblem:
    """Base class of a finite-horizon optimal control problem (see module docstring)."""

    name: str
    n_x: int
    n_u: int
    dt: float
    horizon: int
    u_max: float
    x0_low: tuple[float, ...]
    x0_high: tuple[float, ...]
    target: tuple[float, ...]
    Q: Matrix
    R: Matrix
    Qf: Matrix
    success_tol: float

    def __post_init__(self) -> None:
        """Validate every parameter, here and only here (``get_problem``, ``replace`` and loading all pass by)."""
        def bad(field: str, wanted: str) -> TRCError:
            return TRCError(f"problem {self.name!r}: {field} must be {wanted}, got {getattr(self, field)!r}")

        if not isinstance(self.name, str) or not self.name:
            raise TRCError(f"a problem's name must be a non-empty string, got {self.name!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for field in ("n_x", "n_u", "horizon"):
            if not _is_int(getattr(self, field)) or getattr(self, field) < 1:
                raise bad(field, "an integer >= 1")
            object.__setattr__(self, field, int(getattr(self, field)))
        positive = ("dt", "u_max", "success_tol")
        numbers = [k for k, v in defaults.items() if _is_real(v) and k not in ("n_x", "n_u", "horizon")]
        for field in dict.fromkeys([*positive, *numbers]):  # base fields, then a subclass's own (mu, ...)
            value = getattr(self, field)
            if _is_int(defaults.get(field)) and not _is_int(value):
                raise bad(field, "an integer")
            if not _is_real(value) or not math.isfinite(value) or (field in positive and value <= 0):
                raise bad(field, "a finite number > 0" if field in positive else "a finite number")
            if not _is_int(defaults.get(field)):
                object.__setattr__(self, field, float(value))
        for field in ("x0_low", "x0_high", "target", "Q", "R", "Qf"):  # lists are fine: stored as tuples
            object.__setattr__(self, field, _tuplify(getattr(self, field)))
        for field, size in (("x0_low", self.n_x), ("x0_high", self.n_x), ("target", self.n_x)):
            v = getattr(self, field)
            if not isinstance(v, tuple) or len(v) != size or not all(_is_real(a) and math.isfinite(a) for a in v):
                raise bad(field, f"{size} finite numbers")
        if any(lo > hi for lo, hi in zip(self.x0_low, self.x0_high)):
            raise TRCError(f"problem {self.name!r}: x0_low must not exceed x0_high, got {self.x0_low} and "
                           f"{self.x0_high}")
        for field, size in (("Q", self.n_x), ("R", self.n_u), ("Qf", self.n_x)):
            m = getattr(self, field)
            if (not isinstance(m, tuple) or len(m) != size
                    or any(not isinstance(row, tuple) or len(row) != size for row in m)):
                raise TRCError(f"problem {self.name!r}: {field} must be {size}x{size}")
            if not all(_is_real(a) and math.isfinite(a) for row in m for a in row):
                raise bad(field, f"a {size}x{size} matrix of finite numbers")
            # a cost to minimise: Q and Qf positive semidefinite, R positive definite (LQR inverts it)
            M = torch.tensor(m, dtype=torch.float64)
            if not torch.allclose(M, M.T):
                raise bad(field, "a symmetric matrix")
            low = float(torch.linalg.eigvalsh(M).min())
            if (low <= 0) if field == "R" else (low < -1e-12 * max(1.0, float(M.abs().max()))):
                raise bad(field, "positive definite" if field == "R" else "positive semidefinite")

    # -- dynamics ---------------------------------------------------------------
    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        """Continuous dynamics ``xdot [B, n_x]`` at ``x [B, n_x]``, ``u [B, n_u]``."""
        raise NotImplementedError

    def jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(df/dx [B, n_x, n_x], df/du [B, n_x, n_u])``, or None if not provided.

        Problems that provide them get the fast adjoint simulator.
        """
        return None

    def acceleration(self, q: Tensor, v: Tensor, u: Tensor, out: Tensor) -> None:
        """For a second-order system only: write ``v' [m, B]`` into ``out``.

        A problem whose state is positions and velocities, ``x = (q, v)`` with
        ``q' = v`` (``n_x = 2 m``), may provide its acceleration ``v' = a(q, v, u)``
        row-major (``q, v [m, B]``, ``u [n_u, B]``: one contiguous row per entry),
        in as few torch operations as it can.  Then rollouts without gradient, and
        the forward pass of those with, run fused (:func:`trc.rk4_forward.second_order_forward`);
        otherwise they call :meth:`dynamics`.  It must agree with :meth:`dynamics`.
        """
        raise NotImplementedError

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """One RK4 step of length ``dt``: ``x [B, n_x], u [B, n_u] -> x_next [B, n_x]``."""
        return rk4(self.dynamics, self.dt)(x, u)

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """Simulate ``U [B, T, n_u]`` from ``x0 [B, n_x]``; returns ``X [B, T+1, n_x]``.

        Controls are used as given; call :meth:`clip` first to enforce the bound.
        Equal to ``trc.dynamics.rollout(self.step, x0, U)`` with its gradients, but
        faster (:func:`trc.adjoint.rk4_rollout`); problems that implement
        :meth:`jacobians` also get the hand-written adjoint as backward pass, and
        those that implement :meth:`acceleration` a fused forward loop.
        """
        from trc.errors import TRCError

        if x0.dim() != 2 or U.dim() != 3 or x0.shape[0] != U.shape[0] \
                or x0.shape[1] != self.n_x or U.shape[2] != self.n_u:
            raise TRCError(f"problem {self.name!r} simulates x0 [B, {self.n_x}] with U [B, T, {self.n_u}], "
                           f"got x0 {list(x0.shape)} and U {list(U.shape)}")
        if x0.dtype != U.dtype or x0.device != U.device:
            raise TRCError(f"x0 and U must share dtype and device, got {x0.dtype} on {x0.device} "
                           f"and {U.dtype} on {U.device}")
        return rk4_rollout(self.dynamics, self.dt, x0, U, self._own("jacobians"), self._own("acceleration"))

    def _own(self, method: str):
        """The bound method if this problem's class implements it (not the base's), else None."""
        mine = getattr(type(self), method) is not getattr(ControlProblem, method)
        return getattr(self, method) if mine else None

    # -- cost and success -------------------------------------------------------
    def target_like(self, x0: Tensor, target: Tensor | None = None) -> Tensor:
        """Per-sample targets ``[B, n_x]``: ``target`` if given, else the default one."""
        if target is not None:
            target = torch.as_tensor(target)
            if target.shape not in ((self.n_x,), (1, self.n_x), (x0.shape[0], self.n_x)):
                raise TRCError(f"targets must have shape [{self.n_x}] or [B, {self.n_x}] with B = {x0.shape[0]} "
                               f"start states, got {list(target.shape)}")
            return target.to(dtype=x0.dtype, device=x0.device).expand(x0.shape[0], self.n_x)
        return torch.tensor(self.target, dtype=x0.dtype, device=x0.device).expand(x0.shape[0], self.n_x)

    def cost_matrices(self, dtype=torch.float32, device=None) -> tuple[Tensor, Tensor, Tensor]:
        """``(Q [n_x, n_x], R [n_u, n_u], Qf [n_x, n_x])`` as tensors."""
        return tuple(torch.tensor(m, dtype=dtype, device=device) for m in (self.Q, self.R, self.Qf))

    def state_error(self, x: Tensor, target: Tensor) -> Tensor:
        """The error ``x - target``, ``[..., n_x]`` (broadcast); problems with angles wrap them."""
        return x - target

    def wrap_state(self, x: Tensor, near: Tensor | None = None, margin: float = 0.0) -> Tensor:
        """The same physical state in canonical coordinates (angles wrapped); identity by default.

        With ``near`` (the coordinates of the state shown last, ``[..., n_x]``) an angle keeps the
        representative nearest ``near``'s while that stays within ``margin`` of the canonical
        interval: hysteresis, so that a state moving back and forth across the wrap point is not
        shown as jumping from one end of the interval to the other (see
        :func:`trc.evaluation.closed_loop.closed_loop`).
        """
        return x

    def features(self, x: Tensor) -> Tensor:
        """The state ``[..., n_x]`` as features for a learned function of it, continuous in the physical state.

        By default the state on the start box's scale (the box maps to ``[-1, 1]``); a problem with an
        angle gives its cosine and sine instead, continuous where the wrapped angle jumps.
        """
        low, high = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (self.x0_low, self.x0_high))
        return (x - (low + high) / 2) / ((high - low) / 2).clamp_min(1e-6)

    def stage_cost(self, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
        """Stage cost ``l(x, u) [...]`` of ``x [..., n_x]``, ``u [..., n_u]``; default ``e'Q e + u'R u``."""
        Q, R, _ = self.cost_matrices(x.dtype, x.device)
        return quad(x - target, Q) + quad(u, R)

    def terminal_cost(self, x: Tensor, target: Tensor) -> Tensor:
        """Terminal cost ``l_f(x) [...]`` of ``x [..., n_x]``; default ``e'Qf e``."""
        return quad(x - target, self.cost_matrices(x.dtype, x.device)[2])

    def owns_cost(self) -> bool:
        """Whether the problem replaces the quadratic default cost with its own."""
        cls = type(self)
        return cls.stage_cost is not ControlProblem.stage_cost or cls.terminal_cost is not ControlProblem.terminal_cost

    def cost(self, X: Tensor, U: Tensor, target: Tensor | None = None) -> Tensor:
        """Trajectory cost ``[B]`` of ``X [B, T+1, n_x]`` under ``U [B, T, n_u]``."""
        tgt = self.target_like(X[:, 0], target)
        if not self.owns_cost():
            return trajectory_cost(X, U, tgt, *self.cost_matrices(X.dtype, X.device))
        return sum_over_time(self.stage_cost(X[:, :-1], U, tgt.unsqueeze(1))) + self.terminal_cost(X[:, -1], tgt)

    def cost_derivatives(self, X: Tensor, U: Tensor, target: Tensor) -> dict[str, Tensor]:
        """First and second derivatives of the stage and terminal costs along a trajectory.

        Exact for the quadratic default; by autograd (three or so backward passes, every
        point at once) for a problem's own cost.  Used by the optimal expert's DDP.

        Args:
            X: ``[B, T+1, n_x]``; U: ``[B, T, n_u]``; target: ``[B, n_x]``.

        Returns:
            ``lx [B, T+1, n_x]`` and ``lxx [B, T+1, n_x, n_x]`` (index ``T``: the terminal
            cost), ``lu [B, T, n_u]``, ``luu [B, T, n_u, n_u]`` and ``lux [B, T, n_u, n_x]``.
        """
        B, T, m = U.shape
        n = self.n_x
        if not self.owns_cost():
            Q, R, Qf = self.cost_matrices(X.dtype, X.device)
            Q, R, Qf = Q + Q.T, R + R.T, Qf + Qf.T
            E = X - target.unsqueeze(1)
            lxx = torch.cat([Q.expand(B, T, n, n), Qf.expand(B, 1, n, n)], 1)
            return {"lx": (lxx @ E.unsqueeze(-1)).squeeze(-1), "lxx": lxx, "lu": U @ R,
                    "luu": R.expand(B, T, m, m), "lux": X.new_zeros(B, T, m, n)}
        with torch.enable_grad():
            Z = torch.cat([X[:, :-1], U], -1).detach().requires_grad_(True)    # (B, T, n+m)
            xT = X[:, -1].detach().requires_grad_(True)
            tgt = target.detach()
            g = torch.autograd.grad(self.stage_cost(Z[..., :n], Z[..., n:], tgt.unsqueeze(1)).sum(), Z,
                                    create_graph=True)[0]
            gT = torch.autograd.grad(self.terminal_cost(xT, tgt).sum(), xT, create_graph=True)[0]
            H = torch.stack([torch.autograd.grad(g[..., i].sum(), Z, retain_graph=True,
                                                 materialize_grads=True)[0] for i in range(n + m)], -2)
            HT = torch.stack([torch.autograd.grad(gT[:, i].sum(), xT, retain_graph=i + 1 < n,
                                                  materialize_grads=True)[0] for i in range(n)], -2)
        g, gT, H, HT = g.detach(), gT.detach(), H.detach(), HT.detach()
        return {"lx": torch.cat([g[..., :n], gT.unsqueeze(1)], 1),
                "lxx": torch.cat([H[..., :n, :n], HT.unsqueeze(1)], 1),
                "lu": g[..., n:], "luu": H[..., n:, n:], "lux": H[..., n:, :n]}

    def final_error(self, X: Tensor, target: Tensor | None = None) -> Tensor:
        """``||state_error(x_T, target)||_2`` per sample, ``[B]``."""
        return torch.linalg.vector_norm(self.state_error(X[:, -1], self.target_like(X[:, 0], target)), dim=-1)

    def success(self, X: Tensor, target: Tensor | None = None) -> Tensor:
        """Whether the final error is below ``success_tol``, ``[B]`` bool."""
        return self.final_error(X, target) < self.success_tol

    def clip(self, U: Tensor) -> Tensor:
        """Controls clipped elementwise to ``[-u_max, u_max]``."""
        return U.clamp(-self.u_max, self.u_max)

    def evaluate(self, x0: Tensor, U: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Clip ``U``, simulate it, and return ``X``, ``cost``, ``final_error``, ``success``.

        A simulation that diverges (non-finite states, e.g. from a start far outside the box)
        has cost and final error ``inf`` and is no success; NaN or infinite ``x0`` or ``U`` is a
        :class:`~trc.errors.TRCError`.
        """
        from trc.errors import TRCError

        if not (torch.isfinite(x0).all() and torch.isfinite(U).all()):
            raise TRCError(f"problem {self.name!r} evaluates finite start states and controls, got NaN or infinity")
        U = self.clip(U)
        X = self.rollout(x0, U)
        diverged = ~torch.isfinite(X).flatten(1).all(1)
        cost, error = self.cost(X, U, target), self.final_error(X, target)
        cost, error = (torch.where(diverged | ~torch.isfinite(v), torch.inf, v) for v in (cost, error))
        return {"X": X, "cost": cost, "final_error": error, "success": self.success(X, target) & ~diverged}

    def warm_starts(self, x0: Tensor, target: Tensor) -> Tensor:
        """Problem-specific initial guesses for the optimal expert, ``[S, B, T, n_u]`` (``S = 0`` here).

        A problem whose cost has local minima that generic guesses fall into (the pendulum's
        "don't swing") supplies a heuristic controller's controls, simulated from ``x0 [B, n_x]``.
        """
        return x0.new_zeros(0, x0.shape[0], self.horizon, self.n_u)

    # -- sampling and bookkeeping -------------------------------------------------
    @property
    def start_box(self) -> str:
        """The start box in words, for messages: ``[-2, 2] x [-2, 2]``."""
        return " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in zip(self.x0_low, self.x0_high))

    def sample_initial_states(self, n: int, generator: torch.Generator | None = None,
                              dtype=torch.float32) -> Tensor:
        """``n`` start states drawn uniformly from the box, ``[n, n_x]``."""
        low = torch.tensor(self.x0_low, dtype=torch.float64)
        high = torch.tensor(self.x0_high, dtype=torch.float64)
        r = torch.rand(n, self.n_x, generator=generator, dtype=torch.float64)
        return (low + (high - low) * r).to(dtype)

    def to_dict(self) -> dict[str, Any]:
        """All parameters as a JSON-able dict; ``get_problem(**d)`` rebuilds the problem."""
        d = dataclasses.asdict(self)
        return {k: _listify(v) for k, v in d.items()}

    def replace(self, **overrides: Any) -> "ControlProblem":
        """A copy with some parameters changed (``dt``, ``horizon``, ``mu``, ...)."""
        from trc.errors import TRCError

        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TRCError(f"problem {self.name!r} has no parameter {unknown[0]!r}; "
                           f"known: {', '.join(sorted(fields))}")
        return dataclasses.replace(self, **{k: _tuplify(v) for k, v in overrides.items()})


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _listify(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_listify(i) for i in v]
    return v


def _tuplify(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return tuple(_tuplify(i) for i in v)
    return v
