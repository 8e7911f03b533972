"""Experts: clipped finite-horizon LQR and the per-instance optimum of a problem.

Both map start states ``x0 [B, n_x]`` (and targets ``[B, n_x]``, default the
problem's) to open-loop controls ``U [B, T, n_u]`` within ``|u| <= u_max``,
batched over samples.  They compute in float64 and return ``x0``'s dtype.

**LQR** (:func:`lqr_controls`).  Linearise the RK4 step at the target with
``u = 0``::

    x_{t+1} - x* ~ A (x_t - x*) + B u_t + c,    c = step(x*, 0) - x*

(``c = 0`` when the target is an equilibrium), run the backward Riccati
recursion with ``Q, R, Qf`` for time-varying gains ``u_t = -K_t e_t - k_t``,
apply them in closed loop on the true nonlinear dynamics with ``u_t``
clipped to the bound, and record the applied ``u_t``.

**Optimum** (:func:`optimal_controls`).  Minimise ``J(U) = cost(rollout(x0, U), U)``
over the box by control-limited iterative LQR (box-DDP, Tassa et al. 2014):
a backward pass over the step Jacobians along the current trajectory gives,
per step, the bounded Gauss-Newton update ``k_t`` (a box QP in ``n_u``
variables) and a feedback gain ``K_t`` on the unclamped controls; the forward
pass simulates ``u_t = clip(u_t + a k_t + K_t (x^_t - x_t))`` for several step
sizes ``a`` at once and keeps the cheapest one that decreases the cost enough.
Its fixed points are the KKT points of the bounded problem.  The cost is
separable over instances, so all run as one batch with their own step sizes
and stopping tests; several starts guard against the local minima of
non-convex problems, and the best per instance wins.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from trc.errors import TRCError
from trc.problems.base import ControlProblem

Tensor = torch.Tensor
Expert = Callable[..., Tensor]


def step_jacobians(problem: ControlProblem, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Jacobians of one RK4 step by autograd, per sample.

    Args:
        problem: supplies ``step``.
        x: states ``[B, n_x]``.
        u: controls ``[B, n_u]``.

    Returns:
        ``A = d step / dx  [B, n_x, n_x]`` and ``B = d step / du  [B, n_x, n_u]``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = u.detach().requires_grad_(True)
        y = problem.step(x, u)
        rows = [torch.autograd.grad(y[:, i].sum(), (x, u), retain_graph=i + 1 < y.shape[1],
                                    allow_unused=True, materialize_grads=True)
                for i in range(y.shape[1])]
    return torch.stack([r[0] for r in rows], 1), torch.stack([r[1] for r in rows], 1)


def closed_loop(problem: ControlProblem, x0: Tensor, K: Tensor, u_ff: Tensor,
                x_ref: Tensor) -> tuple[Tensor, Tensor]:
    """Apply ``u_t = clip(u_ff_t + K_t (x_t - x_ref_t))`` on the true dynamics.

    The difference is the problem's :meth:`~trc.problems.ControlProblem.state_error`
    (angles wrapped, where a problem has them).

    Args:
        problem: supplies ``step``, ``clip`` and ``horizon``.
        x0: start states ``[B, n_x]``.
        K: gains ``[T, B or 1, n_u, n_x]``.
        u_ff: feedforward controls ``[T, B or 1, n_u]``.
        x_ref: reference states ``[T, B or 1, n_x]``.

    Returns:
        ``X [B, T+1, n_x]`` and the applied ``U [B, T, n_u]``.
    """
    x, X, U = x0, [x0], []
    for t in range(problem.horizon):
        u = problem.clip(u_ff[t] + (K[t] @ problem.state_error(x, x_ref[t]).unsqueeze(-1)).squeeze(-1))
        x = problem.step(x, u)
        X.append(x)
        U.append(u)
    return torch.stack(X, 1), torch.stack(U, 1)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block.

    The experts issue many small operations (batch x a few numbers); spreading
    each over threads costs more than it saves, several times more on a busy machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _targets(problem: ControlProblem, x0: Tensor, target: Tensor | None) -> Tensor:
    if x0.ndim != 2 or x0.shape[1] != problem.n_x:
        raise TRCError(f"start states must have shape [B, {problem.n_x}] for problem "
                       f"{problem.name!r}, got {list(x0.shape)}")
    return problem.target_like(x0, target).double().contiguous()


# -- LQR --------------------------------------------------------------------------


@torch.no_grad()
def lqr_gains(problem: ControlProblem, target: Tensor) -> tuple[Tensor, Tensor]:
    """Finite-horizon discrete LQR gains of the step linearised at ``target`` (``u = 0``).

    Args:
        problem: supplies ``step``, ``horizon`` and ``Q, R, Qf``.
        target: ``[Bt, n_x]`` linearisation points.

    Returns:
        ``K [T, Bt, n_u, n_x]`` and ``k [T, Bt, n_u]`` with ``u_t = -K_t (x_t - target) - k_t``.
    """
    u0 = target.new_zeros(target.shape[0], problem.n_u)
    A, Bm = step_jacobians(problem, target, u0)
    c = (problem.step(target, u0) - target).unsqueeze(-1)                # (Bt, n, 1)
    Q, R, Qf = problem.cost_matrices(target.dtype, target.device)
    At, Bt = A.transpose(1, 2), Bm.transpose(1, 2)
    P, s = Qf.expand_as(A), torch.zeros_like(c)                         # cost-to-go e'P e + 2 s'e
    Ks, ks = [], []
    for _ in range(problem.horizon):
        BtP = Bt @ P
        Quu = R + BtP @ Bm
        K = torch.linalg.solve(Quu, BtP @ A)
        k = torch.linalg.solve(Quu, Bt @ (P @ c + s))
        Acl = A - Bm @ K
        s = K.transpose(1, 2) @ R @ k + Acl.transpose(1, 2) @ (P @ (c - Bm @ k) + s)
        P = Q + At @ P @ Acl
        P = 0.5 * (P + P.transpose(1, 2))
        Ks.append(K)
        ks.append(k.squeeze(-1))
    return torch.stack(Ks[::-1]), torch.stack(ks[::-1])


@torch.no_grad()
def lqr_controls(problem: ControlProblem, x0: Tensor, target: Tensor | None = None) -> Tensor:
    """Clipped time-varying LQR run in closed loop on the true dynamics, recorded open loop.

    Args:
        problem: the control problem.
        x0: start states ``[B, n_x]``.
        target: targets ``[B, n_x]`` or ``[n_x]``; default the problem's.

    Returns:
        The applied controls ``U [B, T, n_u]``, within the bound, in ``x0``'s dtype.
    """
    tgt = _targets(problem, x0, target)
    if bool((tgt == tgt[:1]).all()):  # one Riccati recursion serves every sample
        tgt = tgt[:1]
    with one_thread():
        K, k = lqr_gains(problem, tgt)
        _, U = closed_loop(problem, x0.double(), -K, -k, tgt.expand(problem.horizon, *tgt.shape))
    return U.to(x0.dtype)


# -- the optimum --------------------------------------------------------------------


@dataclass(frozen=True)
class OptimalConfig:
    """Settings of :func:`optimal_controls`.

    Attributes:
        starts: initial guesses, each optimised and the best kept per instance:
            ``"lqr"`` (clipped LQR), ``"zero"``, ``"upper"``/``"lower"`` (``+-u_max`` throughout),
            ``"problem"`` (the problem's own :meth:`~trc.problems.ControlProblem.warm_starts`,
            none for most; the pendulum's swing-up controller).
        max_iter: iLQR iterations per start at most.
        rtol: an instance stops once an iteration lowers its cost by less than ``rtol`` (relative).
        step_sizes: line-search step sizes, all tried at once.
        chunk_size: instances optimised at once.
        prune_ratio, prune_after: from iteration ``prune_after`` on, a start whose cost exceeds
            ``prune_ratio`` times the best start's of the same instance stops (None: never);
            costs only fall, so it would have to lose a third of its cost to catch up.
    """

    starts: tuple[str, ...] = ("lqr", "zero", "problem")
    max_iter: int = 100
    rtol: float = 1e-9
    step_sizes: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
    chunk_size: int = 1000
    prune_ratio: float | None = 1.5
    prune_after: int = 20


def box_qp(H: Tensor, g: Tensor, lo: Tensor, hi: Tensor, max_iter: int = 50) -> Tensor:
    """Minimise ``g'd + d'H d / 2`` over ``lo <= d <= hi`` per instance (projected Newton).

    Monotone in the objective; exact once the set of clamped entries is right.

    Args:
        H: positive definite ``[b, m, m]``.
        g: ``[b, m]``.
        lo, hi: bounds ``[b, m]`` with ``lo <= 0 <= hi``.
        max_iter: iterations at most (each one Cholesky factorisation).

    Returns:
        The minimiser ``d [b, m]``.
    """
    def mv(M, v):
        return (M @ v.unsqueeze(-1)).squeeze(-1)

    d = torch.zeros_like(g)
    todo = torch.arange(g.shape[0], device=g.device)
    for _ in range(max_iter):
        if todo.numel() == 0:
            break
        Ht, dt, lt, ht = H[todo], d[todo], lo[todo], hi[todo]
        grad = g[todo] + mv(Ht, dt)
        f = (~(((dt <= lt) & (grad > 0)) | ((dt >= ht) & (grad < 0)))).to(H.dtype)  # free entries
        Hf = Ht * f.unsqueeze(2) * f.unsqueeze(1) + torch.diag_embed(1 - f)
        step = -torch.cholesky_solve((grad * f).unsqueeze(-1), torch.linalg.cholesky(Hf)).squeeze(-1) * f
        alpha = torch.ones_like(grad[:, :1])
        new = torch.minimum(torch.maximum(dt + step, lt), ht)
        for _ in range(30):  # projected Armijo search on the quadratic, per instance
            delta = new - dt
            slope = (grad * delta).sum(1)
            bad = slope + 0.5 * (delta * mv(Ht, delta)).sum(1) > 1e-4 * slope
            if not bad.any():
                break
            alpha[bad] *= 0.5
            new[bad] = torch.minimum(torch.maximum(dt[bad] + alpha[bad] * step[bad], lt[bad]), ht[bad])
        d[todo] = new
        todo = todo[(new - dt).abs().amax(1) > 1e-13 * (1 + new.abs().amax(1))]
    return d


def _bounded_step(Quu: Tensor, Qu: Tensor, Qux: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Per-step update of box-DDP: ``k [b, m]`` solving the box QP and gain ``K [b, m, n]``."""
    if Qu.shape[1] == 1:  # scalar control: the box QP is a clamp
        k = (-Qu / Quu[:, 0]).clamp(lo, hi)
        free = ((k > lo) & (k < hi)).to(Qu.dtype)
        return k, -Qux / Quu * free.unsqueeze(-1)
    k = box_qp(Quu, Qu, lo, hi)
    f = ((k > lo) & (k < hi)).to(Qu.dtype)
    Hf = Quu * f.unsqueeze(2) * f.unsqueeze(1) + torch.diag_embed(1 - f)
    return k, -torch.linalg.solve(Hf, Qux * f.unsqueeze(-1)) * f.unsqueeze(-1)


def _psd(H: Tensor) -> Tensor:
    """Symmetric ``H [..., n, n]`` with negative eigenvalues clamped to 0 (only where there are any)."""
    n = H.shape[-1]
    flat = H.reshape(-1, n, n)
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    bad = torch.linalg.cholesky_ex(flat + 1e-12 * eye).info > 0  # cheap test; eigh only where it fails
    if not bool(bad.any()):
        return H
    w, V = torch.linalg.eigh(flat[bad])
    flat = flat.clone()
    flat[bad] = V @ torch.diag_embed(w.clamp(min=0)) @ V.transpose(-1, -2)
    return flat.view_as(H)


def _backward_pass(problem, X, U, target, A, Bm):
    """Box-DDP backward pass: ``k [T, b, m]``, ``K [T, b, m, n]`` and the predicted decrease terms.

    The cost's derivatives come from the problem; a state Hessian that is not positive
    semidefinite (a non-convex cost, like the pendulum's away from the top) is clamped to
    its PSD part, which keeps ``Quu`` positive definite and the gradient exact.
    """
    d = problem.cost_derivatives(X, U, target)
    lxx = _psd(d["lxx"]) if problem.owns_cost() else d["lxx"]
    T = U.shape[1]
    Vx, Vxx = d["lx"][:, T], lxx[:, T]
    ks, Ks = [], []
    d1 = d2 = 0.0
    for t in reversed(range(T)):
        At, Bt, u = A[:, t], Bm[:, t], U[:, t]
        Qx = d["lx"][:, t] + (Vx.unsqueeze(1) @ At).squeeze(1)
        Qu = d["lu"][:, t] + (Vx.unsqueeze(1) @ Bt).squeeze(1)
        VB = Vxx @ Bt
        Quu = d["luu"][:, t] + Bt.transpose(1, 2) @ VB
        Qux = d["lux"][:, t] + VB.transpose(1, 2) @ At
        k, K = _bounded_step(Quu, Qu, Qux, -problem.u_max - u, problem.u_max - u)
        Kt, Quk = K.transpose(1, 2), (Quu @ k.unsqueeze(-1)).squeeze(-1)
        d1 = d1 + (k * Qu).sum(1)
        d2 = d2 + 0.5 * (k * Quk).sum(1)
        Vx = Qx + (Kt @ (Quk + Qu).unsqueeze(-1)).squeeze(-1) + (k.unsqueeze(1) @ Qux).squeeze(1)
        Vxx = lxx[:, t] + At.transpose(1, 2) @ Vxx @ At + Kt @ Quu @ K + Kt @ Qux + Qux.transpose(1, 2) @ K
        Vxx = 0.5 * (Vxx + Vxx.transpose(1, 2))
        ks.append(k)
        Ks.append(K)
    return torch.stack(ks[::-1]), torch.stack(Ks[::-1]), d1, d2


@torch.no_grad()
def ilqr(problem: ControlProblem, x0: Tensor, U0: Tensor, target: Tensor,
         config: OptimalConfig = OptimalConfig(), starts: int = 1) -> tuple[Tensor, Tensor]:
    """Control-limited iLQR from ``U0``, per instance (see the module docstring).

    Args:
        problem: the control problem.
        x0: start states ``[B, n_x]`` (float64 recommended).
        U0: initial guesses ``[B, T, n_u]`` (clipped first).
        target: targets ``[B, n_x]``.
        config: iterations, tolerance, step sizes and pruning.
        starts: ``S`` when the rows are ``S`` starts of the same ``B / S`` instances, start-major
            (row ``s * B / S + i``); with ``S > 1`` dominated starts are pruned (``config.prune_ratio``).

    Returns:
        ``U [B, T, n_u]`` within the bound and its cost ``[B]``.
    """
    B, T, m = U0.shape
    n = problem.n_x
    U = problem.clip(U0).clone()
    X = problem.rollout(x0, U)
    J = problem.cost(X, U, target)
    alphas = torch.tensor(config.step_sizes, dtype=x0.dtype, device=x0.device)
    L = alphas.numel()
    todo = torch.arange(B, device=x0.device)
    for it in range(config.max_iter):
        if starts > 1 and config.prune_ratio is not None and it >= config.prune_after:
            best_of_instance = J.view(starts, -1).amin(0).repeat(starts)
            todo = todo[J[todo] <= config.prune_ratio * best_of_instance[todo]]
        if todo.numel() == 0:
            break
        b, Xt, Ut, tg, Jt = todo.numel(), X[todo], U[todo], target[todo], J[todo]
        A, Bm = step_jacobians(problem, Xt[:, :-1].reshape(-1, n), Ut.reshape(-1, m))
        k, K, d1, d2 = _backward_pass(problem, Xt, Ut, tg, A.view(b, T, n, n), Bm.view(b, T, n, m))
        # Forward pass for every step size at once: rows are (step size, instance).
        a = alphas.repeat_interleave(b)
        rep = torch.arange(b, device=x0.device).repeat(L)
        Xc, Uc = closed_loop(problem, x0[todo][rep], K[:, rep],
                             Ut.transpose(0, 1)[:, rep] + a[:, None] * k[:, rep], Xt.transpose(0, 1)[:, rep])
        Jc = problem.cost(Xc, Uc, tg[rep])
        expected = -(a * d1[rep] + a * a * d2[rep])
        ok = (Jc < Jt[rep]) & (Jt[rep] - Jc >= 1e-4 * expected)
        best = torch.where(ok, Jc, torch.inf).view(L, b).argmin(0)
        row = best * b + torch.arange(b, device=x0.device)
        improved = ok[row]
        gain = torch.where(improved, Jt - Jc[row], torch.zeros_like(Jt))
        idx = todo[improved]
        X[idx], U[idx], J[idx] = Xc[row][improved], Uc[row][improved], Jc[row][improved]
        todo = todo[gain > config.rtol * J[todo].abs()]
    return U, J


def initial_guesses(problem: ControlProblem, x0: Tensor, target: Tensor, starts: tuple[str, ...]) -> Tensor:
    """The named starting sequences (see :class:`OptimalConfig`), ``[S, B, T, n_u]``.

    ``S`` is ``len(starts)``, less one for ``"problem"`` on a problem without warm starts,
    plus one for each more it has.
    """
    shape = (x0.shape[0], problem.horizon, problem.n_u)
    make = {"lqr": lambda: lqr_controls(problem, x0, target)[None],
            "zero": lambda: x0.new_zeros(1, *shape),
            "upper": lambda: x0.new_full((1, *shape), problem.u_max),
            "lower": lambda: x0.new_full((1, *shape), -problem.u_max),
            "problem": lambda: problem.warm_starts(x0, target).to(x0.dtype)}
    unknown = [s for s in starts if s not in make]
    if unknown or not starts:
        raise TRCError(f"unknown start {unknown[0] if unknown else None!r} for the optimal expert; "
                       f"known: {', '.join(make)}")
    return torch.cat([make[s]() for s in starts])


@torch.no_grad()
def optimal_controls(problem: ControlProblem, x0: Tensor, target: Tensor | None = None,
                     config: OptimalConfig | None = None, guesses: Tensor | None = None) -> Tensor:
    """The per-instance optimum of the problem's cost under the control bound.

    Args:
        problem: the control problem.
        x0: start states ``[B, n_x]``.
        target: targets ``[B, n_x]`` or ``[n_x]``; default the problem's.
        config: starts, iterations, tolerance and chunk size.
        guesses: more initial guesses, ``[B, T, n_u]`` or ``[S', B, T, n_u]`` (a model's plans,
            a previous solution shifted by a step), optimised beside ``config.starts``.

    Returns:
        ``U [B, T, n_u]`` within the bound, in ``x0``'s dtype.
    """
    config = config or OptimalConfig()
    tgt, x = _targets(problem, x0, target), x0.double()
    if guesses is not None:
        guesses = torch.as_tensor(guesses).to(torch.float64)
        guesses = guesses[None] if guesses.dim() == 3 else guesses
        want = (x.shape[0], problem.horizon, problem.n_u)
        if guesses.dim() != 4 or tuple(guesses.shape[1:]) != want:
            raise TRCError(f"guesses must be [B, T, n_u] or [S, B, T, n_u] with [B, T, n_u] = "
                           f"{list(want)}, got {list(guesses.shape)}")
    out = []
    with one_thread():
        for i in range(0, x.shape[0], config.chunk_size):
            xc, tc = x[i:i + config.chunk_size], tgt[i:i + config.chunk_size]
            U0 = initial_guesses(problem, xc, tc, config.starts)            # (S, b, T, m)
            if guesses is not None:
                U0 = torch.cat([U0, guesses[:, i:i + config.chunk_size]])
            S = U0.shape[0]
            U, J = ilqr(problem, xc.repeat(S, 1), U0.flatten(0, 1), tc.repeat(S, 1), config, starts=S)
            best = J.view(S, -1).argmin(0)
            out.append(U.view(S, -1, *U.shape[1:])[best, torch.arange(xc.shape[0])])
    return torch.cat(out).to(x0.dtype)


EXPERTS: dict[str, Expert] = {"lqr": lqr_controls, "optimal": optimal_controls}
