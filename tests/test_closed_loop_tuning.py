"""Closed-loop tuning: the model trained on the cost it realises when it replans every step."""

from __future__ import annotations

import copy

import pytest
import torch

from trc import TRCError, get_problem
from trc.evaluation import closed_loop
from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig
from trc.training.closed_loop_tuning import (VALIDATION_STREAM, ClosedLoopTuning, CostToGo, closed_loop_rollout,
                                            costs_to_go, cut_steps, tune_closed_loop)


def small_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    problem = get_problem("double_integrator")
    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2,
                                           feedback_points=2), problem)
    return model.to(dtype)


def val_starts(n=32):
    return get_problem("double_integrator").sample_initial_states(n, torch.Generator().manual_seed(7),
                                                                  dtype=torch.float64)


@pytest.mark.parametrize("replan_every", [1, 4])  # 4: the horizon of 15 ends inside a plan
def test_the_rollout_is_the_evaluated_closed_loop_with_a_graph(replan_every):
    model = small_model(dtype=torch.float64)
    x0 = val_starts(6)
    X, U = closed_loop_rollout(model, x0, model.problem.target_like(x0, None), replan_every)
    reference = closed_loop(model, x0, replan_every=replan_every)
    assert torch.allclose(X, reference.X, atol=1e-10) and torch.allclose(U, reference.U, atol=1e-10)
    model.problem.cost(X, U).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("replan_every, truncate", [(1, 5), (3, 4)])  # (3, 4): cuts at the plans of steps 6 and 9
def test_a_truncated_rollout_has_the_same_values_and_no_gradient_across_a_cut(replan_every, truncate):
    model = small_model(dtype=torch.float64)
    x0 = val_starts(6).requires_grad_(True)
    target = model.problem.target_like(x0, None)
    X, U = closed_loop_rollout(model, x0, target, replan_every)
    Xt, Ut = closed_loop_rollout(model, x0, target, replan_every, truncate)
    assert torch.equal(X, Xt) and torch.equal(U, Ut)
    whole = torch.autograd.grad(X[:, -1].sum(), x0)[0]
    assert whole.abs().sum() > 0                                   # the final state depends on the start ...
    cut = torch.autograd.grad(Xt[:, -1].sum(), x0, allow_unused=True, retain_graph=True)[0]
    assert cut is None or torch.count_nonzero(cut) == 0            # ... but not through a cut state
    early = 4 if replan_every == 1 else 3                          # a state before the first cut still does
    assert torch.autograd.grad(Xt[:, early].sum(), x0)[0].abs().sum() > 0


@pytest.mark.parametrize("replan_every", [1, 3])  # 3: trained on fewer plans, still judged replanning every step
def test_tuning_lowers_the_closed_loop_cost_and_keeps_the_cheapest_validated_state(replan_every):
    model = small_model()
    x0 = val_starts()
    before = closed_loop(model, x0).cost.mean().item()
    model, log = tune_closed_loop(model, x0, ClosedLoopTuning(steps=12, batch_size=16, lr=3e-3, eval_every=4,
                                                              replan_every=replan_every, val_starts=0))
    checks = [r for r in log if "cost" in r]
    assert [r["step"] for r in checks] == [0, 4, 8, 12]
    assert checks[0]["cost"] == pytest.approx(before)
    after = closed_loop(model, x0).cost.mean().item()
    assert after == pytest.approx(min(r["cost"] for r in checks)) and after < before
    assert sum("train_cost" in r for r in log) == 12 and not model.training


def test_a_tuning_never_returns_a_state_worse_than_it_found():
    model = small_model()
    x0 = val_starts()
    before = closed_loop(model, x0).cost.mean().item()
    model, log = tune_closed_loop(model, x0, ClosedLoopTuning(steps=3, batch_size=8, lr=1.0, eval_every=1,
                                                              val_starts=0))
    assert closed_loop(model, x0).cost.mean().item() <= before + 1e-9


def test_fresh_validation_starts_join_the_given_ones_from_a_stream_of_their_own():
    model, x0 = small_model(), val_starts(8)
    problem = model.problem
    _, log = tune_closed_loop(model, x0, ClosedLoopTuning(steps=0, val_starts=24), seed=5,
                              val_target=problem.target_like(x0, None))
    fresh = problem.sample_initial_states(24, torch.Generator().manual_seed(VALIDATION_STREAM + 5), dtype=x0.dtype)
    assert log[0]["cost"] == pytest.approx(closed_loop(model, torch.cat([x0, fresh])).cost.mean().item())
    training = problem.sample_initial_states(24, torch.Generator().manual_seed(5), dtype=x0.dtype)
    assert not torch.allclose(fresh, training)


def test_an_interrupted_tuning_resumes_to_the_same_model():
    x0 = val_starts()
    config = ClosedLoopTuning(steps=8, batch_size=8, lr=3e-3, eval_every=4)
    whole, _ = tune_closed_loop(small_model(), x0, config, seed=3)
    saved = []
    tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=4, batch_size=8, lr=3e-3, eval_every=4), seed=3,
                     save=lambda s: saved.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}))
    state = saved[-1]
    state["weights"] = {k: v.clone() for k, v in state["weights"].items()}
    resumed, log = tune_closed_loop(small_model(seed=1), x0, config, seed=3, state=state)
    assert [r["step"] for r in log if "cost" in r] == [0, 4, 8]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_state_validated_on_other_starts_is_not_continued():
    x0, saved = val_starts(), []
    tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=4, batch_size=8, eval_every=4, val_starts=3),
                     save=saved.append)
    with pytest.raises(TRCError, match="validated with 3 fresh starts, this version of trc uses 5"):
        tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=8, batch_size=8, eval_every=4, val_starts=5),
                         state=saved[-1])


@pytest.mark.parametrize("field, bad", [("steps", -1), ("batch_size", 0), ("eval_every", 1.5), ("lr", 0.0),
                                        ("max_grad_norm", float("nan")), ("steps", True),
                                        ("replan_every", 0), ("truncate", -1), ("val_starts", -1), ("critic", -0.5)])
def test_bad_settings_are_one_sentence(field, bad):
    with pytest.raises(TRCError, match=field):
        ClosedLoopTuning(**{field: bad})


def test_a_critic_needs_cuts_to_value():
    with pytest.raises(TRCError, match="critic needs truncate > 0"):
        ClosedLoopTuning(critic=0.5)


@pytest.mark.parametrize("replan_every, truncate, cuts", [(1, 5, [5, 10]), (3, 4, [6, 9, 12]), (4, 40, [40, 80])])
def test_the_critic_values_the_states_where_the_rollout_cuts(replan_every, truncate, cuts):
    assert cut_steps(100 if truncate == 40 else 15, replan_every, truncate) == cuts
    if truncate == 40:
        return
    model = small_model(dtype=torch.float64)
    x0 = val_starts(4).requires_grad_(True)
    X, _ = closed_loop_rollout(model, x0, model.problem.target_like(x0, None), replan_every, truncate)
    first = cuts[0]   # the state at a cut still carries its past (the critic's gradient reaches it) ...
    assert torch.autograd.grad(X[:, first].sum(), x0, retain_graph=True)[0].abs().sum() > 0
    after = torch.autograd.grad(X[:, first + 1].sum(), x0, allow_unused=True)[0]   # ... the next does not
    assert after is None or torch.count_nonzero(after) == 0


@pytest.mark.parametrize("name", ["double_integrator", "pendulum"])
def test_costs_to_go_start_at_the_trajectory_cost_and_fall_to_the_terminal_cost(name):
    problem = get_problem(name)
    x0 = problem.sample_initial_states(5, torch.Generator().manual_seed(0), dtype=torch.float64)
    U = torch.randn(5, problem.horizon, problem.n_u, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    X, target = problem.rollout(x0, U), problem.target_like(x0, None)
    togo = costs_to_go(problem, X, U, target)
    assert togo.shape == (5, problem.horizon)
    assert torch.allclose(togo[:, 0], problem.cost(X, U, target))
    assert torch.allclose(togo[:, -1], problem.stage_cost(X[:, -2], U[:, -1], target) + problem.terminal_cost(X[:, -1], target))
    assert CostToGo(problem)(X[:, 3].float(), 3).shape == (5,)


def test_a_critic_changes_the_tuning_and_an_interrupted_one_resumes_to_the_same_model():
    x0 = val_starts()
    settings = dict(batch_size=8, lr=3e-3, eval_every=4, truncate=5)
    plain, _ = tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=8, **settings), seed=3)
    config = ClosedLoopTuning(steps=8, critic=0.5, **settings)
    whole, log = tune_closed_loop(small_model(), x0, config, seed=3)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), whole.state_dict().values()))
    saved = []
    tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=4, critic=0.5, **settings), seed=3,
                     save=lambda s: saved.append(copy.deepcopy(s)))
    assert {"critic", "critic_optimizer", "critic_scale"} <= set(saved[-1])
    resumed, _ = tune_closed_loop(small_model(seed=1), x0, config, seed=3, state=saved[-1])
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(TRCError, match="tuned with critic 0.5, not 1.0"):
        tune_closed_loop(small_model(), x0, ClosedLoopTuning(steps=8, critic=1.0, **settings), state=saved[-1])


def test_problem_features_are_continuous_where_the_wrapped_angle_jumps():
    pendulum, box = get_problem("pendulum"), get_problem("vanderpol")
    near = torch.tensor([[torch.pi - 1e-4, 0.5], [-torch.pi + 1e-4, 0.5]], dtype=torch.float64)
    assert (pendulum.wrap_state(near)[0, 0] - pendulum.wrap_state(near)[1, 0]).abs() > 6   # the angle jumps ...
    f = pendulum.features(near)
    assert f.shape == (2, 3) and torch.allclose(f[0], f[1], atol=1e-3)                  # ... its features do not
    corners = torch.tensor([box.x0_low, box.x0_high], dtype=torch.float64)
    assert torch.allclose(box.features(corners), torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64))
