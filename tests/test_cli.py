"""The ``trc`` command line as a whole: defaults in --help, devices, pipes, resume, gradient truncation."""

import argparse
import re
import json
import subprocess
import sys

import pytest
import torch

from trc import get_problem
from trc.cli import build_parser, main
from trc.data.datasets import generate_dataset, save_dataset
from trc.models.checkpoint import load_checkpoint, read_checkpoint

HORIZON = 10


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_flag_shows_its_default_in_help(command):
    parser = _subcommands()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.required:
            continue
        text = formatter._expand_help(action) if action.help else ""
        flag = action.option_strings[0]
        assert "default" in text, f"trc {command} {flag}: no default in {text!r}"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            continue
        if action.default is not None:
            assert str(action.default) in text, f"trc {command} {flag}: {action.default!r} not in {text!r}"


def test_help_renders_and_explains_lambda(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("250", "monotone", "off", "64", "cpu"):
        assert re.search(rf"\(default:? {shown}", out), shown
    assert "seed document's lambda" in out and "lambda_seed T (K+1) / K" in out


def test_lambda_conversion_in_help_matches_the_loss_gradients():
    """The help's claim: on the last iterate's cost, lambda T (K+1)/K ('ratio') pushes as the seed's lambda,
    and the help's worked numbers (the seed's 0.1 is 15 here, trc's 1 a seed lambda of 0.0067) are that formula."""
    from trc.training.process_supervision import ratio_process_term, seed_process_term
    from trc.training.train import PROCESS_WEIGHT_HELP

    example = re.search(r"for T = (\d+) and K = (\d+), the seed's ([\d.]+) is ([\d.]+) here and trc's ([\d.]+) is "
                        r"a seed lambda of ([\d.]+)", PROCESS_WEIGHT_HELP)
    assert example, PROCESS_WEIGHT_HELP
    T, K = int(example[1]), int(example[2])
    lam_seed, lam_here, lam_trc, lam_trc_seed = map(float, example.groups()[2:])
    assert lam_seed * T * (K + 1) / K == pytest.approx(lam_here)
    assert lam_trc / (T * (K + 1) / K) == pytest.approx(lam_trc_seed, abs=5e-5)  # as printed, to 4 decimals
    B = 3
    costs = torch.full((B, K + 1), 5.0, dtype=torch.float64, requires_grad=True)
    (lam_seed * seed_process_term(costs)).backward()
    seed_grad = costs.grad[:, -1].clone()
    costs.grad = None
    (lam_here * ratio_process_term(costs, T)).backward()
    torch.testing.assert_close(costs.grad[:, -1], seed_grad, rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "vdp.npz"
    save_dataset(path, generate_dataset(get_problem("vanderpol", horizon=HORIZON), 24, seed=0))
    return path


def train(data, out, *flags):
    return main(["train", "--data", str(data), "--output_dir", str(out), "--batch_size", "8", "--quiet", *flags])


@pytest.mark.parametrize("command", ["train", "analyze"])
@pytest.mark.parametrize("device, needle", [
    ("foo", "is not a torch device"), ("meta", "holds no data"),
    ("cuda:7", "not available on this machine"),
])
def test_bad_device_is_refused_at_the_door(data, tmp_path, capsys, command, device, needle):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    if command == "train":
        rc = train(data, tmp_path / "run", "--epochs", "1", "--device", device)
    else:
        rc = main(["analyze", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data),
                   "--output", str(tmp_path / "fig.png"), "--device", device])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "--device" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # checked before the checkpoint, the data, anything


def test_no_gradient_truncation_is_built_recorded_and_checked_on_resume(data, tmp_path, capsys):
    assert train(data, tmp_path, "--epochs", "1", "--no_gradient_truncation") == 0
    model = load_checkpoint(tmp_path / "best_model.pt")
    assert model.config.use_gradient_truncation is False
    assert model.checkpoint_metadata["settings"]["gradient_truncation"] is False
    capsys.readouterr()
    assert train(data, tmp_path, "--epochs", "1", "--resume") == 2
    err = capsys.readouterr().err
    assert "--no_gradient_truncation" in err and len(err.strip().splitlines()) == 1


def test_resume_extends_a_finished_run_by_exactly_the_new_epochs(data, tmp_path, monkeypatch, capsys):
    import trc.training.supervised_trainer as st

    assert train(data, tmp_path, "--epochs", "2") == 0
    before = json.loads((tmp_path / "history.json").read_text())
    calls = []
    real = st.validation_metrics
    monkeypatch.setattr(st, "validation_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert train(data, tmp_path, "--epochs", "3", "--resume") == 0
    assert len(calls) == 1  # one more epoch was validated: one more epoch was trained
    after = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in after["epochs"]] == [0, 1, 2]
    assert after["epochs"][:2] == before["epochs"]
    state = read_checkpoint(tmp_path / "last_model.pt")["trainer_state"]
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 3 * 3  # 3 epochs of 3 batches
    # the schedule is the 3-epoch one from the saved step: the lr of the new epoch is that of a fresh 3-epoch run
    assert train(data, tmp_path / "fresh", "--epochs", "3") == 0
    fresh = json.loads((tmp_path / "fresh" / "history.json").read_text())
    assert after["epochs"][2]["lr"] == pytest.approx(fresh["epochs"][2]["lr"])
    # the same --epochs again: nothing to do, nothing lost; fewer: refused
    calls.clear()
    assert train(data, tmp_path, "--epochs", "3", "--resume") == 0 and calls == []
    capsys.readouterr()
    assert train(data, tmp_path, "--epochs", "2", "--resume") == 2
    assert "trained 3 epochs already" in capsys.readouterr().err
    assert json.loads((tmp_path / "history.json").read_text()) == after


def _pipe_closed(args, tmp_path):
    """Run ``trc ARGS | true`` (the reader is gone before trc writes) with pipefail; (status, stderr)."""
    cmd = " ".join([sys.executable, "-m", "trc.cli", *args])
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | (exec 0<&-; sleep 0.1)"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    return proc.returncode, proc.stderr


def test_closed_pipe_ends_quietly_after_writing_the_files(data, tmp_path):
    """``trc analyze ... | head -1`` style: the figure and JSON are written, no traceback, status 1."""
    assert train(data, tmp_path / "run", "--epochs", "1") == 0
    rc, err = _pipe_closed(["analyze", "--checkpoint", str(tmp_path / "run" / "best_model.pt"), "--data",
                            str(data), "--output", str(tmp_path / "fig.png")], tmp_path)
    assert (rc, err) == (1, "")
    assert all((tmp_path / f"fig.{ext}").exists() for ext in ("png", "svg", "json"))
    rc, err = _pipe_closed(["generate", "--num_samples", "4", "--horizon", "5", "--output",
                            str(tmp_path / "g.npz")], tmp_path)
    assert (rc, err) == (1, "") and (tmp_path / "g.npz").exists()


@pytest.mark.parametrize("argv", [["generate", "--num_samples", "0"], ["--help"]])
def test_ctrl_c_after_the_command_prints_no_traceback(argv):
    """An interrupt while the finished command's exit handlers run (torch's among them) is ignored: the
    command's own status and lines, no traceback.  The handler registered here stands for a slow one."""
    code = ("import atexit, os, signal, sys, time; from trc.cli import run; "
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2))); "
            f"sys.argv = ['trc', *{argv!r}]; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
    assert proc.returncode == (2 if argv[0] == "generate" else 0), proc.stderr


def test_threads_apply_while_the_command_runs_and_are_restored(data, tmp_path, monkeypatch):
    """``--threads`` (default 1) sets torch's intra-op threads for the command only: ``main`` may run
    inside another program, whose setting it gives back.  By default a run's weights do not depend on the
    caller's threads (torch's default is one per core, and the thread count changes the rounding)."""
    import trc.training.train as train_module

    seen, real = [], train_module.train_command
    monkeypatch.setattr(train_module, "train_command", lambda args: seen.append(torch.get_num_threads()) or real(args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert train(data, tmp_path / "one", "--epochs", "1") == 0
        assert torch.get_num_threads() == 2
        assert train(data, tmp_path / "two", "--epochs", "1", "--threads", "2") == 0
        torch.set_num_threads(3)
        assert train(data, tmp_path / "keep", "--epochs", "1", "--threads", "0") == 0
        assert train(data, tmp_path / "default", "--epochs", "1") == 0
        assert seen == [1, 2, 3, 1] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    one, default = (read_checkpoint(tmp_path / d / "best_model.pt")["state_dict"] for d in ("one", "default"))
    assert all(torch.equal(one[k], default[k]) for k in one)


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "1025", "2147483648"])   # (2**31 crashed torch)
def test_bad_threads_are_refused_at_the_door(data, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        train(data, tmp_path / "run", "--epochs", "1", "--threads", value)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--threads" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_threads_are_not_a_sweep_flag_shared_by_its_workers():
    """Each machine of a sweep picks its own threads: the flag is not one of the trials' train flags."""
    from trc.sweep.command import _train_parser

    assert "threads" not in {a.dest for a in _train_parser()._actions}
    assert "threads" in {a.dest for a in _subcommands()["sweep"]._actions}


def test_torch_out_of_memory_is_one_line(data, tmp_path, capsys, monkeypatch):
    """torch raises RuntimeError, not MemoryError, for a tensor it cannot allocate; other errors still surface."""

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 16000000000000 bytes.\nmore")
    monkeypatch.setattr("trc.data.datasets.split_dataset", oom)
    capsys.readouterr()
    assert train(data, tmp_path / "run", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("trc train: error: out of memory (") and len(err.strip().splitlines()) == 1, err
    monkeypatch.setattr("trc.data.datasets.split_dataset", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        train(data, tmp_path / "run2", "--epochs", "1")
