"""A run's ``dynamics_fn`` and ``cost_params`` reach everything that simulates, the model's feedback included."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trc
from trc.errors import TRCError
from trc.evaluation.refinement_evaluator import RefinementEvaluator
from trc.models import TinyRecursiveControl, TRCConfig
from trc.simulator import Simulator
from trc.training.supervised_trainer import train_with_process_supervision

T = 20
TINY = dict(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=4)
COSTS = {"Q": torch.eye(2), "R": 0.01 * torch.eye(1), "Q_final": 10.0 * torch.eye(2)}


@pytest.fixture(scope="module")
def problem():
    return trc.get_problem("vanderpol", horizon=T)


@pytest.fixture(scope="module")
def tensors(problem):
    data = trc.generate_dataset(problem, 24, seed=3)
    return torch.as_tensor(data["initial_states"]), torch.as_tensor(data["control_sequences"])


def model_of(problem, seed=0):
    torch.manual_seed(seed)
    return TinyRecursiveControl(TRCConfig(**TINY), problem)


def vanderpol(mu, calls=None):
    def dynamics_fn(x0, U):
        if calls is not None:
            calls.append(x0.shape[0])
        return trc.simulate_vanderpol_torch(x0, U, mu=mu, dt=0.05)
    return dynamics_fn


def train(problem, tensors, **kwargs):
    """The model and history after one epoch (two batches of 8) from the same start."""
    x0, U = tensors
    loader = DataLoader(TensorDataset(x0[:16], U[:16]), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(x0[16:], U[16:]), batch_size=8)
    model = train_with_process_supervision(model_of(problem), loader, val, epochs=1, progress=False, **kwargs)
    record = model.training_history["epochs"][0]
    return model, record["train"]["loss"], record["val"]["cost"]


@pytest.fixture(scope="module")
def own_run(problem, tensors):
    return train(problem, tensors)


def test_the_trainers_dynamics_fn_runs_the_loss_validation_and_the_models_feedback(problem, tensors):
    calls = []
    model, *_ = train(problem, tensors, dynamics_fn=vanderpol(1.0, calls))
    K = model.num_iterations
    # the loss: one call on all K+1 iterates of a training batch (8 (K+1) rows), per batch
    assert calls.count(8 * (K + 1)) == 2
    # the model's feedback: K calls of 8 per forward, 2 training batches and 1 validation batch,
    # plus validation's one call on the final controls
    assert calls.count(8) == 2 * K + K + 1
    assert model.simulator is None                           # the run's simulator does not outlive it


def test_a_different_mu_in_the_trainers_dynamics_fn_changes_the_trained_model(problem, tensors, own_run):
    _, loss1, cost1 = train(problem, tensors, dynamics_fn=vanderpol(1.0))
    _, loss2, cost2 = train(problem, tensors, dynamics_fn=vanderpol(2.0))
    assert (loss1, cost1) == pytest.approx(own_run[1:], rel=1e-5)   # mu = 1 is the problem's own dynamics
    assert loss2 != loss1 and cost2 != pytest.approx(cost1, rel=1e-2)


def test_the_trainers_cost_params_change_the_loss(problem, tensors, own_run):
    _, loss, cost = train(problem, tensors, cost_params=COSTS)
    assert loss != own_run[1]
    assert cost != pytest.approx(own_run[2], rel=1e-2)       # validation measures with them too


def evaluate(problem, tensors, **kwargs):
    x0, U = tensors
    evaluator = RefinementEvaluator(model_of(problem), problem=problem, **kwargs)
    return evaluator.evaluate(DataLoader(TensorDataset(x0, U), batch_size=10))


def test_the_evaluators_dynamics_fn_reaches_the_models_feedback(problem, tensors):
    own, mu2 = evaluate(problem, tensors, dynamics_fn=vanderpol(1.0)), evaluate(problem, tensors,
                                                                             dynamics_fn=vanderpol(2.0))
    assert (mu2.costs != own.costs).any()
    # the controls are the model's alone: they differ only because its feedback simulated mu = 2
    assert torch.equal(torch.as_tensor(own.control_mse[:, 0]), torch.as_tensor(mu2.control_mse[:, 0]))
    assert (mu2.control_mse[:, 1:] != own.control_mse[:, 1:]).any()


def test_the_evaluators_cost_params_change_the_costs_and_the_feedback(problem, tensors):
    own, other = evaluate(problem, tensors, cost_params=None, dynamics_fn=None), evaluate(
        problem, tensors, cost_params=COSTS)
    assert (other.costs != own.costs).all()
    assert (other.control_mse[:, 1:] != own.control_mse[:, 1:]).any()  # the feedback's log(1 + cost)


def test_a_problem_name_and_tuple_batches_work_in_the_evaluator():
    data = trc.generate_dataset("vanderpol", 6, seed=1)
    x0, U = torch.as_tensor(data["initial_states"]), torch.as_tensor(data["control_sequences"])
    evaluator = RefinementEvaluator(model_of(trc.get_problem("vanderpol")), problem="vanderpol")
    pairs = evaluator.evaluate(DataLoader(TensorDataset(x0, U), batch_size=4))
    triples = evaluator.evaluate(DataLoader(TensorDataset(x0, torch.zeros_like(x0), U), batch_size=4))
    dicts = evaluator.evaluate(trc.make_loader(data, 4, shuffle=False))
    assert pairs.costs.shape == (6, 3) and pairs.control_mse.shape == (6, 3)
    assert (pairs.costs == triples.costs).all() and (pairs.costs == dicts.costs).all()
    assert (pairs.control_mse == dicts.control_mse).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(cost_params={"Qf": torch.eye(2)}), "unknown key 'Qf'"),
    (dict(cost_params={"R": torch.eye(2)}), "must have shape"),
    (dict(cost_params=[1, 2]), "must be a dict"),
    (dict(dynamics_fn=3), "must be a function"),
])
def test_bad_overrides_are_one_sentence(problem, kwargs, message):
    with pytest.raises(TRCError, match=message):
        Simulator(problem, **kwargs)


def test_a_dynamics_fn_of_the_wrong_shape_is_named(problem, tensors):
    x0, U = tensors
    with pytest.raises(TRCError, match=r"dynamics_fn must return states \[B, T\+1, n_x\]"):
        Simulator(problem, lambda x0, U: x0).rollout(x0, U)
