"""The recursive planner: shapes, bounds, gradient flow, feedback, presets, plan(), value head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trc
from trc.models.config import PRESETS, TRCConfig
from trc.models.tiny_recursive_control import TinyRecursiveControl, _ClipSTE
from trc.models.value_predictor import ValuePredictor, create_value_predictor

TINY = dict(latent_dim=16, hidden_dim=32, feedback_points=4)
MODES = [dict(use_two_level=tl, use_gradient_truncation=tr, H_cycles=2, L_cycles=2)
         for tl in (False, True) for tr in (False, True)]


def tiny(problem="double_integrator", seed=0, **overrides) -> TinyRecursiveControl:
    torch.manual_seed(seed)
    return TinyRecursiveControl(TRCConfig(**{**TINY, **overrides}), problem)


def start_states(model, n=5, seed=1):
    return model.problem.sample_initial_states(n, torch.Generator().manual_seed(seed))


def assert_bounded(U, problem):
    assert torch.isfinite(U).all()
    assert U.abs().max() <= problem.u_max


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("problem", ["vanderpol", "double_integrator"])
def test_presets_shapes_and_bounds(preset, problem):
    torch.manual_seed(0)
    model = TinyRecursiveControl.from_preset(preset, problem)
    p, cfg = model.problem, model.config
    x0 = 3 * start_states(model, 3)  # outside the training box as well
    out = model(x0, return_all_iterations=True)
    K, T, d = model.num_iterations, p.horizon, cfg.latent_dim
    assert out.controls.shape == (3, T, p.n_u) and out.final_latent.shape == (3, d)
    assert out.all_controls.shape == (3, K + 1, T, p.n_u) and out.all_latents.shape == (3, K + 1, d)
    assert torch.equal(out.all_controls[:, -1], out.controls)
    assert_bounded(out.all_controls, p)
    if cfg.use_two_level:
        assert out.z_H.shape == out.z_L.shape == (3, K * cfg.H_cycles, d)
        assert torch.equal(out.z_H[:, -1], out.final_latent)
    else:
        assert out.z_H is None and out.z_L is None
    assert model.get_parameter_count()["total"] == sum(q.numel() for q in model.parameters())


def test_parameter_counts_in_predecessor_range():
    counts = {name: TinyRecursiveControl.from_preset(name, "vanderpol").get_parameter_count()["total"]
              for name in PRESETS}
    assert 0.25e6 <= counts["two_level_medium"] <= 0.55e6
    assert counts["small"] < counts["medium"] < counts["large"]
    assert counts["two_level_small"] < counts["two_level_medium"] < counts["two_level_large"] < 2e6


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_shapes_bounds_and_gradients(mode):
    model = tiny(**mode)
    x0 = start_states(model)
    target = torch.randn(5, 2)
    out = model(x0, target, return_all_iterations=True)
    assert_bounded(out.all_controls, model.problem)
    loss = (out.all_controls ** 2).sum() + out.final_latent.sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("two_level", [False, True])
def test_truncation_detaches_the_carry(two_level):
    """Under truncation the final controls owe nothing to U_0's decoder; without it they do."""
    for truncation in (False, True):
        model = tiny(use_two_level=two_level, use_gradient_truncation=truncation, H_cycles=2)
        model(start_states(model)).controls.pow(2).sum().backward()
        grad = model.initial_decoder[0].weight.grad
        assert (grad is None) == truncation
        assert model.core.blocks[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("two_level", [False, True])
def test_truncation_backpropagates_only_the_last_cycle(two_level):
    """Count the core calls that backward passes through: the early cycles must get none."""
    K, H, L = 2, 3, 2
    calls = {}
    for truncation in (False, True):
        model = tiny(use_two_level=two_level, use_gradient_truncation=truncation,
                     num_outer_cycles=K, H_cycles=H, L_cycles=L)
        count = []
        model.core.register_full_backward_hook(lambda *args: count.append(1))
        model(start_states(model), return_all_iterations=True).all_controls.sum().backward()
        calls[truncation] = len(count)
    per_cycle = L + 1 if two_level else L
    assert calls[False] == K * H * per_cycle
    assert calls[True] == K * per_cycle


def test_straight_through_clip_keeps_gradient_at_the_bound():
    x = torch.tensor([3.0, -3.0, 0.5], requires_grad=True)
    y = _ClipSTE.apply(x, 2.0)
    assert torch.equal(y, torch.tensor([2.0, -2.0, 0.5]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


@pytest.mark.parametrize("two_level", [False, True])
def test_feedback_is_simulated_every_iteration_and_changes_the_controls(two_level, monkeypatch):
    model = tiny("vanderpol", use_two_level=two_level)
    x0 = start_states(model)
    calls = []
    rollout = type(model.problem).rollout
    monkeypatch.setattr(type(model.problem), "rollout", lambda self, x, U: calls.append(1) or rollout(self, x, U))
    with torch.no_grad():
        before = model(x0, return_all_iterations=True).all_controls
        assert len(calls) == model.num_iterations
        model.problem = model.problem.replace(mu=3.0)  # same inputs, other dynamics: other feedback
        after = model(x0, return_all_iterations=True).all_controls
    assert torch.equal(before[:, 0], after[:, 0])  # U_0 sees no feedback
    assert not torch.allclose(before[:, 1], after[:, 1])


def test_feedback_features_reflect_the_error_and_cost():
    model = tiny("vanderpol", feedback_points=5)
    p = model.problem
    x0, U = start_states(model), torch.zeros(5, p.horizon, 1)
    target = torch.zeros(5, 2)
    fb = model.feedback(x0, U, target)
    assert fb.shape == (5, p.n_x + 1 + 5 * p.n_x)
    X = p.rollout(x0, U)
    e = X[:, -1] / p.success_tol
    assert torch.allclose(fb[:, :2], torch.sign(e) * torch.log1p(e.abs()))
    assert torch.allclose(fb[:, 2], torch.log1p(p.cost(X, U, target)))
    # a target at the final state zeroes the final-error features
    assert torch.allclose(model.feedback(x0, U, X[:, -1])[:, :2], torch.zeros(5, 2), atol=1e-6)


def test_more_iterations_at_test_time_extend_the_same_sequence():
    model = tiny(num_outer_cycles=2, use_two_level=True, H_cycles=2)
    x0 = start_states(model)
    with torch.no_grad():
        base = model(x0, return_all_iterations=True).all_controls
        longer = model(x0, return_all_iterations=True, iterations=6)
        none = model(x0, iterations=0).controls
    assert longer.all_controls.shape[1] == 7 and longer.z_H.shape[1] == 6 * 2
    assert torch.allclose(longer.all_controls[:, :3], base)
    assert torch.equal(none, base[:, 0])
    assert_bounded(longer.all_controls, model.problem)


def test_plan_kinds_shapes_and_no_gradient():
    model = tiny("vanderpol", use_two_level=True)
    x0 = start_states(model).double()
    U = model.plan(x0.numpy())
    assert isinstance(U, np.ndarray) and U.dtype == np.float64 and U.shape == (5, 100, 1)
    assert np.abs(U).max() <= model.problem.u_max
    with torch.no_grad():
        expected = model(x0.float()).controls
    assert np.allclose(U, expected.numpy(), atol=1e-6)
    Ut = model.plan(x0.float())
    assert torch.is_tensor(Ut) and not Ut.requires_grad and torch.allclose(Ut, expected)
    assert model.plan(x0[0].tolist()).shape == (100, 1)
    assert model.plan(x0.numpy(), all_iterations=True, iterations=4).shape == (5, 5, 100, 1)
    other = model.plan(x0.numpy(), target=np.array([1.0, 0.0]))
    assert not np.allclose(other, U)


def test_legacy_constructors_resolve_and_validate_the_problem():
    model = TinyRecursiveControl.create_two_level_medium(state_dim=2, control_dim=1, control_horizon=100)
    assert model.problem.name == "vanderpol" and model.config.use_two_level
    model = TinyRecursiveControl.create_small(2, 1, 15, problem="double_integrator")
    assert model.problem.name == "double_integrator" and model.config.control_horizon == 15
    with pytest.raises(trc.TRCError, match="problem="):
        TinyRecursiveControl.create_small(2, 1, 15)
    with pytest.raises(trc.TRCError, match="control_horizon"):
        TinyRecursiveControl.create_medium(2, 1, 50, problem="vanderpol")
    with pytest.raises(trc.TRCError, match="control_bounds"):
        TinyRecursiveControl.create_large(2, 1, 100, control_bounds=4.0)
    model = TinyRecursiveControl.create_two_level_small(problem=trc.get_problem("vanderpol", horizon=40),
                                                        control_horizon=40, H_cycles=3)
    assert model.config.H_cycles == 3 and model.plan(np.zeros(2)).shape == (40, 1)


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(L_cycles=1.5), dict(feedback_points=-1),
                                 dict(num_outer_cycles=True)])
def test_bad_config_is_one_error(bad):
    with pytest.raises(trc.TRCError, match=next(iter(bad))):
        TRCConfig(**bad)


def test_bad_inputs_are_one_error():
    model = tiny()
    with pytest.raises(trc.TRCError, match="unknown model preset"):
        TinyRecursiveControl.from_preset("huge", "vanderpol")
    with pytest.raises(trc.TRCError, match="no field 'H_cycle'"):
        TinyRecursiveControl.from_preset("small", "vanderpol", H_cycle=2)
    with pytest.raises(trc.TRCError, match=r"\[B, 2\]"):
        model(torch.zeros(4, 3))
    with pytest.raises(trc.TRCError, match="targets"):
        model(torch.zeros(4, 2), torch.zeros(3, 2))
    with pytest.raises(trc.TRCError, match="iterations"):
        model(torch.zeros(4, 2), iterations=-1)


def test_value_predictor():
    for size in ("small", "medium", "large"):
        vp = create_value_predictor(latent_dim=16, size=size)
        assert vp(torch.randn(4, 16)).shape == (4,)
        assert vp(torch.randn(4, 3, 16)).shape == (4, 3)
    assert create_value_predictor(16, "small").get_parameter_count() < create_value_predictor(16, "large").get_parameter_count()
    cost = torch.tensor([0.0, 1.0, 1e4], requires_grad=True)
    assert torch.allclose(ValuePredictor.target(cost), torch.log1p(cost.detach()))
    assert not ValuePredictor.target(cost).requires_grad
    vp = create_value_predictor(16)
    z = torch.randn(4, 16)
    assert torch.allclose(vp.predict_cost(z), torch.expm1(vp(z)))
    model = tiny()
    out = model(start_states(model), return_all_iterations=True)
    vp = create_value_predictor(model.config.latent_dim)
    vp(out.all_latents).sum().backward()
    assert model.encoder[0].weight.grad is not None  # the head can shape the latents
    with pytest.raises(trc.TRCError, match="size"):
        create_value_predictor(16, "huge")
