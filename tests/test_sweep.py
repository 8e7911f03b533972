"""``trc sweep``: workers sharing a study (journal file and PostgreSQL), dead workers, the report.

Workers are real processes (``python -m trc.cli sweep``) on a tiny dataset with one- or two-epoch
trials.  The PostgreSQL test starts a throwaway server from Debian's ``postgresql``; where that is
missing it skips with the reason, unless ``TRC_REQUIRE_POSTGRES=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from trc import get_problem
from trc.cli import main
from trc.data.datasets import generate_dataset, save_dataset
from trc.sweep import grid_results
from trc.sweep.command import _train_parser
from trc.sweep.grid import SEARCH_SPACE, grid_cells, parse_grid
from trc.sweep.objective import SLEEP_ENV

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--grid", "process_weight=0,1", "--grid", "seed=0,1,2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "vdp.npz"
    save_dataset(path, generate_dataset(get_problem("vanderpol", horizon=10), 24, seed=0))
    return str(path)


def sweep_argv(data, storage, out, *extra, study="s"):
    return ["sweep", "--data", data, "--storage", storage, "--study_name", study, "--output_dir", str(out),
            "--epochs", "1", "--batch_size", "8", "--heartbeat", "1", *extra]


def worker(argv, sleep=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(SLEEP_ENV, None)
    if sleep is not None:
        env[SLEEP_ENV] = str(sleep)
    return subprocess.Popen([sys.executable, "-m", "trc.cli", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def two_workers_complete_the_grid(data, storage, out):
    # Each trial sleeps a little after its epoch, so both workers are busy at once.
    procs = [worker(sweep_argv(data, storage, out, *GRID), sleep=0.2) for _ in range(2)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    rows, cells = grid_results(storage, "s")
    assert [r["state"] for r in rows] == ["complete"] * 6
    assert sorted(json.dumps(r["flags"], sort_keys=True) for r in rows) == sorted(
        json.dumps(c, sort_keys=True) for c in grid_cells({"process_weight": [0.0, 1.0], "seed": [0, 1, 2]}))
    assert all("ran 0 trials" not in log for log in logs), logs  # both workers took trials
    assert sorted(int(p.name) for p in out.iterdir() if p.name.isdigit()) == list(range(6))
    assert sorted(c["seeds"] for c in cells) == [3, 3]
    assert all(c["cost_std"] > 0 for c in cells)  # three seeds, three different runs


def test_two_workers_share_a_journal_file(data, tmp_path):
    two_workers_complete_the_grid(data, str(tmp_path / "sweep.journal"), tmp_path / "runs")


def worker_past_its_first_epoch(argv, out, sleep):
    """A worker that has written epoch 0 of trial 0 and sleeps ``sleep`` s after it."""
    proc = worker(argv, sleep=sleep)
    deadline = time.monotonic() + 60
    while not (out / "0" / "last_model.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    return proc


def test_a_dead_workers_trial_is_retried_and_resumes(data, tmp_path, monkeypatch, capsys):
    storage, out = str(tmp_path / "sweep.journal"), tmp_path / "runs"
    argv = sweep_argv(data, storage, out, "--grid", "seed=0,1", "--epochs", "2")
    doomed = worker_past_its_first_epoch(argv, out, sleep=300)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    monkeypatch.delenv(SLEEP_ENV, raising=False)
    assert main(argv) == 0  # a new worker: waits for the dead trial to go stale, then retries it
    rows, _ = grid_results(storage, "s")
    states = {r["number"]: (r["state"], r["flags"], r["retry_of"]) for r in rows}
    assert states[0] == ("fail", {"seed": 0}, None)
    retry = [r for r in rows if r["retry_of"] == 0]
    assert [(r["state"], r["flags"]) for r in retry] == [("complete", {"seed": 0})]
    assert sorted(r["flags"]["seed"] for r in rows if r["state"] == "complete") == [0, 1]
    # The retry resumed the dead run's folder: epoch 0 came from its checkpoint.
    assert [r["epoch"] for r in json.loads((out / "0" / "history.json").read_text())["epochs"]] == [0, 1]
    study = optuna.load_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)), study_name="s")
    assert sorted(study.trials[retry[0]["number"]].intermediate_values) == [0, 1]
    capsys.readouterr()
    assert main(["sweep", "--report", "--storage", storage, "--study_name", "s", "--output_dir", str(out)]) == 0
    assert "(retry of 0)" in capsys.readouterr().out
    assert (out / "report.png").stat().st_size > 0 and json.loads((out / "report.json").read_text())["cells"]


def digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_stopped_worker_taken_for_dead_writes_nothing_when_it_wakes(data, tmp_path, monkeypatch):
    """A worker stopped (not killed) after its first epoch is taken for dead and its trial retried in
    the same folder; woken after the retry has finished, it leaves the folder as the retry left it."""
    storage, out = str(tmp_path / "sweep.journal"), tmp_path / "runs"
    argv = sweep_argv(data, storage, out, "--grid", "seed=0,1", "--epochs", "2")
    sleeper = worker_past_its_first_epoch(argv, out, sleep=3)
    sleeper.send_signal(signal.SIGSTOP)
    try:
        monkeypatch.delenv(SLEEP_ENV, raising=False)
        assert main(argv) == 0  # a new worker: takes the silent trial for dead, retries it, finishes the grid
        left = digests(out / "0")
        assert [r["epoch"] for r in json.loads((out / "0" / "history.json").read_text())["epochs"]] == [0, 1]
    finally:
        sleeper.send_signal(signal.SIGCONT)
    log = sleeper.communicate(timeout=120)[0]
    assert sleeper.returncode == 0 and "trial 0 was taken for dead and is retried" in log, log
    assert digests(out / "0") == left
    rows, _ = grid_results(storage, "s")
    assert sorted((r["state"], r["flags"]["seed"]) for r in rows) == [("complete", 0), ("complete", 1), ("fail", 0)]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free port, as the ``postgres`` user when run as root."""
    required = os.environ.get("TRC_REQUIRE_POSTGRES") == "1"
    missing = None
    bindir = next((Path(p).parent for p in [shutil.which("initdb"), *sorted(
        map(str, Path("/usr/lib/postgresql").glob("*/bin/initdb")))] if p), None)
    if bindir is None:
        missing = "PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError:
            missing = "psycopg is not installed (pip install -e '.[postgres]')"
    if missing:
        if required:
            pytest.fail(missing)
        pytest.skip(missing)
    folder = Path(tempfile.mkdtemp(prefix="trc-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=60)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(folder / "db"), "-U", "trc", "--auth=trust")
        run(str(bindir / "pg_ctl"), "-D", str(folder / "db"), "-l", str(folder / "log"), "-w", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
        yield f"postgresql://trc@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(folder / "db"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgresql_database(data, tmp_path, postgres_url):
    two_workers_complete_the_grid(data, postgres_url, tmp_path / "runs")


def test_report_of_an_unknown_or_empty_study_is_one_sentence(tmp_path, capsys):
    storage = str(tmp_path / "sweep.journal")
    report = ["sweep", "--report", "--storage", storage, "--output_dir", str(tmp_path)]
    assert main([*report, "--study_name", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"there is no sweep journal {storage!r}" in err
    assert not (tmp_path / "sweep.journal").exists()   # a report writes no journal
    optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)), study_name="other")
    assert main([*report, "--study_name", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no study 'nope'" in err
    optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)), study_name="empty")
    assert main([*report, "--study_name", "empty"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no trials" in err
    # A database that cannot be reached (or whose driver is missing): one sentence, the password hidden.
    assert main(["sweep", "--report", "--storage", "postgresql://u:secret@127.0.0.1:1/db", "--study_name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "secret" not in err and "u:***@127.0.0.1" in err


def test_grid_values_take_the_train_flags_types_and_bad_ones_are_refused(data, tmp_path, capsys):
    grid = parse_grid(["seed=0,1", "use_two_level=true,false", "model_size=small", "lr=1e-3"], _train_parser())
    assert grid == {"seed": [0, 1], "use_two_level": [True, False], "model_size": ["small"], "lr": [0.001]}
    assert len(grid_cells(grid)) == 4
    for spec, words in [("nonsense=1", "not a train flag"), ("data=x", "not a train flag"),
                        ("seed=a", "must be an integer in [0, 2**63 - 1], got 'a'"), ("iterations=a", "not a valid int"), ("model_size=huge", "not one of"),
                        ("seed", "name=v1,v2"), ("lr=-1", "--lr must be a positive number")]:
        assert main(sweep_argv(data, str(tmp_path / "j"), tmp_path, "--grid", spec)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, (spec, err)
    assert main(sweep_argv(data, str(tmp_path / "j"), tmp_path)) == 2  # no grid and no --n_trials
    assert "--n_trials is required" in capsys.readouterr().err


def test_bad_datasets_are_refused_before_the_study_is_touched(data, tmp_path, capsys):
    """A typo in --data used to fail every trial of the study for good, and the sweep exited 0."""
    storage = tmp_path / "sweep.journal"
    for bad, words in [(str(tmp_path / "missing.npz"), "does not exist"),
                       (f"{data},{data}", "--problem names 1 problems but --data gives 2 datasets")]:
        assert main(sweep_argv(bad, str(storage), tmp_path / "runs", "--grid", "seed=0", "--problem", "vanderpol")) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not storage.exists() and not (tmp_path / "runs").exists()
    # a grid cell's --init_from too (it failed its trial for good, and the sweep went on)
    assert main(sweep_argv(data, str(storage), tmp_path / "runs", "--grid", f"init_from={tmp_path / 'nope.pt'}")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.pt' does not exist" in err, err
    assert not storage.exists() and not (tmp_path / "runs").exists()


def test_an_unwritable_output_or_a_damaged_journal_is_one_line(data, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    storage = tmp_path / "sweep.journal"
    assert main(sweep_argv(data, str(storage), tmp_path / "afile" / "runs", "--grid", "seed=0")) == 2
    assert "is not a folder" in capsys.readouterr().err and not storage.exists()
    storage.write_text('{"op_code": 0, "worker_id": "x"\n')          # a line torn by a crash
    for argv in (sweep_argv(data, str(storage), tmp_path / "runs", "--grid", "seed=0"),
                 ["sweep", "--report", "--storage", str(storage), "--study_name", "s"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is not a readable Optuna journal file" in err, err
    for bad in ("", str(tmp_path)):   # a folder (or nothing) as the journal
        assert main(sweep_argv(data, bad, tmp_path / "runs2", "--grid", "seed=0")) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"--storage {bad!r} is a folder" in err, err
    assert not (tmp_path / "runs2").exists()   # refused before the output folder is made


def test_a_worker_whose_trials_failed_exits_1(data, tmp_path, monkeypatch, capsys):
    import trc.sweep.worker as worker_module
    from trc.errors import TRCError

    def failing(trial, *args):
        raise TRCError("diverged")
    monkeypatch.setattr(worker_module, "objective", failing)
    assert main(sweep_argv(data, str(tmp_path / "sweep.journal"), tmp_path / "runs", "--grid", "seed=0,1")) == 1
    out = capsys.readouterr().out
    assert "trial 0 failed: diverged" in out and "(0 complete, 0 pruned, 2 failed)" in out


def test_a_search_without_grid_samples_the_documented_space(data, tmp_path):
    storage = str(tmp_path / "sweep.journal")
    assert main(sweep_argv(data, storage, tmp_path / "runs", "--n_trials", "2", "--model_size", "small")) == 0
    rows, _ = grid_results(storage, "s")
    assert [r["state"] for r in rows] == ["complete", "complete"]
    for r in rows:
        flags = r["flags"]
        assert set(flags) == set(SEARCH_SPACE)
        assert 3e-4 <= flags["lr"] <= 1e-2 and 1 <= flags["iterations"] <= 4
        assert flags["process_weight"] == 0 or 0.01 <= flags["process_weight"] <= 10
        assert (tmp_path / "runs" / str(r["number"]) / "history.json").exists()
    assert main(sweep_argv(data, storage, tmp_path / "runs", "--n_trials", "2")) == 0  # the study is done
    assert len(grid_results(storage, "s")[0]) == 2


def test_a_search_with_a_sampler_seed_is_reproducible(data, tmp_path, capsys):
    """One worker's TPE search, seeded, samples the same trials and reaches the same costs again."""
    def search(name, seed):
        storage = str(tmp_path / f"{name}.journal")
        assert main(sweep_argv(data, storage, tmp_path / name, "--n_trials", "3", "--sampler_seed", seed)) == 0
        return [(r["flags"], r["cost"]) for r in grid_results(storage, "s")[0]]

    first = search("a", "3")
    assert search("b", "3") == first
    assert [f for f, _ in search("c", "4")] != [f for f, _ in first]   # another seed samples otherwise
    capsys.readouterr()
    for extra, words in [(["--grid", "seed=0,1", "--sampler_seed", "1"], "a --grid runs its cells in order"),
                         (["--n_trials", "1", "--sampler_seed", "-1"], "--sampler_seed must be in [0, 2**32)")]:
        assert main(sweep_argv(data, str(tmp_path / "x.journal"), tmp_path / "x", *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "x.journal").exists()


@pytest.mark.parametrize("killed_at", ["the spec", "the second cell"])
def test_a_sweep_killed_while_creating_its_study_resumes(data, tmp_path, monkeypatch, killed_at):
    """Ctrl-C between the study's creation and its spec, or amid its grid's cells: the same command
    again finishes creating the study and runs every cell once."""
    import trc.sweep.worker as worker_module

    monkeypatch.setattr(worker_module, "CREATION_WAIT_S", 0.5)  # the creator's writes take milliseconds
    storage, argv = str(tmp_path / "sweep.journal"), sweep_argv(data, str(tmp_path / "sweep.journal"),
                                                                 tmp_path / "runs", "--grid", "seed=0,1,2")
    name, calls = ("set_user_attr", 1) if killed_at == "the spec" else ("enqueue_trial", 2)
    real = getattr(optuna.Study, name)

    made = []

    def killed(self, *args, **kwargs):
        made.append(name)
        if len(made) == calls:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(optuna.Study, name, killed)
        assert main(argv) == 130
    left = optuna.load_study(storage=worker_module.open_storage(storage), study_name="s")
    assert len(left.trials) == calls - 1   # none, or the first cell
    assert main(argv) == 0
    rows, _ = grid_results(storage, "s")
    assert [r["state"] for r in rows] == ["complete"] * 3
    assert sorted(r["flags"]["seed"] for r in rows) == [0, 1, 2]



def test_a_cell_enqueued_twice_by_racing_joiners_runs_once(data, tmp_path, monkeypatch, capsys):
    """Two workers that take over a dead creator's study at the same moment may both enqueue its
    cells; each cell still trains once, and its copy is reported as a duplicate, unrun."""
    import trc.sweep.worker as worker_module

    storage, out = str(tmp_path / "sweep.journal"), tmp_path / "runs"
    argv = sweep_argv(data, storage, out, "--grid", "seed=0,1,2")
    real = optuna.Study.enqueue_trial

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:   # the creator dies after its spec, before its first cell
        m.setattr(optuna.Study, "enqueue_trial", killed)
        assert main(argv) == 130
    study = optuna.load_study(storage=worker_module.open_storage(storage), study_name="s")
    cells = grid_cells({"seed": [0, 1, 2]})
    for cell in cells + cells[::-1]:   # what two joiners enqueuing at once leave
        real(study, cell)
    study.set_user_attr(worker_module.ENQUEUED, True)
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows, cells_done = grid_results(storage, "s")
    assert [r["state"] for r in rows] == ["complete"] * 3 + ["duplicate"] * 3
    assert [r["flags"]["seed"] for r in rows] == [0, 1, 2, 2, 1, 0]
    assert [study.trials[n].user_attrs[worker_module.DUPLICATE] for n in (3, 4, 5)] == [2, 1, 0]
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2"]
    assert printed.count("closed unrun") == 3 and cells_done[0]["seeds"] == 3


def test_a_worker_of_another_command_is_refused_naming_the_difference(data, tmp_path, capsys):
    """A worker must run the sweep's own command: other data, another flag or grid is refused in one
    line that names what differs (other data once joined the study and mixed its results in)."""
    import trc.sweep.worker as worker_module

    other = tmp_path / "other.npz"
    save_dataset(other, generate_dataset(get_problem("vanderpol", horizon=10), 24, seed=1))
    storage = str(tmp_path / "sweep.journal")
    argv = sweep_argv(data, storage, tmp_path / "runs", "--grid", "seed=0")
    assert main(argv) == 0
    capsys.readouterr()
    for changed, needle in [
        (sweep_argv(str(other), storage, tmp_path / "runs", "--grid", "seed=0"),
         "study 's' sweeps on other data (dataset 1 of --data has SHA-256"),
        ([*argv, "--lr", "0.01"], "study 's' was made with --lr None, not 0.01"),
        (sweep_argv(data, storage, tmp_path / "runs", "--grid", "seed=0,1"), "study 's' sweeps with grid ="),
    ]:
        assert main(changed) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and len(err) < 400, err
    study = optuna.load_study(storage=worker_module.open_storage(storage), study_name="s")
    legacy = {k: v for k, v in study.user_attrs[worker_module.SPEC].items() if k != "data_sha256"}
    study.set_user_attr(worker_module.SPEC, legacy)   # a study of a trc that did not record its data
    assert main(argv) == 0 and len(study.trials) == 1
