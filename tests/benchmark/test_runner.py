"""Runner: records on disk, skip/force/retry, failures and time limits, parallel runs give the same codes."""
from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest

from benchmark.errors import InputError
from benchmark.records import RecordStore, load_frame
from benchmark.runner import RunSettings, run_suite
from benchmark.suites import expand_suite

PLUGINS = textwrap.dedent('''
    import time
    import numpy as np
    from methods.random_projection import RandomProjection

    class Failing(RandomProjection):
        def fit(self, image, text, labels, labeled=None):
            raise RuntimeError("deliberate failure in fit")

    class Sleepy(RandomProjection):
        def fit(self, image, text, labels, labeled=None):
            time.sleep(30)  # the runner's time limit interrupts this
            return super().fit(image, text, labels, labeled)

    class Chatty(RandomProjection):
        def fit(self, image, text, labels, labeled=None):
            print("hello from fit")
            super().fit(image, text, labels, labeled)
            self.extras_ = {"loss_curve": np.array([2.0, 1.0, float("nan")])}
            return self
''')

DATA = "{name: synthetic, label: syn, options: {n_items: 150, n_labels: 4, image_dim: 8, text_dim: 20, latent_dim: 4, noise: 0.3}}"


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "plugins_runner.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("plugins_runner", None)
    yield importlib.import_module("plugins_runner")
    sys.modules.pop("plugins_runner", None)


def suite(tmp_path, methods="[random, scm-orth]", bits="[8, 16]", masks="[0.0, 0.5]", seeds="[0, 1]"):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: t\ndatasets: [{DATA}]\nmethods: {methods}\nbits: {bits}\nmask_rates: {masks}\nseeds: {seeds}\n"
                    "evaluation: {topk: [10], precision_ns: [1, 10]}\n")
    exp = expand_suite(path)
    return exp.specs, exp.evaluation


def settings(tmp_path, **kw):
    return RunSettings(results_dir=str(tmp_path / "results"), threads=1, **kw)


def test_suite_writes_one_complete_record_per_run(tmp_path):
    specs, evaluation = suite(tmp_path)
    summary = run_suite(specs, settings(tmp_path, evaluation=evaluation), progress=False)
    assert len(specs) == 16 and summary.failed == [] and len(summary.outcomes) == 16
    store = RecordStore(tmp_path / "results")
    assert store.run_ids() == sorted(s.run_id for s in specs)
    rec = store.read(specs[-1].run_id)
    assert rec.status == "ok" and rec.spec == specs[-1].to_dict()
    assert len(rec.dataset["checksum"]) == 64
    proto_file = tmp_path / "results" / rec.protocol["file"]
    assert proto_file.is_file() and proto_file.stem == rec.protocol["digest"]
    assert rec.mask["n_labeled"] == rec.mask["n_train"] - round(specs[-1].mask_rate * rec.mask["n_train"])
    assert rec.metrics["i2t"]["ties"] == "average" and "n_no_relevant" in rec.metrics["t2i"]
    assert rec.evaluation["topk"] == [10]
    assert {"fit_s", "encode_s", "evaluate_s", "total_s"} <= set(rec.timings)
    assert rec.memory["peak_rss_mb"] > 0 and rec.device["resolved"] == "cpu" and rec.device["threads"] == 1
    assert rec.environment["packages"]["numpy"] == np.__version__ and "commit" in rec.environment["git"]
    codes = store.read_codes(specs[-1].run_id)
    assert codes["db_text"].shape == (rec.protocol["sizes"]["database"], specs[-1].n_bits)
    assert "record written: status ok" in store.log_path(specs[-1].run_id).read_text()
    assert len(list((tmp_path / "results" / "protocols").iterdir())) == 1  # saved once
    frame = load_frame(tmp_path / "results")
    assert frame["run_id"].nunique() == 16


def test_recorded_runs_are_skipped_unless_forced(tmp_path):
    specs, evaluation = suite(tmp_path, methods="[random]", seeds="[0]")
    s = settings(tmp_path, evaluation=evaluation)
    run_suite(specs, s, progress=False)
    store = RecordStore(tmp_path / "results")
    before = {rid: store.record_path(rid).stat().st_mtime_ns for rid in store.run_ids()}
    again = run_suite(specs, s, progress=False)
    assert again.outcomes == [] and len(again.skipped) == len(specs)
    assert {rid: store.record_path(rid).stat().st_mtime_ns for rid in store.run_ids()} == before
    forced = run_suite(specs, s, force=True, progress=False)
    assert len(forced.outcomes) == len(specs)


def test_failures_and_time_limits_are_recorded_and_the_suite_goes_on(tmp_path, plugins):
    specs, evaluation = suite(tmp_path, methods="[random, 'plugins_runner:Failing', 'plugins_runner:Sleepy']",
                              bits="[8]", masks="[0.0]", seeds="[0]")
    summary = run_suite(specs, settings(tmp_path, evaluation=evaluation, timeout=1.0), progress=False,
                        echo=lambda line: None)
    store = RecordStore(tmp_path / "results")
    by_method = {s.method: store.read(s.run_id) for s in specs}
    assert by_method["random"].status == "ok"
    failing = by_method["plugins_runner:Failing"]
    assert failing.status == "failed" and failing.error["message"] == "RuntimeError: deliberate failure in fit"
    assert failing.metrics is None and not failing.error["timed_out"]
    sleepy = by_method["plugins_runner:Sleepy"]
    assert sleepy.status == "failed" and sleepy.error["timed_out"]
    assert "time limit of 1s" in sleepy.error["message"] and sleepy.timings["total_s"] < 15
    assert "deliberate failure" in store.log_path(failing.run_id).read_text()
    assert len(summary.failed) == 2
    # failed records are kept (skipped) unless asked to retry them
    again = run_suite(specs, settings(tmp_path, evaluation=evaluation, timeout=1.0), progress=False, echo=lambda line: None)
    assert again.outcomes == []
    retried = run_suite(specs, settings(tmp_path, evaluation=evaluation, timeout=1.0), retry_failed=True,
                        progress=False, echo=lambda line: None)
    assert sorted(o.run_id for o in retried.outcomes) == sorted(summary.failed)


def test_output_goes_to_the_run_log_and_extras_to_the_record(tmp_path, plugins, capsys):
    specs, evaluation = suite(tmp_path, methods="['plugins_runner:Chatty']", bits="[8]", masks="[0.0]", seeds="[0]")
    run_suite(specs, settings(tmp_path, evaluation=evaluation), progress=False)
    store = RecordStore(tmp_path / "results")
    assert "hello from fit" in store.log_path(specs[0].run_id).read_text()
    assert "hello from fit" not in capsys.readouterr().out
    rec = store.read(specs[0].run_id)
    assert rec.extras == {"loss_curve": [2.0, 1.0, None]}  # NaN written as null


def test_bad_settings_fail_before_any_run(tmp_path):
    specs, evaluation = suite(tmp_path, methods="[random]", seeds="[0]")
    for kw, msg in [({"jobs": 0}, "--jobs 0"), ({}, "--timeout -1")]:
        s = settings(tmp_path, timeout=-1.0) if not kw else settings(tmp_path)
        with pytest.raises(InputError, match=msg):
            run_suite(specs, s, progress=False, **kw)
    assert not (tmp_path / "results" / "records").exists()


@pytest.mark.slow
def test_jobs_do_not_change_the_codes(tmp_path):
    """Acceptance: --jobs 2 gives bit-identical codes to --jobs 1 on CPU (same threads per run)."""
    specs, evaluation = suite(tmp_path, methods="[random, scm-orth, scm-seq]", bits="[8, 16]", masks="[0.0, 0.5]",
                              seeds="[0]")
    one = RunSettings(results_dir=str(tmp_path / "one"), threads=1, evaluation=evaluation)
    two = RunSettings(results_dir=str(tmp_path / "two"), threads=1, evaluation=evaluation)
    assert run_suite(specs, one, jobs=1, progress=False).failed == []
    assert run_suite(specs, two, jobs=2, progress=False).failed == []
    a, b = RecordStore(tmp_path / "one"), RecordStore(tmp_path / "two")
    assert a.run_ids() == b.run_ids() == sorted(s.run_id for s in specs)
    for rid in a.run_ids():
        ca, cb = a.read_codes(rid), b.read_codes(rid)
        assert ca.keys() == cb.keys()
        for key in ca:
            assert np.array_equal(ca[key], cb[key]), (rid, key)
        ma, mb = a.read(rid).metrics, b.read(rid).metrics
        assert json.dumps(ma, sort_keys=True) == json.dumps(mb, sort_keys=True)
