"""``trc generate``: writes a valid dataset and a summary; bad flags give one line and exit 2."""

import math
import os
import subprocess
import sys

import pytest

from trc.cli import main
from trc.data.datasets import load_dataset


def generate(tmp_path, *flags, output="d.npz"):
    return main(["generate", "--problem", "double_integrator", "--num_samples", "12",
                 "--output", str(tmp_path / output), *flags])


def test_generate_writes_a_dataset_and_one_summary_line(tmp_path, capsys):
    assert generate(tmp_path, "--seed", "7", output="data/di.npz") == 0
    out = capsys.readouterr().out.strip()
    data = load_dataset(tmp_path / "data" / "di.npz")
    assert data["initial_states"].shape == (12, 2) and data["metadata"]["seed"] == 7
    mean = float(data["costs"].mean())
    assert len(out.splitlines()) == 1
    assert "12 samples" in out and "lqr expert" in out and "di.npz" in out and "success rate 100.0%" in out
    assert math.isclose(float(out.split("mean cost ")[1].split(",")[0]), mean, rel_tol=1e-3)


def test_generate_overrides_horizon_and_dt_and_runs_the_optimal_expert(tmp_path, capsys):
    assert generate(tmp_path, "--expert", "optimal", "--horizon", "10", "--dt", "0.4") == 0
    data = load_dataset(tmp_path / "d.npz")
    assert data["control_sequences"].shape == (12, 10, 1)
    assert data["metadata"]["problem"]["dt"] == 0.4 and data["metadata"]["expert"] == "optimal"
    assert "optimal expert" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--num_samples", "0"], "--num_samples must be positive"),
    (["--num_samples", "-5"], "--num_samples must be positive"),
    (["--problem", "cartpole"], "unknown problem 'cartpole'"),
    (["--expert", "mpc"], "unknown expert 'mpc'"),
    (["--horizon", "0"], "--horizon must be positive"),
    (["--dt", "0"], "--dt must be a positive number"),
    (["--dt", "-0.1"], "--dt must be a positive number"),
    (["--dt", "nan"], "--dt must be a positive number"),
])
def test_bad_flags_give_one_line_and_status_2(tmp_path, capsys, flags, message):
    assert generate(tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trc generate: error: ") and message in err
    assert not (tmp_path / "d.npz").exists()


def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    assert generate(tmp_path, output="a_file/d.npz") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert generate(tmp_path, output="a_folder") == 2
    assert "is a folder" in capsys.readouterr().err


def test_read_only_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import tempfile

    import trc.data.generate

    folder = tmp_path / "ro"
    folder.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        # root writes to a folder without write permission, so the folder also refuses as a
        # read-only file system does (for root too)
        if dir is not None and os.path.samefile(dir, folder):
            raise PermissionError(30, "Read-only file system")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr("trc.io.tempfile.mkstemp", mkstemp)
    monkeypatch.setattr(trc.data.generate, "generate_dataset", None)  # would fail if the work started
    folder.chmod(0o500)
    try:
        assert generate(tmp_path, output="ro/d.npz") == 2
    finally:
        folder.chmod(0o700)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot write {str(folder / 'd.npz')!r}: folder {str(folder)!r} is not writable" in err, err
    assert list(folder.iterdir()) == []


def test_non_integer_flag_is_an_argparse_error_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate(tmp_path, "--num_samples", "ten")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("trc generate: error:")


def test_real_process_exits_2_with_one_stderr_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trc.cli", "generate", "--num_samples", "0", "--output", str(tmp_path / "d.npz")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "trc generate: error: --num_samples must be positive, got 0\n"
    assert proc.stdout == ""


def test_pendulum_demonstrations_and_reference_sets_record_the_problem(tmp_path, capsys):
    out = str(tmp_path / "p.npz")
    assert main(["generate", "--problem", "pendulum", "--num_samples", "5", "--output", out]) == 0
    data = load_dataset(out)
    assert data["metadata"]["problem"]["name"] == "pendulum" and data["metadata"]["expert"] == "lqr"
    assert data["metadata"]["problem"]["g"] == 9.81 and data["control_sequences"].shape == (5, 100, 1)
    ref = str(tmp_path / "ref.npz")
    assert main(["generate", "--problem", "pendulum", "--num_samples", "2", "--output", ref,
                 "--expert", "optimum", "--horizon", "30"]) == 0
    assert load_dataset(ref)["metadata"]["expert"] == "optimal"  # 'optimum' is the same expert
