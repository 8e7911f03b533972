"""Figures: the 4-panel refinement figure and the phase/control plots."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from trc.errors import TRCError
from trc.evaluation.metrics import RefinementMetrics
from trc.evaluation.plots import (latent_cycle_steps, plot_controls, plot_latent_cycles, plot_phase_portrait,
                       plot_refinement_curves)


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before, "a plot function left a pyplot figure open"


def metrics(K=3, N=40, seed=0, label="PS", optimum=True, mse=True):
    rng = np.random.default_rng(seed)
    costs = rng.uniform(5, 10, size=(N, 1)) * 0.7 ** np.arange(K + 1) + 1.0
    return RefinementMetrics(
        costs=costs, control_mse=rng.uniform(0.01, 1, size=(N, K + 1)) if mse else None,
        optimal_costs=np.ones(N) if optimum else None, problem="vanderpol", label=label,
        process_weight=1.0 if label == "PS" else 0.0)


def test_four_panels_with_expected_lines(tmp_path):
    fig = plot_refinement_curves(metrics(), tmp_path / "fig.png", num_examples=3)
    axes = fig.axes
    assert len(axes) == 4
    assert len(axes[0].lines) == 1 + 3 + 1  # mean, three samples, optimum
    assert len(axes[0].collections) == 1  # the interquartile band
    assert len(axes[1].containers) == 1 and len(axes[1].containers[0]) == 3  # one bar per iteration
    assert len(axes[2].lines) == 1
    assert len(axes[3].containers) == 1 and len(axes[3].lines) == 1  # histogram, zero line
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    assert "vanderpol" in fig._suptitle.get_text() and "λ = 1" in fig._suptitle.get_text()
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.svg").stat().st_size > 0


@pytest.mark.parametrize("name, needle", [(".", "is a folder"), ("fig.txt", "ends in '.txt'"),
                                          ("lambda0.1", "ends in '.1'")])
def test_a_figure_path_that_would_be_rewritten_is_refused(tmp_path, name, needle):
    """A folder wrote ``<folder>.png`` beside it, and ``lambda0.1`` wrote ``lambda0.png``."""
    with pytest.raises(TRCError, match=needle):
        plot_refinement_curves(metrics(), tmp_path / name, num_examples=0)
    assert list(tmp_path.iterdir()) == [] and not tmp_path.with_suffix(".png").exists()
    plot_refinement_curves(metrics(), tmp_path / "fig", num_examples=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]  # no temp files left


def test_baseline_adds_its_own_lines_and_colour():
    base = metrics(K=2, seed=1, label="BC")
    fig = plot_refinement_curves(metrics(), baseline=base, num_examples=2)
    axes = fig.axes
    assert len(axes[0].lines) == 2 * (1 + 2) + 1
    assert len(axes[0].collections) == 2
    assert [len(c) for c in axes[1].containers] == [3, 2]  # the baseline ran K=2
    assert len(axes[2].lines) == 2 and axes[2].lines[0].get_color() != axes[2].lines[1].get_color()
    assert len(axes[3].containers) == 2
    labels = axes[2].get_legend_handles_labels()[1]
    assert any("PS" in s for s in labels) and any("BC" in s for s in labels)
    assert "BC (λ = 0)" in fig._suptitle.get_text()
    # the bar groups sit side by side, not on top of each other
    x_model = [b.get_x() for b in axes[1].containers[0]]
    x_base = [b.get_x() for b in axes[1].containers[1]]
    assert all(a < b for a, b in zip(x_model, x_base))


def test_iterations_beyond_training_are_marked():
    m, base = metrics(K=5), metrics(K=5, label="BC")
    m.train_iterations, base.train_iterations = 3, 2
    fig = plot_refinement_curves(m, baseline=base, num_examples=0)
    marks = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert marks == [2, 3]
    assert len(fig.axes[2].lines) == 2 + 2
    m.train_iterations = base.train_iterations = 5  # nothing beyond training: no mark
    assert len(plot_refinement_curves(m, baseline=base, num_examples=0).axes[0].lines) == 2 + 1


def test_missing_optimum_and_expert_are_drawn_without_them():
    fig = plot_refinement_curves(metrics(optimum=False, mse=False), num_examples=0, title="custom")
    assert len(fig.axes[0].lines) == 1
    assert len(fig.axes[2].lines) == 0 and "no expert controls" in fig.axes[2].texts[0].get_text()
    assert fig._suptitle.get_text() == "custom"


def test_drawing_into_a_given_figure():
    fig, _ = plt.subplots(figsize=(4, 3))
    fig.clear()
    before = plt.get_fignums()
    assert plot_refinement_curves(metrics(), fig=fig) is fig and len(fig.axes) == 4
    plt.close(fig)
    assert plt.get_fignums() == [n for n in before if n != fig.number]


def test_phase_portrait_draws_every_trajectory_and_marks():
    X = np.cumsum(np.ones((3, 11, 2)), axis=1)
    ax = plot_phase_portrait(X, target=[0, 0], reference=X[:1] * 0.5)
    # 3 trajectories + their starts, 1 reference + its start, the target
    assert len(ax.lines) == 3 + 1 + 1 + 1 + 1
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), X[0])
    assert ax.get_xlabel() == "x₁"


@pytest.mark.parametrize("shape", [(7,), (7, 1), (2, 7, 1), (2, 7, 2)])
def test_controls_draw_one_step_curve_per_channel(shape):
    U = np.random.default_rng(0).uniform(-1, 1, size=shape)
    ax = plot_controls(U, dt=0.1, u_max=1.0)
    channels = int(np.prod(shape)) // 7
    assert len(ax.patches) == channels
    assert len(ax.lines) == 2  # the bound at +-u_max
    edges = ax.patches[0].get_data().edges
    np.testing.assert_allclose(edges, 0.1 * np.arange(8))


def test_latent_cycle_steps_by_hand_and_in_the_figure():
    # one sample moves from (1, 0) to (1, 1) to (0, 1); the other stays put
    z = np.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], [[2.0, 0.0]] * 3])
    np.testing.assert_allclose(latent_cycle_steps(z), [0.5, 0.5 / np.sqrt(2)])
    fig = plot_latent_cycles(z, z, H_cycles=1)
    line = fig.axes[2].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), latent_cycle_steps(z))
