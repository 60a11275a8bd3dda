"""Run a suite's pending runs on a Dask cluster; the driver writes every record.

``--cluster`` values (:func:`parse_cluster`):

* ``local`` or ``local:N``: a :class:`distributed.LocalCluster` of N worker processes on 127.0.0.1
  (N defaults to ``--cluster-jobs``, else ``cores // threads``), one run at a time per worker;
* ``tcp://HOST:PORT``: an existing scheduler (``dask scheduler`` plus ``dask worker`` on other hosts);
* ``FILE.yaml``: a dask-jobqueue cluster: ``class`` (e.g. ``SLURMCluster``), its ``options`` and an
  optional ``jobs`` (overridden by ``--cluster-jobs``), see ``docs/cluster.md``.

Why ``Client.submit`` / ``as_completed`` and not joblib's Dask backend: each run is its own future, so
(1) a deep run on a GPU asks ``resources={"GPU": 1}`` while CPU runs ask nothing (joblib's backend
applies one set of resources to a whole ``Parallel`` call); (2) a run whose workers keep dying ends as
its own :class:`distributed.KilledWorker` error, which the driver turns into a failed record while
the other runs go on (under joblib the first such error aborts the whole call); (3) results arrive one
by one as they complete, so the driver writes each record at once and a killed driver loses only the
runs still in flight.

The driver owns the results directory: a worker computes a run with
:func:`benchmark.runner.compute_run`, which writes nothing, and returns its
:class:`benchmark.records.RunResult`; the driver writes it with :meth:`RecordStore.write_result`
(record last, atomically). Workers need the data root, not the results directory.

Dask runs tasks in worker threads, where a SIGALRM time limit cannot fire. Each run therefore runs
in a child process of the worker (a "run process", forked from a per-worker forkserver that has the
libraries imported, and kept for the worker's next run, so its dataset cache and compiled kernels
serve it, as in a local pool worker): ``compute_run``'s own limit works in the child's main thread,
and the worker kills the child when it outlives ``timeout + KILL_GRACE_S`` (a call into compiled code
that never returns), recording the run as timed out; the next run gets a fresh child. The child also
isolates a crashing run from the worker. A child dies with its worker: the forkserver exits when the
worker does, and the child has the kernel's parent-death signal (Linux).

A worker that dies mid-run makes the scheduler run the task on another worker; after
``ALLOWED_FAILURES`` such deaths (set on the schedulers this module starts; a ``tcp://`` scheduler
keeps its own setting) the run is recorded as failed with the reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cmhcore.errors import InputError

__all__ = ["ClusterTarget", "parse_cluster", "dispatch", "run_on_worker", "ALLOWED_FAILURES", "KILL_GRACE_S",
           "INSTALL_HINT"]

INSTALL_HINT = 'pip install "cmh-bench[cluster]"'
# Worker deaths a run survives before it is recorded as failed (Dask's scheduler.allowed-failures).
ALLOWED_FAILURES = 2
# The child of a run that ignores its own time limit is killed this many seconds after it.
KILL_GRACE_S = 30.0
# How long to wait for the first worker of a cluster this module did not start.
WORKER_WAIT_S = 60.0

_VALID = "local, local:N (N >= 1), tcp://HOST:PORT or a dask-jobqueue FILE.yaml"
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
# Imported once in each worker's forkserver, so that a run's child starts in a fraction of a second.
# Imports only: nothing here starts a thread pool, which a fork would not carry over safely.
# torch is left to the deep runs that need it (the run process keeps it for the next run).
_PRELOAD = ["numpy", "scipy.linalg", "scipy.sparse", "numba", "benchmark.runner", "methods", "datasets"]


# ---------------------------------------------------------------------------------------- the --cluster value
@dataclass(frozen=True)
class ClusterTarget:
    """A parsed ``--cluster`` value: ``kind`` is ``local``, ``address`` or ``jobqueue``."""

    kind: str
    workers: int | None = None
    address: str | None = None
    path: str | None = None
    cls: str | None = None
    options: dict | None = None
    jobs: int | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return f"local cluster of {self.workers} worker(s)"
        if self.kind == "address":
            return f"scheduler {self.address}"
        return f"{self.cls} from {self.path}"


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_cluster(value, *, jobs: int | None = None, threads: int = 1) -> ClusterTarget:
    """Check a ``--cluster`` value before any work; a bad one is one :class:`InputError` line.

    ``jobs`` (``--cluster-jobs``) sizes a local cluster without ``:N`` and scales a jobqueue cluster."""
    text = "" if value is None else str(value).strip()
    if jobs is not None and not _positive_int(jobs):
        raise InputError(f"--cluster-jobs {jobs!r} is invalid; valid: a positive integer")
    if text == "local" or text.startswith("local:"):
        if text == "local":
            from benchmark.runner import available_cores

            n = jobs or max(1, available_cores() // max(1, threads))
        else:
            count = text[len("local:"):]
            if not count.isdigit() or int(count) < 1:
                raise InputError(f"--cluster {text!r} is invalid; valid: {_VALID}")
            n = int(count)
        return ClusterTarget("local", workers=n)
    if text.startswith("tcp://"):
        host, _, port = text[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"--cluster {text!r} is invalid; valid: tcp://HOST:PORT with a port in 1-65535")
        return ClusterTarget("address", address=text)
    if text.endswith((".yaml", ".yml")):
        return _parse_jobqueue_file(text, jobs)
    raise InputError(f"--cluster {text!r} is invalid; valid: {_VALID}")


def _parse_jobqueue_file(text: str, jobs: int | None) -> ClusterTarget:
    import yaml

    path = Path(text)
    if not path.is_file():
        raise InputError(f"--cluster {text!r}: no such file; valid: a YAML file with `class` and `options`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--cluster {text!r} is not readable YAML ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("class"), str):
        raise InputError(f"--cluster {text!r}: needs a mapping with `class` (e.g. SLURMCluster) and `options`")
    unknown = set(data) - {"class", "options", "jobs"}
    if unknown:
        raise InputError(f"--cluster {text!r}: unknown key {sorted(unknown)[0]!r}; valid: class, options, jobs")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise InputError(f"--cluster {text!r}: `options` must be a mapping of the cluster class's keyword arguments")
    file_jobs = data.get("jobs")
    if file_jobs is not None and not _positive_int(file_jobs):
        raise InputError(f"--cluster {text!r}: jobs={file_jobs!r} is invalid; valid: a positive integer")
    n = jobs or file_jobs
    if n is None:
        raise InputError(f"--cluster {text!r}: no scale; give `jobs: N` in the file or --cluster-jobs N")
    return ClusterTarget("jobqueue", path=str(path), cls=data["class"], options=options, jobs=n)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError(f"--cluster needs Dask distributed, which is not installed; run: {INSTALL_HINT}") from None
    return distributed


def _jobqueue_class(target: ClusterTarget):
    import importlib

    name = target.cls
    module_name, _, cls_name = name.rpartition(".") if "." in name else ("dask_jobqueue", "", name)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise InputError(f"--cluster {target.path!r}: class {name} needs {module_name}, which is not installed; "
                         f"run: {INSTALL_HINT}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise InputError(f"--cluster {target.path!r}: class {name!r} is not in {module_name}; valid: e.g. "
                         "SLURMCluster, PBSCluster, SGECluster, LSFCluster")
    return cls


@contextlib.contextmanager
def open_client(target: ClusterTarget, *, gpu: bool = False, dashboard: bool | None = None):
    """A connected :class:`distributed.Client` (and the cluster this module started, closed on exit)."""
    distributed = _import_distributed()
    import dask

    # Read by the schedulers started here (LocalCluster's and jobqueue's run in this process);
    # worker processes started here are not daemonic, so the forkserver below may start.
    # worker-saturation 1.0: a worker holds only the runs it is running, so a worker that dies takes
    # only those runs down (and counts a death against them alone).
    config = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES, "distributed.worker.daemon": False,
              "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(config):
        if target.kind == "local":
            if dashboard is None:  # the dashboard needs bokeh, which the [cluster] extra leaves out
                dashboard = _has_module("bokeh")
            # The scheduler's HTTP server (health, metrics; the dashboard when asked) always starts:
            # on a free port, so that clusters side by side never fight over 8787.
            with distributed.LocalCluster(
                    n_workers=target.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": bool(dashboard)},
                    resources={"GPU": 1} if gpu else None, silence_logs=logging.ERROR) as cluster, \
                    distributed.Client(cluster) as client:
                yield client
        elif target.kind == "address":
            try:
                client = distributed.Client(target.address, timeout="20s")
            except OSError as exc:
                raise InputError(f"--cluster {target.address}: no scheduler answers there "
                                 f"({' '.join(str(exc).split())[:160]}); start one with `dask scheduler`") from None
            with client:
                yield client
        else:
            cls = _jobqueue_class(target)
            try:
                cluster = cls(**target.options)
            except (TypeError, ValueError) as exc:
                raise InputError(f"--cluster {target.path!r}: {target.cls} rejects its options "
                                 f"({' '.join(str(exc).split())[:200]})") from None
            with cluster, distributed.Client(cluster) as client:
                cluster.scale(jobs=target.jobs)
                yield client


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _dashboard(client) -> str | None:
    """The scheduler's dashboard address, when its status page answers (it needs bokeh there)."""
    import urllib.request

    with contextlib.suppress(Exception):
        if "dashboard" in client.scheduler_info().get("services", {}):
            link = client.dashboard_link
            with urllib.request.urlopen(link, timeout=2) as response:
                # without bokeh the scheduler serves a page saying the dashboard needs it
                if response.status == 200 and b"for the dashboard" not in response.read(4096):
                    return link
    return None


# ---------------------------------------------------------------------------------------- on the worker
_LOCK = threading.Lock()
# Idle run processes of this worker process, by threads per run.
_IDLE: dict[int, list["_RunProcess"]] = {}


def _forkserver(threads: int):
    """The worker's forkserver context. The run processes it forks inherit its environment, so the
    thread caps go there before it starts (once per worker process), as a local pool worker gets them."""
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _serve(conn, threads: int) -> None:
    """Body of a run process: compute each run it is sent, send back its result, until the pipe closes.

    Like a local pool worker it lives across runs, so its dataset cache and compiled kernels serve
    the next run on the same worker."""
    if sys.platform.startswith("linux"):
        import ctypes

        # prctl(PR_SET_PDEATHSIG, SIGKILL): die with the forkserver, which exits with the worker.
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    from benchmark.runner import compute_run

    conn.send("ready")  # the worker starts the hard time limit once imports are done
    while True:
        try:
            spec_dict, settings_dict = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(compute_run(spec_dict, settings_dict))


class _RunProcess:
    """A child process of the worker that computes runs one at a time (see :func:`_serve`)."""

    def __init__(self, threads: int):
        ctx = _forkserver(threads)
        self.threads = threads
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_serve, args=(child_conn, threads), name="cmh-bench-run", daemon=False)
        # Dask marks its worker processes daemonic by default, and multiprocessing then refuses to start
        # children. That flag exists to stop children outliving their parent, which the forkserver's exit
        # and the parent-death signal already ensure; it is cleared only while this child starts (the
        # caller holds _LOCK).
        config = multiprocessing.current_process()._config
        daemonic = config.get("daemon")
        config["daemon"] = False
        try:
            self.proc.start()
        finally:
            if daemonic is not None:
                config["daemon"] = daemonic
        child_conn.close()
        self.ready = False

    def run(self, spec_dict: dict, settings_dict: dict, hard_limit_s: float | None):
        """The run's result, ``"died"`` or ``"timed out"`` (then the process is gone)."""
        if not self.ready:
            try:
                self.ready = self.conn.recv() == "ready"
            except (EOFError, OSError):
                self.stop()
                return "died"
        self.conn.send((spec_dict, settings_dict))
        if self.conn.poll(hard_limit_s):
            try:
                return self.conn.recv()
            except (EOFError, OSError):  # it died before it sent anything
                self.stop()
                return "died"
        self.stop()
        return "timed out"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5.0)

    def how_it_ended(self) -> str:
        code = self.proc.exitcode
        return f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"


def run_on_worker(spec_dict: dict, settings_dict: dict, hard_limit_s: float | None = None):
    """The Dask task: one run in a run process of this worker; its :class:`RunResult` goes to the driver.

    Never raises for a failing run: a run process that dies, or is killed at ``hard_limit_s``, gives
    a failed result (timed out in the second case) and is replaced for the next run."""
    threads = int(settings_dict.get("threads") or 1)
    started = time.perf_counter()
    with _LOCK:
        idle = _IDLE.setdefault(threads, [])
        worker = idle.pop() if idle else None
        if worker is None:
            worker = _RunProcess(threads)
    outcome = worker.run(spec_dict, settings_dict, hard_limit_s)
    if outcome == "died":
        return _failed_result(spec_dict, settings_dict, "RunProcessDied",
                              f"the run's process died ({worker.how_it_ended()}) on {_host()}", started)
    if outcome == "timed out":
        timeout = settings_dict.get("timeout") or 0
        return _failed_result(spec_dict, settings_dict, "RunTimeout",
                              f"exceeded the time limit of {timeout:g}s and was killed {hard_limit_s - timeout:g}s "
                              "later", started, timed_out=True)
    with _LOCK:
        _IDLE.setdefault(threads, []).append(worker)
    return outcome


def _host() -> str:
    import socket

    return socket.gethostname()


def _failed_result(spec_dict: dict, settings_dict: dict, error_type: str, message: str, started: float,
                   *, timed_out: bool = False):
    """A failed :class:`RunResult` for a run whose process never returned one (killed, died, or given
    up on by Dask)."""
    import datetime as dt

    from benchmark.records import Record, RunResult
    from benchmark.suites import RunSpec

    spec = RunSpec.from_dict(spec_dict)
    now = dt.datetime.now(dt.timezone.utc)
    seconds = time.perf_counter() - started
    record = Record(
        run_id=spec.run_id, spec=spec.to_dict(), status="failed",
        error={"type": error_type, "message": f"{error_type}: {message}", "traceback": "", "timed_out": timed_out},
        started_at=(now - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds"),
        finished_at=now.isoformat(timespec="microseconds"),
        settings={k: settings_dict.get(k) for k in ("threads", "timeout", "device")},
        evaluation=settings_dict.get("evaluation"), timings={"total_s": seconds},
        device={"requested": settings_dict.get("device"), "threads": settings_dict.get("threads")},
    )
    log = f"{record.finished_at} run {spec.run_id}: {spec.describe()}\n{record.finished_at} FAILED: {error_type}: {message}\n"
    return RunResult(record=record, codes=None, protocol=None, log_text=log)


# ---------------------------------------------------------------------------------------- the driver
def _wants_gpu(spec, settings_dict: dict) -> bool:
    """A deep run (a method with a ``device`` parameter) on an accelerator holds one GPU."""
    if str(settings_dict.get("device", "cpu")) == "cpu":
        return False
    from methods import get_method

    try:
        return "device" in get_method(spec.method)._get_param_names()
    except Exception:  # noqa: BLE001 - an unimportable method fails in its own run
        return False


def _check_gpu_workers(client, target: ClusterTarget, n_gpu_runs: int) -> None:
    if not n_gpu_runs or target.kind == "jobqueue":  # jobqueue workers may not be up yet
        return
    workers = client.scheduler_info().get("workers", {})
    if not any((w.get("resources") or {}).get("GPU", 0) >= 1 for w in workers.values()):
        raise InputError(f"--cluster {target.address or 'local'}: {n_gpu_runs} run(s) need a GPU but no worker offers "
                         "the GPU resource; start workers with `dask worker ADDRESS --resources GPU=1`, or use "
                         "--device cpu")


def _status(result) -> str:
    record = result.record
    status = getattr(record, "status", None) or "failed"
    if status != "ok" and getattr(record, "timed_out", False):
        return "timed out"
    return status


def dispatch(specs, settings_dict: dict, cluster: str, *, jobs: int | None = None, store=None,
             progress: bool | None = None, echo=None, dashboard: bool | None = None):
    """Run ``specs`` (already filtered: every one is to run) on ``cluster``; returns a
    :class:`benchmark.runner.RunOutcome` per spec, in completion order.

    Each result is written with ``store.write_result`` as soon as it arrives. A run that Dask gives up
    on (its workers kept dying) is written as a failed record with the reason. Ctrl-C cancels what is
    still queued; a rerun resumes.
    """
    echo = echo or (lambda line: print(line, file=sys.stderr))
    threads = int(settings_dict.get("threads") or 1)
    target = parse_cluster(cluster, jobs=jobs, threads=threads)
    _import_distributed()
    if store is None:
        from benchmark.records import RecordStore

        store = RecordStore(settings_dict["results_dir"])
    specs = list(specs)
    if not specs:
        return []
    gpu = {s.run_id: _wants_gpu(s, settings_dict) for s in specs}
    timeout = settings_dict.get("timeout")
    hard_limit = None if timeout is None else float(timeout) + KILL_GRACE_S
    outcomes = []

    from distributed import as_completed
    from tqdm.auto import tqdm

    with open_client(target, gpu=any(gpu.values()), dashboard=dashboard) as client:
        if target.kind == "address":
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        _check_gpu_workers(client, target, sum(gpu.values()))
        show = sys.stderr.isatty() if progress is None else progress
        link = _dashboard(client)
        echo(f"cluster: {target.describe()}, {len(specs)} run(s)" + (f"; dashboard {link}" if link else ""))
        bar = tqdm(total=len(specs), desc="cluster", unit="run", disable=not show, file=sys.stderr,
                   dynamic_ncols=True)
        counts = {"ok": 0, "failed": 0, "timed out": 0}
        tag = uuid.uuid4().hex[:8]
        futures = {}
        try:
            for spec in specs:
                fut = client.submit(run_on_worker, spec.to_dict(), settings_dict, hard_limit,
                                    key=f"cmh-run-{spec.run_id}-{tag}", pure=False,
                                    resources={"GPU": 1} if gpu[spec.run_id] else None)
                futures[fut.key] = (fut, spec)
            for fut in as_completed([f for f, _ in futures.values()]):
                spec = futures[fut.key][1]
                result = _collect(fut, spec, settings_dict)
                outcome = store.write_result(result)
                outcomes.append(outcome)
                status = _status(result)
                counts[status if status in counts else "failed"] += 1
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in counts.items()), refresh=False)
                bar.update(1)
                fut.release()
        except BaseException:
            with contextlib.suppress(Exception):
                client.cancel([f for f, _ in futures.values()])
            raise
        finally:
            bar.close()
    return outcomes


def _collect(fut, spec, settings_dict: dict):
    """The future's RunResult, or a failed one when Dask gave up on the run (KilledWorker) or the
    task itself raised."""
    started = time.perf_counter()
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            last = getattr(exc, "last_worker", None)
            message = (f"its worker died {ALLOWED_FAILURES + 1} times during the run (Dask gave up; the last "
                       f"worker was {getattr(last, 'address', None) or last or '?'}): out of memory, or killed")
        else:
            message = " ".join(str(exc).split()) or "(no message)"
        return _failed_result(spec.to_dict(), settings_dict, type(exc).__name__, message, started)
