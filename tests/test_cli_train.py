"""``trc train``: what it writes, that every flag has an effect, and one-sentence errors."""

import functools
import json
import math

import pytest
import torch

from trc import get_problem
from trc.models.checkpoint import load_checkpoint, read_checkpoint
from trc.cli import main
from trc.data.datasets import generate_dataset, save_dataset
from trc.training.process_supervision import DEFAULT_VARIANT

HORIZON = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    path = folder / "vdp.npz"
    save_dataset(path, generate_dataset(get_problem("vanderpol", horizon=HORIZON), 24, seed=0))
    other = folder / "di.npz"
    save_dataset(other, generate_dataset(get_problem("double_integrator"), 8, seed=0))
    return {"vanderpol": str(path), "double_integrator": str(other)}


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    """One run with the default flags, the reference the flag tests compare against."""
    out = tmp_path_factory.mktemp("baseline")
    assert train(data, out) == 0
    return out


def train(data, out, *flags, problem="vanderpol"):
    argv = ["train", "--data", data[problem], "--output_dir", str(out), "--epochs", "1", "--batch_size", "8",
            "--quiet", *flags]
    return main(argv)


def weights(out, name="best_model.pt"):
    state = read_checkpoint(out / name)["state_dict"]
    return torch.cat([v.flatten() for v in state.values()])


def test_writes_checkpoints_and_history(data, tmp_path, capsys):
    assert train(data, tmp_path, "--epochs", "2") == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [0, 1]
    assert {"success", "cost", "final_error"} <= set(history["epochs"][0]["val"])
    model = load_checkpoint(tmp_path / "best_model.pt")
    assert model.problem.horizon == HORIZON and model.config.use_gradient_truncation
    assert model.checkpoint_metadata["settings"]["epochs"] == 2
    assert read_checkpoint(tmp_path / "last_model.pt")["trainer_state"]["epoch"] == 1
    assert "best epoch" in capsys.readouterr().out


@pytest.mark.parametrize("flags, field, value", [
    (["--L_cycles", "1"], "L_cycles", 1),
    (["--H_cycles", "2"], "H_cycles", 2),
    (["--iterations", "3"], "num_outer_cycles", 3),
    (["--use_two_level"], "use_two_level", True),
    (["--model_size", "medium"], "latent_dim", 128),
])
def test_model_flags_change_the_model_and_its_output(data, baseline, tmp_path, flags, field, value):
    assert train(data, tmp_path / "b", *flags) == 0
    a, b = load_checkpoint(baseline / "best_model.pt"), load_checkpoint(tmp_path / "b" / "best_model.pt")
    assert getattr(a.config, field) != value and getattr(b.config, field) == value
    x0 = torch.tensor([[1.0, -0.5]])
    assert not torch.equal(a.plan(x0), b.plan(x0))


@pytest.mark.parametrize("flags", [
    ["--lr", "1e-2"], ["--process_weight", "0"], ["--process_weight", "10"], ["--loss_variant", "seed"],
    ["--seed", "1"], ["--batch_size", "5"], ["--val_fraction", "0.5"],
])
def test_training_flags_change_the_trained_weights(data, baseline, tmp_path, flags):
    assert train(data, tmp_path / "b", *flags) == 0
    assert not torch.equal(weights(baseline, "last_model.pt"), weights(tmp_path / "b", "last_model.pt"))


@pytest.mark.parametrize("flags", [
    ["--self_play", "off"], ["--fresh_starts", "4"], ["--explore", "0"], ["--explore_noise", "0.01"],
    ["--visited_starts", "16"], ["--stitch", "1"], ["--tail_starts", "16"], ["--explore_best", "on"],
    ["--neighbours", "2"],
    ["--curriculum_box", "0.2"], ["--curriculum_horizon", "0.5"],
])
def test_self_play_and_curriculum_flags_change_the_trained_weights(data, tmp_path_factory, tmp_path, flags):
    reference = tmp_path_factory.getbasetemp() / "two_epochs"  # the archive first acts in the second epoch
    if not (reference / "last_model.pt").exists():
        assert train(data, reference, "--epochs", "2", "--self_play", "on") == 0
    assert train(data, tmp_path / "b", "--epochs", "2", "--self_play", "on", *flags) == 0
    assert not torch.equal(weights(reference, "last_model.pt"), weights(tmp_path / "b", "last_model.pt"))
    settings = load_checkpoint(tmp_path / "b" / "best_model.pt").checkpoint_metadata["settings"]
    name, value = flags[-2][2:], flags[-1]
    assert str(settings[name]).lower() == {"off": "false", "on": "true"}.get(value, value)


@pytest.mark.parametrize("flags, needle", [
    (["--closed_loop_truncate", "5"], "--closed_loop_truncate is a setting of the closed-loop tuning, which is off"),
    (["--closed_loop_critic", "0.5", "--closed_loop_truncate", "5"], "--closed_loop_truncate is a setting of the"),
    (["--curriculum_ramp", "0.3"], "--curriculum_ramp paces a curriculum, and both are off"),
    (["--act", "--iterations", "3"], "a halting model (--act) runs up to --max_iterations"),
    (["--baseline", "--loss_variant", "seed"], "--loss_variant has no effect with --baseline"),
])
def test_flags_that_would_do_nothing_are_refused(data, tmp_path, capsys, flags, needle):
    """Each was recorded in the checkpoint and changed nothing (a run identical to one without it)."""
    capsys.readouterr()
    assert train(data, tmp_path / "run", *flags) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with_them = {"--closed_loop_truncate": ["--closed_loop_steps", "1"], "--curriculum_ramp": ["--curriculum_box", "0.5"]}
    if flags[0] in with_them:   # the same flag where it acts is accepted
        assert train(data, tmp_path / "ok", *flags, *with_them[flags[0]]) == 0


@pytest.mark.parametrize("flags", [[], ["--self_play", "off"], ["--process_weight", "0"]])
def test_self_play_settings_without_self_play_are_refused(data, tmp_path, capsys, flags):
    """Van der Pol's recipe has no self-play: its settings would be recorded and do nothing."""
    capsys.readouterr()
    assert train(data, tmp_path / "run", "--explore", "4", "--fresh_starts", "8", *flags) == 2
    err = capsys.readouterr().err
    assert "--fresh_starts is a setting of self-play, which is off for 'vanderpol' here; pass --self_play on" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_curriculum_ramp_changes_the_trained_weights(data, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out, ramp in zip(runs, ("1", "0.1")):
        assert train(data, out, "--epochs", "2", "--curriculum_box", "0.2", "--curriculum_ramp", ramp) == 0
    assert not torch.equal(*(weights(out, "last_model.pt") for out in runs))


def test_recipe_defaults_are_recorded(data, tmp_path):
    from trc.training.recipe import recipe

    assert train(data, tmp_path) == 0
    settings = load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata["settings"]
    assert {k: settings[k] for k in recipe("vanderpol")} == recipe("vanderpol", epochs=1)
    assert train(data, tmp_path / "bc", "--process_weight", "0") == 0
    assert train(data, tmp_path / "sp", "--self_play", "on", "--fresh_starts", "8") == 0
    assert load_checkpoint(tmp_path / "sp" / "best_model.pt").checkpoint_metadata["settings"]["self_play"] is True
    assert load_checkpoint(tmp_path / "bc" / "best_model.pt").checkpoint_metadata["settings"]["self_play"] is False


@pytest.mark.parametrize("flag", ["--val_closed_loop", "--closed_loop_replan"])
def test_replanning_beyond_the_horizon_is_refused_before_training(data, tmp_path, capsys, flag):
    capsys.readouterr()
    assert train(data, tmp_path / "run", "--epochs", "1", flag, str(HORIZON + 1)) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be at most the horizon of 'vanderpol', {HORIZON} steps" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_val_closed_loop_picks_the_best_epoch_by_its_closed_loop_cost(data, tmp_path, capsys):
    capsys.readouterr()
    assert train(data, tmp_path, "--epochs", "3", "--val_closed_loop", "5") == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["monitor"] == "closed_cost"
    closed = [e["val"]["closed_cost"] for e in history["epochs"]]
    assert history["best_epoch"] == closed.index(min(closed))
    assert f"closed-loop success {100 * history['epochs'][history['best_epoch']]['val']['closed_success']:.1f}%, " \
           f"mean cost {min(closed):.4g} (replanning every 5 steps)" in capsys.readouterr().out   # what picked it
    # the best epoch's closed-loop figures: best_model.pt replanning every 5 steps from the validation starts
    from trc.data.datasets import load_dataset, split_dataset
    from trc.evaluation.closed_loop import closed_loop

    model = load_checkpoint(tmp_path / "best_model.pt")
    _, val = split_dataset(load_dataset(data["vanderpol"]), model.checkpoint_metadata["settings"]["val_fraction"],
                           model.checkpoint_metadata["settings"]["seed"])
    run = closed_loop(model, torch.as_tensor(val["initial_states"]), 5, torch.as_tensor(val["target_states"]))
    best = history["epochs"][history["best_epoch"]]["val"]
    assert best["closed_success"] == pytest.approx(run.success.double().mean().item(), abs=1e-9)  # a fraction
    assert best["closed_cost"] == pytest.approx(run.cost.mean().item(), rel=1e-5)
    assert load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata["settings"]["val_closed_loop"] == 5


def test_closed_loop_steps_tune_the_best_model_in_closed_loop(data, baseline, tmp_path, capsys):
    assert train(data, tmp_path, "--closed_loop_steps", "4") == 0
    log = json.loads((tmp_path / "history.json").read_text())["closed_loop_tuning"]
    checks = [r for r in log if "cost" in r]
    assert [r["step"] for r in checks] == [0, 4] and sum("train_cost" in r for r in log) == 4
    kept = min(checks, key=lambda r: r["cost"])
    meta = load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata
    assert meta["closed_loop_tuning"] == {"steps": 4, "replan_every": 1, "truncate": 0, "critic": 0.0,
                                         "kept_step": kept["step"]}
    assert f"closed-loop tuning kept step {kept['step']} of 4" in capsys.readouterr().out
    # the epochs are the baseline's; the tuning moved the weights whenever it kept a later step
    assert torch.equal(weights(baseline, "last_model.pt"), weights(tmp_path, "last_model.pt"))
    assert torch.equal(weights(baseline), weights(tmp_path)) == (kept["step"] == 0)
    tuned = weights(tmp_path)
    assert train(data, tmp_path, "--closed_loop_steps", "4", "--resume") == 0   # a finished run: nothing to do
    assert torch.equal(weights(tmp_path), tuned)


def test_closed_loop_replan_sets_the_tuning_rollouts(data, tmp_path, monkeypatch):
    import trc.training.closed_loop_tuning as tuning

    real, seen = tuning.closed_loop_rollout, []
    monkeypatch.setattr(tuning, "closed_loop_rollout", lambda *a: seen.append(a[3:]) or real(*a))
    assert train(data, tmp_path, "--closed_loop_steps", "2", "--closed_loop_replan", "4",
                 "--closed_loop_truncate", "8") == 0
    assert seen == [(4, 8), (4, 8)]
    meta = load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata
    assert meta["closed_loop_tuning"]["replan_every"] == 4 and meta["settings"]["closed_loop_replan"] == 4
    assert meta["closed_loop_tuning"]["truncate"] == 8 and meta["settings"]["closed_loop_truncate"] == 8


def test_closed_loop_critic_is_charged_at_the_cuts_and_recorded(data, tmp_path, monkeypatch):
    import trc.training.closed_loop_tuning as tuning

    real, seen = tuning.CostToGo.forward, []
    monkeypatch.setattr(tuning.CostToGo, "forward", lambda self, x, t: seen.append((x.requires_grad, t)) or real(self, x, t))
    monkeypatch.setattr(tuning, "CRITIC_WARMUP", 1)
    assert train(data, tmp_path, "--closed_loop_steps", "1", "--closed_loop_replan", "2",
                 "--closed_loop_truncate", "4", "--closed_loop_critic", "0.5") == 0
    assert (True, 4) in seen and (True, 8) in seen          # valued with their past, at the cuts
    meta = load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata
    assert meta["closed_loop_tuning"]["critic"] == 0.5 and meta["settings"]["closed_loop_critic"] == 0.5


def test_a_run_resumed_to_tune_longer_records_the_steps_its_weights_had(data, tmp_path, capsys):
    assert train(data, tmp_path, "--closed_loop_steps", "2", "--closed_loop_truncate", "5") == 0
    assert train(data, tmp_path, "--closed_loop_steps", "3", "--closed_loop_truncate", "5", "--resume") == 0
    meta = read_checkpoint(tmp_path / "best_model.pt")["metadata"]
    assert meta["settings"]["closed_loop_steps"] == meta["closed_loop_tuning"]["steps"] == 3
    capsys.readouterr()   # the critic is a setting of the tuning, not changed on resume
    assert train(data, tmp_path, "--closed_loop_steps", "3", "--closed_loop_truncate", "5", "--resume",
                 "--closed_loop_critic", "0.5") == 2
    assert "it was trained with --closed_loop_critic 0.0, not 0.5" in capsys.readouterr().err


def test_an_interrupted_closed_loop_tuning_resumes_where_it_stopped(data, tmp_path, monkeypatch, capsys):
    import trc.training.closed_loop_tuning as tuning

    flags = ("--closed_loop_steps", "30")  # validated and saved at steps 25 and 30
    assert train(data, tmp_path / "whole", *flags) == 0
    real, calls = tuning.closed_loop_rollout, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 27:  # during step 27, after step 25's save
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "closed_loop_rollout", interrupted)
    assert train(data, tmp_path / "cut", *flags) == 130
    assert read_checkpoint(tmp_path / "cut" / "closed_loop_tuning.pt")["trainer_state"]["step"] == 25
    monkeypatch.setattr(tuning, "closed_loop_rollout", real)
    capsys.readouterr()
    assert train(data, tmp_path / "cut", *flags, "--resume", "--closed_loop_replan", "2") == 2  # not the same tuning
    assert "it was trained with --closed_loop_replan 1, not 2" in capsys.readouterr().err
    assert train(data, tmp_path / "cut", *flags, "--resume", "--closed_loop_truncate", "4") == 2
    assert "it was trained with --closed_loop_truncate 0, not 4" in capsys.readouterr().err
    with monkeypatch.context() as m:  # a state judged on other validation starts is not continued either
        m.setattr(tuning, "ClosedLoopTuning", functools.partial(tuning.ClosedLoopTuning, val_starts=7))
        assert train(data, tmp_path / "cut", *flags, "--resume") == 2
    assert "validated with 500 fresh starts, this version of trc uses 7" in capsys.readouterr().err
    assert train(data, tmp_path / "cut", *flags, "--resume") == 0
    assert torch.equal(weights(tmp_path / "whole"), weights(tmp_path / "cut"))
    whole, cut = (json.loads((tmp_path / d / "history.json").read_text())["closed_loop_tuning"]
                  for d in ("whole", "cut"))
    assert whole == cut


def test_closed_loop_steps_tune_only_the_problems_of_a_shared_model_judged_in_closed_loop(data, tmp_path):
    argv = ["train", "--data", f"{data['vanderpol']},{data['double_integrator']}",
            "--problem", "vanderpol,double_integrator", "--output_dir", str(tmp_path), "--epochs", "1",
            "--quiet", "--closed_loop_steps", "2", "--adapter_epochs", "0"]
    assert main(argv) == 0                                     # neither is: nothing is tuned, no adapter is built
    model = load_checkpoint(tmp_path / "best_model.pt")
    assert model.config.adapter_rank == 0 and "closed_loop_tuning" not in model.checkpoint_metadata
    assert "closed_loop_tuning" not in json.loads((tmp_path / "history.json").read_text())


def test_the_pendulum_recipe_imitates_its_archive():
    from types import SimpleNamespace

    from trc.training.recipe import RECIPE, recipe, recipe_flags

    given = SimpleNamespace(**dict.fromkeys(RECIPE))
    r = recipe("pendulum", **recipe_flags(given))
    assert r["process_weight"] == 0 and r["self_play"] is True       # imitation of the archive, not of LQR
    assert recipe("vanderpol", **recipe_flags(given))["process_weight"] == RECIPE["process_weight"] > 0
    multi = recipe("pendulum", multi=True, **recipe_flags(given))     # one model for several problems
    assert (multi["stitch"], multi["explore_noise"], multi["process_weight"]) == (2, 1.0, 0.0)  # its own ...
    assert multi["self_play"] is True and r["visited_starts"] == 1000
    assert multi["visited_starts"] == 0                              # ... less the visited states, and tuned ...
    assert multi["closed_loop_steps"] > r["closed_loop_steps"] > 0    # ... longer (through its own adapter) ...
    assert multi["closed_loop_critic"] == r["closed_loop_critic"] > 0
    assert multi["adapter_epochs"] == r["adapter_epochs"] == 0        # judged in closed loop, not on its objective
    di = recipe("double_integrator", multi=True, **recipe_flags(given))
    assert di["adapter_epochs"] > 0 == recipe("double_integrator", **recipe_flags(given))["adapter_epochs"]
    given.act = True                                                  # a halting model: not tuned
    assert recipe("double_integrator", multi=True, **recipe_flags(given))["adapter_epochs"] == 0
    del given.act
    given.closed_loop_steps = 0                                       # ... but no epoch picked in its closed loop
    assert recipe("pendulum", multi=True, **recipe_flags(given))["val_closed_loop"] == 0
    given.closed_loop_steps = None
    given.closed_loop_truncate = 0                                    # no cut: the recipe's critic is off
    assert recipe("pendulum", **recipe_flags(given))["closed_loop_critic"] == 0
    given.closed_loop_critic = 0.25                                   # unless asked for (then refused by train)
    assert recipe("pendulum", **recipe_flags(given))["closed_loop_critic"] == 0.25
    given.closed_loop_truncate = given.closed_loop_critic = None
    assert r["val_closed_loop"] == 0                                  # tuned from the last epoch: none picked
    given.closed_loop_steps = 0                                       # untuned: the best epoch in closed loop
    assert recipe("pendulum", **recipe_flags(given))["val_closed_loop"] > 0
    given.closed_loop_steps, given.val_closed_loop = None, 3          # asked for: run beside the tuning
    assert recipe("pendulum", **recipe_flags(given))["val_closed_loop"] == 3
    given.val_closed_loop = None
    given.heads_only = True                                           # a halting head on a kept planner
    assert recipe("pendulum", **recipe_flags(given))["closed_loop_steps"] == 0
    given.heads_only = False
    given.process_weight = 0.0                                        # --process_weight 0: clone the teacher
    bc = recipe("pendulum", **recipe_flags(given))
    assert bc["self_play"] is False and bc["closed_loop_steps"] == 0
    given.self_play, given.explore_best = "on", "off"
    flags = recipe_flags(given)
    assert flags["self_play"] is True and flags["explore_best"] is False


def test_same_flags_same_weights(data, baseline, tmp_path):
    assert train(data, tmp_path / "b") == 0
    assert torch.equal(weights(baseline, "last_model.pt"), weights(tmp_path / "b", "last_model.pt"))


def value_loss(model, head, path):
    """The value loss of ``head`` on the latents of ``model``'s iterates from the dataset's starts."""
    from trc.data.datasets import load_dataset
    from trc.training.process_supervision import compute_value_prediction_loss, iteration_costs

    data = load_dataset(path)
    x0, target = (torch.as_tensor(data[k], dtype=torch.float32) for k in ("initial_states", "target_states"))
    with torch.no_grad():
        out = model(x0, target, return_all_iterations=True)
        costs, _ = iteration_costs(model.problem, out.all_controls, x0, target)
        return float(compute_value_prediction_loss(head(out.all_latents), head.target(costs)))


def test_value_predictor_is_trained_and_saved(data, tmp_path, monkeypatch):
    """The value head ``trc train`` builds moves away from its initial weights, its loss falls, it is saved."""
    import copy

    import trc.models.value_predictor

    real, initial = trc.models.value_predictor.create_value_predictor, []

    def recorded(*args, **kwargs):  # keep a copy of the head as it was built, before any training
        head = real(*args, **kwargs)
        initial.append(copy.deepcopy(head))
        return head

    monkeypatch.setattr(trc.models.value_predictor, "create_value_predictor", recorded)
    assert train(data, tmp_path / "a", "--use_value_predictor") == 0
    assert train(data, tmp_path / "b", "--use_value_predictor", "--value_weight", "1") == 0
    assert len(initial) == 2
    model = load_checkpoint(tmp_path / "a" / "last_model.pt")
    trained = model.value_predictor
    assert trained is not None
    saved = read_checkpoint(tmp_path / "a" / "last_model.pt")["value_predictor"]["state_dict"]
    for name, before in initial[0].state_dict().items():
        assert not torch.equal(saved[name], before), name          # every tensor of the head was trained
    assert value_loss(model, trained, data["vanderpol"]) < value_loss(model, initial[0], data["vanderpol"])
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert "value" in history["epochs"][0]["train"]
    assert not torch.equal(weights(tmp_path / "a", "last_model.pt"), weights(tmp_path / "b", "last_model.pt"))


def test_interrupted_run_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    import trc.training.supervised_trainer

    assert train(data, tmp_path / "full", "--epochs", "3") == 0
    real, calls = trc.training.supervised_trainer.validation_metrics, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # during epoch 1, after epoch 0's checkpoints
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trc.training.supervised_trainer, "validation_metrics", interrupted)
    assert train(data, tmp_path / "cut", "--epochs", "3") == 130
    assert read_checkpoint(tmp_path / "cut" / "last_model.pt")["trainer_state"]["epoch"] == 0
    monkeypatch.setattr(trc.training.supervised_trainer, "validation_metrics", real)
    assert train(data, tmp_path / "cut", "--epochs", "3", "--resume") == 0
    for name in ("last_model.pt", "best_model.pt"):
        assert torch.equal(weights(tmp_path / "full", name), weights(tmp_path / "cut", name))
    full, cut = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("full", "cut"))
    assert [r["val"] for r in full["epochs"]] == [r["val"] for r in cut["epochs"]]


def test_resume_refuses_other_settings(data, tmp_path, capsys):
    assert train(data, tmp_path) == 0
    capsys.readouterr()
    assert train(data, tmp_path, "--resume", "--lr", "1e-2") == 2
    err = capsys.readouterr().err
    assert "--lr" in err and len(err.strip().splitlines()) == 1


def test_quiet_hides_the_progress_bar(data, tmp_path, capsys):
    assert main(["train", "--data", data["vanderpol"], "--output_dir", str(tmp_path), "--epochs", "1",
                 "--batch_size", "8"]) == 0
    assert "epoch" in capsys.readouterr().err
    assert train(data, tmp_path / "q") == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flags, message", [
    (["--process_weight", "-1"], "--process_weight must be a finite number >= 0"),
    (["--process_weight", "nan"], "--process_weight must be a finite number >= 0"),
    (["--process_weight", "inf"], "--process_weight must be a finite number >= 0"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--batch_size", "0"], "--batch_size must be a positive integer"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--value_weight", "0.1"], "--value_weight needs --use_value_predictor"),
    (["--L_cycles", "0"], "--L_cycles must be a positive integer"),
    (["--val_fraction", "1"], "--val_fraction must be between 0 and 1"),
    (["--fresh_starts", "-1"], "--fresh_starts must be >= 0"),
    (["--curriculum_box", "0"], "--curriculum_box must be in (0, 1]"),
    (["--explore_noise", "nan"], "--explore_noise must be >= 0"),
    (["--closed_loop_steps", "-1"], "--closed_loop_steps must be >= 0"),
    (["--closed_loop_replan", "0"], "--closed_loop_replan must be >= 1"),
    (["--closed_loop_truncate", "-1"], "--closed_loop_truncate must be >= 0"),
    (["--closed_loop_critic", "-1"], "--closed_loop_critic must be >= 0"),
    (["--closed_loop_steps", "2", "--closed_loop_critic", "0.5"], "--closed_loop_critic needs --closed_loop_truncate > 0"),
    (["--process_weight", "0", "--loss_variant", "seed"], "--loss_variant has no effect"),
    (["--problem", "double_integrator"], "was made for problem 'vanderpol', not 'double_integrator'"),
])
def test_bad_flags_are_one_line_and_exit_2(data, tmp_path, capsys, flags, message):
    assert train(data, tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "best_model.pt").exists()


def test_missing_dataset_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope.npz"), "--output_dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("flags, variant", [((), DEFAULT_VARIANT), (("--loss_variant", "seed"), "seed")])
def test_process_weight_and_variant_are_recorded(data, tmp_path, flags, variant):
    assert train(data, tmp_path, "--process_weight", "0.5", *flags) == 0
    meta = load_checkpoint(tmp_path / "best_model.pt").checkpoint_metadata
    assert math.isclose(meta["process_weight"], 0.5) and meta["variant"] == variant


def test_seed_entry_point_lowers_the_loss_with_the_seed_arguments():
    """The seed document's call: a two-level model, its simulator, value head and cost matrices."""
    from trc import simulate_vanderpol_torch
    from trc.data.datasets import make_loader
    from trc.models.tiny_recursive_control import TinyRecursiveControl
    from trc.training.supervised_trainer import train_with_process_supervision
    from trc.models.value_predictor import create_value_predictor

    problem = get_problem("vanderpol", horizon=HORIZON)
    data = generate_dataset(problem, 32, seed=1)
    torch.manual_seed(0)
    model = TinyRecursiveControl.create_two_level_small(state_dim=2, control_dim=1, control_horizon=HORIZON,
                                                        problem=problem)
    cost_params = {"Q": torch.eye(2), "R": 0.01 * torch.eye(1), "Q_final": 10.0 * torch.eye(2)}
    trained = train_with_process_supervision(
        model=model, train_loader=make_loader(data, 8), val_loader=make_loader(data, 32, shuffle=False),
        dynamics_fn=lambda x0, U: simulate_vanderpol_torch(x0, U, mu=1.0, dt=0.05), epochs=4, lr=1e-3,
        process_weight=0.1, value_predictor=create_value_predictor(latent_dim=model.config.latent_dim),
        value_weight=0.01, cost_params=cost_params, progress=False)
    losses = [r["train"]["loss"] for r in trained.training_history["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not trained.training


def test_an_unfinished_run_resumes_only_with_its_own_epochs(data, tmp_path, monkeypatch, capsys):
    """Its learning-rate schedule was made for the epochs it was started with: a resume with other (or,
    forgetting the flag, the default) --epochs would match neither run."""
    import trc.training.trainer as trainer_module

    real = trainer_module.Trainer.fit

    def stop_after_one_epoch(self, *args, **kwargs):
        hooks = dict(kwargs.get("hooks") or {})

        def end(record):
            if record["epoch"] == 0:
                raise KeyboardInterrupt
        kwargs["hooks"] = {**hooks, "on_epoch_end": end}
        return real(self, *args, **kwargs)
    monkeypatch.setattr(trainer_module.Trainer, "fit", stop_after_one_epoch)
    assert train(data, tmp_path, "--epochs", "3") == 130
    monkeypatch.setattr(trainer_module.Trainer, "fit", real)
    capsys.readouterr()
    for epochs in ("2", "4"):
        assert train(data, tmp_path, "--epochs", epochs, "--resume") == 2
        err = capsys.readouterr().err
        assert "it is a run of 3 epochs stopped after 1; resume it with --epochs 3" in err, err
    assert train(data, tmp_path, "--epochs", "3", "--resume") == 0


def test_a_run_folder_missing_a_checkpoint(data, tmp_path, capsys):
    """Stopped between the two writes of an improving epoch (the best first, then the same bytes as the last),
    a run resumes from the best; a folder whose best checkpoint is gone is refused, not trained over."""
    assert train(data, tmp_path / "ref", "--epochs", "3") == 0
    assert train(data, tmp_path / "run", "--epochs", "3") == 0
    (tmp_path / "run" / "last_model.pt").unlink()
    (tmp_path / "run" / ".last_model.pt.k1ll3d.pt").write_bytes(b"torn")   # a kill during a write leaves these
    assert train(data, tmp_path / "run", "--epochs", "3", "--resume") == 0
    assert not list((tmp_path / "run").glob(".*"))
    assert torch.equal(weights(tmp_path / "ref", "last_model.pt"), weights(tmp_path / "run", "last_model.pt"))
    (tmp_path / "run" / "best_model.pt").unlink()
    before = (tmp_path / "run" / "last_model.pt").read_bytes()
    capsys.readouterr()
    assert train(data, tmp_path / "run", "--epochs", "3", "--resume", "--lr", "1e-3") == 2
    assert "holds last_model.pt but no best_model.pt" in capsys.readouterr().err
    assert (tmp_path / "run" / "last_model.pt").read_bytes() == before


def test_resume_without_epochs_keeps_the_runs_own(data, tmp_path):
    """``--resume`` alone continues a run to the epochs it was started with (it took the default, 250,
    extending a finished run, and refused an interrupted one unless told its --epochs)."""
    from trc.sweep.command import _train_parser
    from trc.training.train import train_command

    argv = ["--data", data["vanderpol"], "--output_dir", str(tmp_path), "--batch_size", "8", "--quiet"]

    def interrupt(record):   # Ctrl-C once the first epoch's checkpoints are written
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_command(_train_parser().parse_args([*argv, "--epochs", "3"]), hooks={"on_epoch_end": interrupt})
    assert main(["train", *argv, "--resume"]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [0, 1, 2]
    assert main(["train", *argv, "--resume"]) == 0      # finished: nothing more to do
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 3
