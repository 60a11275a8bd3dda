"""Records: atomic JSON/npz writes, NaN -> null, stale temporaries, codes round trip, the tidy frame."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from benchmark.codesfile import codes_arrays
from benchmark.errors import DataFileError
from benchmark.records import (FRAME_COLUMNS, RecordStore, atomic_write_json, load_frame, records_to_frame,
                               remove_stale_temporaries, to_jsonable)


def test_to_jsonable_writes_nan_and_inf_as_null_and_numpy_as_python():
    out = to_jsonable({"a": float("nan"), "b": np.float32(np.inf), "c": np.int64(3), "d": np.array([1.5, np.nan]),
                       "e": (np.bool_(True), None), 4: "x"})
    assert out == {"a": None, "b": None, "c": 3, "d": [1.5, None], "e": [True, None], "4": "x"}
    assert type(out["c"]) is int


def test_atomic_write_json_leaves_only_the_file(tmp_path):
    path = tmp_path / "records" / "abc.json"
    atomic_write_json(path, {"x": float("nan"), "y": [1, 2]})
    assert os.listdir(path.parent) == ["abc.json"]
    text = path.read_text()
    assert "NaN" not in text and json.loads(text) == {"x": None, "y": [1, 2]}


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def _dead_pid() -> int:
    import psutil

    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    dead = records / f".tmp-{_dead_pid()}-abc"
    alive = records / f".tmp-{os.getpid()}-abc"
    keep = records / "0123.json"
    for p in (dead, alive, keep):
        p.write_text("{}")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in records.iterdir()) == sorted([alive.name, keep.name])


@pytest.mark.parametrize("n_bits", [1, 13, 64])
def test_codes_round_trip_packed(tmp_path, n_bits):
    rng = np.random.default_rng(n_bits)
    codes = {k: np.where(rng.random((7, n_bits)) < 0.5, -1, 1).astype(np.int8)
             for k in ("db_image", "db_text", "query_image", "query_text")}
    store = RecordStore(tmp_path)
    path, digest = store.write_codes("rid", codes_arrays(codes, n_bits, {"query_image_repr": np.arange(6.0).reshape(2, 3)}))
    assert path.name == f"rid-{digest[:16]}.npz" and len(digest) == 64
    store.write_record({"run_id": "rid", "spec": {}, "codes": store.relative(path), "codes_sha256": digest})
    back = store.read_codes("rid")
    for k, v in codes.items():
        assert back[k].dtype == np.int8 and np.array_equal(back[k], v)
    assert np.array_equal(back["query_image_repr"], np.arange(6.0).reshape(2, 3))


def test_codes_are_bound_to_their_record_by_hash(tmp_path):
    """Codes of another process (different content) get another file name, and a record never reads them."""
    store = RecordStore(tmp_path)
    ones = {"db_image": np.ones((3, 8), np.int8)}
    mine, digest = store.write_codes("rid", codes_arrays(ones, 8))
    other, _ = store.write_codes("rid", codes_arrays({"db_image": -ones["db_image"]}, 8))
    assert mine != other and mine.is_file() and other.is_file()
    store.write_record({"run_id": "rid", "spec": {}, "codes": store.relative(mine), "codes_sha256": digest})
    store.remove_other_codes("rid", store.relative(mine))
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == [mine.name]
    assert (store.read_codes("rid")["db_image"] == 1).all()
    mine.write_bytes(b"not these codes")  # the file changed under its record
    with pytest.raises(DataFileError, match="SHA-256 does not match record rid"):
        store.read_codes("rid")
    with pytest.raises(DataFileError, match="no readable record"):
        store.read_codes("absent")


def test_protocol_saved_once_and_loadable(tmp_path):
    from datasets import Protocol

    proto = Protocol("p", 3, np.array([0, 1]), np.array([2, 3, 4]), np.array([2, 3]))
    store = RecordStore(tmp_path)
    path = store.save_protocol(proto)
    mtime = path.stat().st_mtime_ns
    assert store.save_protocol(proto) == path and path.stat().st_mtime_ns == mtime
    back = Protocol.load(path)
    assert back.digest == proto.digest and path.name == f"{proto.digest}.npz"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def _record(run_id, status="ok", map_i2t=0.5, label="random", seed=0):
    rec = {
        "run_id": run_id, "status": status,
        "spec": {"method": "random", "label": label, "params": {}, "dataset": "synthetic", "dataset_label": "syn",
                 "dataset_options": {}, "n_bits": 16, "mask_rate": 0.0, "seed": seed},
        "mask": {"n_train": 10, "n_labeled": 10}, "device": {"resolved": "cpu", "threads": 1},
        "timings": {"fit_s": 0.1, "encode_s": 0.01, "evaluate_s": 0.02}, "memory": {"peak_rss_mb": 100.0},
    }
    if status == "ok":
        def direction(v):
            return {"map": v, "map_stable": v, "map@10": v, "ndcg": None, "n_queries": 5, "n_no_relevant": 1,
                    "ties": "average", "no_relevant": "exclude",
                    "precision_at_n": {"n": [1, 5], "precision": [1.0, 0.6]},
                    "pr_hamming": {"radius": [0, 1, 2], "precision": [0.0, 0.5, 0.4], "recall": [0.0, 0.2, 1.0]}}
        rec["metrics"] = {"i2t": direction(map_i2t), "t2i": direction(0.25)}
        rec["error"] = None
    else:
        rec["metrics"] = None
        rec["error"] = {"type": "RuntimeError", "message": "RuntimeError: boom"}
    return rec


def test_frame_is_tidy_one_row_per_run_direction_metric_point():
    frame = records_to_frame([_record("b"), _record("a", status="failed")])
    assert list(frame.columns) == FRAME_COLUMNS
    ok = frame[frame["run_id"] == "b"]
    # per direction: 4 scalars + 2 precision@N points + 3 radii x (precision, recall)
    assert len(ok) == 2 * (4 + 2 + 6)
    assert ok.loc[(ok["direction"] == "i2t") & (ok["metric"] == "map"), "value"].item() == 0.5
    assert math.isnan(ok.loc[(ok["direction"] == "i2t") & (ok["metric"] == "ndcg"), "value"].item())
    pan = ok[(ok["direction"] == "t2i") & (ok["metric"] == "precision_at_n")]
    assert pan["x"].tolist() == [1.0, 5.0] and pan["value"].tolist() == [1.0, 0.6]
    failed = frame[frame["run_id"] == "a"]
    assert len(failed) == 1 and failed["error"].item() == "RuntimeError: boom" and failed["metric"].isna().all()
    assert (ok["n_no_relevant"] == 1).all() and (ok["fit_s"] == 0.1).all()


def test_frame_is_independent_of_record_order():
    recs = [_record(f"r{i}", map_i2t=i / 10, seed=i) for i in range(4)]
    a = records_to_frame(recs)
    b = records_to_frame(recs[::-1])
    assert a.equals(b)


def test_load_records_reads_every_record_and_filters(tmp_path):
    store = RecordStore(tmp_path)
    for rid in ("r1", "r2", "r3"):
        store.write_record(_record(rid))
    assert set(load_frame(tmp_path)["run_id"]) == {"r1", "r2", "r3"}
    assert set(load_frame(tmp_path, run_ids=["r2"])["run_id"]) == {"r2"}
    assert store.read("r1").status == "ok" and store.read("missing") is None


def test_corrupt_record_is_an_error_naming_the_file(tmp_path):
    store = RecordStore(tmp_path)
    store.write_record(_record("good"))
    (tmp_path / "records" / "bad.json").write_text('{"run_id": "bad", "status": ')
    with pytest.raises(DataFileError, match=r"bad\.json: cannot be parsed"):
        load_frame(tmp_path)
    assert store.read("bad") is None  # the runner treats it as not done and reruns it
