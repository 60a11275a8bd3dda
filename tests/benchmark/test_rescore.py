"""Metrics recomputed from stored codes: no fit, own-distance state restored, stale data never reused."""
from __future__ import annotations

import importlib
import json
import sys
import textwrap
import time

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.errors import DataFileError
from benchmark.records import RecordStore, load_frame

DATA = "{name: synthetic, label: syn, options: {n_items: 400, n_labels: 4, image_dim: 8, text_dim: 20, latent_dim: 4, noise: 0.3}}"

PLUGIN = textwrap.dedent('''
    import numpy as np
    from methods.random_projection import RandomProjection

    class Weighted(RandomProjection):
        """Ranks by a per-bit weighted Hamming distance; the weights are its distance state."""

        def fit(self, image, text, labels, labeled=None):
            super().fit(image, text, labels, labeled)
            self.weights_ = np.random.default_rng(self.random_state).uniform(0.5, 2.0, self.n_bits)
            return self

        def query_image(self, image):
            return self.encode_image(image).astype(np.float64)

        def query_text(self, text):
            return self.encode_text(text).astype(np.float64)

        def distance(self, queries, database_codes):
            q = np.asarray(queries, dtype=np.float64)
            d = np.asarray(database_codes, dtype=np.float64)
            return ((q[:, None, :] != d[None, :, :]) * self.weights_).sum(axis=2)

        def distance_state(self):
            return {"weights": self.weights_}

        def set_distance_state(self, state):
            self.weights_ = np.asarray(state["weights"])
            return self
''')


def write_suite(path, methods: str, evaluation: str) -> str:
    path.write_text(f"name: t\ndatasets: [{DATA}]\nmethods: {methods}\nbits: [8, 16]\nmask_rates: [0.0]\n"
                    f"seeds: [0, 1]\nevaluation: {evaluation}\n")
    return str(path)


def run(suite, tmp_path, *extra):
    return main(["run", "--suite", suite, "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"),
                 "--no-plots", "--quiet", "--no-progress", "--device", "cpu", "--threads", "1", *extra])


@pytest.fixture
def no_fit(monkeypatch):
    """Any run that reaches evaluate_run (a fit) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a run was refitted")

    def arm():
        monkeypatch.setattr("benchmark.runner.evaluate_run", refuse)
    return arm


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "rescore_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rescore_plugin", None)
    yield importlib.import_module("rescore_plugin")
    sys.modules.pop("rescore_plugin", None)


def test_adding_topk_100_rescores_every_run_without_a_fit_then_report_renders(tmp_path, no_fit, capsys):
    suite = write_suite(tmp_path / "s.yaml", "[random, scm-orth]", "{topk: [50]}")
    assert run(suite, tmp_path) == 0
    store = RecordStore(tmp_path / "r")
    before = {rid: store.read(rid) for rid in store.run_ids()}
    assert len(before) == 8 and all("map@100" not in r.metrics["i2t"] for r in before.values())
    assert main(["report", "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"),
                 "--metric", "map@100", "--no-plots", "--quiet"]) == 2  # not in the records yet

    suite = write_suite(tmp_path / "s.yaml", "[random, scm-orth]", "{topk: [50, 100]}")
    no_fit()
    t0 = time.perf_counter()
    assert run(suite, tmp_path) == 0
    elapsed = time.perf_counter() - t0
    assert "8 recorded run(s) rescored from their stored codes" in capsys.readouterr().err
    assert elapsed < 60
    for rid, old in before.items():
        new = store.read(rid)
        assert new.rescored_at is not None and new.finished_at == old.finished_at  # same run, not rerun
        assert new.codes == old.codes and new.evaluation["topk"] == [50, 100]
        for direction in ("i2t", "t2i"):
            assert 0 <= new.metrics[direction]["map@100"] <= 1
            # the other metrics come out exactly as the fit-time evaluation gave them
            assert new.metrics[direction]["map"] == old.metrics[direction]["map"]
            assert new.metrics[direction]["map@50"] == old.metrics[direction]["map@50"]
    assert main(["report", "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"),
                 "--metric", "map@100", "--no-plots", "--quiet"]) == 0
    assert "map@100" in (tmp_path / "rep" / "results.md").read_text()
    assert (tmp_path / "rep" / "table_map@100_mask0.md").is_file()
    # a third run has nothing to do
    assert run(suite, tmp_path) == 0
    assert all(store.read(rid).rescored_at == r for rid, r in
               ((rid, store.read(rid).rescored_at) for rid in before))


def test_other_conventions_are_rescored_and_equal_a_fresh_evaluation(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "[scm-orth]", "{topk: [50]}")
    assert run(suite, tmp_path) == 0
    suite = write_suite(tmp_path / "s.yaml", "[scm-orth]", "{topk: [50], ties: stable, no_relevant: zero}")
    assert main(["rescore", "--suite", suite, "--results-dir", str(tmp_path / "r")]) == 0
    rescored = load_frame(tmp_path / "r")
    assert main(["run", "--suite", suite, "--results-dir", str(tmp_path / "fresh"), "--no-report", "--quiet",
                 "--no-progress", "--device", "cpu", "--threads", "1"]) == 0
    fresh = load_frame(tmp_path / "fresh")
    cols = ["run_id", "direction", "metric", "x", "value", "ties", "no_relevant"]
    assert set(rescored["ties"].dropna()) == {"stable"} and set(rescored["no_relevant"].dropna()) == {"zero"}
    a = rescored[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = fresh[cols].sort_values(cols[:4]).reset_index(drop=True)
    assert a.equals(b)


def test_own_distance_runs_are_rescored_through_their_stored_state(tmp_path, plugin, no_fit):
    suite = write_suite(tmp_path / "s.yaml", "['rescore_plugin:Weighted']", "{topk: [50]}")
    assert run(suite, tmp_path) == 0
    store = RecordStore(tmp_path / "r")
    rid = store.run_ids()[0]
    stored = store.read_codes(rid)
    assert stored["state__weights"].shape == (store.read(rid).spec["n_bits"],)
    assert "query_image_repr" in stored and "query_text_repr" in stored
    assert store.read(rid).metrics["i2t"]["pr_hamming"] is None  # no Hamming radius for an own distance
    old = {r: store.read(r).metrics for r in store.run_ids()}
    suite = write_suite(tmp_path / "s.yaml", "['rescore_plugin:Weighted']", "{topk: [50, 100]}")
    no_fit()
    assert run(suite, tmp_path) == 0
    for r, metrics in old.items():
        new = store.read(r).metrics
        assert new["i2t"]["map"] == metrics["i2t"]["map"] and new["t2i"]["map@50"] == metrics["t2i"]["map@50"]
        assert "map@100" in new["i2t"]


def test_rescoring_without_the_state_would_give_other_numbers(tmp_path, plugin):
    """The state matters: ranking with other weights changes MAP, so the equality above is a real check."""
    from benchmark.evaluate import EvalConfig
    from benchmark.rescore import rescore_record

    suite = write_suite(tmp_path / "s.yaml", "['rescore_plugin:Weighted']", "{topk: [50]}")
    assert run(suite, tmp_path) == 0
    store = RecordStore(tmp_path / "r")
    rec = store.read(store.run_ids()[0])
    codes_file = tmp_path / "r" / rec.codes
    arrays = dict(np.load(codes_file))
    arrays["state__weights"] = np.linspace(0.01, 5.0, arrays["state__weights"].size)[::-1]
    path, digest = store.write_codes(rec.run_id, arrays)
    rec.codes, rec.codes_sha256 = store.relative(path), digest
    again = rescore_record(store, rec, EvalConfig(topk=(50,)))
    assert again.metrics["i2t"]["map"] != rec.metrics["i2t"]["map"]


def _one_recorded_run(tmp_path):
    """A one-run suite, run: (suite file, store, run id, record path, the record as JSON)."""
    suite = write_suite(tmp_path / "s.yaml", "[random]", "{topk: [50]}")
    assert run(suite, tmp_path) == 0
    store = RecordStore(tmp_path / "r")
    rid = store.run_ids()[0]
    path = store.record_path(rid)
    return suite, store, rid, path, json.loads(path.read_text())


def test_changed_data_is_rerun_never_reused(tmp_path, capsys):
    suite, store, rid, path, raw = _one_recorded_run(tmp_path)
    raw["data_checksum"] = "0" * 64  # recorded against other data files
    path.write_text(json.dumps(raw))
    capsys.readouterr()
    assert run(suite, tmp_path) == 0
    assert "1 recorded run(s) read data files that changed since; rerunning them" in capsys.readouterr().err
    rec = store.read(rid)
    assert rec.data_checksum != "0" * 64 and rec.finished_at != raw["finished_at"] and rec.rescored_at is None


def test_schema_1_records_are_read_and_newer_ones_refused_in_one_line(tmp_path):
    suite, store, rid, path, raw = _one_recorded_run(tmp_path)
    v1 = {k: v for k, v in raw.items() if k not in ("evaluation_digest", "data_checksum", "rescored_at")}
    v1["schema"] = 1
    v1["method"] = {k: v for k, v in raw["method"].items() if k not in ("order", "dataset_order")}
    path.write_text(json.dumps(v1))
    rec = store.read(rid)
    assert rec.evaluation_digest == raw["evaluation_digest"] and rec.data_checksum == raw["data_checksum"]
    assert rec.method["order"] == raw["method"]["order"] is not None
    path.write_text(json.dumps({**raw, "schema": 99}))
    with pytest.raises(DataFileError, match=r"schema 99 is newer than this cmh-bench reads \(1 to 2\)") as info:
        store.read(rid)
    assert "\n" not in str(info.value)
    assert run(suite, tmp_path) == 2  # refused, not rerun over
