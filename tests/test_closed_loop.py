"""Closed loop: replanning from where the system is, on the true simulator."""

from __future__ import annotations

import math

import pytest
import torch

from trc import TRCError, get_problem
from trc.data.experts import lqr_controls
from trc.evaluation import ClosedLoopResult, Controller, RefinementEvaluator, closed_loop
from trc.evaluation.closed_loop import HYSTERESIS
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
    # the planner always saw the state in canonical coordinates, give or take the hysteresis
    assert all(bool((s[:, 0].abs() <= math.pi + HYSTERESIS).all()) for s in planner.seen)


def test_an_angle_rocking_across_the_wrap_point_is_shown_continuous_until_the_margin():
    problem = get_problem("pendulum")
    theta = torch.tensor([3.0, 3.1, -3.13, -3.0, 3.12, 2.0, -2.8]).unsqueeze(1)
    x = torch.cat([theta, torch.zeros_like(theta)], 1).double()
    shown, plain, margin = [], [], 0.25
    near = None
    for row in x:
        near = problem.wrap_state(row[None], near=near, margin=margin)
        shown.append(near[0, 0].item())
        plain.append(problem.wrap_state(row[None])[0, 0].item())
    # -3.13 is 3.153 past +pi's side: kept there; so is -3.0 (3.283 < pi + 0.25) ... until the margin
    assert shown[2] == pytest.approx(2 * math.pi - 3.13) and shown[3] == pytest.approx(2 * math.pi - 3.0)
    assert shown[4] == pytest.approx(3.12) and shown[5] == pytest.approx(2.0)
    assert shown[6] == pytest.approx(-2.8)   # 2 pi - 2.8 = 3.48 is beyond pi + 0.25: wrapped again
    assert plain == pytest.approx([3.0, 3.1, -3.13, -3.0, 3.12, 2.0, -2.8])
    assert problem.wrap_state(x, near=x + 6.0, margin=0.0).equal(problem.wrap_state(x))
    di = get_problem("double_integrator")  # no angle: every state is shown as it is
    assert di.wrap_state(x[:, :2] * 5, near=x[:, :2], margin=1.0).equal(x[:, :2] * 5)


def test_the_closed_loop_shows_a_planner_each_angle_with_hysteresis():
    problem = get_problem("pendulum", horizon=30)
    x0 = torch.tensor([[3.05, 0.3], [-3.05, -0.3]], dtype=F64)   # hanging, rocking across the bottom by 0.13
    U = torch.zeros(2, 30, 1, dtype=F64)
    for h in (0.0, 0.25):
        planner = RemainingPlan(U)
        result = closed_loop(planner, x0, problem=problem, hysteresis=h)
        seen = torch.stack([s[:, 0] for s in planner.seen], 1)
        jumps = (seen[:, 1:] - seen[:, :-1]).abs().max().item()
        assert torch.allclose(problem.wrap_state(torch.stack([s for s in planner.seen], 1)),
                              problem.wrap_state(result.X[:, :-1]))   # the same physical states
        if h == 0:
            assert jumps > 6 and seen.abs().max() <= math.pi
        else:
            assert jumps < 0.2 and math.pi < seen.abs().max() <= math.pi + h
    for bad in (-0.1, 4.0, True, "0.2"):
        with pytest.raises(TRCError, match="hysteresis must be a number of radians"):
            closed_loop(RemainingPlan(U), x0, problem=problem, hysteresis=bad)


def test_a_model_plans_for_a_raw_angle_after_full_turns_as_for_the_same_physical_state():
    problem = get_problem("pendulum")
    torch.manual_seed(0)
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2,
                                           feedback_points=2), problem).double()
    x = torch.tensor([[0.3, -0.5], [-2.8, 0.8], [2.8, 0.1], [-1.0, 0.0]], dtype=F64)   # |theta| < pi - HYSTERESIS
    U = model.plan(x)
    for turns in (1, -1, 3):   # what a simulator integrating theta reaches after full turns
        assert torch.allclose(model.plan(x + torch.tensor([2 * math.pi * turns, 0.0], dtype=F64)), U, atol=1e-9)
    # within HYSTERESIS past +-pi, the band a closed loop may show, a state is read as given
    band = torch.tensor([[math.pi + 0.8 * HYSTERESIS, 0.2]], dtype=F64)
    other_side = band - torch.tensor([2 * math.pi, 0.0], dtype=F64)
    assert not torch.allclose(model.plan(band), model.plan(other_side), atol=1e-6)
    past = band + torch.tensor([0.4 * HYSTERESIS, 0.0], dtype=F64)   # beyond the band: wrapped
    assert torch.allclose(model.plan(past), model.plan(past - torch.tensor([2 * math.pi, 0.0], dtype=F64)),
                          atol=1e-9)


def test_a_controller_in_a_loop_of_ones_own_is_the_closed_loop():
    problem = get_problem("pendulum", horizon=30)
    torch.manual_seed(0)
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2,
                                           feedback_points=2), problem)
    x0 = torch.tensor([[3.05, 0.3], [-3.05, -0.3], [0.5, -0.2]], dtype=F64)   # two rock across the bottom
    for r in (1, 3):
        shown, x, X = None, x0, [x0]   # by hand: plan from the shown state every r steps, apply clipped
        for t in range(problem.horizon):
            if t % r == 0:
                shown = problem.wrap_state(x, near=shown, margin=HYSTERESIS)
                plan = problem.clip(model.plan(shown))
            x = problem.step(x, plan[:, t % r])
            X.append(x)
        reference = closed_loop(model, x0, replan_every=r)
        assert torch.equal(torch.stack(X, 1), reference.X)
        controller = Controller(model, replan_every=r)
        for episode in range(2):   # reset() starts the next episode afresh
            x, X = x0, [x0]
            for _ in range(problem.horizon):
                x = problem.step(x, controller(x))   # the simulator's raw angle: no wrapping here
                X.append(x)
            assert torch.equal(torch.stack(X, 1), reference.X) and controller.plans == reference.plans
            controller.reset()
            assert controller.plans == 0
    one = Controller(model)([0.5, -0.2])   # one state as a list: numpy [n_u], clipped
    assert one.shape == (1,) and abs(one[0]) <= problem.u_max
    assert model.training  # the model's mode is restored after every plan
    with pytest.raises(TRCError, match=r"start states must have shape \[B, 2\]"):
        Controller(model)(torch.zeros(3))
    controller(x0)
    with pytest.raises(TRCError, match="running 3 episodes, not 2; call reset"):
        controller(x0[:2])
    with pytest.raises(TRCError, match="replan_every must be an integer from 1 to the horizon 30"):
        Controller(model, replan_every=31)


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
    longer = RefinementEvaluator(model).closed_loop(data, replan_every=5, batch_size=3, iterations=4)
    assert torch.allclose(longer.cost, closed_loop(model, x0, replan_every=5, iterations=4).cost)
    assert not torch.allclose(longer.cost, result.cost)
    summary = result.summary(optimal_costs=direct.cost)
    assert summary["cost_over_optimum"] == pytest.approx(1.0) and summary["cost_over_expert"] is None


def _small_model(problem, **config):
    torch.manual_seed(0)
    return TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2,
                                          feedback_points=2, **config), problem)


def test_every_plan_runs_the_iterations_asked_for():
    problem = get_problem("double_integrator")
    model = _small_model(problem)
    x0 = problem.sample_initial_states(5, torch.Generator().manual_seed(3))
    for k in (0, 5):
        by_hand = closed_loop(lambda x, t, k=k: model(x.float(), t.float(), iterations=k).controls.double(), x0,
                              replan_every=3, problem=problem)
        asked = closed_loop(model, x0, replan_every=3, iterations=k)
        assert torch.equal(asked.U, by_hand.U)
        assert not torch.equal(asked.U, closed_loop(model, x0, replan_every=3).U)   # not the model's own K = 2
    assert torch.equal(closed_loop(model, x0, iterations=2).U, closed_loop(model, x0).U)


def test_a_halting_model_halts_in_closed_loop_only_when_asked():
    problem = get_problem("double_integrator")
    model = _small_model(problem, use_halting=True)   # K_max = 2; an untrained head halts nowhere
    x0 = problem.sample_initial_states(4, torch.Generator().manual_seed(4))
    every = closed_loop(model, x0, replan_every=5)
    assert torch.equal(closed_loop(model, x0, replan_every=5, halt=True).U, every.U)
    with torch.no_grad():   # a head that halts every start after its first iteration
        model.halt_head.net[-1].bias.copy_(torch.tensor([5.0, -5.0]))
    halted = closed_loop(model, x0, replan_every=5, halt=True)
    assert torch.equal(halted.U, closed_loop(model, x0, replan_every=5, iterations=1).U)
    assert torch.equal(closed_loop(model, x0, replan_every=5).U, every.U)    # the default runs every iteration
    assert torch.equal(Controller(model, halt=None)(x0), halted.U[:, 0])     # None: as model.plan by default


def test_iterations_and_halt_are_refused_where_they_cannot_apply():
    problem = get_problem("double_integrator")
    planner = lambda x, t: torch.zeros(x.shape[0], 15, 1, dtype=x.dtype)  # noqa: E731
    with pytest.raises(TRCError, match="iterations and halt apply to a trc model, not to a planner callable"):
        closed_loop(planner, torch.zeros(2, 2), problem=problem, iterations=3)
    with pytest.raises(TRCError, match="halting rule 'halt' needs a halting head"):
        closed_loop(_small_model(problem), torch.zeros(2, 2), halt=True)
    with pytest.raises(TRCError, match="iterations must be an integer >= 0, got -1"):
        closed_loop(_small_model(problem), torch.zeros(2, 2), iterations=-1)
