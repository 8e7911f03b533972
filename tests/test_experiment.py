"""Experiments: a run trains and evaluates; the same settings load from the cache; any change misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trc.book.cache as cache
import trc.book.experiment as experiment
from trc.errors import TRCError
from trc.book.experiment import Experiment

# The double integrator (T = 15) keeps every run under a second.
TINY = dict(problem="double_integrator", num_train=48, num_test=12, epochs=2, batch_size=16, iterations=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def no_training(*args, **kwargs):
    raise AssertionError("trained although the run was cached")


def test_run_trains_and_evaluates_on_held_out_states(tmp_path):
    result = Experiment(**TINY).run(tmp_path)
    m = result.metrics
    assert not result.cached
    assert m.costs.shape == (12, 3) and m.success.shape == (12, 3)
    assert len(result.history["epochs"]) == 2
    # the optimum is solved on the test states, which are not the training states
    np.testing.assert_array_equal(result.optimal_data["initial_states"], result.test_data["initial_states"])
    train = Experiment(**TINY).train_data(tmp_path)["initial_states"]
    assert not (train[:, None] == result.test_data["initial_states"][None]).all(-1).any()
    assert np.all(m.costs >= result.optimal_costs[:, None] * (1 - 1e-5))
    assert result.summary["cost_over_optimum"] >= 1 - 1e-5
    assert result.summary["train_seconds"] == result.train_seconds > 0


def test_same_settings_load_from_cache_with_identical_metrics(tmp_path, monkeypatch):
    first = Experiment(**TINY).run(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4  # training data, test data, optimum, model
    monkeypatch.setattr(Experiment, "train", no_training)
    second = Experiment(**TINY).run(tmp_path)
    assert second.cached
    for name in ("costs", "final_errors", "success", "control_mse", "optimal_costs"):
        np.testing.assert_array_equal(getattr(second.metrics, name), getattr(first.metrics, name))
    assert second.history == first.history
    assert second.train_seconds == first.train_seconds
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_a_changed_setting_misses_the_model_cache_but_shares_the_data(tmp_path, monkeypatch):
    Experiment(**TINY).run(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    changed = Experiment(**{**TINY, "lr": 1e-2})
    monkeypatch.setattr(Experiment, "train", no_training)
    with pytest.raises(AssertionError, match="cached"):
        changed.run(tmp_path)
    monkeypatch.undo()
    changed.run(tmp_path)
    new = {p.name for p in tmp_path.iterdir()} - before
    assert len(new) == 1 and new.pop().startswith("model-double_integrator-PS-")
    # more test states: new test data and optimum, the same training data
    Experiment(**{**TINY, "num_test": 13}).run(tmp_path)
    assert len({p.name for p in tmp_path.iterdir()}) == len(before) + 1 + 3


def test_changed_code_misses_the_cache(tmp_path, monkeypatch):
    Experiment(**TINY).run(tmp_path)
    real = cache.code_fingerprint
    monkeypatch.setattr(cache, "code_fingerprint", lambda part: real(part) + ("x" if part == "model" else ""))
    assert not Experiment(**TINY).run(tmp_path).cached
    assert len(list(tmp_path.glob("model-*.pt"))) == 2 and len(list(tmp_path.glob("*.npz"))) == 3


def test_fingerprints_cover_the_right_modules(tmp_path, monkeypatch):
    # The fingerprints of a copy of trc/, edited one file at a time: code_fingerprint hashes the
    # package its module lies in, so its __file__ is pointed into the copy (and its lru_cache bypassed).
    import shutil
    from pathlib import Path

    source = Path(cache.__file__).resolve().parents[1]  # the trc/ this test imports
    root = tmp_path / "trc"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "__file__", str(root / "book" / "cache.py"))

    def fingerprints():
        return {part: cache.code_fingerprint.__wrapped__(part) for part in ("data", "model")}

    original = fingerprints()
    assert original == {part: cache.code_fingerprint(part) for part in original}  # the copy is the source
    assert original["data"] != original["model"]
    # (file edited, does "data" change, does "model" change)
    for name, data_changes, model_changes in [
        ("training/trainer.py", False, True),        # the trainer makes models, not data
        ("training/process_supervision.py", False, True),
        ("models/tiny_recursive_control.py", False, True),
        ("data/experts.py", True, True),             # the experts make the data the models learn from
        ("evaluation/plots.py", False, False),       # presentation only
    ]:
        path = root / name
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        edited = fingerprints()
        path.write_text(text)
        assert (edited["data"] != original["data"], edited["model"] != original["model"]) == (
            data_changes, model_changes), name
    assert fingerprints() == original
    with pytest.raises(TRCError, match="fingerprint part"):
        cache.code_fingerprint("plots")


def test_a_corrupt_cached_model_is_trained_again(tmp_path):
    exp = Experiment(**TINY)
    first = exp.run(tmp_path)
    exp.model_path(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="not a readable torch file"):
        again = exp.run(tmp_path)
    assert not again.cached
    np.testing.assert_array_equal(again.metrics.costs, first.metrics.costs)  # seeded: the same model
    assert exp.run(tmp_path).cached


def test_defaults_are_the_training_defaults():
    from trc.training.process_supervision import DEFAULT_VARIANT
    from trc.training.train import DEFAULTS

    e = Experiment()
    assert (e.epochs, e.batch_size, e.lr, e.process_weight, e.val_fraction) == tuple(
        DEFAULTS[k] for k in ("epochs", "batch_size", "lr", "process_weight", "val_fraction"))
    assert e.variant == DEFAULT_VARIANT and e.model_size == DEFAULTS["model_size"]
    assert e.iterations == DEFAULTS["iterations"] == e.build_model().num_iterations
    assert Experiment(process_weight=0).label == "BC" and e.label == "PS"


@pytest.mark.parametrize("change, message", [
    ({"problem": "cartpole"}, "unknown problem 'cartpole'"),
    ({"variant": "nope"}, "unknown loss variant"),
    ({"process_weight": float("nan")}, "process_weight must be a finite number"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"model_size": "huge"}, "unknown model preset 'huge'"),
    ({"process_weight": 0.0, "variant": "seed"}, "no effect with process_weight 0"),
])
def test_bad_settings_are_one_sentence(change, message):
    with pytest.raises(TRCError, match=message):
        Experiment(**change)


def no_training_here(*args, **kwargs):
    raise AssertionError("trained in the calling process, not in a worker")


def test_run_experiments_trains_in_other_processes_and_gives_the_same_models(tmp_path, monkeypatch):
    experiments = [Experiment(**TINY), Experiment(**TINY, process_weight=0.0), Experiment(**TINY)]
    # this process cannot train; the spawned workers import trc afresh, without the patch
    monkeypatch.setattr(Experiment, "train", no_training_here)
    parallel = experiment.run_experiments(experiments, tmp_path / "parallel", workers=2)
    monkeypatch.undo()
    serial = [e.run(tmp_path / "serial") for e in experiments[:2]]
    assert not any(r.cached for r in parallel)  # trained by the workers (and loaded here)
    assert experiment.run_experiments(experiments[:1], tmp_path / "parallel")[0].cached
    assert [r.experiment for r in parallel] == experiments
    for p, s in zip(parallel, serial):
        for (name, a), b in zip(p.model.state_dict().items(), s.model.state_dict().values()):
            assert torch.equal(a, b), name
        np.testing.assert_array_equal(p.metrics.costs, s.metrics.costs)
    with pytest.raises(TRCError, match="cache_dir"):
        experiment.run_experiments(experiments, None)


def test_a_worker_whose_code_differs_from_its_callers_refuses_to_train(tmp_path):
    # run_experiments hands its workers its own code fingerprint: a worker that imported edited
    # source would train other code under a key the caller never looks up
    from trc.book.cache import code_fingerprint

    e = Experiment(**TINY)
    with pytest.raises(TRCError, match="trc's source changed after this process imported it"):
        experiment._train_into_cache(e, str(tmp_path), "0" * 16)
    assert not e.model_path(tmp_path).exists()
    experiment._train_into_cache(e, str(tmp_path), code_fingerprint("model"))
    assert e.load_cached(tmp_path) is not None


def test_train_commands_in_other_processes_train_what_trc_train_does_here(tmp_path, monkeypatch):
    import trc

    data = tmp_path / "di.npz"
    trc.save_dataset(data, trc.generate_dataset(trc.get_problem("double_integrator"), 48, "lqr", seed=0))
    common = ["--problem", "double_integrator", "--data", data, "--epochs", 1, "--batch_size", 16,
              "--model_size", "small"]
    runs = [[*common, "--output_dir", tmp_path / f"w{seed}", "--seed", seed] for seed in (0, 1)]
    here = experiment.train_commands([[*common, "--output_dir", tmp_path / "here", "--seed", 0]], workers=1)
    # this process cannot run trc train; the spawned workers import trc afresh, without the patch
    monkeypatch.setattr("trc.cli.main", no_training_here)
    parallel = experiment.train_commands(runs, workers=2)
    monkeypatch.undo()
    assert [len(r) for r in parallel] == [2, 2] and all(seconds > 0 for _, seconds in parallel)
    assert "wrote" in parallel[0][0] and "wrote" in here[0][0]
    a, b, c = (trc.load_checkpoint(tmp_path / d / "best_model.pt").state_dict() for d in ("w0", "w1", "here"))
    assert all(torch.equal(a[k], c[k]) for k in a)          # the same run, in a worker or here
    assert not all(torch.equal(a[k], b[k]) for k in a)      # and the seed reached the worker
    with pytest.raises(TRCError, match="exited with status 2"):
        experiment.train_commands([["--problem", "double_integrator", "--data", tmp_path / "missing.npz",
                                    "--output_dir", tmp_path / "x"]], workers=1)
