"""Where a study lives, so that several processes (or machines) join one search, and what happens to the trial
of a worker that dies.

- default: a journal file (Optuna's JournalStorage) in the output folder: several processes on one machine;
- `sqlite:///file.db`: one process (Optuna does not recommend SQLite for parallel search);
- `postgresql://user@host/db` (or mysql://): Optuna's RDB storage, the same command on several machines joins
  one study. Workers send a heartbeat; a trial whose worker stopped beating is marked failed and queued again
  with the same parameters (RetryHeartbeatStaleTrialCallback).

Journal and SQLite storages have no heartbeat, so each trial records its worker (host, process id, process
start time) and a worker starting a trial first fails and re-queues the running trials of workers on this
host whose process is gone (`reap_dead_workers`). The same check also runs with an RDB storage, which then
need not wait out the heartbeat's grace period for workers on the same machine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from edgeshrink.errors import ConfigError

HEARTBEAT_S = 10  # a worker's heartbeat interval on an RDB storage
GRACE_S = 30  # a trial whose heartbeat is this old is stale: failed and queued again
MAX_RETRY = 2  # how often one trial's parameters are queued again after its worker died
RDB_SCHEMES = ("postgresql", "mysql", "sqlite")


def require_optuna(what: str = "edgeshrink search") -> Any:
    """The optuna module, or a ConfigError naming the install command."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            f"{what} needs Optuna: pip install 'edgeshrink[search]' (PostgreSQL studies also need psycopg2-binary, "
            "which the extra installs)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(out: str | Path) -> str:
    """The journal file a search keeps in its output folder when no storage is named."""
    return f"journal:{Path(out) / 'study.journal'}"


def describe(url: str) -> str:
    """The storage URL without its password, for logs and reports."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return url


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> Any:
    """An Optuna storage for `url`: `journal:PATH` (or a path ending in .journal), sqlite:///, postgresql://,
    mysql://. ConfigError for anything else, or when the database driver is missing."""
    optuna = require_optuna()
    if url.startswith("journal:") or url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise ConfigError(
            f"storage {describe(url)!r} is not one edgeshrink search knows: use journal:PATH (one machine, several "
            "processes), sqlite:///PATH (one process) or postgresql://USER:PASSWORD@HOST/DB (several machines)"
        )
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"storage {describe(url)!r} needs the database driver {exc.name!r}: pip install 'edgeshrink[search]'"
        ) from None
    except Exception as exc:  # sqlalchemy's OperationalError and friends: the database is not reachable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the study storage {describe(url)!r}: {first}") from None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused process id apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> dict:
    """This process as a trial records it: host, process id and process start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _alive(worker: dict) -> bool:
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = worker.get("started")
    return started is None or _start_time(pid) == started


def reap_dead_workers(study: Any) -> list[int]:
    """Fail the running trials of workers on this host whose process is gone and queue their parameters again
    (at most MAX_RETRY times per original trial); returns the failed trial numbers. Two workers reaping at once
    are safe: only the one whose state change succeeds queues the retry."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    host = socket.gethostname()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or worker.get("host") != host or _alive(worker):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "failure", "its worker process died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker got there first
        original = trial.user_attrs.get("retry_of", trial.number)
        retries = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == original)
        if retries < MAX_RETRY:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": original})
        reaped.append(trial.number)
    return reaped
