"""The pendulum swing-up: its dynamics, its own periodic cost, the wrapped success rule."""

from __future__ import annotations

import math

import pytest
import torch

from trc import get_problem
from trc.cost import trajectory_cost
from trc.data.experts import OptimalConfig, lqr_controls, optimal_controls
from trc.problems import ControlProblem, Pendulum
from trc.problems.pendulum import wrap_angle

F64 = torch.float64


def test_the_issue_parameters():
    p = get_problem("pendulum")
    assert (p.n_x, p.n_u, p.dt, p.horizon, p.u_max, p.success_tol) == (2, 1, 0.05, 100, 3.0, 0.2)
    assert (p.m, p.l, p.g, p.b) == (1.0, 1.0, 9.81, 0.1)
    assert (p.x0_low, p.x0_high, p.target) == ((-math.pi, -1.0), (math.pi, 1.0), (0.0, 0.0))


def test_dynamics_by_hand_and_jacobians_against_finite_differences():
    p = get_problem("pendulum", b=0.3, m=2.0, l=0.5)
    x = torch.tensor([[0.7, -1.3], [3.0, 2.0]], dtype=F64)
    u = torch.tensor([[1.5], [-2.5]], dtype=F64)
    ml2 = 2.0 * 0.25
    omega_dot = 9.81 / 0.5 * torch.sin(x[:, 0]) - 0.3 / ml2 * x[:, 1] + u[:, 0] / ml2
    assert torch.allclose(p.dynamics(x, u), torch.stack([x[:, 1], omega_dot], -1))
    A, Bu = p.jacobians(x, u)
    h = 1e-6
    for j in range(2):
        dx = torch.zeros_like(x)
        dx[:, j] = h
        fd = (p.dynamics(x + dx, u) - p.dynamics(x - dx, u)) / (2 * h)
        assert torch.allclose(A[:, :, j], fd, atol=1e-7)
    fd_u = (p.dynamics(x, u + h) - p.dynamics(x, u - h)) / (2 * h)
    assert torch.allclose(Bu[:, :, 0], fd_u, atol=1e-7)


def test_periodic_cost_by_hand_and_its_quadratic_limit():
    p = get_problem("pendulum")
    X = torch.tensor([[[math.pi, 0.5], [2 * math.pi + 0.3, -1.0], [-0.2, 0.4]]], dtype=F64)  # T = 2
    U = torch.tensor([[[2.0], [-1.0]]], dtype=F64)
    stage = sum(2 * (1 - math.cos(th)) + 0.1 * om ** 2 for th, om in ((math.pi, 0.5), (0.3, -1.0)))
    stage += 0.01 * (4 + 1)
    final = 100 * 2 * (1 - math.cos(-0.2)) + 10 * 0.16
    assert p.cost(X, U).item() == pytest.approx(stage + final, rel=1e-12)
    # a full turn costs nothing; near the top the cost is the quadratic one with Q, R, Qf
    turned = X.clone()
    turned[:, :, 0] += 2 * math.pi
    assert torch.allclose(p.cost(turned, U), p.cost(X, U))
    small = 1e-3 * torch.randn(4, 11, 2, dtype=F64)
    Us = torch.randn(4, 10, 1, dtype=F64)
    Q, R, Qf = p.cost_matrices(F64)
    ref = trajectory_cost(small, Us, torch.zeros(2, dtype=F64), Q, R, Qf)
    assert torch.allclose(p.cost(small, Us), ref, rtol=1e-6)


def test_cost_derivatives_against_finite_differences():
    """The DDP's derivatives of the periodic cost (autograd hook) against central differences."""
    p = get_problem("pendulum", horizon=3)
    X = 2.0 * torch.randn(2, 4, 2, dtype=F64)
    U = torch.randn(2, 3, 1, dtype=F64)
    target = torch.tensor([[0.0, 0.0], [0.5, -0.2]], dtype=F64)
    d = p.cost_derivatives(X, U, target)
    h = 1e-5

    def stage(z, t):  # stage cost of instance/time t as a function of (x, u)
        return p.stage_cost(z[:2], z[2:], target[t[0]]).item()

    for b in range(2):
        for t in range(3):
            z = torch.cat([X[b, t], U[b, t]])
            g, H = torch.zeros(3, dtype=F64), torch.zeros(3, 3, dtype=F64)
            for i in range(3):
                e = torch.zeros(3, dtype=F64)
                e[i] = h
                g[i] = (stage(z + e, (b,)) - stage(z - e, (b,))) / (2 * h)
                for j in range(3):
                    f = torch.zeros(3, dtype=F64)
                    f[j] = h
                    H[i, j] = (stage(z + e + f, (b,)) - stage(z + e - f, (b,)) - stage(z - e + f, (b,))
                               + stage(z - e - f, (b,))) / (4 * h * h)
            assert torch.allclose(torch.cat([d["lx"][b, t], d["lu"][b, t]]), g, atol=1e-6)
            assert torch.allclose(d["lxx"][b, t], H[:2, :2], atol=1e-4)
            assert torch.allclose(d["luu"][b, t], H[2:, 2:], atol=1e-4)
            assert torch.allclose(d["lux"][b, t], H[2:, :2], atol=1e-4)
        xT = X[b, 3]
        fd = [(p.terminal_cost(xT + h * e, target[b]) - p.terminal_cost(xT - h * e, target[b])).item() / (2 * h)
              for e in torch.eye(2, dtype=F64)]
        assert torch.allclose(d["lx"][b, 3], torch.tensor(fd, dtype=F64), atol=1e-4)


def test_quadratic_cost_derivatives_are_the_closed_form():
    """For a quadratic problem the hook's closed form equals autograd of its own cost."""
    p = get_problem("vanderpol", horizon=4)
    X, U = torch.randn(3, 5, 2, dtype=F64), torch.randn(3, 4, 1, dtype=F64)
    target = torch.randn(3, 2, dtype=F64)
    closed = p.cost_derivatives(X, U, target)

    class OwnQuadratic(type(p)):
        def stage_cost(self, x, u, target):
            return ControlProblem.stage_cost(self, x, u, target)

    auto = OwnQuadratic(horizon=4).cost_derivatives(X, U, target)
    for key in ("lx", "lxx", "lu", "luu", "lux"):
        assert torch.allclose(closed[key], auto[key]), key


def test_wrapped_success_rule():
    p = get_problem("pendulum")
    assert torch.allclose(wrap_angle(torch.tensor([math.pi, -math.pi, 3 * math.pi, 0.1 - 2 * math.pi])),
                          torch.tensor([math.pi, math.pi, math.pi, 0.1]))
    X = torch.zeros(4, 3, 2, dtype=F64)
    X[:, -1] = torch.tensor([[2 * math.pi + 0.1, 0.1],   # upright after a full turn: error 0.141
                             [-2 * math.pi, 0.0],        # upright, turned the other way
                             [0.15, 0.15],               # error 0.212 > 0.2
                             [math.pi, 0.0]], dtype=F64)  # hanging
    assert torch.allclose(p.final_error(X), torch.tensor([0.02 ** 0.5, 0.0, 0.045 ** 0.5, math.pi], dtype=F64))
    assert p.success(X).tolist() == [True, True, False, False]


def test_lqr_teacher_is_weak_but_balances_near_the_top():
    p = get_problem("pendulum")
    near = torch.tensor([[0.3, 0.0], [-0.2, 0.5], [2 * math.pi - 0.1, 0.0]], dtype=F64)
    assert p.evaluate(near, lqr_controls(p, near))["success"].all()
    hanging = torch.tensor([[math.pi, 0.0], [-3.0, 0.2]], dtype=F64)
    assert not p.evaluate(hanging, lqr_controls(p, hanging))["success"].any()
    assert isinstance(p, Pendulum)


def test_closed_form_cost_derivatives_equal_the_autograd_default():
    p = get_problem("pendulum", horizon=5, Q=[[1.0, 0.3], [0.3, 0.2]])  # a coupled Q, to check the algebra
    X, U = 3.0 * torch.randn(4, 6, 2, dtype=F64), torch.randn(4, 5, 1, dtype=F64)
    target = torch.randn(4, 2, dtype=F64)
    closed, auto = p.cost_derivatives(X, U, target), ControlProblem.cost_derivatives(p, X, U, target)
    for key in ("lx", "lxx", "lu", "luu", "lux"):
        assert torch.allclose(closed[key], auto[key]), key


def test_the_optimum_swings_up_where_lqr_cannot():
    p = get_problem("pendulum")
    x0 = torch.tensor([[math.pi, 0.0], [-2.5, 0.8], [2.0, -1.0], [0.3, 0.2]], dtype=F64)
    lqr = p.evaluate(x0, lqr_controls(p, x0))
    swing = p.evaluate(x0, p.swing_up_controls(x0, p.target_like(x0)))
    opt = p.evaluate(x0, optimal_controls(p, x0, config=OptimalConfig(max_iter=15)))  # kept short
    assert not lqr["success"][:3].any() and opt["success"].all()
    assert (opt["cost"] <= lqr["cost"] * (1 + 1e-12)).all() and (opt["cost"][:3] < 0.5 * lqr["cost"][:3]).all()
    assert (opt["cost"] <= swing["cost"]).all()  # the swing-up start is refined, never lost
