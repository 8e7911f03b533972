"""Refinement metrics: known answers on synthetic costs, and the evaluator against the simulator."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import trc
from trc.errors import TRCError
from trc.evaluation.refinement_evaluator import RefinementEvaluator
from trc.evaluation.metrics import RefinementMetrics, analyze_convergence, summarize


def metrics_of(costs, **kw):
    return RefinementMetrics(costs=np.asarray(costs, dtype=np.float64), **kw)


# -- analyze_convergence on synthetic costs ------------------------------------------------------
def test_strictly_decreasing_costs_are_all_monotonic_and_improving():
    rng = np.random.default_rng(0)
    steps = rng.uniform(0.1, 1.0, size=(50, 5))
    costs = 10.0 + np.cumsum(steps, axis=1)[:, ::-1]  # strictly decreasing along k
    stats = analyze_convergence(metrics_of(costs))
    assert stats["pct_monotonic"] == 100.0
    assert stats["pct_samples_improving"] == 100.0
    assert stats["pct_never_worse"] == 100.0
    assert stats["num_iterations"] == 4


def test_flat_costs_are_not_improving_but_never_worse():
    stats = analyze_convergence(metrics_of(np.full((20, 4), 3.0)))
    assert stats["pct_samples_improving"] == 0.0
    assert stats["pct_monotonic"] == 0.0
    assert stats["pct_never_worse"] == 100.0
    assert stats["mean_total_reduction"] == 0.0
    assert stats["mean_improvement_per_iteration"] == [0.0, 0.0, 0.0]


def test_mixed_samples_give_their_fractions():
    costs = [[4.0, 3.0, 2.0],   # monotonic
             [4.0, 5.0, 2.0],   # improving, not monotonic
             [4.0, 4.0, 4.0],   # flat
             [4.0, 3.0, 6.0]]   # worse
    stats = analyze_convergence(metrics_of(costs))
    assert stats["pct_samples_improving"] == 50.0
    assert stats["pct_monotonic"] == 25.0
    assert stats["pct_never_worse"] == 50.0
    reductions = [0.5, 0.5, 0.0, -0.5]
    assert stats["mean_total_reduction"] == pytest.approx(np.mean(reductions))
    assert stats["median_total_reduction"] == pytest.approx(np.median(reductions))


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.95])
def test_geometric_decay_returns_its_rate(rho):
    a = np.random.default_rng(1).uniform(1.0, 5.0, size=(30, 1))
    costs = a * rho ** np.arange(6)
    stats = analyze_convergence(metrics_of(costs))
    assert stats["convergence_rate"] == pytest.approx(rho, rel=1e-10)
    assert stats["convergence_rate_of"] == "cost"
    assert stats["mean_improvement_per_iteration"] == pytest.approx([1 - rho] * 5)


def test_geometric_decay_towards_the_optimum_returns_its_rate():
    optimum = np.array([2.0, 3.0, 5.0])
    costs = optimum[:, None] + np.array([[1.0], [4.0], [2.0]]) * 0.6 ** np.arange(4)
    stats = analyze_convergence(metrics_of(costs, optimal_costs=optimum))
    assert stats["convergence_rate"] == pytest.approx(0.6, rel=1e-10)
    assert stats["convergence_rate_of"] == "excess_cost"


def test_metrics_need_at_least_one_iteration():
    with pytest.raises(TRCError, match="K >= 1"):
        metrics_of(np.ones((3, 1)))


def test_summary_reports_the_final_iterate():
    costs = np.array([[4.0, 2.0], [6.0, 3.0]])
    m = metrics_of(costs, success=np.array([[False, True], [False, False]]),
                   final_errors=np.array([[1.0, 0.1], [2.0, 0.3]]),
                   optimal_costs=np.array([2.0, 2.0]), expert_costs=np.array([2.5, 2.5]))
    s = summarize(m)
    assert s["success_rate"] == 50.0
    assert s["mean_final_error"] == pytest.approx(0.2)
    assert s["cost_over_optimum"] == pytest.approx(2.5 / 2.0)
    assert s["cost_over_expert"] == pytest.approx(1.0)
    assert s["success_rate_per_iteration"] == [0.0, 50.0]
    assert s["mean_control_mse_per_iteration"] is None
    assert s["pct_monotonic"] == 100.0


# -- the evaluator re-simulates whatever the model proposes -------------------------------------
class FixedIterates(torch.nn.Module):
    """A stand-in model whose iterate k is ``U_k = shape * 0.5**k * 3 u_max`` (k = 0 out of bounds)."""

    def __init__(self, problem, num_iterations=2):
        super().__init__()
        self.problem, self.num_iterations = problem, num_iterations
        self.scale = torch.nn.Parameter(torch.tensor(3.0 * problem.u_max))
        self.calls = []

    def forward(self, x0, target=None, return_all_iterations=False, iterations=None):
        K = self.num_iterations if iterations is None else iterations
        self.calls.append((self.training, K))
        t = torch.linspace(-1, 1, self.problem.horizon)
        shape = -torch.tanh(x0[:, :1, None] + t[None, :, None])  # [B, T, 1]
        all_U = torch.stack([self.scale * 0.5 ** k * shape for k in range(K + 1)], dim=1)
        return SimpleNamespace(all_controls=all_U, controls=all_U[:, -1])


@pytest.fixture
def problem():
    return trc.get_problem("double_integrator")


def dataset(problem, n=10, expert="lqr"):
    g = torch.Generator().manual_seed(0)
    x0 = problem.sample_initial_states(n, g)
    U = problem.clip(torch.randn(n, problem.horizon, problem.n_u, generator=g))
    return {"initial_states": x0.numpy(), "target_states": np.zeros((n, 2), np.float32),
            "control_sequences": U.numpy(), "costs": np.zeros(n, np.float32),
            "metadata": {"expert": expert}}


def test_evaluator_measures_clipped_iterates_in_the_simulator(problem):
    data = dataset(problem)
    model = FixedIterates(problem).train()
    m = RefinementEvaluator(model).evaluate(data, iterations=3, batch_size=4)
    assert m.costs.shape == m.final_errors.shape == m.control_mse.shape == (10, 4)
    assert model.calls and all(not training for training, _ in model.calls) and model.training
    x0 = torch.as_tensor(data["initial_states"], dtype=torch.float64)
    with torch.no_grad():
        all_U = model(x0.float(), return_all_iterations=True, iterations=3).all_controls.double()
    U_e = torch.as_tensor(data["control_sequences"], dtype=torch.float64)
    for k in range(4):
        U_k = problem.clip(all_U[:, k])
        ref = problem.evaluate(x0, U_k)
        np.testing.assert_allclose(m.costs[:, k], ref["cost"].numpy(), rtol=1e-5)
        np.testing.assert_allclose(m.final_errors[:, k], ref["final_error"].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(m.success[:, k], ref["success"].numpy())
        mse = (U_k - U_e).square().mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(m.control_mse[:, k], mse, rtol=1e-5)
    assert (all_U[:, 0].abs() > problem.u_max).any()  # iterate 0 needed the clip
    np.testing.assert_allclose(m.expert_costs, problem.evaluate(x0, U_e)["cost"].numpy(), rtol=1e-6)
    assert m.optimal_costs is None and m.cost_ratio is None
    np.testing.assert_allclose(m.improvements, m.costs[:, :-1] - m.costs[:, 1:])


def test_optimal_expert_data_gives_cost_ratios(problem):
    m = RefinementEvaluator(FixedIterates(problem)).evaluate(dataset(problem, expert="optimal"))
    np.testing.assert_allclose(m.optimal_costs, m.expert_costs)
    np.testing.assert_allclose(m.cost_ratio, m.costs / m.expert_costs[:, None])
    given = np.arange(1.0, 11.0)
    m = RefinementEvaluator(FixedIterates(problem)).evaluate(dataset(problem), optimal_costs=given)
    np.testing.assert_allclose(m.cost_ratio[:, 0], m.costs[:, 0] / given)
    with pytest.raises(TRCError, match="3 optimal costs for 10"):
        RefinementEvaluator(FixedIterates(problem)).evaluate(dataset(problem), optimal_costs=[1, 2, 3])


def test_dynamics_fn_replaces_the_rollout(problem):
    calls = []

    def rollout(x0, U):
        calls.append(U.abs().max().item())
        return problem.rollout(x0, U)

    m = RefinementEvaluator(FixedIterates(problem), dynamics_fn=rollout).evaluate(dataset(problem))
    assert calls and max(calls) <= problem.u_max  # the bound is enforced before simulating
    ref = RefinementEvaluator(FixedIterates(problem)).evaluate(dataset(problem))
    np.testing.assert_allclose(m.costs, ref.costs)


def test_loader_batches_work_like_the_dataset_dict(problem):
    data = dataset(problem)
    batches = [{k: torch.as_tensor(v[s:s + 3]) for k, v in data.items() if k != "metadata"}
               for s in range(0, 10, 3)]
    a = RefinementEvaluator(FixedIterates(problem)).evaluate(batches)
    b = RefinementEvaluator(FixedIterates(problem)).evaluate(data)
    np.testing.assert_allclose(a.costs, b.costs)


def test_data_of_another_problem_is_refused(problem):
    other = trc.get_problem("vanderpol")
    with pytest.raises(TRCError, match="expert controls must be"):
        RefinementEvaluator(FixedIterates(problem)).evaluate(dataset(other))


def test_a_real_model_runs_more_iterations_than_it_was_trained_with(problem):
    from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig

    torch.manual_seed(0)
    config = TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=2, feedback_points=2)
    model = TinyRecursiveControl(config, problem)
    evaluator = RefinementEvaluator(model)
    trained = evaluator.evaluate(dataset(problem))
    longer = evaluator.evaluate(dataset(problem), iterations=5)
    assert trained.costs.shape == (10, 3) and longer.costs.shape == (10, 6)
    assert longer.train_iterations == 2
    np.testing.assert_allclose(longer.costs[:, :3], trained.costs, rtol=1e-6)  # extended, not changed
    assert np.isfinite(longer.costs).all() and np.isfinite(analyze_convergence(longer)["convergence_rate"])


def test_solved_optimum_on_the_double_integrator_is_the_lqr_cost_in_data_order(problem):
    from trc.evaluation.refinement_evaluator import solve_optimal_costs
    from trc.data.experts import lqr_controls

    data = dataset(problem)
    x0 = torch.as_tensor(data["initial_states"], dtype=torch.float64)
    lqr = problem.evaluate(x0, lqr_controls(problem, x0))["cost"].numpy()
    np.testing.assert_allclose(solve_optimal_costs(problem, data, batch_size=4), lqr, rtol=1e-6)


def test_a_model_of_another_problem_is_refused(problem):
    from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig

    model = TinyRecursiveControl(TRCConfig(latent_dim=8, hidden_dim=16, num_outer_cycles=2), problem)
    with pytest.raises(TRCError, match="the model was trained on problem 'double_integrator', not 'vanderpol'"):
        RefinementEvaluator(model, problem="vanderpol")
