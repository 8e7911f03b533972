"""One model for several problems: routing, horizons and bounds, checkpoints, ``trc train`` with several datasets."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trc import TRCError, get_problem, load_checkpoint, save_checkpoint
from trc.cli import main
from trc.data.datasets import generate_dataset, save_dataset
from trc.evaluation import closed_loop
from trc.models import MultiProblemTRC, TinyRecursiveControl, TRCConfig
from trc.data.datasets import make_loader
from trc.training.adapter_tuning import tune_problem_in_closed_loop, tune_problem_open_loop
from trc.training.closed_loop_tuning import ClosedLoopTuning
from trc.training.multi_problem import MULTI_PROBLEM_LR, MultiProblemObjective, train_multi_problem
from trc.training.recipe import judged_in_closed_loop
from trc.training.supervised_trainer import ProcessSupervisionObjective, validation_metrics
from trc.training.train import DEFAULTS

NAMES = ["double_integrator", "vanderpol", "pendulum"]
OLD_CHECKPOINT = Path(__file__).parent / "data" / "single_problem_v1.pt"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=3), NAMES)


def starts(problem, n, seed=0):
    return problem.sample_initial_states(n, torch.Generator().manual_seed(seed))


def test_a_mixed_batch_plans_each_start_with_its_own_problem(model):
    ids = torch.tensor([0, 1, 2, 1, 0, 2, 2, 0])
    x0 = torch.cat([starts(model.problems[i], 1, seed=j) for j, i in enumerate(ids.tolist())])
    mixed = model(x0, ids, return_all_iterations=True)
    assert mixed.controls.shape == (8, model.horizon, 1)
    for i, problem in enumerate(model.problems):
        rows = ids == i
        alone = model.planner(problem.name)(x0[rows], return_all_iterations=True)
        T = problem.horizon
        torch.testing.assert_close(mixed.all_controls[rows, :, :T], alone.all_controls)
        assert torch.all(mixed.controls[rows, T:] == 0)
    # the same starts planned as another problem (another simulator, scale and embedding) differ
    other = model(x0, torch.ones_like(ids)).controls
    assert not torch.allclose(other[ids == 2], mixed.controls[ids == 2])


def test_each_problem_plans_at_its_own_horizon_and_bound(model):
    for problem in model.problems:
        U = model.plan(starts(problem, 5).numpy(), problem=problem.name)
        assert U.shape == (5, problem.horizon, 1)
        assert np.abs(U).max() <= problem.u_max + 1e-6
    assert {p.horizon for p in model.problems} == {15, 100} and len({p.u_max for p in model.problems}) == 3
    x0 = torch.cat([starts(p, 2) for p in model.problems])
    U, info = model.plan(x0, problem=[n for n in NAMES for _ in range(2)], return_info=True)
    assert U.shape == (6, 100, 1) and info["iterations"].tolist() == [2] * 6
    torch.testing.assert_close(U[:2, :15], model.plan(x0[:2], problem="double_integrator"))
    assert torch.all(U[:2, 15:] == 0)


def test_plan_needs_one_of_its_problems(model):
    x0 = np.zeros(2)
    with pytest.raises(TRCError, match="pass problem=NAME"):
        model.plan(x0)
    with pytest.raises(TRCError, match="not for 'vanderpol_constrained'"):
        model.plan(x0, problem="vanderpol_constrained")
    with pytest.raises(TRCError, match="2 starts but 3 problems"):
        model.plan(np.zeros((2, 2)), problem=["pendulum"] * 3)


def test_the_closed_loop_runs_the_planner_of_the_problem_named(model):
    x0 = starts(model.problems[2], 3).double()
    shared = closed_loop(model, x0, replan_every=10, problem="pendulum")
    alone = closed_loop(model.planner("pendulum"), x0, replan_every=10)
    assert torch.equal(shared.X, alone.X) and shared.plans == 10
    with pytest.raises(TRCError, match="pass problem=NAME"):
        closed_loop(model, x0)
    with pytest.raises(TRCError, match="not for 'vanderpol_constrained'"):
        closed_loop(model, x0, problem="vanderpol_constrained")


def test_the_evaluator_runs_the_planner_of_the_problem_named(model):
    from trc.evaluation.refinement_evaluator import RefinementEvaluator

    problem = model.problems[1]
    data = {"initial_states": starts(problem, 4).numpy()}
    shared = RefinementEvaluator(model, problem="vanderpol").evaluate(data)
    alone = RefinementEvaluator(model.planner("vanderpol")).evaluate(data)
    np.testing.assert_array_equal(shared.costs, alone.costs)
    with pytest.raises(TRCError, match="pass problem=NAME"):
        RefinementEvaluator(model)
    with pytest.raises(TRCError, match="not for 'vanderpol_constrained'"):
        RefinementEvaluator(model, problem="vanderpol_constrained")


def test_problems_must_share_their_dimensions():
    odd = SimpleNamespace(name="odd", n_x=3, n_u=1, horizon=10)
    with pytest.raises(TRCError, match="equal dimensions"):
        MultiProblemTRC(TRCConfig(), ["vanderpol", odd])
    with pytest.raises(TRCError, match="given twice"):
        MultiProblemTRC(TRCConfig(), ["vanderpol", "vanderpol"])
    with pytest.raises(TRCError, match="leaves control_horizon unset"):
        MultiProblemTRC(TRCConfig(control_horizon=100), ["vanderpol", "pendulum"])


def test_checkpoint_round_trip_loads_with_weights_only(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "m.pt", epoch=3)
    raw = torch.load(path, weights_only=True)
    assert [p["name"] for p in raw["problems"]] == NAMES and "problem" not in raw
    back = load_checkpoint(path, problem="pendulum")
    assert isinstance(back, MultiProblemTRC) and back.problem_names == NAMES
    assert back.checkpoint_metadata == {"epoch": 3}
    x0 = starts(get_problem("vanderpol"), 4)
    torch.testing.assert_close(back.plan(x0, problem="vanderpol"), model.plan(x0, problem="vanderpol"))
    with pytest.raises(TRCError, match="none of them the expected 'vanderpol_constrained'"):
        load_checkpoint(path, problem="vanderpol_constrained")


def test_a_checkpoint_written_before_multi_problem_models_loads_and_plans():
    model = load_checkpoint(OLD_CHECKPOINT)
    assert type(model) is TinyRecursiveControl
    meta = model.checkpoint_metadata
    np.testing.assert_allclose(model.plan(meta["x0"]), meta["plan"], rtol=1e-5, atol=1e-6)


def test_log_balance_scales_each_problems_gradient_by_its_own_loss(model):
    objectives = [ProcessSupervisionObjective(p, 1.0, "ratio") for p in model.problems]
    grads, losses = {}, {}
    for i, problem in enumerate(model.problems):
        x0 = starts(problem, 4, seed=i)
        expert = torch.rand(4, problem.horizon, 1, generator=torch.Generator().manual_seed(i)) * problem.u_max
        batch = {"problem": i, "batch": (x0, expert)}
        for balance in ("none", "log"):
            model.zero_grad()
            loss, parts = MultiProblemObjective(objectives, balance)(model, batch)
            loss.backward()
            grads[i, balance] = model.encoder[0].weight.grad.clone()
            losses[i, balance] = loss.detach()
            assert torch.equal(parts["problem_loss"], losses[i, "none"])     # the problem's own loss, reported
        torch.testing.assert_close(losses[i, "log"], losses[i, "none"].log())
        torch.testing.assert_close(grads[i, "log"], grads[i, "none"] / losses[i, "none"])
    assert len({round(losses[i, "none"].item(), 6) for i in range(3)}) == 3    # the problems' losses differ
    with pytest.raises(TRCError, match="unknown balance 'max'"):
        MultiProblemObjective(objectives, "max")


def test_a_halting_model_trains_only_without_balance():
    halting = MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=3,
                                        use_halting=True), NAMES[:2])
    with pytest.raises(TRCError, match="balance 'none'"):
        train_multi_problem(halting, [[], []], epochs=1, balance="log")
    with pytest.raises(TRCError, match="3 process weights for 2 problems"):
        train_multi_problem(halting, [[], []], epochs=1, balance="none", process_weight=[1.0, 0.0, 1.0])


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_data")
    paths = {}
    for name in ("double_integrator", "vanderpol"):
        paths[name] = str(folder / f"{name}.npz")
        save_dataset(paths[name], generate_dataset(get_problem(name), 16, seed=0))
    return paths


def test_cli_trains_one_model_for_several_problems(datasets, tmp_path, capsys):
    argv = ["train", "--problem", "double_integrator,vanderpol", "--data",
            f"{datasets['double_integrator']},{datasets['vanderpol']}", "--output_dir", str(tmp_path),
            "--epochs", "1", "--batch_size", "8", "--self_play", "off", "--adapter_epochs", "0", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "double_integrator: success" in printed and "vanderpol: success" in printed
    model = load_checkpoint(tmp_path / "best_model.pt")
    assert model.problem_names == ["double_integrator", "vanderpol"]
    assert model.plan(np.zeros(2), problem="double_integrator").shape == (15, 1)
    settings = model.checkpoint_metadata["settings"]
    assert [p["name"] for p in settings["problem"]] == ["double_integrator", "vanderpol"]
    assert settings["lr"] == MULTI_PROBLEM_LR != DEFAULTS["lr"]    # a shared network's own default
    assert settings["problem_balance"] == "log"
    assert settings["process_weight"] == model.checkpoint_metadata["process_weight"] == [1.0, 1.0]  # each its own
    train = json.loads((tmp_path / "history.json").read_text())["epochs"][0]["train"]
    assert train["loss"] <= math.log(train["problem_loss"])    # the mean of log L_p (Jensen), not of L_p
    # --resume extends it, and refuses other data
    assert main(argv[:-1] + ["--epochs", "2", "--resume", "--quiet"]) == 0
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 2
    swapped = ["train", "--data", f"{datasets['double_integrator']},{datasets['double_integrator']}", "--output_dir",
               str(tmp_path), "--epochs", "3", "--resume", "--quiet"]
    assert main(swapped) == 2 and f"other data (the arrays of {datasets['double_integrator']!r}" in capsys.readouterr().err
    one = ["train", "--data", datasets["vanderpol"], "--output_dir", str(tmp_path), "--epochs", "3", "--resume", "--quiet"]
    assert main(one) == 2 and "it was trained on 2 dataset(s), not 1" in capsys.readouterr().err
    # trc analyze judges the planner of the dataset's problem
    assert main(["analyze", "--checkpoint", str(tmp_path / "best_model.pt"), "--data", datasets["vanderpol"],
                 "--output", str(tmp_path / "analysis")]) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())["model"]["summary"]
    from trc.data.datasets import load_dataset
    from trc.evaluation.metrics import summarize
    from trc.evaluation.refinement_evaluator import RefinementEvaluator

    shared = load_checkpoint(tmp_path / "best_model.pt")
    judged = summarize(RefinementEvaluator(shared, problem="vanderpol").evaluate(load_dataset(datasets["vanderpol"])))
    for key in ("mean_cost_per_iteration", "success_rate_per_iteration", "success_rate"):
        assert report[key] == pytest.approx(judged[key], rel=1e-6), key


def test_cli_heads_only_trains_the_halting_head_of_a_fixed_multi_problem_planner(datasets, tmp_path):
    data = f"{datasets['double_integrator']},{datasets['vanderpol']}"
    base = ["train", "--problem", "double_integrator,vanderpol", "--data", data, "--epochs", "1",
            "--batch_size", "8", "--self_play", "off", "--adapter_epochs", "0", "--quiet"]
    assert main([*base, "--output_dir", str(tmp_path / "planner"), "--model_size", "medium",
                 "--process_weight", "0.5"]) == 0
    planner = tmp_path / "planner" / "best_model.pt"
    # no --model_size: the planner's preset, not the default
    assert main([*base, "--output_dir", str(tmp_path / "act"), "--epochs", "2", "--act", "--max_iterations", "3",
                 "--init_from", str(planner), "--heads_only"]) == 0
    before = torch.load(planner, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "act" / "best_model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)                  # the shared planner is kept
    assert not torch.equal(after["halt_head.net.2.bias"], torch.tensor([-2.0, 2.0]))  # the head learned
    history = json.loads((tmp_path / "act" / "history.json").read_text())
    assert all("loss" in e["val"] for e in history["epochs"])                      # judged by its own loss
    model = load_checkpoint(tmp_path / "act" / "best_model.pt")
    assert model.checkpoint_metadata["settings"]["problem_balance"] == "none"      # its objective's own backward
    assert model.checkpoint_metadata["settings"]["model_size"] == "medium"
    assert model.checkpoint_metadata["process_weight"] == [0.5, 0.5]              # the planner's λ, not the default
    U, info = model.plan(np.zeros((4, 2)), problem="vanderpol", return_info=True)
    assert U.shape == (4, 100, 1) and info["iterations"].max() <= 3


def test_cli_picks_the_best_epoch_on_the_problems_judged_by_their_open_loop_plans(datasets, tmp_path, capsys):
    """The pendulum is judged in closed loop: its open-loop cost does not pick the shared model's epoch."""
    assert judged_in_closed_loop("pendulum") and not judged_in_closed_loop("double_integrator")
    pendulum = str(tmp_path / "pendulum.npz")
    save_dataset(pendulum, generate_dataset(get_problem("pendulum"), 16, seed=0))
    assert main(["train", "--problem", "double_integrator,pendulum", "--data", f"{datasets['double_integrator']},"
                 f"{pendulum}", "--output_dir", str(tmp_path / "run"), "--epochs", "3", "--batch_size", "8",
                 "--self_play", "off", "--closed_loop_steps", "0", "--adapter_epochs", "0", "--quiet"]) == 0
    assert "(picked on double_integrator: the others are judged in closed loop)" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["monitor"] == "picked_cost_over_expert"
    picked = [e["val"]["picked_cost_over_expert"] for e in history["epochs"]]
    assert picked == [e["val"]["double_integrator/cost_over_expert"] for e in history["epochs"]]
    assert picked != [e["val"]["cost_over_expert"] for e in history["epochs"]]   # the pendulum's is left out
    assert history["best_epoch"] == min(range(3), key=picked.__getitem__)
    # untuned, it has no adapters; started from it, a tuned run builds them
    assert load_checkpoint(tmp_path / "run" / "best_model.pt").config.adapter_rank == 0
    assert main(["train", "--problem", "double_integrator,pendulum", "--data", f"{datasets['double_integrator']},"
                 f"{pendulum}", "--output_dir", str(tmp_path / "tuned"), "--epochs", "1", "--batch_size", "8",
                 "--self_play", "off", "--closed_loop_steps", "1", "--closed_loop_critic", "0", "--quiet", "--adapter_epochs", "0",
                 "--init_from", str(tmp_path / "run" / "best_model.pt")]) == 0
    assert load_checkpoint(tmp_path / "tuned" / "best_model.pt").problem_adapter.enabled.tolist() == [False, True]


def test_picked_problems_must_be_indices_of_the_models_problems(model):
    for picked in ([], [3]):
        with pytest.raises(TRCError, match="picked problems"):
            train_multi_problem(model, [[], [], []], epochs=1, picked=picked)


def test_cli_problem_balance_needs_several_problems(datasets, tmp_path, capsys):
    argv = ["train", "--data", datasets["vanderpol"], "--output_dir", str(tmp_path), "--problem_balance", "log"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--problem_balance needs several problems" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("problems, data, message", [
    ("double_integrator,vanderpol,pendulum", "double_integrator,vanderpol",
     "--problem names 3 problems but --data gives 2 datasets"),
    ("vanderpol,double_integrator", "double_integrator,vanderpol", "was made for problem 'double_integrator', not 'vanderpol'"),
    ("vanderpol,", "double_integrator,vanderpol", "has an empty item"),
])
def test_cli_mismatched_problems_and_datasets_are_one_line_and_exit_2(datasets, tmp_path, capsys, problems, data,
                                                                       message):
    data = ",".join(datasets[n] for n in data.split(","))
    assert main(["train", "--problem", problems, "--data", data, "--output_dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_each_problem_has_its_own_hidden_biases_and_only_its_plans_move_with_them():
    config = TRCConfig(latent_dim=16, hidden_dim=32, num_layers=2, num_outer_cycles=2, feedback_points=3)
    torch.manual_seed(0)
    hidden = MultiProblemTRC(config, NAMES)
    torch.manual_seed(0)
    plain = MultiProblemTRC(TRCConfig(**{**config.to_dict(), "problem_conditioning": "embedding"}), NAMES)
    assert not hasattr(plain, "problem_bias")
    bias = hidden.problem_bias.table
    assert bias["encoder"].shape == (3, 32) and bias["core"].shape == (3, 2, 32)
    assert hidden.get_parameter_count()["problem_bias"] == 3 * 32 * 6
    plain.load_state_dict({k: v for k, v in hidden.state_dict().items() if not k.startswith("problem_bias")})
    x0 = {n: starts(get_problem(n), 4) for n in NAMES}
    before = {n: hidden.plan(x0[n], problem=n) for n in NAMES}
    for n in NAMES:   # zero biases: the plans of the embedding alone
        torch.testing.assert_close(before[n], plain.plan(x0[n], problem=n))
    for part in (*bias.keys(),):
        with torch.no_grad():
            bias[part][2].normal_()          # the pendulum's row of every part
        after = {n: hidden.plan(x0[n], problem=n) for n in NAMES}
        assert not torch.equal(after["pendulum"], before["pendulum"]), part
        for n in NAMES[:2]:
            assert torch.equal(after[n], before[n]), (part, n)
        before = after
    with pytest.raises(TRCError, match="problem_conditioning must be 'embedding' or 'hidden'"):
        TRCConfig(problem_conditioning="film")


def test_a_multi_problem_checkpoint_from_before_hidden_biases_loads_as_it_was_trained(tmp_path):
    torch.manual_seed(0)
    old = MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=3,
                                    problem_conditioning="embedding"), NAMES)
    path = save_checkpoint(old, tmp_path / "old.pt")
    raw = torch.load(path, weights_only=True)
    del raw["config"]["problem_conditioning"]          # as written before the field existed
    torch.save(raw, path)
    back = load_checkpoint(path)
    assert back.config.problem_conditioning == "embedding"
    x0 = starts(get_problem("pendulum"), 4)
    torch.testing.assert_close(back.plan(x0, problem="pendulum"), old.plan(x0, problem="pendulum"))


def test_each_problems_adapter_is_off_until_switched_on_and_then_moves_only_its_plans():
    config = TRCConfig(latent_dim=16, hidden_dim=32, num_layers=2, num_outer_cycles=2, feedback_points=3)
    torch.manual_seed(0)
    plain = MultiProblemTRC(config, NAMES)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    adapted = MultiProblemTRC(TRCConfig(**{**config.to_dict(), "adapter_rank": 4}), NAMES)
    assert torch.equal(torch.get_rng_state(), state)     # its adapters draw nothing from the global generator
    adapter = adapted.problem_adapter
    assert adapter.down["encoder_0"].shape == (3, 4, 4) and adapter.up["core_2"].shape == (3, 2, 16, 4)
    assert adapted.get_parameter_count()["problem_adapter"] == sum(p.numel() for p in adapter.parameters())
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x0 = {n: starts(get_problem(n), 4) for n in NAMES}
    before = {n: plain.plan(x0[n], problem=n) for n in NAMES}
    with torch.no_grad():
        for B in adapter.up.values():
            B.normal_()                     # every problem's adapter acts once switched on ...
    for n in NAMES:                         # ... but none is
        assert torch.equal(adapted.plan(x0[n], problem=n), before[n])
    adapter.enabled[2] = True               # the pendulum's
    assert not torch.equal(adapted.plan(x0["pendulum"], problem="pendulum"), before["pendulum"])
    for n in NAMES[:2]:
        assert torch.equal(adapted.plan(x0[n], problem=n), before[n])
    with torch.no_grad():
        for B in adapter.up.values():
            B.zero_()                       # zero B: the plans as without an adapter
    torch.testing.assert_close(adapted.plan(x0["pendulum"], problem="pendulum"), before["pendulum"])
    with pytest.raises(TRCError, match="adapter_rank must be an integer >= 0"):
        TRCConfig(adapter_rank=-1)


def test_tuning_one_problem_in_closed_loop_changes_only_its_own_parameters():
    torch.manual_seed(0)
    model = MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=3,
                                      adapter_rank=2), NAMES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = {n: starts(get_problem(n), 4) for n in NAMES}
    plans = {n: model.plan(x0[n], problem=n) for n in NAMES}
    states = []
    config = ClosedLoopTuning(steps=2, batch_size=4, eval_every=1, replan_every=20, val_starts=4)
    log = tune_problem_in_closed_loop(model, "pendulum", x0["pendulum"], config, save=states.append)
    assert [r["step"] for r in log if "cost" in r] == [0, 1, 2]
    assert model.problem_adapter.enabled.tolist() == [False, False, True]
    tuned = states[-1]["weights"]           # the last step's weights, whichever the tuning kept
    rows = ("problem_embedding.", "problem_bias.", "problem_adapter.")
    for key, value in before.items():
        if key.startswith(rows) and value.dtype.is_floating_point:
            assert torch.equal(tuned[key][:2], value[:2]), key                 # the other problems' rows
        elif value.dtype.is_floating_point:
            assert torch.equal(tuned[key], value), key                         # the shared network
    assert not torch.equal(tuned["problem_adapter.up.encoder_0"][2], before["problem_adapter.up.encoder_0"][2])
    model.load_state_dict(tuned)
    for n in NAMES[:2]:
        assert torch.equal(model.plan(x0[n], problem=n), plans[n])
    # afterwards every weight trains again, without the tuning's gradient masks
    assert all(p.requires_grad for p in model.parameters())
    model.planner("pendulum")(x0["pendulum"]).controls.sum().backward()
    assert model.problem_embedding.weight.grad[0].abs().sum() == 0 < model.problem_embedding.weight.grad[2].abs().sum()
    assert model.problem_adapter.up["encoder_0"].grad[2].abs().sum() > 0 and model.encoder[0].weight.grad is not None
    with pytest.raises(TRCError, match="needs its adapters"):
        tune_problem_in_closed_loop(MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32), NAMES), "pendulum",
                                    x0["pendulum"], config)


def test_cli_tunes_the_pendulum_of_a_shared_model_through_its_own_adapter(datasets, tmp_path, capsys):
    pendulum = str(tmp_path / "pendulum.npz")
    save_dataset(pendulum, generate_dataset(get_problem("pendulum"), 16, seed=0))
    argv = ["train", "--problem", "double_integrator,pendulum", "--data", f"{datasets['double_integrator']},{pendulum}",
            "--output_dir", str(tmp_path / "run"), "--epochs", "1", "--batch_size", "8", "--self_play", "off",
            "--quiet", "--adapter_epochs", "0", "--closed_loop_critic", "0", "--closed_loop_steps", "2"]  # no critic:
    # no warm-up rollouts
    assert main(argv) == 0
    assert "pendulum: its own adapter, embedding row and biases tuned in closed loop; kept step" in \
        capsys.readouterr().out
    tuned = load_checkpoint(tmp_path / "run" / "best_model.pt")
    last = load_checkpoint(tmp_path / "run" / "last_model.pt")           # the one epoch, the best, untuned
    assert tuned.config.adapter_rank == 8 and tuned.problem_adapter.enabled.tolist() == [False, True]
    assert not last.problem_adapter.enabled.any()
    meta = tuned.checkpoint_metadata["closed_loop_tuning"]
    assert list(meta) == ["pendulum"] and meta["pendulum"]["steps"] == 2 and meta["pendulum"]["lr"] == 1e-3
    x0 = starts(get_problem("double_integrator"), 4).double()
    assert torch.equal(tuned.plan(x0, problem="double_integrator"), last.plan(x0, problem="double_integrator"))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["step"] for r in history["closed_loop_tuning"]["pendulum"] if "cost" in r] == [0, 2]
    # --resume tunes on to more steps, from the saved tuning state, if its settings are the same
    capsys.readouterr()
    assert main(argv[:-1] + ["3", "--resume", "--closed_loop_replan", "2"]) == 2
    assert "it was trained with --closed_loop_replan [1, 4], not [2, 2]" in capsys.readouterr().err
    assert main(argv[:-1] + ["3", "--resume"]) == 0
    settings = load_checkpoint(tmp_path / "run" / "best_model.pt").checkpoint_metadata["settings"]
    assert settings["closed_loop_steps"][1] == 3                          # the record says what the weights had
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["step"] for r in history["closed_loop_tuning"]["pendulum"] if "cost" in r] == [0, 2, 3]
    # best_epoch.pt keeps the best epoch untuned; more epochs none of which beats it tune it afresh, not the
    # tuned best_model.pt (the tuning's first validation is the untuned planner's, as in the first run)
    untuned = torch.load(tmp_path / "run" / "best_epoch.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, untuned[k]) for k, v in last.state_dict().items())
    first = history["closed_loop_tuning"]["pendulum"][0]
    assert main(argv[:-1] + ["3", "--resume", "--epochs", "2"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = min(history["epochs"], key=lambda e: e["val"][history["monitor"]])["epoch"]  # the earliest of equals
    assert history["best_epoch"] == best and len(history["epochs"]) == 2
    # the tuning starts from the untuned best epoch: where it is still epoch 0, its first validation is the first run's
    assert (history["closed_loop_tuning"]["pendulum"][0] == first) == (best == 0)
    # a halting head on the tuned planner keeps its adapter
    assert main(argv[:-2] + ["--closed_loop_steps", "0", "--output_dir", str(tmp_path / "act"), "--act",
                             "--max_iterations", "2", "--init_from", str(tmp_path / "run" / "best_model.pt"),
                             "--heads_only"]) == 0
    act = load_checkpoint(tmp_path / "act" / "best_model.pt")
    assert act.problem_adapter.enabled.tolist() == [False, True]
    tuned = load_checkpoint(tmp_path / "run" / "best_model.pt")
    assert torch.equal(act.problem_adapter.up["core_0"], tuned.problem_adapter.up["core_0"])


def test_tuning_one_problem_on_its_own_objective_moves_only_its_plans_and_keeps_its_best_epoch():
    di = get_problem("double_integrator")
    train = make_loader(generate_dataset(di, 32, seed=0), 8, shuffle=True, seed=0)
    val = make_loader(generate_dataset(di, 16, seed=1), 16, shuffle=False)
    objective = ProcessSupervisionObjective(di, 1.0, "monotone")
    x0 = {n: starts(get_problem(n), 4) for n in NAMES}

    def fresh():
        torch.manual_seed(0)
        model = MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32, num_outer_cycles=2, feedback_points=3,
                                          adapter_rank=2), NAMES)
        return model, {n: model.plan(x0[n], problem=n) for n in NAMES}

    model, plans = fresh()
    log = tune_problem_open_loop(model, "double_integrator", objective, train, val, epochs=3, lr=1e-2)
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    assert model.problem_adapter.enabled.tolist() == [True, False, False]
    assert not torch.equal(model.plan(x0["double_integrator"], problem="double_integrator"), plans["double_integrator"])
    for n in NAMES[1:]:
        assert torch.equal(model.plan(x0[n], problem=n), plans[n])                 # the others' plans, to the bit
    kept = min(log[1:], key=lambda r: r["cost_over_expert"])
    assert kept["cost_over_expert"] < log[0]["cost_over_expert"]
    assert validation_metrics(model.planner("double_integrator"), val)["cost_over_expert"] == kept["cost_over_expert"]
    assert all(p.requires_grad for p in model.parameters())                        # no masks left

    # where no epoch beats the untuned planner (here an objective that raises the cost), it is put back
    model, plans = fresh()
    ascend = lambda planner, batch: (-objective(planner, batch)[0], {})             # noqa: E731
    log = tune_problem_open_loop(model, "double_integrator", ascend, train, val, epochs=2, lr=1e-2)
    assert min(r["cost_over_expert"] for r in log[1:]) > log[0]["cost_over_expert"]
    assert not model.problem_adapter.enabled.any()
    assert torch.equal(model.plan(x0["double_integrator"], problem="double_integrator"), plans["double_integrator"])
    with pytest.raises(TRCError, match="needs its adapters"):
        tune_problem_open_loop(MultiProblemTRC(TRCConfig(latent_dim=16, hidden_dim=32), NAMES), "double_integrator",
                               objective, train, val, epochs=1)


def test_cli_tunes_the_double_integrator_of_a_shared_model_on_its_own_objective(datasets, tmp_path, capsys):
    pendulum = str(tmp_path / "pendulum.npz")
    save_dataset(pendulum, generate_dataset(get_problem("pendulum"), 16, seed=0))
    argv = ["train", "--problem", "double_integrator,pendulum", "--data", f"{datasets['double_integrator']},{pendulum}",
            "--epochs", "1", "--batch_size", "8", "--self_play", "off", "--quiet", "--closed_loop_critic", "0",
            "--closed_loop_steps", "1"]
    assert main([*argv, "--output_dir", str(tmp_path / "run"), "--adapter_epochs", "2"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    log = history["adapter_tuning"]["double_integrator"]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    kept = min(log, key=lambda r: r["cost_over_expert"])   # the cheapest validation, the earliest of equals
    assert "double_integrator: its own adapter, embedding row and biases tuned 2 epochs on its objective; kept " \
           f"epoch {kept['epoch']}: success {100 * kept['success']:.1f}%, cost / expert " \
           f"{kept['cost_over_expert']:.4f} (before {log[0]['cost_over_expert']:.4f})" in capsys.readouterr().out
    assert main([*argv, "--output_dir", str(tmp_path / "plain"), "--adapter_epochs", "0"]) == 0
    tuned, plain = (load_checkpoint(tmp_path / d / "best_model.pt") for d in ("run", "plain"))
    assert tuned.problem_adapter.enabled.tolist() == [True, True] and plain.problem_adapter.enabled.tolist() == [False, True]
    x0 = {n: starts(get_problem(n), 4).double() for n in ("double_integrator", "pendulum")}
    assert torch.equal(tuned.plan(x0["pendulum"], problem="pendulum"), plain.plan(x0["pendulum"], problem="pendulum"))
    assert not torch.equal(tuned.plan(x0["double_integrator"], problem="double_integrator"),
                           plain.plan(x0["double_integrator"], problem="double_integrator"))
    record = tuned.checkpoint_metadata["adapter_tuning"]["double_integrator"]
    assert (record["epochs"], record["lr"], record["kept_epoch"]) == (2, 1e-3, kept["epoch"])
    assert record["cost_over_expert"] == kept["cost_over_expert"]
    # --resume of the finished run takes the tuned rows from adapter_tuning.pt (after the pendulum's saved
    # tuning has put back its own weights): the same model, not one tuned twice
    assert main([*argv, "--output_dir", str(tmp_path / "run"), "--adapter_epochs", "2", "--resume"]) == 0
    again = torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, again[k]) for k, v in tuned.state_dict().items())
    # it tunes a problem of a shared model without halting
    capsys.readouterr()
    assert main(["train", "--data", datasets["double_integrator"], "--output_dir", str(tmp_path / "one"),
                 "--adapter_epochs", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("--adapter_epochs needs several problems (comma-separated "
                                                    "--problem and --data)")
    assert main([*argv, "--output_dir", str(tmp_path / "act"), "--act", "--adapter_epochs", "2"]) == 2
    assert "not with --act" in capsys.readouterr().err


def test_a_resume_keeps_the_runs_own_adapters(datasets, tmp_path, capsys):
    """The adapters exist where a tuning follows; a resume whose flags would add or drop them resumes with the
    run's own, or (with none to tune through) says so in one line instead of a state-dict traceback."""
    base = ["train", "--problem", "double_integrator,vanderpol", "--data",
            f"{datasets['double_integrator']},{datasets['vanderpol']}", "--output_dir", str(tmp_path / "run"),
            "--epochs", "1", "--batch_size", "8", "--quiet"]
    assert main([*base, "--adapter_epochs", "0"]) == 0          # no tuning: no adapters
    capsys.readouterr()
    assert main([*base, "--adapter_epochs", "1", "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "it was trained without the tunings' adapters" in err and len(err.strip().splitlines()) == 1
    base[base.index(str(tmp_path / "run"))] = str(tmp_path / "tuned")
    assert main([*base, "--adapter_epochs", "1"]) == 0           # tuned: adapters
    assert main([*base, "--adapter_epochs", "0", "--epochs", "2", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "tuned" / "last_model.pt").config.adapter_rank == 8
