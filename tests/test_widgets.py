"""The book's widgets, driven as a user would: move a slider, check what is drawn and reported.

A tiny untrained model on a short Van der Pol horizon keeps the optimum quick to
solve; the λ explorer gets synthetic results of every accepted kind.
"""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import trc.data.experts
from trc.models.config import TRCConfig
from trc.errors import TRCError
from trc.evaluation.metrics import RefinementMetrics, summarize
from trc.models.tiny_recursive_control import TinyRecursiveControl
from trc.evaluation.plots import BASELINE_COLOR, MODEL_COLOR, plot_latent_cycles
from trc.problems import get_problem
from trc.book.widgets import IterationExplorer, LambdaExplorer, SweepResult, as_sweep_result

K = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    problem = get_problem("vanderpol", horizon=20)
    config = TRCConfig(latent_dim=8, hidden_dim=16, num_outer_cycles=K, feedback_points=2,
                       use_two_level=True, H_cycles=2, L_cycles=1)
    return TinyRecursiveControl(config, problem).eval()


@pytest.fixture
def count_optima(monkeypatch):
    """Counts the calls of the optimal expert (the explorer should solve each x0 once)."""
    calls = []
    solve = trc.data.experts.optimal_controls

    def counted(problem, x0, *args, **kwargs):
        calls.append(tuple(x0[0].tolist()))
        return solve(problem, x0, *args, **kwargs)

    monkeypatch.setattr(trc.data.experts, "optimal_controls", counted)
    return calls


def plan_line(ax):
    """The first solid line in ``ax``: the plan (the optimum is dashed)."""
    return next(line for line in ax.lines if line.get_linestyle() == "-")


def test_sliders_span_the_box_and_the_iterations(model):
    p = model.problem
    ex = IterationExplorer(model)
    assert len(ex.x0_sliders) == p.n_x
    assert [(s.min, s.max) for s in ex.x0_sliders] == list(zip(p.x0_low, p.x0_high))
    assert (ex.k_slider.min, ex.k_slider.max, ex.k) == (0, K, K)
    assert not any(s.continuous_update for s in (*ex.x0_sliders, ex.k_slider))  # each change solves
    assert ex.widget.children[-1] is ex.output


def test_moving_k_redraws_iterate_k(model):
    ex = IterationExplorer(model, x0=(1.0, -0.5))
    ax_x, ax_u = ex.figure.axes
    assert "k = 2 of 2" in ax_x.get_title() and "k = 2" in ex.report.value
    last = plan_line(ax_x).get_xydata().copy()
    ex.k_slider.value = 0                                   # the .observe callback redraws
    ax_x, ax_u = ex.figure.axes
    assert "k = 0 of 2" in ax_x.get_title() and "k = 0" in ax_u.get_title()
    assert ex.report.value.startswith("iteration k = 0")
    first = plan_line(ax_x).get_xydata()
    np.testing.assert_allclose(first, ex.plan().X[0])
    assert not np.allclose(first, last)                     # the refinement moved the plan
    costs = ex.plan().cost
    assert f"{costs[0]:.4g}" in ex.report.value and f"{costs[2]:.4g}" not in ex.report.value


def test_report_states_the_cost_ratio_to_four_decimals(model):
    # ".3g" printed a plan 0.04 % above the optimum as "1 × the optimum"
    ex = IterationExplorer(model, x0=(1.0, -0.5))
    ratio = ex.plan().cost[ex.k] / ex.optimum().cost[0]
    assert f"({ratio:.4f} × the optimum's" in ex.report.value


def test_moving_x0_replans_and_solves_each_start_once(model, count_optima):
    ex = IterationExplorer(model, x0=(1.0, 1.0))
    assert count_optima == [(1.0, 1.0)]
    ex.x0_sliders[0].value = -1.5
    ax_x = ex.figure.axes[0]
    np.testing.assert_allclose(plan_line(ax_x).get_xydata()[0], (-1.5, 1.0))
    assert "(-1.50, 1.00)" in ex.figure._suptitle.get_text()
    ex.k_slider.value = 1                                   # same x0: nothing solved again
    ex.x0_sliders[0].value = 1.0                            # back to the first x0: cached
    assert count_optima == [(1.0, 1.0), (-1.5, 1.0)]
    assert len(ex._plans) == 2


def test_the_reference_is_the_optimum_and_no_iterate_beats_it(model):
    p = model.problem
    ex = IterationExplorer(model, x0=(-1.0, 1.5))
    ax_x, ax_u = ex.figure.axes
    dashed = [line for line in ax_x.lines if line.get_linestyle() == "--"]
    x0 = torch.tensor([[-1.0, 1.5]], dtype=torch.float64)
    X_opt = p.evaluate(x0, trc.data.experts.optimal_controls(p, x0))["X"][0].numpy()
    np.testing.assert_allclose(dashed[0].get_xydata(), X_opt)
    plan, opt = ex.plan(), ex.optimum()
    assert plan.U.shape == (K + 1, p.horizon, p.n_u) and np.abs(plan.U).max() <= p.u_max
    assert np.all(plan.cost >= opt.cost[0] * (1 - 1e-9))


def test_static_figure_draws_every_iterate(model):
    ex = IterationExplorer(model, x0=(0.5, 0.5))
    before = plt.get_fignums()
    fig = ex.static_figure()
    assert plt.get_fignums() == before                      # no pyplot figure: displays only where asked
    ax_x, ax_u, ax_c = fig.axes
    labels = ax_x.get_legend_handles_labels()[1]
    assert [s for s in labels if s.startswith("k = ")] == [f"k = {k}" for k in range(K + 1)]
    np.testing.assert_allclose(ax_c.lines[0].get_ydata(), ex.plan().cost)
    assert ax_c.lines[1].get_ydata()[0] == pytest.approx(ex.optimum().cost[0])
    only = ex.static_figure(iterations=[K])
    assert "iteration k = 2" in only.axes[0].get_title()


def test_bad_arguments_are_one_sentence(model):
    with pytest.raises(TRCError, match="outside the start box"):
        IterationExplorer(model, x0=(5.0, 0.0))
    with pytest.raises(TRCError, match="2 entries"):
        IterationExplorer(model, x0=(0.0,))
    with pytest.raises(TRCError, match="k must be an iteration in 0..2"):
        IterationExplorer(model, k=3)


def test_more_iterations_than_trained(model):
    ex = IterationExplorer(model, iterations=4, k=4)
    assert ex.k_slider.max == 4 and ex.plan().U.shape[0] == 5


# -- the λ explorer --------------------------------------------------------------------------


def metrics(scale: float, n: int = 20, seed: int = 0) -> RefinementMetrics:
    rng = np.random.default_rng(seed)
    costs = scale * rng.uniform(2, 4, size=(n, 1)) * 0.8 ** np.arange(K + 1) + 1.0
    return RefinementMetrics(costs=costs, success=costs < 3.0, optimal_costs=np.ones(n))


@pytest.fixture
def sweep():
    """λ -> result in each accepted form; all divide by the optimum."""
    return {1.0: metrics(1.0),                                      # RefinementMetrics
            0.1: summarize(metrics(1.5, seed=1)),                   # a summarize() dict
            0.0: SweepResult(20.0, 2.5, (9.0, 8.0, 7.5))}           # the dataclass


def bar_colors(ax):
    return [mcolors.to_hex(b.get_facecolor()) for b in ax.containers[0]]


def test_lambda_slider_selects_and_redraws(sweep):
    baseline = SweepResult(10.0, 3.0, (10.0, 10.0, 10.0))
    ex = LambdaExplorer(sweep, baseline=baseline)
    assert [label for label, _ in ex.slider.options] == ["0", "0.1", "1"] and ex.selected == 0.0
    ex.slider.value = 1.0
    ax_s, ax_r, ax_c = ex.figure.axes
    expected = as_sweep_result(sweep[1.0])
    np.testing.assert_allclose(ax_c.lines[0].get_ydata(), expected.mean_cost_per_iteration)
    assert ax_c.lines[0].get_label() == "λ = 1"
    assert bar_colors(ax_s) == [mcolors.to_hex("lightgrey")] * 2 + [mcolors.to_hex(MODEL_COLOR)]
    np.testing.assert_allclose([b.get_height() for b in ax_r.containers[0]],
                               [as_sweep_result(sweep[lam]).cost_ratio for lam in (0.0, 0.1, 1.0)])
    assert ex.report.value.startswith("λ = 1:") and f"{expected.success_rate:.1f}%" in ex.report.value
    base = [line for line in ax_c.lines if line.get_label() == "behavior cloning"]
    np.testing.assert_allclose(base[0].get_ydata(), baseline.mean_cost_per_iteration)
    assert base[0].get_color() == BASELINE_COLOR
    assert any(line.get_ydata()[0] == 10.0 for line in ax_s.lines)  # the baseline's success level
    ex.slider.value = 0.1
    np.testing.assert_allclose(ex.figure.axes[2].lines[0].get_ydata(),
                               sweep[0.1]["mean_cost_per_iteration"])


def test_summaries_convert_with_their_reference():
    s = summarize(metrics(1.0))
    r = SweepResult.from_summary(s)
    assert (r.success_rate, r.cost_ratio, r.ratio_of) == (s["success_rate"], s["cost_over_optimum"], "optimum")
    no_opt = dict(s, cost_over_optimum=None, cost_over_expert=1.7)
    assert SweepResult.from_summary(no_opt).ratio_of == "expert"
    with pytest.raises(TRCError, match="needs success_rate"):
        SweepResult.from_summary(dict(s, success_rate=None))
    with pytest.raises(TRCError, match="got list"):
        as_sweep_result([1, 2])


def test_lambda_explorer_refuses_bad_sweeps(sweep):
    with pytest.raises(TRCError, match="at least one"):
        LambdaExplorer({})
    with pytest.raises(TRCError, match="different references"):
        LambdaExplorer(sweep, baseline=SweepResult(10.0, 1.2, (3.0, 2.0, 1.0), ratio_of="expert"))
    with pytest.raises(TRCError, match="not among"):
        LambdaExplorer(sweep, value=0.5)


def test_lambda_static_figure_shows_every_curve(sweep):
    ex = LambdaExplorer(sweep, baseline=SweepResult(10.0, 3.0, (10.0, 10.0, 10.0)), value=0.1)
    fig = ex.static_figure()
    ax_s, ax_r, ax_c = fig.axes
    assert [line.get_label() for line in ax_c.lines] == ["λ = 0", "λ = 0.1", "λ = 1", "behavior cloning"]
    assert len(set(bar_colors(ax_s))) == 1                   # nothing singled out
    assert ex.selected == 0.1                                # the static figure leaves the widget alone


# -- the latent figure of the two-level chapter ------------------------------------------------


def test_latent_cycles_figure(model):
    x0 = model.problem.sample_initial_states(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x0, return_all_iterations=True)
    H = model.config.H_cycles
    fig = plot_latent_cycles(out.z_H, out.z_L, H_cycles=H)
    ax_h, ax_l, ax_step = fig.axes
    assert len(ax_h.collections) == K * H                   # one scatter per cycle
    assert ax_h.get_legend_handles_labels()[1][:2] == ["cycle 1.1", "cycle 1.2"]
    assert len(ax_h.lines) == 5 + 1                         # five sample paths and the mean
    assert all(len(line.get_xdata()) == K * H for line in ax_h.lines)
    steps = ax_step.lines[0].get_ydata()
    z = out.z_H.numpy()
    expected = (np.linalg.norm(z[:, 1:] - z[:, :-1], axis=-1) / np.linalg.norm(z[:, :-1], axis=-1)).mean(0)
    np.testing.assert_allclose(steps, expected, rtol=1e-6)
    boundaries = [line for line in ax_step.lines if line.get_linestyle() == ":"]
    assert len(boundaries) == K - 1                         # where new feedback comes in


def test_sweep_axes_zoom_on_the_values_not_on_zero():
    # 99.6 % against 99.4 % must be visible: the success axis must not start at 0
    results = {lam: SweepResult(success_rate=s, cost_ratio=r, mean_cost_per_iteration=(500.0, 400.0))
               for lam, s, r in ((0.1, 97.9, 1.0139), (1.0, 99.6, 1.0115), (10.0, 99.4, 1.0124))}
    ex = LambdaExplorer(results, baseline=SweepResult(83.8, 1.0200, (600.0, 390.0)))
    ax_s, ax_r = ex.figure.axes[:2]
    low, high = ax_s.get_ylim()
    assert 70 < low < 83.8 and 99.6 < high
    low, high = ax_r.get_ylim()
    assert 1.0 < low < 1.0115 and 1.0200 < high
    assert [t.get_text() for t in ax_s.texts] == ["97.9", "99.6", "99.4"]
