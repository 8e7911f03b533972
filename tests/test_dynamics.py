"""The RK4 simulators: plain autograd (trc.dynamics) and the fast rollout (trc.adjoint).

All in float64: the fast rollout must equal the plain one, its hand-written
adjoint must equal autograd and finite differences, and RK4 must be
fourth-order accurate on a system with a known solution.
"""

from __future__ import annotations

import math

import pytest
import torch

import trc.adjoint
from trc import get_problem, rk4, rollout
from trc.adjoint import rk4_rollout
from trc.errors import TRCError
from trc.problems import PROBLEMS
from trc.rk4_forward import rk4_forward, second_order_forward

F64 = torch.float64


def random_inputs(problem, batch: int, horizon: int, seed: int = 0):
    """Start states from the problem's box and controls beyond its bound, float64."""
    gen = torch.Generator().manual_seed(seed)
    x0 = problem.sample_initial_states(batch, gen, dtype=F64)
    U = 1.5 * problem.u_max * (2 * torch.rand(batch, horizon, problem.n_u, generator=gen, dtype=F64) - 1)
    return x0, U


def plain(problem, x0, U):
    return rollout(rk4(problem.dynamics, problem.dt), x0, U)


def rotation(x, u):
    """``x1' = x2, x2' = -x1 + u``: a harmonic oscillator with a known solution."""
    return torch.stack([x[:, 1], -x[:, 0] + u[:, 0]], dim=-1)


def rotation_jacobians(x, u):
    A = x.new_tensor([[0.0, 1.0], [-1.0, 0.0]]).expand(x.shape[0], 2, 2)
    Bu = x.new_tensor([[0.0], [1.0]]).expand(x.shape[0], 2, 1)
    return A, Bu


@pytest.mark.parametrize("name", ["double_integrator", "vanderpol", "vanderpol_constrained"])
def test_fast_rollout_equals_plain_rollout(name):
    problem = get_problem(name)
    x0, U = random_inputs(problem, 7, problem.horizon)
    expected = plain(problem, x0, U)
    with torch.no_grad():
        X = problem.rollout(x0, U)
    assert X.shape == (7, problem.horizon + 1, problem.n_x) and not X.is_inference()
    assert torch.allclose(X, expected, rtol=0, atol=1e-12)
    X = problem.rollout(x0.requires_grad_(), U.requires_grad_())  # the adjoint path's forward
    assert X.requires_grad and torch.allclose(X.detach(), expected, rtol=0, atol=1e-12)
    assert not X.is_inference()


def rollout_and_gradients(simulate, x0: torch.Tensor, U: torch.Tensor, weight: torch.Tensor):
    """``X`` without gradient, ``X`` with, and the gradients of ``sum(X * weight)`` w.r.t. ``x0`` and ``U``."""
    with torch.no_grad():
        X_no_grad = simulate(x0, U)
    a, b = x0.clone().requires_grad_(), U.clone().requires_grad_()
    X = simulate(a, b)
    (X * weight).sum().backward()
    return X_no_grad, X.detach(), a.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_fast_paths_equal_the_plain_reference(name, dtype):
    """Every problem: what ``problem.rollout`` returns and its gradients against plain autograd.

    Both are measured against the plain float64 result: to 1e-5 of its largest entry,
    or (float32 on an unstable problem, where the plain float32 path itself strays
    further) no further than the plain path in the same dtype.
    """
    problem = get_problem(name)
    x0, U = random_inputs(problem, 33, problem.horizon, seed=3)
    weight = torch.randn(33, problem.horizon + 1, problem.n_x, generator=torch.Generator().manual_seed(1),
                         dtype=F64)
    reference = rollout_and_gradients(lambda a, b: plain(problem, a, b), x0, U, weight)
    inputs = (x0.to(dtype), U.to(dtype), weight.to(dtype))
    fast = rollout_and_gradients(problem.rollout, *inputs)
    slow = rollout_and_gradients(lambda a, b: plain(problem, a, b), *inputs)
    for f, s, r in zip(fast, slow, reference):
        assert f.dtype == dtype and f.shape == r.shape
        error, plain_error = ((t.double() - r).abs().max() for t in (f, s))
        assert error <= max(1e-5 * r.abs().max().clamp_min(1.0), 2 * plain_error), (error, plain_error)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_acceleration_agrees_with_the_dynamics(name):
    problem = get_problem(name)
    if problem._own("acceleration") is None:
        pytest.skip(f"{name} does not provide an acceleration")
    x, U = random_inputs(problem, 9, 1)
    u = U[:, 0]
    m = problem.n_x // 2
    out = torch.full((m, 9), float("nan"), dtype=F64)
    problem.acceleration(x[:, :m].t().contiguous(), x[:, m:].t().contiguous(), u.t().contiguous(), out)
    xdot = problem.dynamics(x, u)
    assert torch.allclose(xdot[:, :m], x[:, m:], rtol=0, atol=0)  # q' = v
    assert torch.allclose(out.t(), xdot[:, m:], rtol=1e-12, atol=1e-12)


def test_both_forward_loops_equal_the_plain_rollout():
    """The generic loop and the second-order one, on the rotation ``q'' = -q + u``."""
    def acceleration(q, v, u, out):
        torch.sub(u, q, out=out)

    x0 = torch.randn(4, 2, dtype=F64)
    U = torch.randn(4, 13, 1, dtype=F64)
    expected = rollout(rk4(rotation, 0.1), x0, U)
    for X in (rk4_forward(rotation, 0.1, x0, U), second_order_forward(acceleration, 0.1, x0, U),
              rk4_rollout(rotation, 0.1, x0, U, rotation_jacobians, acceleration)):
        # a view of the time-major buffer: time outermost (see trc.rk4_forward)
        assert X.shape == (4, 14, 2) and X.stride(1) == max(X.stride()) and not X.is_inference()
        assert torch.allclose(X, expected, rtol=0, atol=1e-12)
    empty = second_order_forward(acceleration, 0.1, x0, U[:, :0])
    assert torch.equal(empty, x0.unsqueeze(1))
    with pytest.raises(TRCError, match="n_x = 3"):
        second_order_forward(acceleration, 0.1, torch.zeros(4, 3, dtype=F64), U)


@pytest.mark.parametrize("wrt", ["both", "x0", "U"])
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_adjoint_gradients_equal_autograd(wrt, batch, monkeypatch):
    monkeypatch.setattr(trc.adjoint, "CHUNK_ROWS", 3 * batch)  # several chunks, the last one short
    problem = get_problem("vanderpol", horizon=17)
    x0, U = random_inputs(problem, batch, problem.horizon, seed=batch)
    weight = torch.randn(batch, problem.horizon + 1, problem.n_x, dtype=F64)
    grads = []
    for simulate in (problem.rollout, lambda a, b: plain(problem, a, b)):
        a = x0.clone().requires_grad_(wrt in ("both", "x0"))
        b = U.clone().requires_grad_(wrt in ("both", "U"))
        (simulate(a, b) * weight).sum().backward()
        grads.append((a.grad, b.grad))
    (gx_fast, gu_fast), (gx_plain, gu_plain) = grads
    for fast, slow in ((gx_fast, gx_plain), (gu_fast, gu_plain)):
        assert (fast is None) == (slow is None)
        if fast is not None:
            assert fast.shape == slow.shape
            assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["double_integrator", "vanderpol"])
def test_gradcheck_fast_rollout(name, monkeypatch):
    monkeypatch.setattr(trc.adjoint, "CHUNK_ROWS", 5)  # chunks of 2 steps for batch 2
    problem = get_problem(name, horizon=7)
    x0, U = random_inputs(problem, 2, problem.horizon)
    x0.requires_grad_()
    U.requires_grad_()
    assert torch.autograd.gradcheck(problem.rollout, (x0, U))
    # only the final state matters (a sparse upstream gradient)
    assert torch.autograd.gradcheck(lambda a, b: problem.rollout(a, b)[:, -1], (x0, U))


def test_gradcheck_cost_through_rollout():
    problem = get_problem("vanderpol", horizon=6)
    x0, U = random_inputs(problem, 3, problem.horizon)
    target = torch.randn(3, 2, dtype=F64)

    def total(a, b):
        return problem.cost(problem.rollout(a, b), b, target)

    assert torch.autograd.gradcheck(total, (x0.requires_grad_(), U.requires_grad_()))


def test_rk4_rollout_takes_any_dynamics_with_or_without_jacobians():
    x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64, requires_grad=True)
    U = torch.randn(2, 9, 1, dtype=F64, requires_grad=True)
    expected = rollout(rk4(rotation, 0.1), x0, U)
    for jac in (rotation_jacobians, None):  # the hand-written adjoint, then the autograd fallback
        X = rk4_rollout(rotation, 0.1, x0, U, jac)
        assert torch.allclose(X, expected, rtol=0, atol=1e-12)
        assert torch.autograd.gradcheck(lambda a, b: rk4_rollout(rotation, 0.1, a, b, jac), (x0, U))


def test_rk4_is_fourth_order():
    """Halving dt divides the global error by about 2^4 = 16 (exact solution: a rotation)."""
    x0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    u = 0.3  # constant force: x1(t) = u + (x1(0) - u) cos t + x2(0) sin t
    t_end = 2.0
    exact = torch.tensor([u + (1.0 - u) * math.cos(t_end) + 0.5 * math.sin(t_end),
                          -(1.0 - u) * math.sin(t_end) + 0.5 * math.cos(t_end)], dtype=F64)
    errors = []
    for steps in (10, 20, 40, 80):
        U = torch.full((1, steps, 1), u, dtype=F64)
        X = rk4_rollout(rotation, t_end / steps, x0, U, rotation_jacobians)
        errors.append(torch.linalg.vector_norm(X[0, -1] - exact).item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(14.0 < r < 18.0 for r in ratios), ratios


def test_double_backward_is_refused():
    problem = get_problem("vanderpol", horizon=5)
    x0, U = random_inputs(problem, 2, 5)
    U.requires_grad_()
    (g,) = torch.autograd.grad(problem.rollout(x0, U).square().sum(), U, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_rollout_keeps_dtype_and_batch_per_call():
    problem = get_problem("vanderpol", horizon=4)
    for batch, dtype in ((3, torch.float32), (1, torch.float64), (11, torch.float32)):
        x0 = torch.zeros(batch, 2, dtype=dtype)
        U = torch.ones(batch, 4, 1, dtype=dtype, requires_grad=True)
        X = problem.rollout(x0, U)
        assert X.shape == (batch, 5, 2) and X.dtype == dtype
        X.sum().backward()
        assert U.grad.shape == U.shape and U.grad.dtype == dtype


def test_changing_an_input_in_place_before_backward_is_caught():
    problem = get_problem("vanderpol", horizon=5)
    x0, U = random_inputs(problem, 2, 5)
    x0.requires_grad_()
    a = x0 * 1.0
    X = problem.rollout(a, U)
    a.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        X.sum().backward()
