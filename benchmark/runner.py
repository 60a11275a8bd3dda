"""Run a list of specs: skip the finished ones, run the rest (in parallel if asked), record each.

* A run whose record exists is skipped unless ``force`` (or ``retry_failed`` for failed records).
* Each run writes its own files (protocol, codes, then the record, each atomically), so a suite
  killed at any point resumes where it stopped, with no lost, corrupt or duplicated record.
* A run that raises, or exceeds ``timeout`` seconds, is recorded as failed; the suite goes on.
* ``jobs > 1`` uses joblib's loky process pool. Every run gets the same number of BLAS / torch /
  numba threads (``threads``, default ``cores // jobs``) so workers do not oversubscribe the cores.
* Runs are seeded from their spec alone, so on CPU the codes do not depend on ``jobs``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.errors import InputError
from benchmark.evaluate import EvalConfig, environment, evaluate_run, validate_spec
from benchmark.records import SCHEMA_VERSION, RecordStore, remove_stale_temporaries
from benchmark.suites import RunSpec

__all__ = ["RunSettings", "RunOutcome", "SuiteSummary", "RunTimeout", "run_specs", "execute_run", "available_cores",
           "resolve_run_device"]


class RunTimeout(BaseException):
    """Raised inside a run that exceeded its time limit.

    A BaseException so that a method's own ``except Exception`` cannot swallow it.
    """


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunSettings:
    """How runs are executed (recorded with each run, not part of its id)."""

    results_dir: str = "results"
    data_root: str | None = None
    device: str = "cpu"
    threads: int = 1
    timeout: float | None = None
    evaluation: dict = field(default_factory=dict)


@dataclass
class RunOutcome:
    run_id: str
    status: str
    seconds: float
    error: str | None = None


@dataclass
class SuiteSummary:
    total: int
    skipped: list[str]
    outcomes: list[RunOutcome]
    statuses: dict[str, str]
    aborted: str | None = None

    @property
    def failed(self) -> list[str]:
        return sorted(rid for rid, st in self.statuses.items() if st != "ok")

    @property
    def missing(self) -> list[str]:
        return sorted(rid for rid, st in self.statuses.items() if st == "missing")


# ---------------------------------------------------------------------------------------- per-run guards
@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """SIGALRM-based limit (main thread, POSIX). Python code is interrupted at once; a long call into
    compiled code is interrupted when it returns."""
    usable = bool(seconds) and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield False
        return

    def on_alarm(signum, frame):
        raise RunTimeout(f"exceeded the time limit of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@functools.lru_cache(maxsize=1)
def _warm_up_metrics() -> None:
    """Load (or compile) the metric kernels once per process, so that neither a run's evaluate
    seconds nor its time limit include the one-time JIT cost."""
    import numpy as np

    from benchmark.evaluate import EvalConfig, compute_metrics

    codes = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [-1, 1, 1, -1]], dtype=np.int8)
    labels = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.uint8)
    config = EvalConfig(topk=(2,), precision_ns=(1, 2))
    compute_metrics({"image": codes, "text": codes}, {"image": codes, "text": codes}, labels, labels, config)
    compute_metrics({"image": codes, "text": codes}, {"image": codes, "text": codes}, labels, labels,
                    EvalConfig(topk=(2,), precision_ns=(1, 2), ties="stable"))
    # the path of methods that rank by their own distance
    compute_metrics({"image": codes, "text": codes}, {"image": codes, "text": codes}, labels, labels, config,
                    distance=lambda q, d: (q.shape[1] - q.astype(np.int64) @ d.T.astype(np.int64)) / 2.0)


@contextlib.contextmanager
def _thread_limits(n: int, method_name: str):
    """Cap BLAS/OpenMP, torch and numba threads for one run, and restore them afterwards."""
    from threadpoolctl import threadpool_limits

    # Import what the run will import, so that its thread pools exist before they are capped.
    import benchmark.metrics  # noqa: F401
    from methods import get_method

    with contextlib.suppress(Exception):
        get_method(method_name)
    restore = []
    torch = sys.modules.get("torch")
    if torch is not None:
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        restore.append(lambda: torch.set_num_threads(prev))
    numba = sys.modules.get("numba")
    if numba is not None:
        with contextlib.suppress(Exception):
            prev_nb = numba.get_num_threads()
            numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
            restore.append(lambda: numba.set_num_threads(prev_nb))
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        for undo in reversed(restore):
            undo()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------- one run
def execute_run(spec_dict: dict, settings_dict: dict) -> RunOutcome:
    """Run one spec and write its files. Never raises for a failing run: it records it.

    Takes plain dicts so that it pickles cheaply into a worker process.
    """
    spec = RunSpec.from_dict(spec_dict)
    settings = RunSettings(**settings_dict)
    store = RecordStore(settings.results_dir)
    rid = spec.run_id
    log_path = store.log_path(rid)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = _now()
    t_start = time.perf_counter()
    record = {
        "schema": SCHEMA_VERSION,
        "run_id": rid,
        "spec": spec.to_dict(),
        "started_at": started,
        "log": store.relative(log_path),
        "settings": {"threads": settings.threads, "timeout": settings.timeout, "device": settings.device},
        "environment": environment(),
    }
    config = EvalConfig.from_dict(settings.evaluation)
    record["evaluation"] = config.to_dict()
    with open(log_path, "w", encoding="utf-8") as log_fh:
        def say(msg: str) -> None:
            log_fh.write(f"{_now()} {msg}\n")
            log_fh.flush()

        handler = logging.StreamHandler(log_fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root_logger = logging.getLogger()
        root_logger.addHandler(handler)
        say(f"run {rid}: {spec.describe()}")
        say(f"spec {spec.to_dict()}")
        say(f"threads {settings.threads}, timeout {settings.timeout}, device {settings.device}")
        try:
            with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh), \
                    _thread_limits(settings.threads, spec.method):
                _warm_up_metrics()
                with _time_limit(settings.timeout):
                    out = evaluate_run(spec, data_root=settings.data_root, device=settings.device, config=config, log=say)
                protocol_path = store.save_protocol(out.protocol)
                codes_path = store.write_codes(rid, out.codes, spec.n_bits, out.query_repr)
            record.update(
                status="ok",
                error=None,
                dataset=out.dataset,
                protocol={**out.protocol.to_dict(), "file": store.relative(protocol_path)},
                mask=out.mask,
                method=out.method,
                metrics=out.metrics,
                timings={**out.timings, "total_s": time.perf_counter() - t_start},
                memory=out.memory,
                device={**out.device, "threads": settings.threads},
                extras=out.extras,
                codes=store.relative(codes_path),
            )
        except (Exception, RunTimeout) as exc:
            tb = traceback.format_exc()
            say(f"FAILED: {type(exc).__name__}: {exc}\n{tb}")
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            record.update(
                status="failed",
                error={"type": type(exc).__name__, "message": message, "traceback": tb,
                       "timed_out": isinstance(exc, RunTimeout)},
                metrics=None,
                timings={"total_s": time.perf_counter() - t_start},
                device={"requested": settings.device, "threads": settings.threads},
            )
        finally:
            root_logger.removeHandler(handler)
        record["finished_at"] = _now()
        store.write_record(record)
        say(f"record written: status {record['status']}")
    return RunOutcome(rid, record["status"], time.perf_counter() - t_start,
                      None if record["status"] == "ok" else record["error"]["message"])


# ---------------------------------------------------------------------------------------- a list of runs
def resolve_run_device(specs: list[RunSpec], device: str) -> str:
    """Check ``device`` before any work; returns the device string handed to torch methods."""
    from methods import get_method

    if device not in ("cpu", "auto") and not str(device).startswith("cuda"):
        raise InputError(f"--device {device!r} is invalid; valid: cpu, cuda, cuda:N or auto")
    if device == "cpu":
        return "cpu"
    if not any("device" in get_method(s.method)._get_param_names() for s in specs):
        return "cpu"  # no method here can use an accelerator
    from methods.nets import resolve_device

    return str(resolve_device(device))


def run_specs(specs: list[RunSpec], settings: RunSettings, *, jobs: int = 1, force: bool = False,
              retry_failed: bool = False, progress: bool | None = None, echo=None,
              label: str = "suite") -> SuiteSummary:
    """Run every spec that has no record yet; returns what happened (records are on disk)."""
    echo = echo or (lambda line: print(line, file=sys.stderr))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs {jobs!r} is invalid; valid: a positive integer")
    if settings.timeout is not None and not settings.timeout > 0:
        raise InputError(f"--timeout {settings.timeout!r} is invalid; valid: a positive number of seconds")
    if isinstance(settings.threads, bool) or not isinstance(settings.threads, int) or settings.threads < 1:
        raise InputError(f"--threads {settings.threads!r} is invalid; valid: a positive integer")
    EvalConfig.from_dict(settings.evaluation)
    for spec in specs:
        validate_spec(spec, settings.device)

    store = RecordStore(settings.results_dir)
    Path(settings.results_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(store.root)
    todo, skipped = [], []
    seen = set()
    for spec in specs:
        if spec.run_id in seen:
            continue
        seen.add(spec.run_id)
        rec = store.read(spec.run_id)
        if rec is not None and not force and not (retry_failed and rec.get("status") != "ok"):
            skipped.append(spec.run_id)
        else:
            todo.append(spec)
    if skipped:
        echo(f"{label}: {len(skipped)} of {len(seen)} run(s) already recorded, skipped (use --force to rerun)")

    outcomes: list[RunOutcome] = []
    aborted = None
    settings_dict = asdict(settings)
    if todo:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(todo), desc=label, unit="run", disable=not show, file=sys.stderr, dynamic_ncols=True)

        def done(outcome: RunOutcome, spec_of: dict[str, RunSpec]):
            outcomes.append(outcome)
            bar.update(1)
            if outcome.status != "ok":
                spec = spec_of[outcome.run_id]
                line = (f"failed: {spec.describe()} [{outcome.run_id}]: {outcome.error} "
                        f"(log: {store.log_path(outcome.run_id)})")
                bar.write(line, file=sys.stderr) if show else echo(line)

        spec_of = {s.run_id: s for s in todo}
        try:
            if jobs == 1 or len(todo) == 1:
                for spec in todo:
                    done(execute_run(spec.to_dict(), settings_dict), spec_of)
            else:
                from joblib import Parallel, delayed, parallel_config

                with parallel_config(backend="loky", inner_max_num_threads=settings.threads):
                    results = Parallel(n_jobs=min(jobs, len(todo)), return_as="generator_unordered", batch_size=1)(
                        delayed(execute_run)(spec.to_dict(), settings_dict) for spec in todo
                    )
                    for outcome in results:
                        done(outcome, spec_of)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a worker died (killed, out of memory): what finished is on disk
            aborted = " ".join(f"{type(exc).__name__}: {exc}".split())
            echo(f"{label}: stopped early ({aborted}); rerun the same command to resume")
        finally:
            bar.close()

    statuses = {}
    for rid in seen:
        rec = store.read(rid)
        statuses[rid] = rec.get("status", "failed") if rec is not None else "missing"
    return SuiteSummary(total=len(seen), skipped=skipped, outcomes=outcomes, statuses=statuses, aborted=aborted)
