"""``trc analyze``: table, figure and JSON for a model and a baseline; one-line errors."""

import json

import numpy as np
import pytest
import torch

import trc
from trc.models.checkpoint import save_checkpoint
from trc.cli import main
from trc.data.datasets import generate_dataset, save_dataset
from trc.models.tiny_recursive_control import TinyRecursiveControl, TRCConfig

PROBLEM = "double_integrator"  # T = 15: quick to simulate


def tiny_model(problem, seed, K=2):
    torch.manual_seed(seed)
    config = TRCConfig(latent_dim=8, hidden_dim=16, num_layers=1, num_outer_cycles=K, feedback_points=2)
    return TinyRecursiveControl(config, problem)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    problem = trc.get_problem(PROBLEM)
    save_checkpoint(tiny_model(problem, 0), d / "ps.pt", process_weight=1.0)
    save_checkpoint(tiny_model(problem, 1), d / "bc.pt", process_weight=0.0)
    save_checkpoint(tiny_model(trc.get_problem("vanderpol"), 2), d / "vdp.pt")
    save_dataset(d / "test.npz", generate_dataset(problem, 12, expert="optimal", seed=3))
    save_dataset(d / "vdp.npz", generate_dataset(trc.get_problem("vanderpol"), 4, seed=3))
    return d


def test_analyze_writes_figure_and_json_for_model_and_baseline(files, capsys):
    out = files / "run1" / "refinement_analysis.png"
    rc = main(["analyze", "--checkpoint", str(files / "ps.pt"), "--data", str(files / "test.npz"),
               "--problem", PROBLEM, "--output", str(out), "--baseline", str(files / "bc.pt")])
    assert rc == 0
    printed = capsys.readouterr().out
    for row in ("success (%)", "cost / optimum", "improving (%)", "monotonic (%)", "mean cost, k=2"):
        assert row in printed
    assert "baseline" in printed.splitlines()[0]
    assert out.stat().st_size > 0 and out.with_suffix(".svg").stat().st_size > 0
    report = json.loads(out.with_suffix(".json").read_text())
    for name in ("model", "baseline"):
        costs = np.array(report[name]["metrics"]["costs"])
        assert costs.shape == (12, 3)  # K_train = 2 by default
        assert report[name]["summary"]["mean_cost_per_iteration"] == pytest.approx(costs.mean(0).tolist())
        # the data's expert is the optimum, so every ratio is known and no plan beats it by much
        assert np.min(report[name]["metrics"]["cost_ratio"]) > 0.99
    assert report["model"]["metrics"]["process_weight"] == 1.0


def test_more_iterations_than_trained(files):
    out = files / "run2" / "fig.png"
    rc = main(["analyze", "--checkpoint", str(files / "ps.pt"), "--data", str(files / "test.npz"),
               "--output", str(out), "--iterations", "5"])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert np.array(report["model"]["metrics"]["costs"]).shape == (12, 6)
    assert report["model"]["metrics"]["train_iterations"] == 2
    assert "baseline" not in report


@pytest.mark.parametrize("case, needle", [
    (dict(problem="vanderpol"), "was trained on problem"),
    (dict(problem="cartpole"), "unknown problem"),
    (dict(checkpoint="missing.pt"), "does not exist"),
    (dict(data="missing.npz"), "does not exist"),
    (dict(data="vdp.npz"), "vdp.npz"),
    (dict(baseline="vdp.pt"), "was trained on problem"),
    (dict(checkpoint="test.npz"), "test.npz"),
    (dict(iterations="0"), "positive integer"),
    (dict(output="."), "a folder"),
    (dict(output="bad/fig.pdf"), "so it ends in .png, got"),
    (dict(replan_every="5"), "--replan_every sets the closed loop's replanning: it needs --closed_loop"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, case, needle):
    args = {"checkpoint": "ps.pt", "data": "test.npz", "problem": PROBLEM, **case}
    argv = ["analyze", "--output", str(files / args.get("output", "bad/fig.png"))]
    for flag in ("checkpoint", "data", "baseline"):
        if flag in args:
            argv += [f"--{flag}", str(files / args[flag])]
    for flag in ("problem", "iterations", "replan_every"):
        if flag in args:
            argv += [f"--{flag}", args[flag]]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (files / "bad").exists()


def test_closed_loop_is_reported_beside_the_open_loop(files, capsys):
    out = files / "run_cl" / "fig.png"
    rc = main(["analyze", "--checkpoint", str(files / "ps.pt"), "--data", str(files / "test.npz"),
               "--output", str(out), "--baseline", str(files / "bc.pt"), "--closed_loop", "--replan_every", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "closed loop: success (%)" in printed and "closed loop: cost / optimum" in printed
    report = json.loads(out.with_suffix(".json").read_text())
    for name in ("model", "baseline"):
        cl = report[name]["summary"]["closed_loop"]
        assert cl["replan_every"] == 3 and cl["cost_over_optimum"] > 0.99  # the optimum bounds it
    # without the flag there is no closed-loop row
    main(["analyze", "--checkpoint", str(files / "ps.pt"), "--data", str(files / "test.npz"),
          "--output", str(files / "run_ol" / "fig.png")])
    assert "closed loop" not in capsys.readouterr().out


def test_the_closed_loop_plans_with_the_iterations_asked_for(files):
    """--iterations sets the refinement of every plan of --closed_loop too, not only of the open loop."""
    from trc.data.datasets import load_dataset
    from trc.evaluation import RefinementEvaluator
    from trc.models.checkpoint import load_checkpoint

    model, data = load_checkpoint(files / "ps.pt"), load_dataset(files / "test.npz")
    costs = {}
    for k in (None, 2 * model.num_iterations):
        out = files / f"run_cl_{k}" / "fig.png"
        assert main(["analyze", "--checkpoint", str(files / "ps.pt"), "--data", str(files / "test.npz"),
                     "--output", str(out), "--closed_loop", *([] if k is None else ["--iterations", str(k)])]) == 0
        cl = json.loads(out.with_suffix(".json").read_text())["model"]["summary"]["closed_loop"]
        assert cl["iterations"] == (k or model.num_iterations)
        direct = RefinementEvaluator(model).closed_loop(data, iterations=k)
        assert cl["mean_cost"] == pytest.approx(direct.cost.double().mean().item(), rel=1e-9)
        costs[k] = cl["mean_cost"]
    assert costs[None] != costs[2 * model.num_iterations]


def test_problem_named_takes_the_datasets_parameters_as_train_does(tmp_path, capsys):
    """``--problem vanderpol`` on data made with ``--horizon 10`` means that problem, not its defaults."""
    problem = trc.get_problem("vanderpol", horizon=10)
    save_checkpoint(tiny_model(problem, 0), tmp_path / "short.pt")
    save_dataset(tmp_path / "short.npz", generate_dataset(problem, 4, seed=3))
    argv = ["analyze", "--checkpoint", str(tmp_path / "short.pt"), "--data", str(tmp_path / "short.npz"),
            "--output", str(tmp_path / "a" / "fig.png")]
    assert main(argv + ["--problem", "vanderpol"]) == 0
    capsys.readouterr()
    assert main(argv + ["--problem", "double_integrator"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not on the expected 'double_integrator'" in err
