"""A sweep worker: join (or create) the study, then take trials until the sweep is done.

Every machine runs the same ``trc sweep`` command; each is a worker of one shared study.

- The worker that creates the study writes down what is swept (the study's ``trc_sweep`` user
  attribute) and, for a grid, enqueues every cell once as a waiting trial.  Workers joining later
  wait for both and refuse to join a study swept over something else; a creator killed in between
  leaves a study that the next worker finishes creating (:func:`join_study`).
- A grid worker only ever takes a *waiting* trial; taking one is a single state change in the
  storage that exactly one worker wins, so no cell is ever trained twice.  Two workers that finish a
  dead creator's work at the same moment may both enqueue the missing cells; the later copy of a
  cell is then closed unrun when claimed (failed, with :data:`DUPLICATE` naming the trial it
  copies).  A search worker asks the TPE sampler for a new trial while the study has fewer than
  ``n_trials``.
- Before each trial, trials whose worker stopped beating are failed and re-enqueued
  (:mod:`trc.sweep.storage`); their retry resumes the dead worker's run folder.  A worker stops when
  nothing is waiting and nothing is running elsewhere, so a dead worker's trial is never lost.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from trc.errors import TRCError
from trc.sweep.grid import grid_cells
from trc.sweep.objective import objective
from trc.sweep.storage import Heartbeat, fail_stale_trials, open_storage, retry_now

SPEC = "trc_sweep"
ENQUEUED = "trc_sweep_enqueued"   # written once every cell of the grid is enqueued
CREATION_WAIT_S = 60.0   # how long a joiner waits for a study's creator to finish creating it
DUPLICATE = "trc_duplicate_of"   # a grid trial closed unrun: the number of the earlier trial of its cell
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _sampler_and_pruner(grid: dict | None, prune: bool, sampler_seed: int | None = None):
    # Unseeded by default: workers with one seed would draw the same start-up samples.
    sampler = None if grid else optuna.samplers.TPESampler(seed=sampler_seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if prune else optuna.pruners.NopPruner()
    return sampler, pruner


def join_study(storage, name: str, spec: dict[str, Any], prune: bool, sampler_seed: int | None = None
               ) -> optuna.Study:
    """Create the study ``name`` with ``spec`` (enqueuing a grid's cells) or join it if it exists; a search
    samples with this worker's TPE sampler, seeded with ``sampler_seed`` (None: unseeded).

    Creating a study takes three writes: the study, its spec, its cells (:data:`ENQUEUED` marks the
    last).  A joiner waits up to :data:`CREATION_WAIT_S` for a creator that is still writing; past
    that the creator is taken for dead (each write takes milliseconds) and the joiner finishes its
    work: a study that is empty gets the joiner's spec, and a grid whose cells stop short gets the
    rest.  A sweep killed while it created its study therefore resumes like any other.

    Raises:
        TRCError: the existing study sweeps something else, or holds trials without a trc sweep's record.
    """
    sampler, pruner = _sampler_and_pruner(spec["grid"], prune, sampler_seed)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                    sampler=sampler, pruner=pruner)
        study.set_user_attr(SPEC, spec)
        creating = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        creating = not _wait_for(study, SPEC)
        if creating:
            if _count(study, *TrialState):
                raise TRCError(f"study {name!r} exists but is not a trc sweep; choose another --study_name") from None
            study.set_user_attr(SPEC, spec)   # its creator died before writing the spec: adopt it
        # (studies of trc before data_sha256 did not record their data)
        theirs = {"data_sha256": spec["data_sha256"], **study.user_attrs[SPEC]}
        if theirs != spec:
            raise TRCError(f"study {name!r} {_difference(theirs, spec)}; run the same command on every worker, "
                           f"or choose another --study_name") from None
    cells = grid_cells(spec["grid"] or {})[:spec["n_trials"]]
    if not creating and (_count(study, *TrialState) >= len(cells) or _wait_for(study, ENQUEUED)):
        return study   # (studies of earlier versions of trc wrote the spec after every cell, and no ENQUEUED)
    # No trial runs before ENQUEUED is written, so the trials there are the first cells, in order.
    for cell in cells[_count(study, *TrialState):]:
        study.enqueue_trial(cell)
    study.set_user_attr(ENQUEUED, True)
    return study


def _difference(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """What the study's spec ``theirs`` has that this worker's ``ours`` has not, in words: the first difference."""
    key = next(k for k in ours if theirs.get(k) != ours[k])
    if key == "data_sha256":
        a, b = theirs.get(key) or [], ours[key]
        if len(a) != len(b):
            return f"sweeps on {len(a)} dataset(s), not {len(b)}"
        i = next(i for i in range(len(b)) if a[i] != b[i])
        return (f"sweeps on other data (dataset {i + 1} of --data has SHA-256 {b[i][:12]}..., the study's "
                f"{str(a[i])[:12]}...)")
    if key == "flags":
        a, b = theirs.get(key) or {}, ours[key]
        flag = next(f for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f))
        return f"was made with --{flag} {a.get(flag)!r}, not {b.get(flag)!r}"
    return f"sweeps with {key} = {theirs.get(key)!r}, not {ours[key]!r}"


def _wait_for(study: optuna.Study, attr: str) -> bool:
    """Whether the study's user attribute ``attr`` is written within :data:`CREATION_WAIT_S` seconds."""
    deadline = time.monotonic() + CREATION_WAIT_S
    while attr not in study.user_attrs:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _take_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Claim a waiting trial (exactly one worker wins each), or None when none is left.

    A claimed copy of a grid cell that an earlier trial already holds (waiting, running or finished,
    not failed) is closed as a :data:`DUPLICATE` instead of returned.
    """
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
            original = _earlier_copy(study, frozen)
            if original is None:
                return optuna.Trial(study, frozen._trial_id)
            storage.set_trial_user_attr(frozen._trial_id, DUPLICATE, original)
            storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
            print(f"trc sweep: trial {frozen.number} copies trial {original}'s cell; closed unrun", flush=True)
    return None


def _earlier_copy(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of an earlier trial of ``trial``'s grid cell that still counts, or None."""
    cell = trial.system_attrs.get("fixed_params")
    if cell is None:
        return None
    for other in study._storage.get_all_trials(study._study_id, deepcopy=False):
        if (other.number < trial.number and other.state != TrialState.FAIL and DUPLICATE not in other.user_attrs
                and other.system_attrs.get("fixed_params") == cell):
            return other.number
    return None


def _count(study: optuna.Study, *states: TrialState) -> int:
    return len(study._storage.get_all_trials(study._study_id, deepcopy=False, states=states))


def _next_trial(study: optuna.Study, spec: dict, heartbeat: float) -> optuna.Trial | None:
    """The next trial for this worker; waits while others run the last ones; None when done."""
    while True:
        fail_stale_trials(study, heartbeat)
        try:
            trial = _take_waiting(study)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker took it between the listing and the claim
        if trial is not None:
            return trial
        if not spec["grid"] and _count(study, *FINISHED, TrialState.RUNNING) < spec["n_trials"]:
            return study.ask()
        if _count(study, TrialState.RUNNING) == 0:
            return None
        time.sleep(min(heartbeat, 5.0))


def run_worker(args: argparse.Namespace, spec: dict[str, Any], heartbeat: float, prune: bool,
               output_dir: str) -> dict[str, int]:
    """Join the study and run trials until none is left; returns this worker's counts by final state."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage, heartbeat)
    study = join_study(storage, args.study_name, spec, prune, sampler_seed=getattr(args, "sampler_seed", None))
    done = {"complete": 0, "pruned": 0, "fail": 0}
    while (trial := _next_trial(study, spec, heartbeat)) is not None:
        try:
            with Heartbeat(study, trial._trial_id, heartbeat):
                try:
                    value, state = objective(trial, args, spec["grid"], output_dir), TrialState.COMPLETE
                except optuna.TrialPruned:
                    value, state = None, TrialState.PRUNED
                except KeyboardInterrupt:  # hand the trial back at once instead of after two missed beats
                    retry_now(study, trial._trial_id)
                    raise
                except optuna.exceptions.UpdateFinishedTrialError:   # a RuntimeError, but not the trial's failure
                    raise
                except (TRCError, RuntimeError, ValueError) as e:
                    trial.set_user_attr("error", str(e))
                    print(f"trc sweep: trial {trial.number} failed: {e}")
                    value, state = None, TrialState.FAIL
            study.tell(trial, value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:  # judged dead meanwhile; its retry counts
            print(f"trc sweep: trial {trial.number} was taken for dead and is retried", flush=True)
            continue
        done[state.name.lower()] += 1
        cost = "" if value is None else f", validation cost {value:.4g}"
        print(f"trc sweep: trial {trial.number} {state.name.lower()}{cost}: {trial.user_attrs.get('flags')}",
              flush=True)
    return done
