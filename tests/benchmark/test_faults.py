"""Fault injection: concurrent runners, kill -9 and signals, a full disk, corrupt records and codes, fuzzed files.

Every test here runs in CI. The process tests start real runners (``python -m benchmark run``) in
subprocesses; the full disk is a small tmpfs where this user may mount one (root), and an injected
``OSError(ENOSPC)`` in any case.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.errors import DataFileError, InputError
from benchmark.records import RecordStore, load_frame, read_codes_file
from benchmark.runner import DONE_ELSEWHERE, ELSEWHERE, RunSettings, execute_run, run_suite
from benchmark.suites import expand_suite

REPO = Path(__file__).resolve().parents[2]
FAST = ["--threads", "1", "--device", "cpu", "--no-report", "--quiet"]
DATA = ("{name: synthetic, label: syn, options: {n_items: 150, n_labels: 4, image_dim: 8, text_dim: 20, "
        "latent_dim: 4, noise: 0.3}}")

PLUGIN = textwrap.dedent('''
    import os
    import time

    from methods.random_projection import RandomProjection


    class NonDet(RandomProjection):
        """Seeded from the process id: two processes give different codes for the same run."""

        def fit(self, image, text, labels, labeled=None):
            log = os.environ.get("CMH_TEST_EXEC_LOG")
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{self.n_bits} {self.random_state} {os.getpid()}\\n")
            time.sleep(float(os.environ.get("CMH_TEST_FIT_S", "0.2")))
            seed = self.random_state
            self.random_state = os.getpid()
            try:
                return super().fit(image, text, labels, labeled)
            finally:
                self.random_state = seed
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "faultplug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("CMH_TEST_FIT_S", "0")  # in-process runs; subprocesses get their own value
    sys.modules.pop("faultplug", None)
    yield folder
    sys.modules.pop("faultplug", None)


def write_suite(path: Path, methods="['faultplug:NonDet']", bits="[8, 16]", seeds="[0, 1]") -> Path:
    path.write_text(f"name: faults\ndatasets: [{DATA}]\nmethods: {methods}\nbits: {bits}\nmask_rates: [0.0]\n"
                    f"seeds: {seeds}\nevaluation: {{topk: [10], precision_ns: [1, 10]}}\n")
    return path


def env_with(*paths, **extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def runner_cmd(suite: Path, results: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--results-dir", str(results), *FAST,
            *more]


def check_store(results: Path, expected: set[str] | None = None) -> set[str]:
    """Every record parses, matches its file name, names codes whose hash matches, and its MAP is the
    MAP recomputed from those codes (so no record sits beside another process's codes)."""
    from benchmark import metrics as M
    from benchmark.datacache import load_dataset_cached
    from datasets import Protocol

    store = RecordStore(results)
    ids = set()
    for rid in store.run_ids():
        rec = json.loads(store.record_path(rid).read_text())
        assert rec["run_id"] == rid and rec["status"] == "ok", rid
        if expected is not None:
            assert rid in expected
        codes = store.read_codes(rid)  # checks the SHA-256 the record names
        spec = rec["spec"]
        data = load_dataset_cached(spec["dataset"], None, spec["dataset_options"])
        proto = Protocol.load(results / rec["protocol"]["file"])
        ql, dl = data.labels[proto.query], data.labels[proto.database]
        for direction, (q, d) in {"i2t": ("query_image", "db_text"), "t2i": ("query_text", "db_image")}.items():
            got = M.mean_average_precision(codes[q], codes[d], ql, dl).value
            assert got == pytest.approx(rec["metrics"][direction]["map"], abs=1e-12), (rid, direction)
        ids.add(rid)
    leftovers = [p.name for sub in ("records", "codes", "protocols") if (results / sub).is_dir()
                 for p in (results / sub).iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
    return ids


def alive(procs: list[psutil.Process]) -> list[int]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
    return out


def wait_dead(procs: list[psutil.Process], limit: float) -> tuple[list[int], float]:
    t0 = time.monotonic()
    while alive(procs) and time.monotonic() - t0 < limit:
        time.sleep(0.02)
    return alive(procs), time.monotonic() - t0


def _default_signals():
    """The runner as started from a terminal: a test process started in the background (a CI job, `cmd &`)
    passes SIGINT ignored to its children, and a program keeps what it was started with ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_and_wait_for_workers(cmd, env, cwd, results: Path, n_logs: int, timeout: float = 60.0):
    """Start a runner; return (process, psutil process) once ``n_logs`` runs have started (their logs
    written after the start: earlier trials' logs do not count)."""
    started = time.time() - 0.01
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    logs = results / "logs"
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            if logs.is_dir() and sum(p.stat().st_mtime >= started for p in logs.iterdir()) >= n_logs:
                break
        time.sleep(0.01)
    return proc, parent


# ---------------------------------------------------------------------------------------- concurrent runners
def test_two_runners_on_one_results_dir_run_each_run_once_ten_times_in_a_row(tmp_path, plugin_dir):
    """Acceptance: two runners started together on one results dir, with a method whose codes differ
    per process: every run executes once, every record's MAP is the MAP of its own codes, both exit 0."""
    suite = write_suite(tmp_path / "s.yaml")
    specs = expand_suite(suite).specs
    expected = {s.run_id for s in specs}
    for round_ in range(10):
        results = tmp_path / f"results{round_}"
        log = tmp_path / f"exec{round_}.log"
        env = env_with(plugin_dir, CMH_TEST_EXEC_LOG=log, CMH_TEST_FIT_S=0.05)
        procs = [subprocess.Popen(runner_cmd(suite, results), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        runs = collections.Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
        assert len(runs) == len(expected) and set(runs.values()) == {1}, (round_, runs)
        assert check_store(results, expected) == expected
        assert not (results / "claims").exists() or list((results / "claims").iterdir()) == []


def test_a_claimed_run_is_reported_running_elsewhere_and_is_not_a_failure(tmp_path, plugin_dir):
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0, 1]")
    specs = expand_suite(suite).specs
    results = tmp_path / "results"
    store = RecordStore(results)
    held = store.claim(specs[0].run_id)  # flock conflicts between two opens, even in one process
    lines = []
    try:
        summary = run_suite(specs, RunSettings(results_dir=str(results), threads=1), progress=False,
                            echo=lines.append)
    finally:
        held.release()
    assert summary.failed == [] and summary.elsewhere == [specs[0].run_id]
    assert any(line.startswith("running elsewhere: faultplug:NonDet") and f"pid {os.getpid()}" in line
               for line in lines)
    assert store.read(specs[0].run_id) is None and store.read(specs[1].run_id).status == "ok"


def test_a_record_written_while_waiting_is_kept_even_with_force(tmp_path, plugin_dir):
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0]")
    spec = expand_suite(suite).specs[0]
    settings = RunSettings(results_dir=str(tmp_path / "results"), threads=1)
    run_suite([spec], settings, progress=False)
    store = RecordStore(tmp_path / "results")
    before = store.record_path(spec.run_id).read_bytes()
    # planned when there was no record: another runner wrote it meanwhile
    out = execute_run(spec.to_dict(), asdict(settings), force=True, seen_finished=None)
    assert out.status == DONE_ELSEWHERE and store.record_path(spec.run_id).read_bytes() == before
    # planned with this very record and --force: it reruns
    seen = store.read(spec.run_id).finished_at
    out = execute_run(spec.to_dict(), asdict(settings), force=True, seen_finished=seen)
    assert out.status == "ok" and store.read(spec.run_id).finished_at != seen
    assert len(list((tmp_path / "results" / "codes").iterdir())) == 1  # the replaced codes are gone


def test_a_dead_holders_claim_is_taken_over(tmp_path):
    store = RecordStore(tmp_path)
    # a process that claims a run and dies without releasing it (kill -9 leaves the lock file behind)
    code = ("import os, sys; from benchmark.records import RecordStore; "
            "c = RecordStore(sys.argv[1]).claim('rid'); print(os.getpid(), flush=True); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env_with(), capture_output=True,
                          text=True, timeout=60)
    dead_pid = int(proc.stdout.split()[0])
    assert store.claim_path("rid").is_file()
    claim = store.claim("rid")
    assert claim.taken_over["pid"] == dead_pid
    # held now: another claim is refused and names the holder
    holder = store.claim("rid")
    assert holder["pid"] == os.getpid()
    claim.release()
    assert not store.claim_path("rid").exists() and store.claim_holder("rid") is None


def test_without_flock_a_claim_is_an_exclusive_file_taken_over_only_from_the_dead(tmp_path, monkeypatch):
    import builtins
    import socket

    real_import = builtins.__import__

    def no_fcntl(name, *args, **kwargs):
        if name == "fcntl":
            raise ImportError("no fcntl here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fcntl)
    store = RecordStore(tmp_path)
    path = store.claim_path("rid")
    path.parent.mkdir(parents=True)
    dead = 4_000_000
    while psutil.pid_exists(dead):
        dead += 1
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "started_at": "x"}))
    claim = store.claim("rid")
    assert claim.taken_over["pid"] == dead
    assert store.claim("rid")["pid"] == os.getpid()  # live holder: refused
    claim.release()
    path.write_text(json.dumps({"host": "another-host", "pid": dead, "started_at": "x"}))
    assert store.claim("rid")["host"] == "another-host"  # cannot tell on another host: never taken


# ---------------------------------------------------------------------------------------- kill -9, signals
SLOW_SUITE_SEEDS = "[0, 1, 2, 3, 4, 5, 6, 7]"  # 8 runs of 0.35 s on 2 workers: 1.4 s, longer than any kill delay


def test_kill_9_of_a_jobs_2_runner_leaves_no_child_alive_10_of_10(tmp_path, plugin_dir):
    """Acceptance: kill -9 of the runner alone (not its group), at random points of a --force run:
    no child of it is alive 5 s later, in 10 of 10 trials; the store stays consistent throughout."""
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds=SLOW_SUITE_SEEDS)
    expected = {s.run_id for s in expand_suite(suite).specs}
    results = tmp_path / "results"
    env = env_with(plugin_dir, CMH_TEST_FIT_S=0.35)
    seed = int(os.environ.get("CMH_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    survivors, slowest = [], 0.0
    for trial in range(10):
        proc, parent = start_and_wait_for_workers(runner_cmd(suite, results, "--jobs", "2", "--force"), env,
                                                  tmp_path, results, n_logs=2)
        time.sleep(rng.uniform(0.0, 0.8))
        children = parent.children(recursive=True)
        assert proc.poll() is None, f"the runner ended before the kill (seed {seed})"
        assert len(children) >= 2, (trial, children)  # two workers (and loky's resource trackers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left, took = wait_dead(children, 5.0)
        slowest = max(slowest, took)
        if left:
            survivors.append((trial, left))
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        check_store(results, expected)
    assert survivors == [], f"children alive 5 s after kill -9: {survivors} (seed {seed})"
    final = subprocess.run(runner_cmd(suite, results, "--jobs", "2"), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert check_store(results, expected) == expected
    print(f"slowest death after kill -9: {slowest:.2f} s (seed {seed})")


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_signal_to_the_runner_stops_its_workers_and_exits_cleanly(tmp_path, plugin_dir, signame, code):
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0, 1, 2]")
    results = tmp_path / "results"
    env = env_with(plugin_dir, CMH_TEST_FIT_S=60)
    proc, parent = start_and_wait_for_workers(runner_cmd(suite, results, "--jobs", "2"), env, tmp_path, results,
                                              n_logs=2)
    children = parent.children(recursive=True)
    assert len(children) >= 2
    os.kill(proc.pid, getattr(signal, signame))  # the runner alone, as `kill PID` does
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    # loky's resource tracker (a process of its own) may still warn that a semaphore the runner already
    # removed is gone ("resource_tracker: /loky-...: FileNotFoundError"); that is its cleanup, not the runner's.
    lines = [ln for ln in err.strip().splitlines() if "resource_tracker" not in ln]
    assert lines[-1].startswith(("stopped by", "interrupted")) and "rerun the same command to resume" in lines[-1]
    assert "Traceback" not in err and "leaked" not in err
    assert wait_dead(children, 5.0)[0] == []
    store = RecordStore(results)
    assert store.run_ids() == []  # the runs in flight left nothing half-done
    claimed = [p.stem for p in (results / "claims").iterdir()]
    assert len(claimed) >= 2 and all(store.claim_holder(rid) is None for rid in claimed)  # and are free again


def test_a_runner_started_with_sighup_ignored_keeps_running_on_sighup(tmp_path, plugin_dir):
    """`nohup` ignores SIGHUP so that a run outlives its terminal; the runner keeps it ignored."""
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0, 1, 2]")
    results = tmp_path / "results"
    env = env_with(plugin_dir, CMH_TEST_FIT_S=60)

    def nohup():
        _default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    started = time.time() - 0.01
    proc = subprocess.Popen(runner_cmd(suite, results, "--jobs", "2"), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=nohup)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results / "logs").is_dir():
        time.sleep(0.05)
    while time.monotonic() < deadline and sum(p.stat().st_mtime >= started for p in (results / "logs").iterdir()) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(1.0)
    assert proc.poll() is None  # still running
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 143


# ---------------------------------------------------------------------------------------- full disk
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_tmpfs_stops_the_runner_cleanly_and_a_rerun_completes(tmp_path, plugin_dir):
    suite = write_suite(tmp_path / "s.yaml", bits="[8, 16]", seeds="[0, 1, 2]")
    expected = {s.run_id for s in expand_suite(suite).specs}
    env = env_with(plugin_dir, CMH_TEST_FIT_S=0)
    with small_tmpfs(tmp_path / "disk", "200k") as disk:
        results = disk / "results"
        filler = disk / "filler"
        # leave room for about one run's files (log, protocol, codes, record: ~25 KB)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * (free - 40 * 1024))
        proc = subprocess.run(runner_cmd(suite, results), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
        assert "rerun the same command to resume" in proc.stderr
        done = check_store(results, expected)
        assert done != expected
        filler.unlink()
        again = subprocess.run(runner_cmd(suite, results), cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr
        assert check_store(results, expected) == expected


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5])  # protocol / codes / record of run 1, codes of run 2
def test_an_injected_full_disk_stops_the_runner_cleanly_and_a_rerun_completes(tmp_path, plugin_dir, monkeypatch,
                                                                             fail_at):
    """ENOSPC at the n-th atomic write (protocol, codes or record of some run)."""
    import benchmark.records as R

    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0, 1, 2]")
    specs = expand_suite(suite).specs
    expected = {s.run_id for s in specs}
    settings = RunSettings(results_dir=str(tmp_path / "results"), threads=1)
    real_fsync, calls = os.fsync, [0]

    def full_disk_fsync(fd):
        calls[0] += 1
        if calls[0] >= fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(R.os, "fsync", full_disk_fsync)
    lines = []
    summary = run_suite(specs, settings, progress=False, echo=lines.append)
    monkeypatch.undo()
    assert summary.aborted and "No space left on device" in summary.aborted
    assert any("stopped early" in line and "rerun the same command" in line for line in lines)
    done = check_store(tmp_path / "results", expected)
    assert done != expected and summary.failed  # the rest is reported missing, not silently ok
    again = run_suite(specs, settings, progress=False, echo=lines.append)
    assert again.failed == [] and check_store(tmp_path / "results", expected) == expected


# ---------------------------------------------------------------------------------------- corrupt files
def test_corrupt_records_and_codes(tmp_path, plugin_dir):
    suite = write_suite(tmp_path / "s.yaml", bits="[8]", seeds="[0, 1]")
    specs = expand_suite(suite).specs
    settings = RunSettings(results_dir=str(tmp_path / "results"), threads=1)
    run_suite(specs, settings, progress=False)
    store = RecordStore(tmp_path / "results")
    a, b = (s.run_id for s in specs)
    # a truncated record: the run counts as not done and is rerun
    path = store.record_path(a)
    path.write_bytes(path.read_bytes()[:50])
    again = run_suite(specs, settings, progress=False)
    assert [o.run_id for o in again.outcomes] == [a] and again.failed == []
    # a damaged codes file: its record refuses it (hash), naming the file
    codes = tmp_path / "results" / store.read(b).codes
    raw = bytearray(codes.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    codes.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match="SHA-256 does not match"):
        store.read_codes(b)
    # a legacy record without a hash: the damaged file is still refused in one line
    rec = store.read(b)
    rec.codes_sha256 = None
    store.write_record(rec)
    codes.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(DataFileError, match="cannot be read"):
        store.read_codes(b)


_MAGIC = st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"MATLAB 5.0 MAT-file", b"MATLAB 7.3 MAT-file",
                          b"\x89HDF\r\n\x1a\n", b'{"run_id": "r", ', b"\x00" * 128])
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(head=_MAGIC, body=st.binary(max_size=400))
def test_fuzzed_records_fail_in_one_line_or_are_skipped(tmp_path_factory, head, body):
    root = tmp_path_factory.mktemp("rec")
    (root / "records").mkdir()
    (root / "records" / "r.json").write_bytes(head + body)
    try:
        load_frame(root)
    except DataFileError as exc:
        assert "\n" not in str(exc) and "r.json" in str(exc)
    skipped = []
    load_frame(root, on_corrupt=skipped.append)  # never raises
    assert RecordStore(root).read("x") is None


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@FUZZ
@given(content=st.dictionaries(st.sampled_from(["spec", "status", "metrics", "dataset", "mask", "timings", "memory",
                                                "device", "method", "error"]), _JSON, max_size=6))
def test_records_with_unexpected_json_fail_in_one_line(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("rec")
    RecordStore(root).write_record({**content, "run_id": "r"})
    try:
        load_frame(root)
    except DataFileError as exc:
        assert "\n" not in str(exc) and "r.json" in str(exc)


@FUZZ
@given(head=_MAGIC, body=st.binary(max_size=400))
def test_fuzzed_codes_files_fail_in_one_line(tmp_path_factory, head, body):
    path = tmp_path_factory.mktemp("codes") / "c.npz"
    path.write_bytes(head + body)
    with pytest.raises(DataFileError) as info:
        read_codes_file(path)
    assert "\n" not in str(info.value)


@FUZZ
@given(head=_MAGIC, body=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".npz", ".mat", ".txt", ".dat"]))
def test_fuzzed_data_files_fail_in_one_line(tmp_path_factory, head, body, suffix):
    from datasets._io import read_array_file, read_mat

    path = tmp_path_factory.mktemp("data") / f"f{suffix}"
    path.write_bytes(head + body)
    for read in (lambda: read_array_file("fuzz", path, key="X"), lambda: read_mat("fuzz", path, ["X"])):
        try:
            read()
        except InputError as exc:  # DataFileError is one
            assert "\n" not in str(exc)


@FUZZ
@given(head=_MAGIC, body=st.binary(max_size=400))
def test_fuzzed_protocol_files_fail_in_one_line(tmp_path_factory, head, body):
    from datasets import Protocol

    path = tmp_path_factory.mktemp("proto") / "p.npz"
    path.write_bytes(head + body)
    with pytest.raises(DataFileError):
        Protocol.load(path)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_fuzzed_suite_files_fail_in_one_line(tmp_path_factory, text):
    from benchmark.suites import load_suite

    path = tmp_path_factory.mktemp("suite") / "s.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        expand_suite(load_suite(path))
    except InputError as exc:
        assert "\n" not in str(exc)
