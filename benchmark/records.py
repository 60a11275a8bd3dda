"""Run records: one JSON file per run, the codes beside it, and one tidy DataFrame over all of them.

Layout of a results directory::

    records/<run_id>.json          the record (written last: its existence means the run is complete)
    codes/<run_id>-<sha256:16>.npz packed codes of both modalities, named by their content hash
    logs/<run_id>.log              the run's log
    protocols/<digest>.npz         query/database/train indices, saved once per protocol
    claims/<run_id>.lock           held while a process runs the run (host, pid, start time inside)

Every file is written atomically (a temporary file in the same directory, then ``os.replace``), so
a process killed at any point leaves either the old file, the new file, or a stray temporary file
that readers ignore and :func:`remove_stale_temporaries` deletes. Files get the mode the user's umask
gives (not ``mkstemp``'s 0600). NaN and infinities are written as ``null``.

A record names its codes file and that file's SHA-256, so a record can only ever be read with the
codes its own process wrote (:meth:`RecordStore.read_codes` checks the hash). A run is claimed
(:meth:`RecordStore.claim`) before it starts, so several runners sharing a results directory run
each run once.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import io
import json
import os
import re
import socket
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from benchmark.codesfile import CODE_ARRAYS, codes_arrays, read_codes_file  # noqa: F401 - read_codes_file re-exported
from benchmark.jsonable import to_jsonable
from cmhcore.errors import DataFileError, InputError

__all__ = [
    "Record", "RunResult", "RunOutcome", "RecordStore", "Claim", "to_jsonable", "atomic_write_bytes",
    "atomic_write_json", "remove_stale_temporaries", "load_frame", "read_records",
    "records_to_frame", "read_codes_file", "user_file_mode", "evaluation_digest", "SCHEMA_VERSION",
    "FRAME_COLUMNS",
]

# 2: evaluation_digest, data_checksum and the method's order in the registry; schema-1 records are
# read (those fields derived from what they hold), newer schemas are refused.
SCHEMA_VERSION = 2
_TMP_PREFIX = ".tmp-"
_TMP_RE = re.compile(r"^\.tmp-(\d+)-")


def evaluation_digest(evaluation: dict | None) -> str | None:
    """A short hash of a run's evaluation settings (``EvalConfig.to_dict()``): equal digests, same metrics."""
    if evaluation is None:
        return None
    text = json.dumps(to_jsonable(evaluation), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- the record
@dataclass
class Record:
    """One run's record: the spec, how it went, and what it measured (one JSON file per run).

    ``spec`` is :meth:`RunSpec.to_dict` (``label``, ``dataset_label``, ``n_bits``, ``mask_rate``, ``seed``
    among others). ``status`` is ``ok`` or ``failed``; a failure has ``error`` (type, message, traceback,
    timed_out). ``evaluation`` is the :class:`EvalConfig` the metrics were computed with, and
    ``evaluation_digest`` its hash; ``data_checksum`` names the data files the run read. ``method`` holds
    the class, the full parameters and ``order`` (the method's position in the registry, None for
    plug-ins), and ``dataset`` the dataset's description with its own ``order``; reports sort by these, so
    they need nothing but records. ``codes`` is the codes file (relative path) and ``codes_sha256`` its
    hash; ``rescored_at`` is set when the metrics were recomputed from those codes.
    """

    run_id: str
    spec: dict
    status: str = "failed"
    error: dict | None = None
    schema: int = SCHEMA_VERSION
    started_at: str | None = None
    finished_at: str | None = None
    rescored_at: str | None = None
    log: str | None = None
    settings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    evaluation: dict | None = None
    evaluation_digest: str | None = None
    data_checksum: str | None = None
    dataset: dict | None = None
    protocol: dict | None = None
    mask: dict | None = None
    method: dict | None = None
    metrics: dict | None = None
    timings: dict = field(default_factory=dict)
    memory: dict | None = None
    device: dict | None = None
    extras: dict = field(default_factory=dict)
    codes: str | None = None
    codes_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def timed_out(self) -> bool:
        return bool((self.error or {}).get("timed_out"))

    @property
    def error_message(self) -> str | None:
        return (self.error or {}).get("message") if self.error else None

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict, where: str = "record") -> "Record":
        """A record from its JSON form; schema-1 records are upgraded, unknown schemas refused (one line)."""
        if not isinstance(d, dict):
            raise DataFileError(f"{where}: not a JSON object; delete it and rerun the suite")
        schema = d.get("schema", 1)
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise DataFileError(f"{where}: schema {schema!r} is invalid; valid: 1 to {SCHEMA_VERSION}")
        if schema > SCHEMA_VERSION:
            raise DataFileError(f"{where}: schema {schema} is newer than this cmh-bench reads (1 to {SCHEMA_VERSION}); "
                                "upgrade cmh-bench or use another --results-dir")
        if not isinstance(d.get("run_id"), str) or not isinstance(d.get("spec"), dict):
            raise DataFileError(f"{where}: no run_id or spec; delete it and rerun the suite")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for key in ("settings", "environment", "timings", "extras"):
            if values.get(key) is None:
                values.pop(key, None)
        rec = cls(**values)
        if schema == 1:
            rec.schema = SCHEMA_VERSION
            rec.evaluation_digest = evaluation_digest(rec.evaluation)
            ds = rec.dataset or {}
            # a run on extracted features recorded the features' checksum; its data files are the pixels'
            rec.data_checksum = ds.get("pixels_checksum") or ds.get("checksum")
            rec.method = {**(rec.method or {}), **registry_order(rec.spec.get("method"), rec.spec.get("dataset"))}
        for part in ("metrics", "error", "dataset", "protocol", "mask", "method", "memory", "device"):
            value = getattr(rec, part)
            if value is not None and not isinstance(value, dict):
                raise DataFileError(f"{where}: {part} is a {type(value).__name__}, not an object; delete it and "
                                    "rerun the suite")
        return rec


def registry_order(method: str | None, dataset: str | None) -> dict:
    """``{"order": i, "dataset_order": j}``: the method's position in the built-in registry (None for a
    plug-in) and the dataset's in the dataset registry. The runner writes these into every record."""
    out: dict[str, int | None] = {"order": None, "dataset_order": None}
    with contextlib.suppress(Exception):
        from methods import REGISTRY

        names = list(REGISTRY)
        out["order"] = names.index(method) if method in names else None
    with contextlib.suppress(Exception):
        from datasets import list_datasets

        names = list_datasets()
        out["dataset_order"] = names.index(dataset) if dataset in names else None
    return out


@dataclass
class RunOutcome:
    """What became of one dispatched run (the record itself is on disk)."""

    run_id: str
    status: str
    seconds: float
    error: str | None = None


@dataclass
class RunResult:
    """Everything one run produced, computed anywhere, written by the driver (:meth:`RecordStore.write_result`).

    ``codes`` is the codes file's arrays (:func:`benchmark.codesfile.codes_arrays`), None for a failed run;
    ``protocol`` the :class:`datasets.base.Protocol` the run used (None when it failed before loading).
    """

    record: Record
    codes: dict[str, np.ndarray] | None = None
    protocol: Any = None
    log_text: str = ""


def _umask() -> int:
    """The process's umask, read without changing it where the kernel reports it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the /proc path first)
    os.umask(mask)
    return mask


def user_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The file gets the user's umask (``mkstemp`` alone would leave it 0600, unreadable to a group that
    shares the results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, user_file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=1, sort_keys=True, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    # psutil rather than os.kill(pid, 0): on Windows the latter terminates the process.
    import psutil

    return psutil.pid_exists(pid)


def remove_stale_temporaries(root: Path) -> int:
    """Delete temporary files left by writers that no longer exist (killed mid-write)."""
    removed = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for sub in ("records", "codes", "protocols", "claims"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _TMP_RE.match(p.name)
            if m and not _pid_alive(int(m.group(1))):
                try:
                    p.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed


# ---------------------------------------------------------------------------------------- claims
def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


@dataclass
class Claim:
    """A held claim on one run: released (the lock file removed) by :meth:`release` or on process death.

    ``taken_over`` describes the previous holder when this claim replaced one whose process had died.
    """

    run_id: str
    path: Path
    fd: int | None
    taken_over: dict | None = None

    def release(self) -> None:
        if self.fd is None:
            return
        # Remove while still holding the lock: a waiter that opened the old file sees, after locking
        # it, that the path no longer names its inode and starts over (see RecordStore.claim).
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _claim_info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started_at": _now_iso(),
            "process_started": _process_started(os.getpid())}


def _read_claim_file(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_dead(info: dict) -> bool:
    """True only when the holder is known dead: same host and its pid is gone (or reused since)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    if not _pid_alive(info["pid"]):
        return True
    started, then = _process_started(info["pid"]), info.get("process_started")
    return started is not None and isinstance(then, (int, float)) and started > then + 1.0


class RecordStore:
    """Paths and atomic reads/writes under one results directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def record_path(self, run_id: str) -> Path:
        return self.root / "records" / f"{run_id}.json"

    def codes_path(self, run_id: str, digest: str | None = None) -> Path:
        """Where a run's codes go: named by the first 16 hex digits of their SHA-256 (``digest``)."""
        name = f"{run_id}-{digest[:16]}.npz" if digest else f"{run_id}.npz"
        return self.root / "codes" / name

    def log_path(self, run_id: str) -> Path:
        return self.root / "logs" / f"{run_id}.log"

    def protocol_path(self, digest: str) -> Path:
        return self.root / "protocols" / f"{digest}.npz"

    def claim_path(self, run_id: str) -> Path:
        return self.root / "claims" / f"{run_id}.lock"

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    # -------------------------------------------------------------------------------- claims
    def claim(self, run_id: str) -> Claim | dict:
        """Claim a run before running it: a :class:`Claim`, or the holder's info (host, pid,
        started_at) when another live process holds it.

        An exclusive ``fcntl.flock`` on ``claims/<run_id>.lock`` (the lock file carries the holder's
        host, pid and start time for others to report). fcntl rather than a lock library: the kernel
        drops the lock when its holder dies (even by ``kill -9``), so a dead runner's claim is taken
        over at once, and the lock file can carry the holder's details while locked. Where flock is
        unavailable or unsupported by the file system, an exclusively created file whose holder is
        taken over when it is dead on this host.
        """
        path = self.claim_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX
            fcntl = None
        while True:
            if fcntl is None:
                return self._claim_exclusive(run_id, path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return _read_claim_file(path) or {"host": "?", "pid": "?", "started_at": "?"}
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    fcntl = None  # a file system without flock (some network mounts)
                    continue
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (removed) the file between our open and our lock
                os.close(fd)
                continue
            previous = None
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                if text.strip():  # a holder that died without releasing: its lock went with it
                    previous = _read_claim_file(path) or {"unreadable": True}
                data = json.dumps(_claim_info()).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except BaseException:
                os.close(fd)
                raise
            return Claim(run_id, path, fd, previous)

    def _claim_exclusive(self, run_id: str, path: Path) -> Claim | dict:
        previous = None
        for _ in range(3):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                info = _read_claim_file(path)
                if not _holder_dead(info):
                    return info or {"host": "?", "pid": "?", "started_at": "?"}
                previous = info
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # its holder is dead on this host: take the claim over
                continue
            os.write(fd, json.dumps(_claim_info()).encode())
            return Claim(run_id, path, fd, previous)
        return _read_claim_file(path) or {"host": "?", "pid": "?", "started_at": "?"}

    def claim_holder(self, run_id: str) -> dict | None:
        """Who holds the run's claim now (None when nobody does), without taking it."""
        got = self.claim(run_id)
        if isinstance(got, Claim):
            got.release()
            return None
        return got

    # -------------------------------------------------------------------------------- reading
    def read(self, run_id: str) -> Record | None:
        """The record, or None when absent or unreadable (then the run is treated as not done).

        A record of a schema newer than this code reads raises :class:`DataFileError` (one line): it
        must be neither rerun over nor misread."""
        path = self.record_path(run_id)
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("run_id") != run_id:
            return None
        schema = raw.get("schema", 1)
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
            return Record.from_dict(raw, f"record {path}")  # raises: refused in one line
        try:
            return Record.from_dict(raw, f"record {path}")
        except (DataFileError, TypeError):
            return None

    def run_ids(self) -> list[str]:
        folder = self.root / "records"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith(_TMP_PREFIX))

    # -------------------------------------------------------------------------------- writing
    def write_record(self, record: Record | dict) -> Path:
        data = record.to_dict() if isinstance(record, Record) else record
        return atomic_write_json(self.record_path(data["run_id"]), data)

    def write_codes(self, run_id: str, arrays: dict[str, np.ndarray]) -> tuple[Path, str]:
        """Write a codes file (:func:`benchmark.codesfile.codes_arrays`); returns (path, its SHA-256).

        The file is named by its content, so two processes that produce different codes for one run
        can never overwrite each other's file.
        """
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        return atomic_write_bytes(self.codes_path(run_id, digest), data), digest

    def write_log(self, run_id: str, text: str) -> Path:
        return atomic_write_bytes(self.log_path(run_id), text.encode("utf-8"))

    def write_result(self, result: RunResult) -> RunOutcome:
        """Write one run's files: protocol, codes and log, then, last, the record naming them.

        Each file is written atomically, and the record only once everything it names is on disk, so a
        process killed at any point leaves either the previous record or a complete new one.
        """
        rec = result.record
        rid = rec.run_id
        if result.protocol is not None and rec.protocol is not None:
            rec.protocol = {**rec.protocol, "file": self.relative(self.save_protocol(result.protocol))}
        if result.codes is not None:
            path, digest = self.write_codes(rid, result.codes)
            rec.codes, rec.codes_sha256 = self.relative(path), digest
        rec.log = self.relative(self.write_log(rid, result.log_text))
        self.write_record(rec)  # last: a record exists only with complete codes beside it
        self.remove_other_codes(rid, rec.codes)
        return RunOutcome(rid, rec.status, float(rec.timings.get("total_s") or 0.0), rec.error_message)

    def remove_other_codes(self, run_id: str, keep: str | None) -> None:
        """Delete the run's codes files other than ``keep`` (relative path), once a record names it."""
        folder = self.root / "codes"
        if not folder.is_dir():
            return
        for p in list(folder.glob(f"{run_id}.npz")) + list(folder.glob(f"{run_id}-*.npz")):
            if self.relative(p) != keep:
                with contextlib.suppress(OSError):
                    p.unlink()

    def read_codes(self, run_id: str, record: Record | None = None) -> dict[str, np.ndarray]:
        """The codes the run's record names, after checking their SHA-256 against the record."""
        rec = record if record is not None else self.read(run_id)
        if rec is None or not rec.codes:
            raise DataFileError(f"run {run_id}: no readable record naming its codes in {self.root / 'records'}")
        path = self.root / rec.codes
        expected = rec.codes_sha256
        if expected is not None:
            try:
                actual = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise DataFileError(f"codes file {path}: cannot be read ({exc.strerror or exc})") from None
            if actual != expected:
                raise DataFileError(f"codes file {path}: its SHA-256 does not match record {run_id}; rerun the run "
                                    "with --force")
        return read_codes_file(path)

    def save_protocol(self, protocol) -> Path:
        """Save a protocol's indices once; concurrent writers each use their own temporary file."""
        path = self.protocol_path(protocol.digest)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            protocol.save(tmp)
            with contextlib.suppress(OSError):
                os.chmod(tmp, user_file_mode())
            os.replace(tmp, path)
        except BaseException:
            for p in (tmp, tmp + ".tmp"):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise
        return path


# ---------------------------------------------------------------------------------------- the frame
FRAME_COLUMNS = [
    "run_id", "status", "error", "method", "label", "params", "method_order", "dataset", "dataset_label",
    "dataset_options", "dataset_order", "protocol", "protocol_name", "n_bits", "mask_rate", "seed", "n_train",
    "n_labeled", "device", "threads", "fit_s", "encode_s", "evaluate_s", "peak_rss_mb", "image_input",
    "evaluation_digest", "direction", "metric", "x", "value", "ties", "no_relevant", "topk", "n_queries",
    "n_no_relevant",
]

_SCALAR_SKIP = {"n_queries", "n_no_relevant", "ties", "no_relevant", "precision_at_n", "pr_hamming"}


def image_input(rec: Record) -> str:
    """What the method's image side read, in a few words (e.g. "gist 512-d", "pixels 64 px, cnnf from scratch")."""
    ds = rec.dataset or {}
    params = (rec.method or {}).get("params") or rec.spec.get("params") or {}
    shape = ds.get("image") or []
    if ds.get("image_features"):
        dim = f" {shape[1]}-d" if len(shape) == 2 else ""
        size = json.loads(ds.get("image_features_params") or "{}").get("image_size")
        return f"{ds['image_features']}{dim}" + (f" ({size} px)" if size else "")
    if ds.get("image_kind") == "pixels":
        size = params.get("image_size") or (shape[1] if len(shape) == 4 else "?")
        backbone = params.get("image_backbone", "auto")
        backbone = "cnnf" if backbone == "auto" else backbone
        how = "pretrained" if params.get("image_weights") else "from scratch"
        return f"pixels {size} px, {backbone} {how}" + (", frozen" if params.get("freeze_backbone") else "")
    return f"features {shape[1]}-d" if len(shape) == 2 else "features"


def _protocol_kind(rec: Record) -> str | None:
    """``standard`` (training items are in the database) or ``unseen`` (none are), from the record."""
    inside = (rec.protocol or {}).get("train_in_database")
    return None if inside is None else ("standard" if inside else "unseen")


def _topk(metric: str) -> int | None:
    return int(metric[4:]) if metric.startswith("map@") and metric[4:].isdigit() else None


def _rows(rec: Record) -> Iterable[dict]:
    spec = rec.spec
    timings = rec.timings or {}
    method = rec.method or {}
    base = {
        "run_id": rec.run_id,
        "status": rec.status,
        "error": rec.error_message,
        "method": spec.get("method"),
        "label": spec.get("label", spec.get("method")),
        "params": json.dumps(spec.get("params", {}), sort_keys=True),
        "method_order": method.get("order"),
        "dataset": spec.get("dataset"),
        "dataset_label": spec.get("dataset_label", spec.get("dataset")),
        "dataset_options": json.dumps(spec.get("dataset_options", {}), sort_keys=True),
        "dataset_order": method.get("dataset_order"),
        "protocol": _protocol_kind(rec),
        "protocol_name": (rec.protocol or {}).get("name"),
        "n_bits": spec.get("n_bits"),
        "mask_rate": spec.get("mask_rate"),
        "seed": spec.get("seed"),
        "n_train": (rec.mask or {}).get("n_train"),
        "n_labeled": (rec.mask or {}).get("n_labeled"),
        "device": (rec.device or {}).get("resolved"),
        "threads": (rec.device or {}).get("threads"),
        "fit_s": timings.get("fit_s"),
        "encode_s": timings.get("encode_s"),
        "evaluate_s": timings.get("evaluate_s"),
        "peak_rss_mb": (rec.memory or {}).get("peak_rss_mb"),
        "image_input": image_input(rec),
        "evaluation_digest": rec.evaluation_digest,
    }
    metrics = rec.metrics or {}
    empty = {"direction": None, "metric": None, "x": None, "value": None, "ties": None, "no_relevant": None,
             "topk": None, "n_queries": None, "n_no_relevant": None}
    if rec.status != "ok" or not metrics:
        yield {**base, **empty}
        return
    for direction in sorted(metrics):
        m = metrics[direction]
        # the conventions each value was computed under travel with it (map_stable breaks ties by order)
        common = {**base, "direction": direction, "n_queries": m.get("n_queries"),
                  "n_no_relevant": m.get("n_no_relevant"), "no_relevant": m.get("no_relevant")}
        ties = m.get("ties")
        for key in sorted(m):
            if key in _SCALAR_SKIP:
                continue
            yield {**common, "metric": key, "x": None, "value": m[key], "topk": _topk(key),
                   "ties": "stable" if key == "map_stable" else ties}
        pan = m.get("precision_at_n")
        if pan:
            for n, p in zip(pan["n"], pan["precision"]):
                yield {**common, "metric": "precision_at_n", "x": n, "value": p, "ties": ties, "topk": None}
        pr = m.get("pr_hamming")
        if pr:
            # within a Hamming radius every item at that distance is retrieved: no tie order applies
            for r, p, rc in zip(pr["radius"], pr["precision"], pr["recall"]):
                yield {**common, "metric": "pr_precision", "x": r, "value": p, "ties": None, "topk": None}
                yield {**common, "metric": "pr_recall", "x": r, "value": rc, "ties": None, "topk": None}


def records_to_frame(records: Iterable[Record | dict]):
    """Tidy frame: one row per (run, direction, metric, x); run-level columns repeat on each row.

    Each value carries its conventions (``ties``, ``no_relevant``, ``topk``, ``protocol``). Failed runs
    have one row with ``direction``/``metric`` missing and ``error`` set. Rows are sorted so that the
    same records always give the same frame. Plain dicts are read as :meth:`Record.from_dict` reads them.
    """
    import pandas as pd

    recs = [r if isinstance(r, Record) else Record.from_dict(r) for r in records]
    rows = [row for rec in recs for row in _rows(rec)]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    for col in ("n_bits", "seed", "n_train", "n_labeled", "threads", "n_queries", "n_no_relevant", "topk",
                "method_order", "dataset_order"):
        frame[col] = frame[col].astype("Int64")
    for col in ("mask_rate", "fit_s", "encode_s", "evaluate_s", "peak_rss_mb", "x", "value"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame = frame.sort_values(["run_id", "direction", "metric", "x"], na_position="first", kind="mergesort")
    return frame.reset_index(drop=True)


def read_records(results_dir: Path | str, run_ids: Iterable[str] | None = None, *, on_corrupt=None) -> list[Record]:
    """The records of a results directory (or those in ``run_ids``), sorted by run id.

    A record that cannot be parsed raises :class:`DataFileError` naming the file: a report must not
    silently drop results. With ``on_corrupt`` (a callable taking one line), it is left out and
    reported through ``on_corrupt`` instead (``run`` does this for records outside its own suite).
    """
    store = RecordStore(results_dir)
    if not Path(results_dir).is_dir():
        raise InputError(f"results directory {str(results_dir)!r} does not exist; run a suite first or pass --results-dir")
    wanted = None if run_ids is None else set(run_ids)
    records = []
    for rid in store.run_ids():
        if wanted is not None and rid not in wanted:
            continue
        path = store.record_path(rid)
        try:
            try:
                with open(path, encoding="utf-8") as fh:
                    raw = json.load(fh)
            except (OSError, ValueError) as exc:
                raise DataFileError(f"record {path}: cannot be parsed ({exc}); delete it and rerun the suite") from None
            if not isinstance(raw, dict) or raw.get("run_id") != rid:
                raise DataFileError(f"record {path}: its run_id does not match the file name; delete it and rerun the suite")
            try:
                rec = Record.from_dict(raw, f"record {path}")
                list(_rows(rec))
            except DataFileError:
                raise
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                raise DataFileError(f"record {path}: unexpected content ({type(exc).__name__}: {exc}); delete it "
                                    "and rerun the suite") from None
        except DataFileError as exc:
            if on_corrupt is None:
                raise
            on_corrupt(f"skipped {exc}")
            continue
        records.append(rec)
    return records


def load_frame(results_dir: Path | str = "results", run_ids: Iterable[str] | None = None, *, on_corrupt=None):
    """All records of a results directory (or those in ``run_ids``) as one tidy pandas DataFrame::

        import benchmark.records; frame = benchmark.records.load_frame("results")

    Errors as :func:`read_records`.
    """
    return records_to_frame(read_records(results_dir, run_ids, on_corrupt=on_corrupt))
