"""Where a sweep's study lives, and how a dead worker's trial is noticed and retried.

``--storage`` is either a plain path, an Optuna journal file (``JournalFileBackend``: no server,
what Optuna recommends for several processes on one machine, and fine for machines sharing a file
system), or any database URL Optuna accepts (``postgresql://user:pass@host/db``, ``sqlite:///f.db``),
for machines without a shared file system.

Every running trial beats a heartbeat every ``heartbeat`` seconds.  A trial whose worker has not
beaten for ``STALE_AFTER`` (two) intervals is stale: the next worker to look marks it failed and enqueues a copy of
it (same flags, same run folder), which the first free worker takes and resumes from its last
checkpoint.  A database storage uses Optuna's own heartbeat (``RDBStorage(heartbeat_interval=...)``
with ``RetryHeartbeatStaleTrialCallback``, the successor of ``RetryFailedTrialCallback``); a journal
file, which has none, keeps the beat as a trial system attribute and is checked here the same way.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from trc.errors import TRCError

BEAT = "trc_heartbeat"   # the journal file's heartbeat: a trial system attribute, seconds since the epoch
MAX_RETRY = 3            # a trial whose workers die this many times is left failed
STALE_AFTER = 2          # heartbeat intervals of silence after which a running trial is taken for dead


def _retry() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)


def _hide_password(url: str) -> str:
    """``url`` as messages may show it: a password becomes ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: it fails later with its own message
        return url


@contextlib.contextmanager
def readable_journal(url: str) -> Iterator[None]:
    """One sentence, not a traceback, where a journal file cannot be read: a line torn by a worker that died
    while writing it (Optuna skips a torn last line, but not once another line follows), or no journal."""
    try:
        yield
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TRCError(f"--storage {url!r} is not a readable Optuna journal file ({type(e).__name__}: "
                       f"{str(e)[:80]}); a line torn by a crash can be removed by hand") from None


def open_storage(url: str, heartbeat: float | None = None) -> BaseStorage:
    """The Optuna storage ``url`` names: a journal file for a plain path, else a database.

    Args:
        url: a file path (journal) or a database URL containing ``://``.
        heartbeat: seconds between a running trial's heartbeats (None: no heartbeat, for reading).

    Raises:
        TRCError: the URL cannot be opened (one sentence, with the driver to install if one is missing).
    """
    if "://" not in url:
        path = Path(url)
        if not url or path.is_dir():
            raise TRCError(f"--storage {url!r} is a folder; give the path of a journal file, such as sweep.journal")
        if not path.parent.is_dir():
            raise TRCError(f"--storage {url!r}: folder {str(path.parent)!r} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))   # read errors: readable_journal, around its use
    shown = _hide_password(url)
    if url.startswith(("postgresql://", "postgres://")):
        # The postgres extra's driver (psycopg 3), whichever driver SQLAlchemy picks for the bare scheme.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    kwargs = {}
    if heartbeat is not None:
        kwargs = dict(heartbeat_interval=max(1, round(heartbeat)), grace_period=max(2, round(STALE_AFTER * heartbeat)),
                      heartbeat_stale_trial_callback=_retry())
    for attempt in range(5):  # workers opening a new database race to create its tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        except ImportError as e:
            cause = e if isinstance(e, ModuleNotFoundError) else e.__cause__ or e.__context__
            driver = getattr(cause, "name", None) or "its database driver"
            raise TRCError(f"--storage {shown!r} needs {driver!r}, which is not installed; for PostgreSQL: "
                           f"pip install 'trc[postgres]'") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors are many; one sentence for all
            if attempt < 4 and ("already exists" in str(e) or "duplicate key" in str(e)):
                time.sleep(0.5 + random.random())
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TRCError(f"cannot open --storage {shown!r}: {first}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def fail_stale_trials(study: optuna.Study, interval: float) -> None:
    """Mark failed every running trial that has not beaten for ``STALE_AFTER * interval`` s, and enqueue its retry.

    Safe with many workers: only the one whose state change wins enqueues the retry.
    """
    storage = study._storage
    if isinstance(storage, RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return
    now = time.time()
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(BEAT, trial.datetime_start.timestamp() if trial.datetime_start else now)
        if now - beat > STALE_AFTER * interval:
            retry_now(study, trial._trial_id)


def retry_now(study: optuna.Study, trial_id: int) -> None:
    """Mark a running trial failed and enqueue its retry; only the worker whose change wins enqueues."""
    try:
        if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            _retry()(study, study._storage.get_trial(trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


class Heartbeat:
    """A thread that beats for one running trial until stopped (use as a context manager)."""

    def __init__(self, study: optuna.Study, trial_id: int, interval: float | None):
        self.storage, self.trial_id, self.interval = study._storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        if isinstance(self.storage, RDBStorage):
            self.storage.record_heartbeat(self.trial_id)
        else:
            self.storage.set_trial_system_attr(self.trial_id, BEAT, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat only makes the trial look stale later
                pass

    def __enter__(self) -> "Heartbeat":
        if self.interval is not None:
            self.beat()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
