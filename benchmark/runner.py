"""Run a list of specs: skip the finished ones, run the rest (in parallel if asked), record each.

* A run whose record exists is skipped unless ``force`` (or ``retry_failed`` for failed records).
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

from benchmark.errors import InputError
from benchmark.evaluate import EvalConfig, environment, evaluate_run, validate_spec
from benchmark.records import SCHEMA_VERSION, Claim, RecordStore, remove_stale_temporaries
from benchmark.suites import RunSpec

__all__ = ["RunSettings", "RunOutcome", "SuiteSummary", "RunTimeout", "Terminated", "run_specs", "execute_run",
           "available_cores", "resolve_run_device", "MAX_TIMEOUT_S"]

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
        return sorted(rid for rid, st in self.statuses.items() if st not in ("ok", ELSEWHERE))

    @property
    def elsewhere(self) -> list[str]:
        """Runs claimed by another live process and not recorded yet (not failures of this runner)."""
        return sorted(rid for rid, st in self.statuses.items() if st == ELSEWHERE)

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


def _now_precise() -> str:
    # finished_at tells a record apart from the one a runner saw when it planned (see execute_run)
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------- one run
def _holder_text(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started_at', '?')}"


def execute_run(spec_dict: dict, settings_dict: dict, *, force: bool = False, retry_failed: bool = False,
                seen_finished: str | None = None) -> RunOutcome:
    """Claim one spec, run it and write its files. Never raises for a failing run: it records it.

    Takes plain dicts so that it pickles cheaply into a worker process. ``seen_finished`` is the
    ``finished_at`` of the record the caller saw when it planned the run (None: no record): a
    different record found after claiming was written by another runner meanwhile, and is kept.
    Returns status ``"running elsewhere"`` when another live process holds the claim.
    """
    spec = RunSpec.from_dict(spec_dict)
    settings = RunSettings(**settings_dict)
    store = RecordStore(settings.results_dir)
    rid = spec.run_id
    claim = store.claim(rid)
    if not isinstance(claim, Claim):
        return RunOutcome(rid, ELSEWHERE, 0.0, f"claimed by {_holder_text(claim)}")
    with claim:
        rec = store.read(rid)
        if rec is not None:
            fresh = rec.get("finished_at") != seen_finished
            wanted = force or (retry_failed and rec.get("status") != "ok")
            if fresh or not wanted:
                return RunOutcome(rid, DONE_ELSEWHERE, 0.0, None)
        return _execute_claimed(spec, settings, store, claim)


def _execute_claimed(spec: RunSpec, settings: RunSettings, store: RecordStore, claim: Claim) -> RunOutcome:
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
        if claim.taken_over:
            say(f"took over the claim of a dead process ({_holder_text(claim.taken_over)})")
        say(f"spec {spec.to_dict()}")
        say(f"threads {settings.threads}, timeout {settings.timeout}, device {settings.device}")
        try:
            with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh), \
                    _thread_limits(settings.threads, spec.method):
                _warm_up_metrics()
                with _time_limit(settings.timeout):
                    out = evaluate_run(spec, data_root=settings.data_root, device=settings.device, config=config, log=say)
                protocol_path = store.save_protocol(out.protocol)
                codes_path, codes_sha256 = store.write_codes(rid, out.codes, spec.n_bits, out.query_repr)
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
                codes_sha256=codes_sha256,
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
        record["finished_at"] = _now_precise()
        store.write_record(record)  # last: a record exists only with complete codes beside it
        store.remove_other_codes(rid, record.get("codes"))
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


def run_specs(specs: list[RunSpec], settings: RunSettings, *, jobs: int = 1, force: bool = False,
              retry_failed: bool = False, progress: bool | None = None, echo=None,
              label: str = "suite") -> SuiteSummary:
    """Run every spec that has no record yet; returns what happened (records are on disk).

    SIGTERM/SIGHUP raise :class:`Terminated` (a KeyboardInterrupt) after the workers are stopped.
    """
    echo = echo or (lambda line: print(line, file=sys.stderr))
    check_settings(settings, jobs)
    EvalConfig.from_dict(settings.evaluation)
    for spec in specs:
        validate_spec(spec, settings.device)

    store = RecordStore(settings.results_dir)
    Path(settings.results_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(store.root)
    todo, skipped = [], []
    seen: dict[str, str | None] = {}
    for spec in specs:
        if spec.run_id in seen:
            continue
        rec = store.read(spec.run_id)
        seen[spec.run_id] = None if rec is None else rec.get("finished_at")
        if rec is not None and not force and not (retry_failed and rec.get("status") != "ok"):
            skipped.append(spec.run_id)
        else:
            todo.append(spec)
    if skipped:
        echo(f"{label}: {len(skipped)} of {len(seen)} run(s) already recorded, skipped (use --force to rerun)")

    outcomes: list[RunOutcome] = []
    aborted = None
    settings_dict = asdict(settings)

    def kwargs_of(spec: RunSpec) -> dict:
        return {"force": force, "retry_failed": retry_failed, "seen_finished": seen[spec.run_id]}

    if todo:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(todo), desc=label, unit="run", disable=not show, file=sys.stderr, dynamic_ncols=True)
        spec_of = {s.run_id: s for s in todo}

        def done(outcome: RunOutcome):
            outcomes.append(outcome)
            bar.update(1)
            spec = spec_of[outcome.run_id]
            line = None
            if outcome.status == ELSEWHERE:
                line = f"running elsewhere: {spec.describe()} [{outcome.run_id}] ({outcome.error}); skipped"
            elif outcome.status not in ("ok", DONE_ELSEWHERE):
                line = (f"failed: {spec.describe()} [{outcome.run_id}]: {outcome.error} "
                        f"(log: {store.log_path(outcome.run_id)})")
            if line:
                bar.write(line, file=sys.stderr) if show else echo(line)

        try:
            with _termination_signals():
                if jobs == 1 or len(todo) == 1:
                    for spec in todo:
                        done(execute_run(spec.to_dict(), settings_dict, **kwargs_of(spec)))
                else:
                    _run_pool(todo, settings_dict, jobs, settings.threads, kwargs_of, done)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a worker died (killed, out of memory): what finished is on disk
            aborted = " ".join(f"{type(exc).__name__}: {exc}".split())
            echo(f"{label}: stopped early ({aborted}); rerun the same command to resume")
        finally:
            bar.close()

    elsewhere = {o.run_id for o in outcomes if o.status == ELSEWHERE}
    statuses = {}
    for rid in seen:
        rec = store.read(rid)
        if rec is not None:
            statuses[rid] = rec.get("status", "failed")
        else:
            statuses[rid] = ELSEWHERE if rid in elsewhere else "missing"
    return SuiteSummary(total=len(seen), skipped=skipped, outcomes=outcomes, statuses=statuses, aborted=aborted)
