"""One sweep trial: one ``trc train`` run in its own folder, scored by its validation cost.

The run trains with the sweep's flags and the trial's own (a grid cell or a TPE sample) in
``output_dir/<trial number>``; a retried trial (its worker died) reuses the folder of the trial it
retries and resumes from the last checkpoint.  A worker taken for dead that was only stopped
(``SIGSTOP``, a suspended machine) writes nothing more there once it wakes: every write of its
run first checks that its trial is still running (:func:`trc.io.write_guard`).  After every epoch
the validation cost goes to Optuna (``trial.report``), whose pruner may stop the run.  The
objective is the best epoch's validation cost, the same held-out split and measurement ``trc
train`` picks its best checkpoint by; its success rate, final error and the epochs run are user
attributes beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import optuna

from trc.io import write_guard
from trc.sweep.grid import suggest
from trc.training.process_supervision import DEFAULT_VARIANT

# Tests only: seconds to sleep after the first epoch of a trial (to kill a worker mid-trial).
SLEEP_ENV = "TRC_SWEEP_TEST_SLEEP"


def run_folder(trial: optuna.Trial, output_dir: str | Path) -> Path:
    """``output_dir/<n>``, where ``n`` is the number of the first try of this trial."""
    attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    history = attrs.get("retry_history") or [trial.number]
    return Path(output_dir) / str(history[0])


def train_args(base: argparse.Namespace, flags: dict[str, Any], folder: Path) -> argparse.Namespace:
    """The ``trc train`` arguments of one trial: the sweep's, with the trial's flags and folder."""
    args = argparse.Namespace(**vars(base))
    for name, value in flags.items():
        setattr(args, name, value)
    if args.process_weight == 0 and "loss_variant" not in flags:
        args.loss_variant = DEFAULT_VARIANT  # behavior cloning has no process term to vary
    args.output_dir, args.resume, args.quiet = str(folder), True, True
    return args


def objective(trial: optuna.Trial, base: argparse.Namespace, grid: dict[str, list] | None,
              output_dir: str | Path) -> float:
    """Train the trial's run, report each epoch's validation cost, return the best one.

    Raises:
        optuna.TrialPruned: the pruner stopped the run.
    """
    from trc.training.train import train_command

    flags = suggest(trial, grid)
    folder = run_folder(trial, output_dir)
    trial.set_user_attr("flags", flags)
    trial.set_user_attr("run_dir", str(folder))
    sleep = float(os.environ.get(SLEEP_ENV, "0"))

    def on_epoch_end(record: dict) -> None:
        cost = (record.get("val") or {}).get("cost")
        if cost is not None and math.isfinite(cost):
            trial.report(cost, record["epoch"])
        if sleep and record["epoch"] == 0:
            import time

            time.sleep(sleep)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation cost {cost:.4g} at epoch {record['epoch']}")

    def still_ours() -> None:   # a worker taken for dead and woken again leaves the folder to the retry
        if trial.study._storage.get_trial(trial._trial_id).state != optuna.trial.TrialState.RUNNING:
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial.number} was taken for dead; its retry owns {str(folder)!r}")

    with write_guard(still_ours):
        train_command(train_args(base, flags, folder), hooks={"on_epoch_end": on_epoch_end})
    history = json.loads((folder / "history.json").read_text())
    if history["best_epoch"] is None:
        raise RuntimeError(history["stop_reason"] or "no epoch was validated")
    best = next(r for r in history["epochs"] if r["epoch"] == history["best_epoch"])["val"]
    for key in ("success", "final_error", "cost_over_expert"):
        if key in best:
            trial.set_user_attr(key, best[key])
    trial.set_user_attr("best_epoch", history["best_epoch"])
    trial.set_user_attr("epochs_run", len(history["epochs"]))
    trial.set_user_attr("seconds", sum(r["seconds"] for r in history["epochs"]))
    return best["cost"]
