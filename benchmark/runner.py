"""Run a list of specs: skip the finished ones, run the rest (in parallel if asked), record each.

* A run whose record exists is skipped unless ``force`` (or ``retry_failed`` for failed records); an ok
  record scored under other evaluation settings is rescored from its stored codes (no fit), and one
  whose data files changed since (``data_checksum``) is rerun.
* :func:`compute_run` runs one spec anywhere and writes nothing; :meth:`RecordStore.write_result`
  writes its files in the driver; ``cluster`` hands the runs to :func:`benchmark.cluster.dispatch`.
* A run is claimed (:meth:`RecordStore.claim`) by the process that runs it, before it starts; a run
  claimed by another live process (another runner on the same results directory) is skipped and
  reported as running elsewhere, and a run whose record appeared while it waited is not rerun.
* Each run writes its own files (protocol, codes named by their hash, then the record naming that
  hash, each atomically), so a suite killed at any point resumes where it stopped, with no lost,
  corrupt or duplicated record, and no record beside another process's codes.
* A run that raises, or exceeds ``timeout`` seconds, is recorded as failed; the suite goes on.
* ``jobs > 1`` uses a loky process pool (joblib's). Every run gets the same number of BLAS / torch /
  numba threads (``threads``, default ``cores // jobs``) so workers do not oversubscribe the cores.
  Workers die with the runner: SIGTERM, SIGINT or SIGHUP stop them before the runner exits, and
  each worker has the kernel's parent-death signal (Linux) plus a watchdog thread, so even after
  ``kill -9`` of the runner no worker outlives it by more than a second or so.
* Runs are seeded from their spec alone, so on CPU the codes do not depend on ``jobs``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import io
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.codesfile import codes_arrays
from benchmark.datacache import data_checksum
from benchmark.environment import environment
from benchmark.evaluate import EvalConfig, evaluate_run, validate_spec
from benchmark.records import (Claim, Record, RecordStore, RunOutcome, RunResult, registry_order,
                               remove_stale_temporaries)
from benchmark.rescore import CannotRescore, needs_rescore, rescore_record
from benchmark.suites import RunSpec
from cmhcore.errors import InputError

__all__ = ["RunSettings", "RunOutcome", "RunResult", "SuiteSummary", "Plan", "RunTimeout", "Terminated", "run_suite",
           "compute_run", "execute_run", "plan_runs", "pending_specs", "rescore_runs", "available_cores",
           "resolve_run_device", "check_settings", "check_writable_dir", "MAX_TIMEOUT_S"]

# setitimer takes seconds as a C time value; beyond ~68 years (2**31 s) it overflows on some platforms.
MAX_TIMEOUT_S = float(2**31 - 1)

# Outcome statuses that are not failures of this runner: the run belongs to another process.
ELSEWHERE = "running elsewhere"
DONE_ELSEWHERE = "done elsewhere"


class RunTimeout(BaseException):
    """Raised inside a run that exceeded its time limit.

    A BaseException so that a method's own ``except Exception`` cannot swallow it.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: handled like Ctrl-C (workers stopped, nothing half-written kept)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


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
class SuiteSummary:
    total: int
    skipped: list[str]
    outcomes: list[RunOutcome]
    statuses: dict[str, str]
    aborted: str | None = None

    @property
    def failed(self) -> list[str]:
        return sorted(rid for rid, st in self.statuses.items() if st not in ("ok", ELSEWHERE))

    @property
    def elsewhere(self) -> list[str]:
        """Runs claimed by another live process and not recorded yet (not failures of this runner)."""
        return sorted(rid for rid, st in self.statuses.items() if st == ELSEWHERE)


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


def _now_precise() -> str:
    # finished_at tells a record apart from the one a runner saw when it planned (see execute_run)
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------- one run
def _holder_text(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started_at', '?')}"


class _Tee(io.TextIOBase):
    """The run's log: kept in memory for :class:`RunResult` and, when given, streamed to a file too."""

    def __init__(self, file=None):
        self.buffer_ = io.StringIO()
        self.file = file

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        if self.file is not None:
            self.file.write(text)
            self.file.flush()
        return len(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def fileno(self) -> int:
        if self.file is None:
            raise io.UnsupportedOperation("the run log is in memory")
        return self.file.fileno()

    def getvalue(self) -> str:
        return self.buffer_.getvalue()


def compute_run(spec_dict: dict, settings_dict: dict, *, log_file=None, taken_over: dict | None = None) -> RunResult:
    """Run one spec in this process and return everything it produced; write nothing under the results.

    Honours ``threads``, ``device`` and ``timeout`` of the settings. Never raises for a failing run: the
    failure (with ``timed_out`` for a run over its limit) is in the returned record. ``log_file`` (an
    open text file) receives the log as it is written, for a driver that shows progress on disk.
    """
    t_start = time.perf_counter()
    spec = RunSpec.from_dict(spec_dict)
    settings = RunSettings(**settings_dict)
    rid = spec.run_id
    log = _Tee(log_file)
    config = EvalConfig.from_dict(settings.evaluation)
    record = Record(
        run_id=rid, spec=spec.to_dict(), started_at=_now(),
        settings={"threads": settings.threads, "timeout": settings.timeout, "device": settings.device},
        environment=environment(), evaluation=config.to_dict(), evaluation_digest=config.digest,
        method=registry_order(spec.method, spec.dataset),
    )
    result = RunResult(record)

    def say(msg: str) -> None:
        log.write(f"{_now()} {msg}\n")

    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    say(f"run {rid}: {spec.describe()}")
    if taken_over:
        say(f"took over the claim of a dead process ({_holder_text(taken_over)})")
    say(f"spec {spec.to_dict()}")
    say(f"threads {settings.threads}, timeout {settings.timeout}, device {settings.device}")
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
                _thread_limits(settings.threads, spec.method):
            _warm_up_metrics()
            with _time_limit(settings.timeout):
                out = evaluate_run(spec, data_root=settings.data_root, device=settings.device, config=config, log=say)
        record.status, record.error = "ok", None
        record.dataset = out.dataset
        record.data_checksum = out.data_checksum
        record.protocol = out.protocol.to_dict()
        record.mask = out.mask
        record.method = {**out.method, **record.method}
        record.metrics = out.metrics
        record.timings = {**out.timings, "total_s": time.perf_counter() - t_start}
        record.memory = out.memory
        record.device = {**out.device, "threads": settings.threads}
        record.extras = out.extras
        result.codes = codes_arrays(out.codes, spec.n_bits, out.query_repr, out.state)
        result.protocol = out.protocol
    except (Exception, RunTimeout) as exc:
        tb = traceback.format_exc()
        say(f"FAILED: {type(exc).__name__}: {exc}\n{tb}")
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        record.status = "failed"
        record.error = {"type": type(exc).__name__, "message": message, "traceback": tb,
                        "timed_out": isinstance(exc, RunTimeout)}
        record.metrics = None
        record.timings = {"total_s": time.perf_counter() - t_start}
        record.device = {"requested": settings.device, "threads": settings.threads}
    finally:
        root_logger.removeHandler(handler)
    record.finished_at = _now_precise()
    say(f"record written: status {record.status}")
    result.log_text = log.getvalue()
    return result


def execute_run(spec_dict: dict, settings_dict: dict, *, force: bool = False, retry_failed: bool = False,
                seen_finished: str | None = None) -> RunOutcome:
    """Claim one spec, run it (:func:`compute_run`) and write its files. Never raises for a failing run.

    Takes plain dicts so that it pickles cheaply into a worker process. ``seen_finished`` is the
    ``finished_at`` of the record the caller saw when it planned the run (None: no record): a
    different record found after claiming was written by another runner meanwhile, and is kept.
    Returns status ``"running elsewhere"`` when another live process holds the claim.
    """
    settings = RunSettings(**settings_dict)
    store = RecordStore(settings.results_dir)
    rid = RunSpec.from_dict(spec_dict).run_id
    claim = store.claim(rid)
    if not isinstance(claim, Claim):
        return RunOutcome(rid, ELSEWHERE, 0.0, f"claimed by {_holder_text(claim)}")
    with claim:
        rec = store.read(rid)
        if rec is not None:
            fresh = rec.finished_at != seen_finished
            wanted = force or (retry_failed and not rec.ok)
            if fresh or not wanted:
                return RunOutcome(rid, DONE_ELSEWHERE, 0.0, None)
        log_path = store.log_path(rid)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # the log is on disk from the start, so a long run can be followed while it runs
        with open(log_path, "w", encoding="utf-8") as log_fh:
            result = compute_run(spec_dict, settings_dict, log_file=log_fh, taken_over=claim.taken_over)
        return store.write_result(result)


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


# ---------------------------------------------------------------------------------------- workers
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")


def _worker_init(parent_pid: int) -> None:
    """Tie a pool worker's life to the runner's: it must never outlive it (and keep writing records)."""
    if sys.platform.startswith("linux"):
        # prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills this worker when its parent dies, even
        # by kill -9, and even while the worker is deep in compiled code holding the GIL.
        import ctypes

        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watchdog():  # where there is no parent-death signal: poll for being orphaned
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="cmh-bench-parent-watchdog", daemon=True).start()
    # Ctrl-C reaches the whole process group; the runner decides and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_pool(executor) -> None:
    """Stop every worker now (terminate, then kill), and wait until they are gone."""
    procs = list(getattr(executor, "_processes", {}).values())
    with contextlib.suppress(Exception):
        executor.shutdown(wait=False, kill_workers=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + 3.0
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    with contextlib.suppress(Exception):
        # With the workers gone this returns at once, and lets loky release its semaphores (else its
        # resource tracker warns about leaked ones when the runner exits).
        executor.shutdown(wait=True)


@contextlib.contextmanager
def _termination_signals():
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, like Ctrl-C raises
    KeyboardInterrupt, so the runner stops its workers instead of leaving them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = {}
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        # A signal the runner was started with ignored stays ignored (`nohup` ignores SIGHUP on purpose).
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_pool(todo: list[RunSpec], settings_dict: dict, jobs: int, threads: int, kwargs_of, done) -> None:
    from concurrent.futures import as_completed

    from joblib.externals.loky import ProcessPoolExecutor

    env = {name: str(threads) for name in _THREAD_ENV}
    executor = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), initializer=_worker_init,
                                   initargs=(os.getpid(),), env=env)
    try:
        futures = [executor.submit(execute_run, spec.to_dict(), settings_dict, **kwargs_of(spec)) for spec in todo]
        for fut in as_completed(futures):
            done(fut.result())
    except BaseException:
        _stop_pool(executor)
        raise
    executor.shutdown(wait=True)


# ---------------------------------------------------------------------------------------- checks
def check_settings(settings: RunSettings, jobs: int = 1) -> None:
    """Every execution setting that cannot work fails here, in one line, before any work."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs {jobs!r} is invalid; valid: a positive integer")
    t = settings.timeout
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                          or not 0 < t <= MAX_TIMEOUT_S):
        raise InputError(f"--timeout {t!r} is invalid; valid: a positive finite number of seconds up to "
                         f"{MAX_TIMEOUT_S:.0f}")
    if isinstance(settings.threads, bool) or not isinstance(settings.threads, int) or settings.threads < 1:
        raise InputError(f"--threads {settings.threads!r} is invalid; valid: a positive integer")
    check_writable_dir(settings.results_dir, "--results-dir")
    if settings.data_root is not None:
        root = str(settings.data_root)
        if not root.strip():
            raise InputError("--data-root '' is invalid; valid: a directory (omit it for $CMH_DATA_ROOT or ./data)")
        if not Path(root).is_dir():
            raise InputError(f"--data-root {root!r} is not a directory; valid: an existing directory")


def check_writable_dir(path, flag: str) -> Path:
    """A directory that exists or can be created, and can be written: one-line InputError otherwise.

    Creates nothing: it walks up to the deepest existing ancestor and checks that one."""
    text = "" if path is None else str(path)
    if not text.strip():
        raise InputError(f"{flag} {text!r} is invalid; valid: a directory path (it is created when absent)")
    p = Path(text)
    probe = p
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{flag} {text!r}: {probe} is a broken symbolic link; valid: a directory")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        where = "is a file" if probe == p else f"is under {probe}, which is a file"
        raise InputError(f"{flag} {text!r} {where}; valid: a directory (it is created when absent)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {text!r}: {probe} is not writable by this user; valid: a writable directory")
    return p


@dataclass
class Plan:
    """What :func:`run_suite` does with each spec: run it, rescore its record, or keep its record.

    ``seen`` maps each run id to the ``finished_at`` of the record seen while planning (None: none);
    ``stale_data`` lists the runs rerun because the data files changed since they were recorded.
    """

    todo: list[RunSpec] = field(default_factory=list)
    rescore: list[RunSpec] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale_data: list[str] = field(default_factory=list)
    seen: dict[str, str | None] = field(default_factory=dict)


def plan_runs(specs: list[RunSpec], store: RecordStore, *, force: bool = False, retry_failed: bool = False,
              settings: RunSettings | None = None) -> Plan:
    """Sort specs into runs to dispatch, records to rescore and records to keep.

    Without ``settings`` a record is current when it exists (and is ok, under ``retry_failed``). With
    them, an ok record is also checked against the data: a data checksum other than the files' now is
    rerun (never reused), and other evaluation settings are rescored from the stored codes.
    """
    plan = Plan()
    digest = None if settings is None else EvalConfig.from_dict(settings.evaluation).digest
    checksums: dict[tuple, str] = {}
    for spec in specs:
        if spec.run_id in plan.seen:
            continue
        rec = store.read(spec.run_id)
        plan.seen[spec.run_id] = None if rec is None else rec.finished_at
        if rec is None or force or (retry_failed and not rec.ok):
            plan.todo.append(spec)
            continue
        if settings is None or not rec.ok:
            plan.skipped.append(spec.run_id)
            continue
        key = (spec.dataset, spec.options_json)
        if key not in checksums:
            checksums[key] = data_checksum(spec.dataset, settings.data_root, spec.dataset_options)
        if rec.data_checksum != checksums[key]:
            plan.stale_data.append(spec.run_id)
            plan.todo.append(spec)
        elif needs_rescore(rec, digest):
            plan.rescore.append(spec)
        else:
            plan.skipped.append(spec.run_id)
    return plan


def pending_specs(specs: list[RunSpec], store: RecordStore, *, force: bool = False, retry_failed: bool = False,
                  settings: RunSettings | None = None) -> list[RunSpec]:
    """The runs to dispatch (see :func:`plan_runs`), each once, in the order given."""
    return plan_runs(specs, store, force=force, retry_failed=retry_failed, settings=settings).todo


def rescore_runs(specs: list[RunSpec], store: RecordStore, settings: RunSettings) -> tuple[list[str], list[RunSpec]]:
    """Recompute the metrics of recorded runs under ``settings.evaluation`` from their stored codes.

    Each run is claimed while its record is rewritten. Returns (run ids rescored, specs that could not
    be rescored and must be rerun); a run claimed elsewhere is left to its holder.
    """
    config = EvalConfig.from_dict(settings.evaluation)
    done, rerun = [], []
    for spec in specs:
        claim = store.claim(spec.run_id)
        if not isinstance(claim, Claim):
            continue
        with claim:
            rec = store.read(spec.run_id)
            if rec is None or not needs_rescore(rec, config.digest):
                continue
            try:
                new = rescore_record(store, rec, config, settings.data_root)
            except CannotRescore as exc:
                store.write_log(spec.run_id, _read_text(store.log_path(spec.run_id))
                                + f"{_now()} cannot rescore ({exc}); rerunning\n")
                rerun.append(spec)
                continue
            store.write_record(new)
            done.append(spec.run_id)
    return done, rerun


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _cluster_dispatch():
    try:
        from benchmark.cluster import dispatch
    except ImportError as exc:
        raise InputError(f"--cluster needs the Dask dispatcher (benchmark.cluster), which cannot be imported "
                         f"({exc}); valid: run without --cluster, or install the 'cluster' extra") from None
    return dispatch


def run_suite(specs: list[RunSpec], settings: RunSettings, *, jobs: int = 1, force: bool = False,
              retry_failed: bool = False, progress: bool | None = None, echo=None, label: str = "suite",
              cluster: str | None = None, cluster_jobs: int | None = None) -> SuiteSummary:
    """Run every spec that has no current record; returns what happened (records are on disk).

    Records scored under other evaluation settings are rescored from their stored codes, without a
    fit (:mod:`benchmark.rescore`); records of data files that changed since are rerun. ``cluster``
    hands the runs to :func:`benchmark.cluster.dispatch` (Dask); without it runs go to this process
    (``jobs=1``) or a local process pool. SIGTERM/SIGHUP raise :class:`Terminated` (a
    KeyboardInterrupt) after the workers are stopped.
    """
    echo = echo or (lambda line: print(line, file=sys.stderr))
    check_settings(settings, jobs)
    for spec in specs:
        validate_spec(spec, settings.device)
    dispatch = _cluster_dispatch() if cluster is not None else None

    store = RecordStore(settings.results_dir)
    Path(settings.results_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(store.root)
    plan = plan_runs(specs, store, force=force, retry_failed=retry_failed, settings=settings)
    seen = plan.seen
    if plan.stale_data:
        echo(f"{label}: {len(plan.stale_data)} recorded run(s) read data files that changed since; rerunning them")
    if plan.rescore:
        t0 = time.perf_counter()
        rescored, rerun = rescore_runs(plan.rescore, store, settings)
        echo(f"{label}: {len(rescored)} recorded run(s) rescored from their stored codes under the suite's "
             f"evaluation settings, no fit ({time.perf_counter() - t0:.1f}s)")
        plan.skipped += rescored
        plan.todo += rerun
        for spec in rerun:  # its record was rewritten by nobody else: rerun it over the old one
            seen[spec.run_id] = None if (r := store.read(spec.run_id)) is None else r.finished_at
    todo, skipped = plan.todo, plan.skipped
    if skipped:
        echo(f"{label}: {len(skipped)} of {len(seen)} run(s) already recorded, skipped (use --force to rerun)")

    outcomes: list[RunOutcome] = []
    aborted = None
    settings_dict = asdict(settings)

    def kwargs_of(spec: RunSpec) -> dict:
        # Every planned run is wanted (no record, forced, failed under retry, stale data, not
        # rescorable): it replaces the record seen while planning, but not one written since.
        return {"force": True, "seen_finished": seen[spec.run_id]}

    if todo:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        spec_of = {s.run_id: s for s in todo}

        def report(outcome: RunOutcome, write):
            outcomes.append(outcome)
            spec = spec_of[outcome.run_id]
            line = None
            if outcome.status == ELSEWHERE:
                line = f"running elsewhere: {spec.describe()} [{outcome.run_id}] ({outcome.error}); skipped"
            elif outcome.status not in ("ok", DONE_ELSEWHERE):
                line = (f"failed: {spec.describe()} [{outcome.run_id}]: {outcome.error} "
                        f"(log: {store.log_path(outcome.run_id)})")
            if line:
                write(line)

        try:
            with _termination_signals():
                if dispatch is not None:
                    results = dispatch(todo, settings_dict, cluster, jobs=cluster_jobs, store=store, progress=show)
                    for outcome in results:
                        report(outcome, echo)
                else:
                    bar = tqdm(total=len(todo), desc=label, unit="run", disable=not show, file=sys.stderr,
                               dynamic_ncols=True)

                    def done(outcome: RunOutcome):
                        bar.update(1)
                        report(outcome, lambda line: bar.write(line, file=sys.stderr) if show else echo(line))

                    try:
                        if jobs == 1 or len(todo) == 1:
                            for spec in todo:
                                done(execute_run(spec.to_dict(), settings_dict, **kwargs_of(spec)))
                        else:
                            _run_pool(todo, settings_dict, jobs, settings.threads, kwargs_of, done)
                    finally:
                        bar.close()
        except KeyboardInterrupt:
            raise
        except InputError:
            raise
        except Exception as exc:  # a worker died (killed, out of memory): what finished is on disk
            aborted = " ".join(f"{type(exc).__name__}: {exc}".split())
            echo(f"{label}: stopped early ({aborted}); rerun the same command to resume")

    elsewhere = {o.run_id for o in outcomes if o.status == ELSEWHERE}
    statuses = {}
    for rid in seen:
        rec = store.read(rid)
        if rec is not None:
            statuses[rid] = rec.status
        else:
            statuses[rid] = ELSEWHERE if rid in elsewhere else "missing"
    return SuiteSummary(total=len(seen), skipped=skipped, outcomes=outcomes, statuses=statuses, aborted=aborted)
