"""The problem registry and what every problem owns: bounds, cost, success, Jacobians."""

from __future__ import annotations

import json

import pytest
import torch

from trc import PROBLEMS, TRCError, get_problem, rk4, rollout, simulate_vanderpol_torch
from trc.problems import VanDerPol

F64 = torch.float64


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_to_dict_round_trip_is_json(name):
    problem = get_problem(name)
    d = json.loads(json.dumps(problem.to_dict()))
    assert get_problem(**d) == problem
    assert d["name"] == name


def test_overrides_change_only_what_they_name():
    base = get_problem("vanderpol")
    problem = get_problem("vanderpol", horizon=20, dt=0.1, mu=2.0, target=[0.5, 0.0])
    assert (problem.horizon, problem.dt, problem.mu, problem.target) == (20, 0.1, 2.0, (0.5, 0.0))
    assert (problem.u_max, problem.Q, problem.x0_low) == (base.u_max, base.Q, base.x0_low)
    constrained = get_problem("vanderpol_constrained", horizon=30)
    assert (constrained.name, constrained.u_max, constrained.horizon) == ("vanderpol_constrained", 1.0, 30)


@pytest.mark.parametrize("call, words", [
    (lambda: get_problem("cartpole"), "unknown problem 'cartpole'"),
    (lambda: get_problem("vanderpol", gamma=0.3), "no parameter 'gamma'"),
    (lambda: get_problem("double_integrator", dt=-0.1), "dt must be a finite number > 0"),
    (lambda: get_problem("vanderpol", target=[0.0]), "target must be 2 finite numbers"),
    (lambda: get_problem("vanderpol", R=[[0.0]]), "R must be positive definite"),
    (lambda: get_problem("vanderpol", R=[[-0.1]]), "R must be positive definite"),
    (lambda: get_problem("vanderpol", Q=[[1.0, 0.0], [0.0, -1.0]]), "Q must be positive semidefinite"),
    (lambda: get_problem("vanderpol", Qf=[[1.0, 2.0], [0.0, 1.0]]), "Qf must be a symmetric matrix"),
])
def test_bad_problem_requests_raise_one_clear_error(call, words):
    with pytest.raises(TRCError, match=words):
        call()


def test_rollout_rejects_shapes_that_do_not_fit_the_problem():
    problem = get_problem("vanderpol", horizon=3)
    with pytest.raises(TRCError, match=r"x0 \[B, 2\] with U \[B, T, 1\]"):
        problem.rollout(torch.zeros(4, 3), torch.zeros(4, 3, 1))
    with pytest.raises(TRCError, match="got x0 \\[4, 2\\] and U \\[5, 3, 1\\]"):
        problem.rollout(torch.zeros(4, 2), torch.zeros(5, 3, 1))
    with pytest.raises(TRCError, match="dtype"):
        problem.rollout(torch.zeros(4, 2), torch.zeros(4, 3, 1, dtype=F64))


def test_clip_enforces_the_bound_elementwise():
    problem = get_problem("vanderpol_constrained")
    U = torch.tensor([[[-3.0], [-0.5], [0.0], [0.99], [7.0]]])
    assert torch.equal(problem.clip(U), torch.tensor([[[-1.0], [-0.5], [0.0], [0.99], [1.0]]]))


def test_evaluate_clips_before_simulating():
    problem = get_problem("double_integrator", horizon=2)
    x0 = torch.zeros(1, 2, dtype=F64)
    out = problem.evaluate(x0, torch.full((1, 2, 1), 100.0, dtype=F64))
    assert torch.allclose(out["X"], problem.rollout(x0, torch.full((1, 2, 1), 4.0, dtype=F64)))
    assert out["cost"].shape == out["final_error"].shape == out["success"].shape == (1,)


def test_final_error_and_success_by_hand():
    problem = get_problem("vanderpol")  # success_tol 0.2
    X = torch.zeros(3, 4, 2, dtype=F64)
    X[0, -1] = torch.tensor([0.3, 0.4])  # error 0.5
    X[1, -1] = torch.tensor([0.0, -0.21])  # error 0.21: just above the tolerance
    X[2, -1] = torch.tensor([0.06, 0.08])  # error 0.1
    X[:, 1] = 5.0  # earlier states do not matter
    assert torch.allclose(problem.final_error(X), torch.tensor([0.5, 0.21, 0.1], dtype=F64))
    assert problem.success(X).tolist() == [False, False, True]
    target = torch.tensor([[0.3, 0.4], [0.0, 0.0], [1.0, 1.0]], dtype=F64)  # one per sample
    assert problem.success(X, target).tolist() == [True, False, False]


def test_cost_by_hand():
    problem = get_problem("double_integrator")  # Q = diag(10, 5), R = 0.1, Qf = diag(200, 100)
    X = torch.tensor([[[1.0, 2.0], [0.5, -1.0], [0.1, 0.2]]], dtype=F64)  # T = 2
    U = torch.tensor([[[3.0], [-2.0]]], dtype=F64)
    stage = (10 * 1 + 5 * 4) + (10 * 0.25 + 5 * 1) + 0.1 * (9 + 4)
    final = 200 * 0.01 + 100 * 0.04
    assert torch.allclose(problem.cost(X, U), torch.tensor([stage + final], dtype=F64))
    target = torch.tensor([[0.1, 0.2]], dtype=F64)  # now the final state costs nothing
    stage_t = (10 * 0.81 + 5 * 3.24) + (10 * 0.16 + 5 * 1.44) + 0.1 * 13
    assert torch.allclose(problem.cost(X, U, target), torch.tensor([stage_t], dtype=F64))


def test_gradcheck_cost():
    problem = get_problem("vanderpol")
    X = torch.randn(3, 6, 2, dtype=F64, requires_grad=True)
    U = torch.randn(3, 5, 1, dtype=F64, requires_grad=True)
    target = torch.randn(3, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda a, b: problem.cost(a, b, target), (X, U))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_analytic_jacobians_equal_autograd(name):
    """The fast adjoint trusts ``jacobians``: check it against autograd of ``dynamics``."""
    problem = get_problem(name)
    x = 3 * torch.randn(5, problem.n_x, dtype=F64)
    u = torch.randn(5, problem.n_u, dtype=F64)
    A, Bu = problem.jacobians(x, u)
    for i in range(5):
        dA, dB = torch.autograd.functional.jacobian(
            lambda a, b: problem.dynamics(a[None], b[None])[0], (x[i], u[i]))
        assert torch.allclose(A[i], dA) and torch.allclose(Bu[i], dB)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_initial_states_lie_in_the_box_and_follow_the_seed(name):
    problem = get_problem(name)
    x0 = problem.sample_initial_states(500, torch.Generator().manual_seed(3))
    low, high = torch.tensor(problem.x0_low), torch.tensor(problem.x0_high)
    assert x0.shape == (500, problem.n_x) and bool(((x0 >= low) & (x0 <= high)).all())
    assert torch.equal(x0, problem.sample_initial_states(500, torch.Generator().manual_seed(3)))


def test_simulate_vanderpol_torch_is_the_problem_rollout():
    x0 = torch.randn(4, 2, dtype=F64)
    U = torch.randn(4, 30, 1, dtype=F64)
    X = simulate_vanderpol_torch(x0, U, mu=0.5, dt=0.02)
    assert X.shape == (4, 31, 2)
    problem = VanDerPol(mu=0.5, dt=0.02, horizon=30)
    assert torch.equal(X, problem.rollout(x0, U))
    assert torch.allclose(X, rollout(rk4(problem.dynamics, 0.02), x0, U), rtol=0, atol=1e-12)
    assert torch.equal(X[:, 0], x0)
