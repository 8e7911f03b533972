"""Experts: LQR against exact solutions, the optimum against LQR and the KKT conditions."""

from dataclasses import dataclass

import pytest
import torch

from trc import ControlProblem, TRCError, get_problem
from trc.problems import diag
from trc.data.experts import (EXPERTS, OptimalConfig, box_qp, lqr_controls, optimal_controls,
                         step_jacobians)

F64 = torch.float64


def states(problem, n, seed=0):
    return problem.sample_initial_states(n, torch.Generator().manual_seed(seed), dtype=F64)


def kkt_residual(problem, x0, U, target=None):
    """``max |U - clip(U - grad J)|`` per instance: zero exactly at a KKT point of the bounded problem."""
    U = U.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.cost(problem.rollout(x0, U), U, target).sum(), U)
    return (U - problem.clip(U - g)).abs().amax((1, 2))


def exact_unbounded_optimum(problem, x0):
    """Minimise the double integrator's quadratic cost by least squares on the lifted system."""
    T, n = problem.horizon, problem.n_x
    A, Bm = (M[0] for M in step_jacobians(problem, torch.zeros(1, n, dtype=F64), torch.zeros(1, 1, dtype=F64)))
    Q, R, Qf = problem.cost_matrices(F64)
    # x_t = Phi_t x0 + G_t U with U stacked [T]
    Phi, G = [torch.eye(n, dtype=F64)], [torch.zeros(n, T, dtype=F64)]
    for t in range(T):
        Phi.append(A @ Phi[-1])
        Gt = A @ G[-1]
        Gt[:, t] += Bm[:, 0]
        G.append(Gt)
    H, F = 2 * R[0, 0] * torch.eye(T, dtype=F64), torch.zeros(T, n, dtype=F64)
    for t in range(1, T + 1):
        W = Qf if t == T else Q
        H += 2 * G[t].T @ W @ G[t]
        F += 2 * G[t].T @ W @ Phi[t]
    return -(torch.linalg.solve(H, F) @ x0.T).T.unsqueeze(-1)  # (B, T, 1)


def test_step_jacobians_match_autograd_jacobian():
    p = get_problem("vanderpol")
    x, u = torch.tensor([[0.7, -1.3], [2.0, 0.5]], dtype=F64), torch.tensor([[0.4], [-1.0]], dtype=F64)
    A, Bm = step_jacobians(p, x, u)
    for i in range(2):
        JA, JB = torch.autograd.functional.jacobian(lambda a, b: p.step(a[None], b[None])[0], (x[i], u[i]))
        torch.testing.assert_close(A[i], JA)
        torch.testing.assert_close(Bm[i], JB)


def test_unclipped_lqr_is_the_exact_solution_and_the_optimum_reproduces_it():
    p = get_problem("double_integrator")
    x0 = 0.1 * states(p, 50)
    U = lqr_controls(p, x0)
    assert U.abs().max() < p.u_max  # the bound never binds here
    exact = exact_unbounded_optimum(p, x0)
    torch.testing.assert_close(U, exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(optimal_controls(p, x0), exact, rtol=1e-7, atol=1e-7)


def test_clipped_lqr_is_optimal_on_the_double_integrator():
    p = get_problem("double_integrator")
    x0 = states(p, 500)
    U = lqr_controls(p, x0)
    assert (U.abs() >= p.u_max).any(1).float().mean() > 0.3  # the bound binds often
    # The problem is convex, so the KKT conditions prove global optimality.
    assert kkt_residual(p, x0, U).max() < 1e-8
    torch.testing.assert_close(optimal_controls(p, x0), U, rtol=1e-8, atol=1e-8)


def test_lqr_reaches_every_vanderpol_target_and_is_within_one_percent_of_the_optimum():
    p = get_problem("vanderpol")
    x0 = states(p, 1000)
    lqr, opt = p.evaluate(x0, lqr_controls(p, x0)), p.evaluate(x0, optimal_controls(p, x0))
    assert lqr["success"].all()
    assert opt["success"].all()
    ratio = lqr["cost"].mean() / opt["cost"].mean()
    assert 1.0 < ratio < 1.01
    assert (opt["cost"] <= lqr["cost"] * (1 + 1e-12)).all()


@pytest.mark.parametrize("name", ["vanderpol", "vanderpol_constrained"])
def test_optimum_is_a_kkt_point_within_the_bound_and_never_worse_than_lqr(name):
    p = get_problem(name)
    x0 = states(p, 200, seed=1)
    U_lqr, U = lqr_controls(p, x0), optimal_controls(p, x0)
    assert U.abs().max() <= p.u_max
    assert kkt_residual(p, x0, U).max() < 1e-3
    assert kkt_residual(p, x0, U_lqr).max() > 0.1  # LQR is not optimal here; the test can tell
    lqr, opt = p.evaluate(x0, U_lqr), p.evaluate(x0, U)
    assert (opt["cost"] <= lqr["cost"] * (1 + 1e-12)).all()


def test_tight_bound_makes_lqr_far_from_optimal():
    p = get_problem("vanderpol_constrained")
    x0 = states(p, 200, seed=2)
    lqr, opt = p.evaluate(x0, lqr_controls(p, x0)), p.evaluate(x0, optimal_controls(p, x0))
    assert lqr["cost"].mean() / opt["cost"].mean() > 1.3
    assert opt["success"].float().mean() > lqr["success"].float().mean() + 0.4


def test_more_starts_never_hurt():
    p = get_problem("vanderpol_constrained")
    x0 = states(p, 50, seed=3)
    one = p.evaluate(x0, optimal_controls(p, x0, config=OptimalConfig(starts=("lqr",))))["cost"]
    many = p.evaluate(x0, optimal_controls(p, x0, config=OptimalConfig(starts=("lqr", "zero", "upper"))))["cost"]
    assert (many <= one * (1 + 1e-12)).all()


def test_a_better_guess_is_kept_and_chunks_split_the_guesses_too():
    p = get_problem("pendulum")
    x0 = states(p, 6, seed=4)
    Uo = optimal_controls(p, x0)
    weak = OptimalConfig(starts=("zero",), max_iter=2)   # from zeros, two iterations do not swing up
    alone = p.evaluate(x0, optimal_controls(p, x0, config=weak))["cost"]
    optimum = p.evaluate(x0, Uo)["cost"]
    assert (alone > 1.5 * optimum).all()
    for chunk in (6, 4):
        U = optimal_controls(p, x0, config=OptimalConfig(starts=("zero",), max_iter=2, chunk_size=chunk),
                             guesses=torch.stack([torch.zeros_like(Uo), Uo]))
        assert (p.evaluate(x0, U)["cost"] <= optimum * (1 + 1e-12)).all()
    with pytest.raises(TRCError, match="guesses must be"):
        optimal_controls(p, x0, guesses=Uo[:, :-1])


def test_per_sample_targets_match_separate_runs():
    p = get_problem("vanderpol")
    x0 = states(p, 6)
    targets = torch.tensor([[0.3, 0.0], [-0.4, 0.2]], dtype=F64).repeat_interleave(3, 0)
    U = lqr_controls(p, x0, targets)
    torch.testing.assert_close(U[:3], lqr_controls(p, x0[:3], targets[0]))
    torch.testing.assert_close(U[3:], lqr_controls(p, x0[3:], targets[3]))
    assert p.evaluate(x0, U, targets)["success"].all()
    Uo = optimal_controls(p, x0, targets)
    assert kkt_residual(p, x0, Uo, targets).max() < 1e-3


def test_dtype_is_kept_and_chunks_do_not_change_the_result():
    p = get_problem("vanderpol")
    x0 = states(p, 8)
    assert lqr_controls(p, x0.float()).dtype == torch.float32
    U = optimal_controls(p, x0)
    torch.testing.assert_close(optimal_controls(p, x0, config=OptimalConfig(chunk_size=5)), U)


@dataclass(frozen=True)
class CoupledPlanar(ControlProblem):
    """Point mass in the plane pushed through a non-diagonal input matrix: the box QPs are 2-D."""

    name: str = "coupled_planar"
    n_x: int = 4
    n_u: int = 2
    dt: float = 0.3
    horizon: int = 12
    u_max: float = 1.0
    x0_low: tuple = (-2.0, -2.0, -1.0, -1.0)
    x0_high: tuple = (2.0, 2.0, 1.0, 1.0)
    target: tuple = (0.0, 0.0, 0.0, 0.0)
    Q: tuple = diag(10.0, 10.0, 5.0, 5.0)
    R: tuple = diag(0.1, 0.2)
    Qf: tuple = diag(200.0, 200.0, 100.0, 100.0)
    success_tol: float = 0.1

    def dynamics(self, x, u):
        return torch.cat([x[:, 2:], torch.stack([u[:, 0] + 0.6 * u[:, 1], 0.4 * u[:, 0] + u[:, 1]], -1)], -1)


def test_several_bounded_controls_reach_the_global_optimum():
    p = CoupledPlanar()
    x0 = states(p, 100)
    U_lqr, U = lqr_controls(p, x0), optimal_controls(p, x0)
    assert (U.abs() >= p.u_max).float().mean() > 0.1  # the bound binds
    assert kkt_residual(p, x0, U).max() < 1e-6  # convex problem: KKT means the global optimum
    assert kkt_residual(p, x0, U_lqr).max() > 0.1
    assert (p.evaluate(x0, U)["cost"] < p.evaluate(x0, U_lqr)["cost"] * (1 + 1e-12)).all()


def test_box_qp_satisfies_kkt_for_several_controls():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(200, 3, 3, generator=g, dtype=F64)
    H = M @ M.transpose(1, 2) + 0.1 * torch.eye(3, dtype=F64)
    q = 3 * torch.randn(200, 3, generator=g, dtype=F64)
    lo, hi = -torch.rand(200, 3, generator=g, dtype=F64), torch.rand(200, 3, generator=g, dtype=F64)
    d = box_qp(H, q, lo, hi)
    grad = q + (H @ d.unsqueeze(-1)).squeeze(-1)
    assert ((d >= lo) & (d <= hi)).all()
    assert (d - (d - grad).clamp(lo, hi)).abs().max() < 1e-10
    assert ((d == lo) | (d == hi)).any()  # the bounds bind somewhere


def test_bad_input_raises_one_clear_error():
    p = get_problem("vanderpol")
    with pytest.raises(TRCError, match="shape"):
        lqr_controls(p, torch.zeros(4, 3))
    with pytest.raises(TRCError, match="unknown start"):
        optimal_controls(p, torch.zeros(4, 2), config=OptimalConfig(starts=("random",)))
    assert {"lqr", "optimal"} <= set(EXPERTS)
