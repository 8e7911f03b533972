"""``trc sweep``: many ``trc train`` runs as one Optuna study, on one machine or many.

    trc sweep --data D --problem vanderpol --storage sweep.journal --study_name lambda \
        --grid process_weight=0,0.1,1 --grid seed=0,1,2 --epochs 50
    trc sweep --report --storage sweep.journal --study_name lambda

Every ``trc train`` flag is also a sweep flag: it sets what every trial shares.  See
:mod:`trc.sweep.worker` for how workers share a study and :mod:`trc.sweep.storage` for storages.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from trc.errors import TRCError
from trc.io import check_writable

HEARTBEAT_S = 30.0


def _train_parser() -> argparse.ArgumentParser:
    """A private copy of ``trc train``'s parser, whose flags the sweep parser inherits."""
    from trc.training.train import add_train_command

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    add_train_command(sub)
    parser = sub.choices["train"]
    for action in parser._actions:
        if action.dest in ("data", "output_dir"):
            action.required, action.default = False, None
        if action.dest == "data":
            action.help += " (default: none; required, except with --report)"
        if action.dest == "output_dir":
            action.help = "trial n trains in OUTPUT_DIR/n; the report goes here too (default sweeps/STUDY_NAME)"
        if action.dest == "epochs":   # a sweep hides --resume (it always resumes its trials)
            action.help = action.help.replace("; with --resume, a larger number extends a finished run", "")
        if action.dest in ("resume", "quiet"):
            action.help = argparse.SUPPRESS  # a sweep always resumes its trials and trains quietly
    return parser


def add_sweep_command(sub) -> None:
    """Add ``trc sweep`` to the CLI's subparsers."""
    p = sub.add_parser(
        "sweep", parents=[_train_parser()], add_help=False, conflict_handler="resolve",
        help="run many trc train trials as an Optuna study, across processes and machines",
        description="Run trials of trc train + validation as an Optuna study. With --grid, every cell of "
                    "a grid over named train flags, once each; without it, a TPE search over learning rate, "
                    "process weight (0 included), model size and iterations. The objective is the best "
                    "epoch's validation cost; success is reported beside it. Run the same command on every "
                    "machine: the workers share the study, a dead worker's trial is retried and resumes its "
                    "run, and a killed sweep resumes where it stopped. Every train flag sets what all trials "
                    "share. Trial n trains in --output_dir/n.")
    p.add_argument("-h", "--help", action="help", help="show this help message and exit")
    p.add_argument("--storage", required=True,
                   help="an Optuna journal file path (default choice: no server; one machine, or machines "
                        "sharing a file system), or a database URL such as postgresql://user:pw@host/db")
    p.add_argument("--study_name", required=True, help="the study every worker joins")
    p.add_argument("--grid", action="append", default=[], metavar="FLAG=V1,V2,...",
                   help="a train flag and its values (repeat for a grid over several flags)")
    p.add_argument("--n_trials", type=int, default=None,
                   help="trials in the study: required without --grid; with it, the first N cells "
                        "(default: all)")
    p.add_argument("--pruner", choices=("median", "none"), default=None,
                   help="stop trials whose validation cost is worse than the median of earlier trials at the "
                        "same epoch (default: median for a search, none for a grid, whose every cell is wanted)")
    p.add_argument("--sampler_seed", type=int, default=None,
                   help="seed of this worker's TPE sampler, so that a search run by one worker is reproducible; "
                        "give each worker its own (workers with one seed draw the same first trials). Default: "
                        "unseeded. A grid has no sampler")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                   help="seconds between a running trial's heartbeats; a trial silent for twice this is "
                        "retried by another worker (default %(default)s)")
    p.add_argument("--report", action="store_true",
                   help="print the study's table and write report.png and report.json into --output_dir")
    p.set_defaults(func=sweep_command)


def sweep_command(args: argparse.Namespace) -> int:
    """``trc sweep``: run this worker's trials, or ``--report``."""
    output_dir = args.output_dir or str(Path("sweeps") / args.study_name)
    if args.report:
        from trc.sweep.report import write_report
        from trc.sweep.storage import readable_journal

        with readable_journal(args.storage):
            text = write_report(args.storage, args.study_name, output_dir)
        print(text)
        return 0
    from trc.models.checkpoint import read_checkpoint
    from trc.sweep.grid import NOT_SWEPT, grid_cells, parse_grid
    from trc.sweep.objective import train_args
    from trc.sweep.storage import open_storage, readable_journal
    from trc.sweep.worker import run_worker
    from trc.training.train import _check_args, default_model_size

    if args.data is None:
        raise TRCError("--data is required (except with --report)")
    if not (math.isfinite(args.heartbeat) and args.heartbeat > 0):
        raise TRCError(f"--heartbeat must be a positive number of seconds, got {args.heartbeat}")
    grid = parse_grid(args.grid, _train_parser())
    if args.n_trials is None and not grid:
        raise TRCError("--n_trials is required without --grid")
    if args.n_trials is not None and args.n_trials < 1:
        raise TRCError(f"--n_trials must be >= 1, got {args.n_trials}")
    if args.sampler_seed is not None and grid:
        raise TRCError("--sampler_seed seeds the TPE search; a --grid runs its cells in order and has no sampler")
    if args.sampler_seed is not None and not 0 <= args.sampler_seed < 2 ** 32:
        raise TRCError(f"--sampler_seed must be in [0, 2**32), got {args.sampler_seed}")
    n_trials = args.n_trials or len(grid_cells(grid))
    digests = _check_data(args.data, args.problem)
    check_writable(Path(output_dir) / "report.json")   # trial n trains in output_dir/n
    for cell in grid_cells(grid)[:n_trials] if grid else [{}]:  # every trial's flags checked at the door
        cell_args = train_args(args, cell, Path(output_dir))
        _check_args(cell_args)
        if cell_args.init_from is not None:   # a checkpoint a cell starts from must be one
            read_checkpoint(cell_args.init_from)
    shared = {a.dest: getattr(args, a.dest) for a in _train_parser()._actions
              if a.option_strings and a.dest not in NOT_SWEPT and a.dest not in grid}
    if "model_size" in shared:  # as trained: --model_size small and no --model_size are one command
        shared["model_size"] = default_model_size(args)
    spec = {"grid": grid or None, "n_trials": n_trials, "flags": shared, "problem": args.problem,
            "data_sha256": digests}
    prune = (args.pruner or ("none" if grid else "median")) == "median"
    with readable_journal(args.storage):
        open_storage(args.storage)   # a bad --storage is refused before the output folder is made
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        done = run_worker(args, spec, args.heartbeat, prune, output_dir)
    print(f"trc sweep: this worker ran {sum(done.values())} trials ({done['complete']} complete, "
          f"{done['pruned']} pruned, {done['fail']} failed); nothing is left to run in study "
          f"{args.study_name!r}. Report: trc sweep --report --storage {args.storage} "
          f"--study_name {args.study_name}")
    return 1 if done["fail"] else 0   # a script running workers sees that trials failed


def _check_data(data: str, problem: str | None) -> list[str]:
    """The datasets, as ``trc train`` checks them, before a trial is made: a typo in a path ends here in one
    line, not in a study whose every trial failed.  Returns their SHA-256 digests (what the study sweeps on)."""
    from trc.data.datasets import dataset_digest, load_training_data
    from trc.training.multi_problem import dataset_pairs

    return [dataset_digest(load_training_data(path, name)[0]) for path, name in dataset_pairs(data, problem)]
