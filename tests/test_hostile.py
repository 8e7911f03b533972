"""Hostile input: every case gets a clear one-line error (exit 2 from the CLI) or a correct result,
and nothing written before is lost."""

import json
import math
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch

import trc
from trc import get_problem
from trc.cli import main
from trc.cost import trajectory_cost
from trc.data.datasets import REQUIRED, generate_dataset, load_dataset, make_loader, save_dataset, split_dataset
from trc.errors import TRCError
from trc.evaluation.closed_loop import closed_loop
from trc.evaluation.refinement_evaluator import RefinementEvaluator
from trc.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from trc.training.train import build_model

HORIZON = 10
PROBLEM = get_problem("vanderpol", horizon=HORIZON)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A dataset and a one-epoch run trained on it."""
    d = tmp_path_factory.mktemp("hostile")
    save_dataset(d / "vdp.npz", generate_dataset(PROBLEM, 24, seed=0))
    assert main(["train", "--data", str(d / "vdp.npz"), "--output_dir", str(d / "run"), "--epochs", "1",
                 "--batch_size", "8", "--quiet"]) == 0
    return d


def cli(capsys, *argv):
    """(exit status, stderr) of ``trc ARGV``; argparse's own refusals count as their status."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def one_line(err, *needles):
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return True


def write_npz(path, data, metadata):
    np.savez(path, **{k: data[k] for k in REQUIRED}, metadata=np.array(json.dumps(metadata)))


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- resume identifies the data by content ------------------------------------------------------------

def test_resume_refuses_other_data_at_the_same_path(files, tmp_path, capsys):
    data = tmp_path / "data.npz"
    shutil.copy(files / "vdp.npz", data)
    train = ["train", "--data", data, "--output_dir", tmp_path / "run", "--batch_size", "8", "--quiet"]
    assert cli(capsys, *train, "--epochs", "1")[0] == 0
    before = snapshot(tmp_path / "run")
    save_dataset(data, generate_dataset(PROBLEM, 24, seed=1))  # another file, the same path
    rc, err = cli(capsys, *train, "--epochs", "2", "--resume")
    assert rc == 2 and one_line(err, "other data", "SHA-256")
    assert snapshot(tmp_path / "run") == before


def test_resume_accepts_the_same_data_spelled_or_saved_differently(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(files / "vdp.npz", "a.npz")
    train = ["train", "--output_dir", "run", "--batch_size", "8", "--quiet"]
    assert cli(capsys, *train, "--data", "a.npz", "--epochs", "1")[0] == 0
    save_dataset(tmp_path / "elsewhere" / "b.npz", load_dataset("a.npz"))  # the same arrays, a new file
    assert cli(capsys, *train, "--data", tmp_path / "elsewhere" / ".." / "a.npz", "--epochs", "2", "--resume")[0] == 0
    assert cli(capsys, *train, "--data", "elsewhere/b.npz", "--epochs", "3", "--resume")[0] == 0
    assert read_checkpoint(tmp_path / "run" / "last_model.pt")["trainer_state"]["epoch"] == 2


def test_training_into_an_existing_run_without_resume_is_refused(files, tmp_path, capsys):
    shutil.copytree(files / "run", tmp_path / "run")
    before = snapshot(tmp_path / "run")
    rc, err = cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", tmp_path / "run", "--epochs", "1",
                  "--quiet")
    assert rc == 2 and one_line(err, "already holds a run", "--resume")
    assert snapshot(tmp_path / "run") == before


# -- NaN and far-out-of-box starts ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(files):
    return load_checkpoint(files / "run" / "best_model.pt")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_starts_and_targets_are_refused(model, bad):
    with pytest.raises(TRCError, match="start states must be finite"):
        model.plan([[bad, 0.0]])
    with pytest.raises(TRCError, match="start states must be finite"):
        model(torch.tensor([[0.5, bad]]))
    with pytest.raises(TRCError, match="targets must be finite"):
        model.plan([[0.5, 0.0]], target=[bad, 0.0])
    with pytest.raises(TRCError, match="finite start states and controls"):
        PROBLEM.evaluate(torch.tensor([[bad, 0.0]], dtype=torch.float64), torch.zeros(1, HORIZON, 1,
                                                                                         dtype=torch.float64))


def test_far_out_of_box_starts_get_bounded_plans_and_an_infinite_cost(model):
    x0 = np.array([[1e6, -1e6], [100.0, 0.0], [1.0, -0.5]])
    U = model.plan(x0)
    assert np.isfinite(U).all() and np.abs(U).max() <= PROBLEM.u_max
    ev = PROBLEM.evaluate(torch.as_tensor(x0), torch.as_tensor(U))
    assert torch.isinf(ev["cost"][:2]).all() and torch.isinf(ev["final_error"][:2]).all()
    assert torch.isfinite(ev["cost"][2]) and not ev["success"][:2].any()


def test_evaluator_names_a_diverging_start_instead_of_returning_nan(model):
    data = generate_dataset(PROBLEM, 6, seed=2)
    data["initial_states"][3] = [100.0, 0.0]
    with pytest.raises(TRCError, match=r"diverges .* 1 test start\(s\), first sample 3 at x0 = \[100.0, 0.0\]"):
        RefinementEvaluator(model).evaluate(data, batch_size=2)


def far_dataset(files, path):
    data = load_dataset(files / "vdp.npz")
    for key in ("initial_states", "state_trajectories"):
        data[key] = data[key].copy()
    data["initial_states"][0] = data["state_trajectories"][0, 0] = [100.0, 0.0]
    save_dataset(path, data)
    return path


def test_cli_refuses_far_out_of_box_data_in_one_line(files, tmp_path, capsys):
    far = far_dataset(files, tmp_path / "far.npz")
    rc, err = cli(capsys, "train", "--data", far, "--output_dir", tmp_path / "run", "--quiet")
    assert rc == 2 and one_line(err, "outside the start box", "sample 0")
    assert not (tmp_path / "run").exists()
    rc, err = cli(capsys, "analyze", "--checkpoint", files / "run" / "best_model.pt", "--data", far,
                  "--output", tmp_path / "fig.png")
    assert rc == 2 and one_line(err, "diverges", "first sample 0")
    assert not list(tmp_path.glob("fig.*"))


def test_nan_in_a_dataset_is_refused_on_load(files, tmp_path, capsys):
    data = load_dataset(files / "vdp.npz")
    data["control_sequences"] = data["control_sequences"].copy()
    data["control_sequences"][2, 3] = np.nan
    write_npz(tmp_path / "nan.npz", data, data["metadata"])
    rc, err = cli(capsys, "train", "--data", tmp_path / "nan.npz", "--output_dir", tmp_path / "run")
    assert rc == 2 and one_line(err, "NaN or infinite values in 'control_sequences'")


def test_a_loss_that_turns_non_finite_is_an_error_not_a_silent_success(files, tmp_path, capsys, monkeypatch):
    import trc.training.supervised_trainer as st

    monkeypatch.setattr(st, "compute_process_supervision_loss", lambda *a, **k: (torch.tensor(math.nan), {}))
    rc, err = cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", tmp_path / "run", "--quiet")
    assert rc == 2 and one_line(err, "non-finite loss at epoch 0, step 0", "no checkpoint was written")
    assert json.loads((tmp_path / "run" / "history.json").read_text())["epochs"] == []
    monkeypatch.undo()   # the cause fixed, the same command trains in the same folder, with or without --resume
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    for folder, extra in ((tmp_path / "run", []), (tmp_path / "run2", ["--resume"])):
        rc, err = cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", folder, "--quiet", "--epochs", "1",
                      *extra)
        assert rc == 0 and (folder / "last_model.pt").exists(), err


# -- unwritable outputs are refused before the work --------------------------------------------------

def _read_only_folder():
    if sys.platform != "linux" or not os.path.isdir("/sys"):
        return None
    try:
        trc.io.check_writable("/sys/x")
    except TRCError:
        return "/sys"
    return None


@pytest.mark.skipif(_read_only_folder() is None, reason="needs a read-only file system at /sys")
def test_unwritable_outputs_are_refused_before_the_work(files, capsys, monkeypatch):
    import trc.evaluation.analyze

    monkeypatch.setattr(trc.evaluation.analyze, "RefinementEvaluator", None)  # would fail if the work started
    rc, err = cli(capsys, "analyze", "--checkpoint", files / "run" / "best_model.pt", "--data",
                  files / "vdp.npz", "--output", "/sys/x.png")
    assert rc == 2 and one_line(err, "cannot write '/sys/x.png'", "not writable")
    rc, err = cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", "/sys/run")
    assert rc == 2 and one_line(err, "cannot write '/sys/run/last_model.pt'")
    rc, err = cli(capsys, "generate", "--num_samples", "100000", "--output", "/sys/x.npz")
    assert rc == 2 and one_line(err, "cannot write '/sys/x.npz'")


def test_check_writable_probes_the_folder_itself(tmp_path, monkeypatch):
    """Permission bits do not tell (root, read-only mounts): creating a file does."""
    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(trc.io.tempfile, "mkstemp", refuse)
    with pytest.raises(TRCError, match="is not writable .Read-only file system."):
        trc.io.check_writable(tmp_path / "a" / "b.png")
    assert not (tmp_path / "a").exists()


# -- sizes, seeds, metadata, costs --------------------------------------------------------------------

def test_a_dataset_too_large_is_refused_before_allocating(tmp_path, capsys):
    from trc.data.datasets import MAX_DATASET_BYTES

    vdp = get_problem("vanderpol")
    n_x, n_u, T = vdp.n_x, vdp.n_u, vdp.horizon
    # float32 per sample: start and target, the trajectory (T + 1 states), the controls, the cost
    # (Van der Pol: 4 B x (2*2 + 101*2 + 100*1 + 1) = 4 B x 307 = 1228 B)
    sample_bytes = 4 * (2 * n_x + (T + 1) * n_x + T * n_u + 1)
    n = 1_000_000_000
    most = MAX_DATASET_BYTES // sample_bytes   # 4 GiB // 1228 B = 3497530
    rc, err = cli(capsys, "generate", "--num_samples", n, "--output", tmp_path / "big.npz")
    assert rc == 2 and one_line(err, f"would take {n * sample_bytes / 2**30:.1f} GiB", f"at most {most} ")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TRCError, match=f"{most + 1} samples of 'vanderpol' would take"):
        generate_dataset("vanderpol", most + 1)


@pytest.mark.parametrize("seed", ["-1", str(2**70), "1.5"])
def test_bad_seeds_are_one_line(files, tmp_path, capsys, seed):
    rc, err = cli(capsys, "generate", "--num_samples", "4", "--output", tmp_path / "d.npz", "--seed", seed)
    assert rc == 2 and one_line(err, "--seed", "[0, 2**63 - 1]")
    rc, err = cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", tmp_path / "run", "--seed", seed)
    assert rc == 2 and one_line(err, "--seed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", [
    lambda d: generate_dataset(PROBLEM, 4, seed=-1), lambda d: generate_dataset(PROBLEM, 4, seed=2**70),
    lambda d: split_dataset(d, 0.5, seed=-1), lambda d: make_loader(d, 4, seed=2**64),
])
def test_bad_seeds_in_the_library_are_trc_errors(files, call):
    with pytest.raises(TRCError, match="a seed must be an integer"):
        call(load_dataset(files / "vdp.npz"))


def test_the_largest_seed_works(files, tmp_path, capsys):
    seed = str(2**63 - 1)
    assert cli(capsys, "generate", "--num_samples", "4", "--horizon", "5", "--output", tmp_path / "d.npz",
               "--seed", seed)[0] == 0
    assert cli(capsys, "train", "--data", files / "vdp.npz", "--output_dir", tmp_path / "run", "--epochs", "1",
               "--quiet", "--seed", seed)[0] == 0


@pytest.mark.parametrize("field, value, needle", [
    ("horizon", "10", "horizon must be an integer >= 1, got '10'"),
    ("dt", None, "dt must be a finite number > 0, got None"),
    ("mu", [1], "mu must be a finite number"),
    ("name", ["vanderpol"], "describes no valid problem"),
])
def test_metadata_with_a_bad_problem_is_one_line(files, tmp_path, capsys, field, value, needle):
    data = load_dataset(files / "vdp.npz")
    meta = json.loads(json.dumps(data["metadata"]))
    meta["problem"][field] = value
    write_npz(tmp_path / "bad.npz", data, meta)
    rc, err = cli(capsys, "train", "--data", tmp_path / "bad.npz", "--output_dir", tmp_path / "run")
    assert rc == 2 and one_line(err, needle)


def test_metadata_naming_its_problem_alone_means_its_defaults(tmp_path, capsys):
    """A dataset made elsewhere may name its problem without parameters: the problem's defaults, checked
    against the arrays like any other, and refused beside another --problem."""
    data = generate_dataset(get_problem("vanderpol"), 8, seed=0)
    write_npz(tmp_path / "named.npz", data, {"problem": "vanderpol"})
    assert cli(capsys, "train", "--data", tmp_path / "named.npz", "--output_dir", tmp_path / "run", "--epochs", "1",
               "--quiet", "--problem", "vanderpol")[0] == 0
    rc, err = cli(capsys, "train", "--data", tmp_path / "named.npz", "--output_dir", tmp_path / "other",
                  "--epochs", "1", "--problem", "double_integrator")
    assert rc == 2 and one_line(err, "was made for problem 'vanderpol', not 'double_integrator'")
    write_npz(tmp_path / "short.npz", generate_dataset(PROBLEM, 8, seed=0), {"problem": "vanderpol"})
    rc, err = cli(capsys, "train", "--data", tmp_path / "short.npz", "--output_dir", tmp_path / "short")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "short.npz" in err


def test_all_zero_expert_costs_train_and_analyze(files, tmp_path, capsys):
    data = load_dataset(files / "vdp.npz")
    data["costs"] = np.zeros_like(data["costs"])
    write_npz(tmp_path / "zero.npz", data, data["metadata"])
    assert cli(capsys, "train", "--data", tmp_path / "zero.npz", "--output_dir", tmp_path / "run", "--epochs", "1",
               "--quiet")[0] == 0
    assert cli(capsys, "analyze", "--checkpoint", tmp_path / "run" / "best_model.pt", "--data",
               tmp_path / "zero.npz", "--output", tmp_path / "fig.png")[0] == 0
    report = json.loads((tmp_path / "fig.json").read_text())
    assert report["model"]["summary"]["cost_over_expert"] is not None  # re-simulated expert costs are positive


# -- checkpoints: the real cause ----------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loading_onto_an_absent_cuda_says_so(files):
    with pytest.raises(TRCError, match="map_location 'cuda'.*torch sees no CUDA device"):
        load_checkpoint(files / "run" / "best_model.pt", map_location="cuda")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_malicious_checkpoint_names_the_refused_object(tmp_path):
    torch.save({"format": "trc-checkpoint", "payload": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TRCError, match=r"pickled Python objects \((posix|nt)\.system\).*nothing in it was run"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps(_Evil(), protocol=4))
    with pytest.raises(TRCError, match="plain pickle, not a torch checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_a_checkpoint_with_non_finite_weights_is_refused_at_load(files, tmp_path, capsys):
    model = load_checkpoint(files / "run" / "best_model.pt")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = math.nan
    save_checkpoint(model, tmp_path / "nan.pt")
    with pytest.raises(TRCError, match="weight '.+' holds NaN or infinity"):
        load_checkpoint(tmp_path / "nan.pt")
    rc, err = cli(capsys, "analyze", "--checkpoint", tmp_path / "nan.pt", "--data", files / "vdp.npz",
                  "--output", tmp_path / "a" / "fig.png")
    assert rc == 2 and one_line(err, "holds NaN or infinity")


# -- the Python API -----------------------------------------------------------------------------------

def test_closed_loop_names_its_problem_and_its_divergence(model):
    x = torch.tensor([[1.0, -0.5]])
    assert closed_loop(model, x, problem="vanderpol").X.shape == (1, 101, 2)   # a name, as the evaluator takes
    with pytest.raises(TRCError, match=r"closed loop diverges .* at step \d+ from start 1, x0 = \[100.0, 0.0\]"):
        closed_loop(model, torch.tensor([[1.0, -0.5], [100.0, 0.0]]))
    with pytest.raises(TRCError, match=r"must be a torch tensor \[B, 2\], got ndarray \(model.plan takes arrays"):
        model(np.array([[1.0, -0.5]]))


def test_problem_names_are_accepted_by_the_evaluator_and_the_generator(model):
    data = generate_dataset("vanderpol", 3, seed=1)
    assert data["control_sequences"].shape == (3, 100, 1)
    small = generate_dataset(PROBLEM, 3, seed=1)
    by_name = RefinementEvaluator(model, problem="vanderpol")
    assert by_name.problem == get_problem("vanderpol")
    assert RefinementEvaluator(model).evaluate(small).costs.shape == (3, 3)


def test_batch_sizes_of_zero_and_empty_batches(model, files):
    data = load_dataset(files / "vdp.npz")
    with pytest.raises(TRCError, match="batch_size must be a positive integer, got 0"):
        RefinementEvaluator(model).evaluate(data, batch_size=0)
    with pytest.raises(TRCError, match="batch_size must be a positive integer, got 0"):
        make_loader(data, 0)
    assert model(torch.zeros(0, 2)).controls.shape == (0, HORIZON, 1)
    assert model.plan(np.zeros((0, 2))).shape == (0, HORIZON, 1)


@pytest.mark.parametrize("overrides, needle", [
    (dict(dt=math.nan), "dt must be a finite number > 0"), (dict(horizon=2.5), "horizon must be an integer"),
    (dict(u_max=math.inf), "u_max must be a finite number > 0"), (dict(success_tol=0), "success_tol"),
    (dict(x0_low=(0.0, math.nan)), "x0_low must be 2 finite numbers"),
    (dict(x0_low=(3.0, 3.0)), "x0_low must not exceed x0_high"), (dict(mu=math.inf), "mu must be a finite"),
    (dict(R=((math.nan,),)), "R must be a 1x1 matrix of finite numbers"),
])
def test_problem_parameters_are_validated_in_one_place(overrides, needle):
    with pytest.raises(TRCError, match=needle):
        get_problem("vanderpol", **overrides)
    with pytest.raises(TRCError, match=needle):  # the constructor too, not only get_problem
        type(PROBLEM)(**{**PROBLEM.to_dict(), **overrides})


def test_trajectory_cost_refuses_mismatched_horizons():
    X, U, Q = torch.zeros(2, 11, 2), torch.zeros(2, 5, 1), torch.eye(2)
    with pytest.raises(TRCError, match=r"got X \[2, 11, 2\] and U \[2, 5, 1\]"):
        trajectory_cost(X, U, torch.zeros(2), Q, torch.eye(1), Q)


def test_wrong_dtypes_are_refused(model):
    with pytest.raises(TRCError, match="real numbers"):
        model.plan([["a", "b"]])
    with pytest.raises(TRCError, match="real numbers"):
        model(torch.zeros(1, 2, dtype=torch.complex64))
    assert model.plan(np.array([[1, 0]], dtype=np.int64)).dtype == np.float32  # integers are numbers


def test_build_model_can_turn_gradient_truncation_off():
    assert build_model(PROBLEM).config.use_gradient_truncation
    assert not build_model(PROBLEM, gradient_truncation=False).config.use_gradient_truncation


def test_demonstrations_beyond_the_bound_are_refused_by_train(files, tmp_path, capsys):
    data = load_dataset(files / "vdp.npz")
    data["control_sequences"] = data["control_sequences"] * 1e30
    write_npz(tmp_path / "huge.npz", data, data["metadata"])
    rc, err = cli(capsys, "train", "--data", tmp_path / "huge.npz", "--output_dir", tmp_path / "run", "--quiet")
    assert rc == 2 and one_line(err, "exceed the bound |u| <= 2")
    assert not (tmp_path / "run").exists()


def test_numpy_integers_are_integers_and_fractions_are_not(model):
    """numpy's integers (what arithmetic on arrays gives) were refused as "not an integer"; 2.5 and "3"
    iterations ran 2 and 3."""
    a, b = generate_dataset(PROBLEM, np.int64(3), seed=np.int64(1)), generate_dataset(PROBLEM, 3, seed=1)
    assert np.array_equal(a["control_sequences"], b["control_sequences"]) and json.dumps(a["metadata"])
    x = torch.tensor([[1.0, -0.5], [0.5, 0.5]])
    assert torch.equal(closed_loop(model, x, replan_every=np.int64(2), iterations=np.int64(3)).U,
                       closed_loop(model, x, replan_every=2, iterations=3).U)
    assert np.array_equal(model.plan(x.numpy(), iterations=np.int64(3)), model.plan(x.numpy(), iterations=3))
    for bad in (2.5, "3", True):
        with pytest.raises(TRCError, match="iterations must be an integer"):
            model.plan(x, iterations=bad)


def test_targets_of_another_shape_and_unreal_starts_are_one_sentence(model, files):
    """Each was a raw torch or numpy error, or (complex starts) a warning and a run on their real parts."""
    x = torch.tensor([[1.0, -0.5]])
    for target in ([0.0, 0.0, 0.0], torch.zeros(3, 2)):
        with pytest.raises(TRCError, match=r"targets must have shape \[2\] or \[B, 2\] with B = 1 start states"):
            closed_loop(model, x, target=target)
    data = load_dataset(files / "vdp.npz")
    with pytest.raises(TRCError, match="with B = 5 start states, got \\[3, 2\\]"):
        RefinementEvaluator(model).evaluate({"initial_states": data["initial_states"][:5],
                                             "target_states": data["target_states"][:3]})
    with pytest.raises(TRCError, match="start states must be real numbers, got dtype torch.complex64"):
        closed_loop(model, torch.tensor([[1 + 1j, -0.5 + 2j]]))
    with pytest.raises(TRCError, match="start states must be an array or tensor of real numbers"):
        closed_loop(model, [["a", "b"]])
    with pytest.raises(TRCError, match="start states must be a rectangular array"):
        model.plan([[1.0, 2.0], [1.0]])


def test_generate_names_a_diverging_dt_and_a_horizon_too_long_for_one_sample(tmp_path, capsys):
    rc, err = cli(capsys, "generate", "--num_samples", "5", "--horizon", "20", "--dt", "10", "--output", tmp_path / "g.npz")
    assert rc == 2 and one_line(err, "controls for 'vanderpol' (dt = 10, horizon 20) are not finite", "smaller dt")
    rc, err = cli(capsys, "generate", "--num_samples", "1", "--horizon", "99999999999", "--output", tmp_path / "g.npz")
    assert rc == 2 and one_line(err, "one sample of 'vanderpol' with horizon 99999999999 takes more than")
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_whose_name_holds_a_comma_is_named(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(files / "vdp.npz", "a,b.npz")
    rc, err = cli(capsys, "train", "--data", "a,b.npz", "--output_dir", "run", "--epochs", "1", "--quiet")
    assert rc == 2 and one_line(err, "--data is split at commas", "'a,b.npz' is one file")
