"""Closed loop: replanning from where the system is, on the true simulator."""

from __future__ import annotations

import math

import pytest
import torch

from trc import TRCError, get_problem
from trc.data.experts import lqr_controls
from trc.evaluation import ClosedLoopResult, RefinementEvaluator, closed_loop
from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig

F64 = torch.float64


class RemainingPlan:
    """A perfect planner for one fixed open-loop plan: at step t it returns ``U[:, t:]`` padded."""

    def __init__(self, U):
        self.U, self.t, self.seen = U, 0, []

    def __call__(self, x, target):
        self.seen.append(x.clone())
        plan = torch.cat([self.U[:, self.t:], torch.zeros_like(self.U[:, :self.t])], 1)
        self.t += 1
        return plan


def test_a_perfect_plan_reproduces_the_open_loop_trajectory():
    problem = get_problem("pendulum")
    x0 = torch.tensor([[0.4, -0.5], [-2.0, 1.0], [3.1, 0.0]], dtype=F64)
    U = lqr_controls(problem, x0)
    planner = RemainingPlan(U)
    result = closed_loop(planner, x0, replan_every=1, problem=problem)
    open_loop = problem.evaluate(x0, U)
    assert result.plans == problem.horizon
    assert torch.allclose(result.X, open_loop["X"], rtol=0, atol=1e-10)
    assert torch.allclose(result["cost"], open_loop["cost"]) and torch.equal(result.U, problem.clip(U))
    assert torch.equal(result.success, open_loop["success"])
    # the planner always saw the state in canonical coordinates
    assert all(bool((s[:, 0].abs() <= math.pi).all()) for s in planner.seen)


def test_replanning_every_T_steps_is_the_model_open_loop():
    problem = get_problem("double_integrator")
    torch.manual_seed(0)
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2,
                                           feedback_points=2), problem)
    x0 = problem.sample_initial_states(6, torch.Generator().manual_seed(1))
    with torch.no_grad():
        U = model(x0).controls
    once = closed_loop(model, x0, replan_every=problem.horizon)
    assert once.plans == 1 and isinstance(once, ClosedLoopResult)
    assert torch.allclose(once.cost, problem.evaluate(x0.double(), U.double())["cost"], rtol=1e-6)
    every = closed_loop(model, x0, replan_every=4)  # T = 15: plans at 0, 4, 8, 12
    assert every.plans == 4 and every.U.shape == (6, problem.horizon, 1) and every.X.shape == (6, 16, 2)
    assert not torch.allclose(every.cost, once.cost)
    assert model.training  # the model's mode is restored


@pytest.mark.parametrize("bad", [0, -1, 16, 1.5, True, "2"])
def test_replan_every_must_be_a_step_count_within_the_horizon(bad):
    problem = get_problem("double_integrator")  # T = 15
    with pytest.raises(TRCError, match="replan_every must be an integer from 1 to the horizon 15"):
        closed_loop(lambda x, t: torch.zeros(x.shape[0], 15, 1, dtype=x.dtype), torch.zeros(2, 2), bad,
                    problem=problem)


def test_bad_planners_and_starts_are_one_clear_error():
    problem = get_problem("double_integrator")
    with pytest.raises(TRCError, match=r"the planner returned controls of shape \[2, 3, 1\]"):
        closed_loop(lambda x, t: torch.zeros(2, 3, 1, dtype=x.dtype), torch.zeros(2, 2), 5, problem=problem)
    with pytest.raises(TRCError, match=r"start states must have shape \[B, 2\]"):
        closed_loop(lambda x, t: x, torch.zeros(2, 3), problem=problem)
    with pytest.raises(TRCError, match="needs a problem"):
        closed_loop(lambda x, t: x, torch.zeros(2, 2))


def test_replanning_rescues_what_open_loop_loses():
    """A plan that is slightly wrong fails open loop on the unstable upright; replanned, it holds."""
    problem = get_problem("pendulum", horizon=40)
    x0 = torch.tensor([[0.2, 0.0], [-0.15, 0.2]], dtype=F64)  # near the top: LQR holds it

    def scaled_lqr(x, target):  # the LQR plan from x, off by 1 %
        return 0.99 * lqr_controls(problem, x, target)

    open_loop = problem.evaluate(x0, scaled_lqr(x0, None))
    replanned = closed_loop(scaled_lqr, x0, replan_every=2, problem=problem)
    assert not open_loop["success"].any() and replanned.success.all()
    assert (replanned.cost < 0.2 * open_loop["cost"]).all()


def test_refinement_evaluator_runs_the_closed_loop_over_a_dataset():
    problem = get_problem("double_integrator")
    torch.manual_seed(0)
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=1,
                                           feedback_points=2), problem)
    x0 = problem.sample_initial_states(7, torch.Generator().manual_seed(2))
    data = {"initial_states": x0.numpy(), "target_states": problem.target_like(x0).numpy()}
    result = RefinementEvaluator(model).closed_loop(data, replan_every=5, batch_size=3)
    direct = closed_loop(model, x0, replan_every=5)
    assert torch.allclose(result.cost, direct.cost) and result.plans == 3 * 3
    summary = result.summary(optimal_costs=direct.cost)
    assert summary["cost_over_optimum"] == pytest.approx(1.0) and summary["cost_over_expert"] is None
