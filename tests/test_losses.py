"""Losses: hand-computed values, the seed formula's telescoping, and who gets gradient."""

import re

import pytest
import torch

from trc import TRCError, get_problem
from trc.training.process_supervision import (
    PROCESS_VARIANTS,
    behavior_cloning_loss,
    compute_process_supervision_loss,
    compute_trajectory_cost,
    compute_value_prediction_loss,
    iteration_costs,
    monotone_process_term,
    ratio_process_term,
    seed_process_term,
)

D = torch.float64
EYE = {"Q": torch.eye(2, dtype=D), "R": torch.eye(1, dtype=D), "Q_final": torch.eye(2, dtype=D)}


def shift(x0, U):
    """A one-line simulator: x_{t+1} = x_t + (u_t, 0)."""
    steps = torch.cat([U, torch.zeros_like(U)], dim=-1)
    return torch.cat([x0[:, None], x0[:, None] + steps.cumsum(1)], dim=1)


def hand_case():
    """One sample, x0 = (1, 0), T = 1, iterates u = 0, -0.5, -1 with costs 2, 1.5, 2.

    c(u) = |x0|^2 + u^2 + |x0 + (u, 0)|^2 = 1 + u^2 + (1 + u)^2.
    """
    problem = get_problem("double_integrator")
    all_U = torch.tensor([0.0, -0.5, -1.0], dtype=D).view(1, 3, 1, 1)
    x0 = torch.tensor([[1.0, 0.0]], dtype=D)
    return problem, all_U, x0, torch.zeros(1, 2, dtype=D)


def test_behavior_cloning_loss_is_the_mean_squared_error():
    U = torch.tensor([[[1.0], [2.0]]])
    assert behavior_cloning_loss(U, torch.zeros_like(U)).item() == pytest.approx(2.5)


def test_trajectory_cost_by_hand():
    problem, all_U, x0, target = hand_case()
    X = shift(x0, all_U[:, 1])
    assert compute_trajectory_cost(X, all_U[:, 1], target, **EYE).item() == pytest.approx(1.5)
    Q, R, Qf = (3 * EYE["Q"], 2 * EYE["R"], 5 * EYE["Q_final"])
    assert compute_trajectory_cost(X, all_U[:, 1], target, Q, R, Qf).item() == pytest.approx(3 + 0.5 + 1.25)


def test_iteration_costs_by_hand_in_one_simulator_call():
    problem, all_U, x0, target = hand_case()
    calls = []

    def counting(x0, U):
        calls.append(U.shape[0])
        return shift(x0, U)

    costs, errors = iteration_costs(problem, all_U, x0, target, counting, EYE)
    assert calls == [3]
    torch.testing.assert_close(costs, torch.tensor([[2.0, 1.5, 2.0]], dtype=D))
    torch.testing.assert_close(errors, torch.tensor([[1.0, 0.5, 0.0]], dtype=D))


def test_controls_are_clipped_to_the_bound_before_simulation():
    problem, all_U, x0, target = hand_case()
    costs, _ = iteration_costs(problem, all_U - 10.0, x0, target, shift, EYE)  # all below -u_max = -4
    torch.testing.assert_close(costs, torch.full((1, 3), 1 + 16 + 9, dtype=D))


def test_process_loss_values_by_hand():
    problem, all_U, x0, target = hand_case()
    expert = torch.tensor([[[-0.5]]], dtype=D)
    n = torch.tensor([2.0, 1.5, 2.0], dtype=D) / (2.0 + 1e-6)
    seed_value = -((n[0] - n[1]) + (n[1] - n[2])) / 2
    ratio_value = (1.0 + 1.5 / 2.0 + 2.0 / 1.5) / 3
    # hinge at margin 1e-3: iterate 1 improves by 25 % (free), iterate 2 rises to 4/3 (charged)
    monotone_value = ratio_value + 10 * (0.0 + (2.0 / 1.5 - (1 - 1e-3))) / 2
    for variant, value in (("seed", seed_value), ("ratio", ratio_value), ("monotone", monotone_value)):
        loss, parts = compute_process_supervision_loss(problem, all_U, expert, x0, target, 0.5,
                                                       dynamics_fn=shift, cost_params=EYE, variant=variant)
        assert parts["bc"].item() == pytest.approx(0.25)
        assert parts["process"].item() == pytest.approx(float(value))
        assert loss.item() == pytest.approx(0.25 + 0.5 * float(value))
        torch.testing.assert_close(parts["iteration_costs"], torch.tensor([2.0, 1.5, 2.0], dtype=D))
        assert parts["success"].item() == 1.0  # |x_T| = 0 < 0.1


def random_case(B=5, K=4, seed=0):
    problem = get_problem("vanderpol", horizon=12)
    g = torch.Generator().manual_seed(seed)
    all_U = (1.5 * torch.rand(B, K + 1, 12, 1, generator=g, dtype=D) - 0.75).requires_grad_()
    x0 = problem.sample_initial_states(B, g, dtype=D)
    expert = torch.rand(B, 12, 1, generator=g, dtype=D)
    return problem, all_U, expert, x0, problem.target_like(x0)


def test_seed_formula_telescopes():
    problem, all_U, expert, x0, target = random_case()
    costs, _ = iteration_costs(problem, all_U, x0, target)
    K = all_U.shape[1] - 1
    closed_form = (-(costs[:, 0] - costs[:, -1]) / (K * (costs[:, 0] + 1e-6))).mean()
    torch.testing.assert_close(seed_process_term(costs), closed_form)


def process_gradient_per_iterate(variant):
    problem, all_U, expert, x0, target = random_case()
    loss, _ = compute_process_supervision_loss(problem, all_U, expert, x0, target, 1.0, variant=variant)
    (grad,) = torch.autograd.grad(loss, all_U)
    return grad.abs().sum(dim=(0, 2, 3))  # (K+1,)


def test_seed_formula_gives_no_gradient_to_middle_iterates():
    per_iterate = process_gradient_per_iterate("seed")
    assert per_iterate[0] > 0 and per_iterate[-1] > 0
    assert torch.all(per_iterate[1:-1] == 0)


@pytest.mark.parametrize("variant", ["ratio", "monotone"])
def test_well_posed_variants_give_gradient_to_every_iterate(variant):
    assert torch.all(process_gradient_per_iterate(variant) > 0)


def test_monotone_hinge_charges_only_the_refinements_that_do_not_improve():
    # sample 0 improves by 10 % at every step, sample 1 stalls at step 1 and rises at step 2
    costs = torch.tensor([[10.0, 9.0, 8.1], [10.0, 10.0, 11.0]], dtype=D, requires_grad=True)
    (g_ratio,) = torch.autograd.grad(ratio_process_term(costs), costs)
    (g_mono,) = torch.autograd.grad(monotone_process_term(costs, weight=10.0, margin=1e-3), costs)
    extra = g_mono - g_ratio
    assert torch.all(extra[0] == 0) and extra[1, 0] == 0       # improving samples and c_0: no hinge
    torch.testing.assert_close(extra[1, 1:], 10.0 / (2 * 2) / torch.tensor([10.0, 10.0], dtype=D))
    torch.testing.assert_close(monotone_process_term(costs, weight=0.0), ratio_process_term(costs))


def test_only_the_seed_formula_rewards_a_worse_first_guess():
    costs = torch.tensor([[4.0, 3.0, 2.0]], dtype=D, requires_grad=True)
    (g_seed,) = torch.autograd.grad(seed_process_term(costs), costs)
    (g_ratio,) = torch.autograd.grad(ratio_process_term(costs), costs)
    assert g_seed[0, 0] < 0 < g_ratio[0, 0]  # raising c_0 lowers the seed term
    assert torch.all(g_ratio > 0)


def test_process_weight_zero_is_behavior_cloning_of_every_iterate():
    problem, all_U, expert, x0, target = random_case()
    every = sum(behavior_cloning_loss(all_U[:, k], expert) for k in range(all_U.shape[1])) / all_U.shape[1]
    torch.testing.assert_close(behavior_cloning_loss(all_U, expert), every)
    for variant in PROCESS_VARIANTS:
        loss, parts = compute_process_supervision_loss(problem, all_U, expert, x0, target, 0.0, variant=variant)
        torch.testing.assert_close(loss, every)
        assert parts["iteration_costs"].shape == (all_U.shape[1],)


@pytest.mark.parametrize("variant, imitated", [("seed", -1), ("ratio", 0), ("monotone", 0)])
def test_under_process_supervision_one_iterate_imitates_the_expert(variant, imitated):
    problem, all_U, expert, x0, target = random_case()
    _, parts = compute_process_supervision_loss(problem, all_U, expert, x0, target, 1.0, variant=variant)
    torch.testing.assert_close(parts["bc"], behavior_cloning_loss(all_U[:, imitated], expert).detach())


def test_cost_variant_ignores_the_expert():
    problem, all_U, expert, x0, target = random_case()
    losses = [compute_process_supervision_loss(problem, all_U, e, x0, target, 1.0, variant="cost")[0]
              for e in (expert, expert + 1.0)]
    torch.testing.assert_close(losses[0], losses[1])               # the loss does not see the expert's plans
    ratio, _ = compute_process_supervision_loss(problem, all_U, expert, x0, target, 1.0, variant="ratio")
    _, parts = compute_process_supervision_loss(problem, all_U, expert, x0, target, 1.0, variant="cost")
    torch.testing.assert_close(losses[0], ratio - parts["bc"])     # the ratio variant less its imitation term


def test_ratio_term_is_per_step_and_one_without_improvement():
    costs = torch.full((3, 4), 7.0, dtype=D)
    assert ratio_process_term(costs, horizon=50).item() == pytest.approx(1 / 50)


def test_cost_params_override_the_problem_costs():
    problem, all_U, expert, x0, target = random_case()
    default, _ = iteration_costs(problem, all_U, x0, target)
    Q, R, Qf = problem.cost_matrices(D)
    same, _ = iteration_costs(problem, all_U, x0, target, cost_params={"Q": Q, "R": R, "Q_final": Qf})
    doubled, _ = iteration_costs(problem, all_U, x0, target, cost_params={"Q": 2 * Q, "R": 2 * R, "Q_final": 2 * Qf})
    torch.testing.assert_close(same, default)
    torch.testing.assert_close(doubled, 2 * default)


@pytest.mark.parametrize("kwargs, message", [
    ({"cost_params": {"Qf": torch.eye(2)}}, "unknown key 'Qf'"),
    ({"cost_params": {"R": torch.eye(2)}}, "must have shape"),
    ({"variant": "nope"}, "unknown loss variant"),
])
def test_bad_arguments_are_one_sentence(kwargs, message):
    problem, all_U, expert, x0, target = random_case()
    with pytest.raises(TRCError, match=message):
        compute_process_supervision_loss(problem, all_U, expert, x0, target, **kwargs)


def test_process_loss_needs_a_refinement():
    problem, all_U, expert, x0, target = random_case()
    with pytest.raises(TRCError, match="K >= 1"):
        compute_process_supervision_loss(problem, all_U[:, :1], expert, x0, target)


def test_value_loss_is_mse_and_does_not_move_the_costs():
    predicted = torch.tensor([1.0, 3.0], requires_grad=True)
    actual = torch.tensor([2.0, 5.0], requires_grad=True)
    loss = compute_value_prediction_loss(predicted, actual)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert actual.grad is None
    torch.testing.assert_close(predicted.grad, torch.tensor([-1.0, -2.0]))


def test_a_value_predictor_of_another_width_is_one_sentence():
    from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig
    from trc.models.value_predictor import create_value_predictor
    from trc.training.supervised_trainer import train_with_process_supervision

    problem = get_problem("vanderpol", horizon=10)
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_outer_cycles=2), problem)
    batch = (torch.zeros(4, 2), torch.zeros(4, 10, 1))
    with pytest.raises(TRCError, match=re.escape("reads latents of width 7, the model's are 8")):
        train_with_process_supervision(model, [batch], epochs=1, progress=False,
                                       value_predictor=create_value_predictor(7))
