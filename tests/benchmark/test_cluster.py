"""The runner on a Dask LocalCluster (127.0.0.1, no dashboard, 2 workers): same records and codes as
``--jobs 2``, worker deaths and time limits recorded, bad ``--cluster`` values refused in one line."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import sys
import textwrap
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest

from benchmark.errors import InputError
from benchmark.records import RecordStore
from benchmark.suites import expand_suite

distributed = pytest.importorskip("distributed", reason='the [cluster] extra: pip install "cmh-bench[cluster]"')

from benchmark import cluster  # noqa: E402
from benchmark.runner import RunSettings  # noqa: E402

PLUGINS = textwrap.dedent('''
    import os
    import signal
    import time
    from pathlib import Path

    import psutil

    from methods.random_projection import RandomProjection

    def _dask_worker_pid():
        # a run's process -> the worker's forkserver -> the Dask worker process
        return psutil.Process(os.getppid()).ppid()

    class Slow(RandomProjection):
        """Writes its pid where the test can see it, then takes a few seconds."""
        def fit(self, image, text, labels, labeled=None):
            Path(os.environ["CMH_TEST_DIR"], f"started-{os.getpid()}").write_text(str(os.getpid()))
            time.sleep(4)
            return super().fit(image, text, labels, labeled)

    class KillsWorker(RandomProjection):
        """Kills the Dask worker it runs on, every time."""
        def fit(self, image, text, labels, labeled=None):
            os.kill(_dask_worker_pid(), signal.SIGKILL)
            time.sleep(30)

    class Sleepy(RandomProjection):
        def fit(self, image, text, labels, labeled=None):
            time.sleep(30)  # compute_run's own time limit interrupts this

    class Deaf(RandomProjection):
        """Ignores the run's SIGALRM limit, as a long call into compiled code would."""
        def fit(self, image, text, labels, labeled=None):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(30)
''')

QUICK_THREADS = 1


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "plugins_cluster.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CMH_TEST_DIR", str(tmp_path))
    sys.modules.pop("plugins_cluster", None)
    yield importlib.import_module("plugins_cluster")
    sys.modules.pop("plugins_cluster", None)


def small_suite(tmp_path, methods: str):
    path = tmp_path / "suite.yaml"
    path.write_text("name: c\ndatasets: [{name: synthetic, label: syn, options: {n_items: 150, n_labels: 4, "
                    "image_dim: 8, text_dim: 20, latent_dim: 4, noise: 0.3}}]\n"
                    f"methods: {methods}\nbits: [8]\nmask_rates: [0.0]\nseeds: [0]\n"
                    "evaluation: {topk: [10], precision_ns: [1, 10]}\n")
    exp = expand_suite(path)
    return exp.specs, exp.evaluation


def settings_dict(results, evaluation, **kw) -> dict:
    return asdict(RunSettings(results_dir=str(results), threads=QUICK_THREADS, evaluation=evaluation, **kw))


def quiet(line):
    return None


def records_by_id(root) -> dict:
    store = RecordStore(root)
    return {rid: store.read(rid) for rid in store.run_ids()}


def codes_digest(store: RecordStore, rid: str) -> str:
    arrays = store.read_codes(rid)
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- no cluster needed
@pytest.mark.parametrize("value, message", [
    ("bogus", "--cluster 'bogus' is invalid; valid: local, local:N"),
    ("local:0", "--cluster 'local:0' is invalid"),
    ("local:x", "--cluster 'local:x' is invalid"),
    ("tcp://host", "valid: tcp://HOST:PORT"),
    ("tcp://host:99999", "valid: tcp://HOST:PORT"),
    ("missing.yaml", "--cluster 'missing.yaml': no such file"),
])
def test_bad_cluster_values_are_one_line_errors(value, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as info:
        cluster.parse_cluster(value)
    assert "\n" not in str(info.value)


def test_cluster_values_parse(tmp_path):
    assert cluster.parse_cluster("local:3") == cluster.ClusterTarget("local", workers=3)
    assert cluster.parse_cluster("local", jobs=2).workers == 2
    assert cluster.parse_cluster("local", threads=10 ** 6).workers == 1
    assert cluster.parse_cluster("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    recipe = tmp_path / "slurm.yaml"
    recipe.write_text("class: SLURMCluster\noptions: {cores: 4, memory: 16GB}\njobs: 8\n")
    target = cluster.parse_cluster(str(recipe))
    assert (target.kind, target.cls, target.options, target.jobs) == ("jobqueue", "SLURMCluster",
                                                                      {"cores": 4, "memory": "16GB"}, 8)
    assert cluster.parse_cluster(str(recipe), jobs=3).jobs == 3  # --cluster-jobs overrides the file
    for text, message in [("options: {}\n", "needs a mapping with `class`"),
                          ("class: SLURMCluster\n", "no scale"),
                          ("class: SLURMCluster\njobs: 0\n", "jobs=0 is invalid"),
                          ("class: SLURMCluster\nnodes: 2\njobs: 1\n", "unknown key 'nodes'"),
                          ("class: [\n", "is not readable YAML")]:
        recipe.write_text(text)
        with pytest.raises(InputError, match=message):
            cluster.parse_cluster(str(recipe))
    with pytest.raises(InputError, match="--cluster-jobs 0 is invalid"):
        cluster.parse_cluster("local", jobs=0)


def test_a_missing_extra_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(InputError, match=r'pip install "cmh-bench\[cluster\]"') as info:
        cluster.dispatch([], {"threads": 1, "results_dir": "unused"}, "local:2", store=None, progress=False)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- on a LocalCluster
def test_quick_suite_on_local_2_matches_jobs_2(tmp_path):
    """Acceptance: records and codes through --cluster local:2 are those of --jobs 2 at the same --threads."""
    from benchmark.runner import run_suite

    exp = expand_suite("quick")
    specs, evaluation = exp.specs, exp.evaluation
    ids = sorted(s.run_id for s in specs)
    local = RunSettings(results_dir=str(tmp_path / "jobs"), threads=QUICK_THREADS, evaluation=evaluation)
    assert run_suite(specs, local, jobs=2, progress=False, echo=quiet).failed == []
    on_dask = RunSettings(results_dir=str(tmp_path / "dask"), threads=QUICK_THREADS, evaluation=evaluation)
    summary = run_suite(specs, on_dask, progress=False, echo=quiet, cluster="local:2")
    assert summary.failed == [] and sorted(o.run_id for o in summary.outcomes) == ids
    assert {o.status for o in summary.outcomes} == {"ok"}
    store = RecordStore(tmp_path / "dask")
    a, b = RecordStore(tmp_path / "jobs"), store
    assert a.run_ids() == b.run_ids() == ids
    for rid in a.run_ids():
        ra, rb = a.read(rid), b.read(rid)
        assert codes_digest(a, rid) == codes_digest(b, rid), rid
        assert ra.codes_sha256 == rb.codes_sha256, rid
        assert json.dumps(ra.metrics, sort_keys=True) == json.dumps(rb.metrics, sort_keys=True)
        assert (ra.spec, ra.protocol, ra.mask, ra.settings) == (rb.spec, rb.protocol, rb.mask, rb.settings)
    # the driver wrote every file: nothing is left in the workers' hands
    assert len(list((tmp_path / "dask" / "codes").iterdir())) == len(specs)
    assert len(list((tmp_path / "dask" / "logs").iterdir())) == len(specs)
    # a rerun finds everything recorded and dispatches nothing
    again = run_suite(specs, on_dask, progress=False, echo=quiet, cluster="local:2")
    assert again.outcomes == [] and sorted(again.skipped) == ids


def test_a_worker_killed_mid_suite_loses_and_duplicates_nothing(tmp_path, plugins):
    """Kill a Dask worker process while it runs a run: the suite completes (the run is retried on
    another worker) or that run is recorded as failed; never a lost or duplicated record."""
    specs, evaluation = small_suite(tmp_path, "[random, scm-orth, 'plugins_cluster:Slow']")
    exp = expand_suite("quick")
    specs = specs + exp.specs[:6]
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            started = sorted(tmp_path.glob("started-*"))
            if started:
                import psutil

                run_pid = int(started[0].read_text())
                worker = psutil.Process(psutil.Process(run_pid).ppid()).ppid()
                os.kill(worker, signal.SIGKILL)
                killed.append(worker)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    store = RecordStore(tmp_path / "results")
    outcomes = cluster.dispatch(specs, settings_dict(tmp_path / "results", evaluation), "local:2", store=store,
                                progress=False, echo=quiet)
    thread.join(5)
    assert killed, "the test never saw the slow run start"
    ids = sorted(s.run_id for s in specs)
    assert sorted(o.run_id for o in outcomes) == ids  # one outcome per run: none lost, none twice
    assert store.run_ids() == ids
    slow = next(s for s in specs if s.method == "plugins_cluster:Slow")
    rec = store.read(slow.run_id)
    assert rec.status == "ok" or "KilledWorker" in rec.error_message
    assert len(list(tmp_path.glob("started-*"))) == 2  # it ran again, on a live worker
    for rid in ids:
        if store.read(rid).status == "ok":
            codes_digest(store, rid)  # readable, and its sha256 matches the record
    codes = sorted(p.name.split("-")[0] for p in (tmp_path / "results" / "codes").iterdir())
    assert len(codes) == len(set(codes)) == sum(store.read(r).status == "ok" for r in ids)


def test_worker_deaths_and_time_limits_are_recorded(tmp_path, plugins, monkeypatch):
    """A run that kills every worker it lands on fails with KilledWorker after ALLOWED_FAILURES + 1
    deaths; a run over --timeout is recorded as timed out, also when it ignores SIGALRM."""
    monkeypatch.setattr(cluster, "ALLOWED_FAILURES", 1)
    monkeypatch.setattr(cluster, "KILL_GRACE_S", 5.0)
    specs, evaluation = small_suite(
        tmp_path, "[random, 'plugins_cluster:KillsWorker', 'plugins_cluster:Sleepy', 'plugins_cluster:Deaf']")
    store = RecordStore(tmp_path / "results")
    t0 = time.perf_counter()
    outcomes = cluster.dispatch(specs, settings_dict(tmp_path / "results", evaluation, timeout=5.0), "local:2",
                                store=store, progress=False, echo=quiet)
    assert time.perf_counter() - t0 < 60
    assert sorted(o.run_id for o in outcomes) == sorted(s.run_id for s in specs)
    rec = {s.method: store.read(s.run_id) for s in specs}
    assert rec["random"].status == "ok"
    killer = rec["plugins_cluster:KillsWorker"]
    assert killer.status == "failed" and not killer.timed_out
    assert killer.error["type"] == "KilledWorker" and "died 2 times" in killer.error_message
    sleepy = rec["plugins_cluster:Sleepy"]
    assert sleepy.status == "failed" and sleepy.timed_out and "time limit of 5s" in sleepy.error_message
    assert "killed" not in sleepy.error_message  # interrupted by the run's own limit
    deaf = rec["plugins_cluster:Deaf"]
    assert deaf.status == "failed" and deaf.timed_out and "killed 5s later" in deaf.error_message
    for r in rec.values():
        assert store.log_path(r.run_id).is_file()
    assert "KilledWorker" in store.log_path(killer.run_id).read_text()


@pytest.mark.parametrize("value", ["bogus", "local:0", "tcp://nohost"])
def test_cli_refuses_a_bad_cluster_value_in_one_line(tmp_path, capsys, value):
    from benchmark.cli import main

    code = main(["run", "--suite", "quick", "--cluster", value, "--results-dir", str(tmp_path / "r"),
                 "--no-report", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and f"--cluster '{value}' is invalid" in errors[0] and err[-1] == errors[0]
    assert not (tmp_path / "r" / "records").exists()
