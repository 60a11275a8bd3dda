"""Evaluation glue: what a method sees, what is measured, validation before work, memory and caching."""
from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import pytest

from benchmark.errors import InputError
from benchmark.codesfile import pack_code_rows, unpack_code_rows
from benchmark.datacache import load_dataset_cached
from benchmark.evaluate import DIRECTIONS, EvalConfig, compute_metrics, evaluate_run, validate_spec
from benchmark.memory import PeakMemory
from benchmark.suites import RunSpec, canonical_json

OPTIONS = {"n_items": 150, "n_labels": 4, "image_dim": 8, "text_dim": 20, "latent_dim": 4, "noise": 0.3}

PLUGINS = textwrap.dedent('''
    import numpy as np
    import scipy.sparse as sp
    from methods.base import Hasher, binarize

    def _proj(x, mean, w):
        xw = x @ w if sp.issparse(x) else np.asarray(x, dtype=np.float64) @ w
        return np.asarray(xw) - mean @ w

    class Spy(Hasher):
        """Random projections that remember what fit was given."""
        needs_labels = False
        fits = []

        def __init__(self, n_bits=8, random_state=0):
            self.n_bits = n_bits
            self.random_state = random_state

        def fit(self, image, text, labels, labeled=None):
            type(self).fits.append({"image": np.array(image), "labels": np.array(labels), "labeled": np.array(labeled)})
            image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
            rng = np.random.default_rng(self.random_state)
            self.mi_ = np.asarray(image.mean(axis=0)).ravel()
            self.mt_ = np.asarray(text.mean(axis=0)).ravel()
            self.wi_ = rng.standard_normal((image.shape[1], self.n_bits))
            self.wt_ = rng.standard_normal((text.shape[1], self.n_bits))
            self.extras_ = {"loss": np.array([3.0, 2.0, 1.0]), "note": "spy"}
            self.kl_history_ = np.array([0.5, 0.25])
            return self

        def encode_image(self, x):
            x = self._validate_encode(x, "image", self.wi_.shape[0])
            return binarize(_proj(x, self.mi_, self.wi_))

        def encode_text(self, x):
            x = self._validate_encode(x, "text", self.wt_.shape[0])
            return binarize(_proj(x, self.mt_, self.wt_))

    class OwnDistanceSpy(Spy):
        """Ranks by its own distance (here: Hamming computed by hand), counting the calls."""
        calls = []

        def distance(self, queries, database_codes):
            type(self).calls.append(queries.shape)
            q = np.asarray(queries, dtype=np.int64)
            d = np.asarray(database_codes, dtype=np.int64)
            return (q.shape[1] - q @ d.T) / 2.0
''')


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "plugins_evaluate.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("plugins_evaluate", None)
    mod = importlib.import_module("plugins_evaluate")
    yield mod
    sys.modules.pop("plugins_evaluate", None)


def spec(method="random", n_bits=16, mask_rate=0.0, seed=0, options=None, dataset="synthetic", params=None):
    return RunSpec(method, canonical_json(params or {}), dataset, canonical_json(options or OPTIONS), n_bits,
                   mask_rate, seed, method, dataset)


def test_fit_sees_only_training_rows_with_masked_labels_zeroed(plugins):
    s = spec("plugins_evaluate:Spy", mask_rate=0.6, seed=3)
    out = evaluate_run(s, config=EvalConfig(topk=(10,), precision_ns=(1, 10)))
    data = load_dataset_cached("synthetic", None, OPTIONS)
    proto = data.protocol
    (seen,) = plugins.Spy.fits
    train_image, _, train_labels = data.subset(proto.train)
    assert np.array_equal(seen["image"], train_image)  # exactly the training rows, in protocol order
    n = len(proto.train)
    assert seen["labeled"].sum() == n - round(0.6 * n) == out.mask["n_labeled"]
    assert not seen["labels"][~seen["labeled"]].any()  # hidden labels are zero
    assert np.array_equal(seen["labels"][seen["labeled"]], train_labels[seen["labeled"]])
    # Explicit extras_ plus every learned *history_ attribute (loss curves) by default.
    assert out.extras == {"loss": [3.0, 2.0, 1.0], "note": "spy", "kl_history": [0.5, 0.25]}


def test_metrics_of_both_directions_with_conventions(plugins):
    s = spec("plugins_evaluate:Spy", n_bits=12)
    config = EvalConfig(topk=(10, 5000), precision_ns=(1, 10, 10**6))
    out = evaluate_run(s, config=config)
    data = load_dataset_cached("synthetic", None, OPTIONS)
    nq, nd = len(data.protocol.query), len(data.protocol.database)
    assert set(out.metrics) == set(DIRECTIONS) == {"i2t", "t2i"}
    for m in out.metrics.values():
        assert 0 <= m["map"] <= 1 and 0 <= m["map_stable"] <= 1 and 0 <= m["ndcg"] <= 1
        assert m["n_queries"] == nq and m["ties"] == "average" and m["no_relevant"] == "exclude"
        assert "map@10" in m and "map@5000" not in m  # k beyond the database size is dropped
        assert m["precision_at_n"]["n"] == [1, 10]
        assert m["pr_hamming"]["radius"] == list(range(13))
    for key, rows in (("db_image", nd), ("db_text", nd), ("query_image", nq), ("query_text", nq)):
        assert out.codes[key].shape == (rows, 12) and out.codes[key].dtype == np.int8
    assert out.timings["fit_s"] >= 0 and out.timings["encode_s"] >= 0 and out.timings["evaluate_s"] > 0
    assert out.device["resolved"] == "cpu"


def test_recorded_metrics_can_be_recomputed_from_the_codes(plugins):
    """I->T ranks image queries against the text database; T->I the reverse (checked via metrics)."""
    from benchmark import metrics as M

    config = EvalConfig(topk=(10,), precision_ns=(5,))
    out = evaluate_run(spec("plugins_evaluate:Spy"), config=config)
    data = load_dataset_cached("synthetic", None, OPTIONS)
    ql, dl = data.labels[data.protocol.query], data.labels[data.protocol.database]
    again = compute_metrics({"image": out.codes["query_image"], "text": out.codes["query_text"]},
                            {"image": out.codes["db_image"], "text": out.codes["db_text"]}, ql, dl, config)
    assert json.dumps(again, sort_keys=True) == json.dumps(out.metrics, sort_keys=True)
    i2t = M.mean_average_precision(out.codes["query_image"], out.codes["db_text"], ql, dl).value
    t2i = M.mean_average_precision(out.codes["query_text"], out.codes["db_image"], ql, dl).value
    assert out.metrics["i2t"]["map"] == i2t and out.metrics["t2i"]["map"] == t2i
    assert i2t != t2i


def test_own_distance_is_passed_to_the_metrics(plugins):
    config = EvalConfig(topk=(10,), precision_ns=(5,))
    own = evaluate_run(spec("plugins_evaluate:OwnDistanceSpy"), config=config)
    assert plugins.OwnDistanceSpy.calls  # the evaluator ranked with the method's distance
    ham = evaluate_run(spec("plugins_evaluate:Spy"), config=config)
    for d in DIRECTIONS:
        assert own.metrics[d]["pr_hamming"] is None and ham.metrics[d]["pr_hamming"] is not None
        # same codes, same (Hamming) distance computed by hand: the same tie-aware MAP
        assert own.metrics[d]["map"] == pytest.approx(ham.metrics[d]["map"], abs=1e-12)


def test_supervised_method_beats_random_on_easy_data():
    config = EvalConfig(topk=(10,), precision_ns=(5,))
    rnd = evaluate_run(spec("random"), config=config)
    scm = evaluate_run(spec("scm-seq"), config=config)
    for d in DIRECTIONS:
        assert scm.metrics[d]["map"] > rnd.metrics[d]["map"] + 0.1


@pytest.mark.parametrize("bad, message", [
    (dict(method="no-such-method"), "unknown method"),
    (dict(method="plugins_evaluate:Spy", n_bits=0), "n_bits=0 is invalid; valid: an int in \\[1, 1024\\]"),
    (dict(method="plugins_evaluate:Spy", mask_rate=1.0), "mask_rate=1.0 is invalid"),
    (dict(method="plugins_evaluate:Spy", dataset="no-such-data"), "unknown dataset"),
    (dict(method="plugins_evaluate:Spy", params={"lam": 1}), "unknown parameter(s) lam"),
])
def test_bad_spec_fails_before_any_work(plugins, bad, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_spec(spec(**bad))
    assert plugins.Spy.fits == []


def test_eval_config_validation():
    assert EvalConfig.from_dict({"topk": 20}).topk == (20,)
    for bad, msg in [({"topk": []}, "topk must be"), ({"ties": "random"}, "ties='random'"),
                     ({"unknown": 1}, "unknown key"), ({"ndcg_k": 0}, "ndcg_k must be")]:
        with pytest.raises(InputError, match=msg):
            EvalConfig.from_dict(bad)


def test_dataset_loading_is_cached_per_process():
    a = load_dataset_cached("synthetic", None, {"n_items": 60, "seed": 1})
    b = load_dataset_cached("synthetic", None, {"seed": 1, "n_items": 60})
    c = load_dataset_cached("synthetic", None, {"n_items": 60, "seed": 2})
    assert a is b and a is not c


def test_peak_memory_sees_an_allocation_inside_the_block():
    with PeakMemory() as mem:
        block = np.ones(50 * 2**20 // 8)  # 50 MB touched
        del block
    if mem.scope != "run":
        pytest.skip("per-block peak needs Linux /proc/self/clear_refs")
    assert mem.peak_mb - mem.start_mb > 40


def test_pack_unpack_codes():
    codes = np.array([[1, -1, 1], [-1, -1, 1]], dtype=np.int8)
    assert pack_code_rows(codes).shape == (2, 1)
    assert np.array_equal(unpack_code_rows(pack_code_rows(codes), 3), codes)


def test_method_that_cannot_read_pixels_gets_the_datasets_gist_features(plugins, tmp_path, monkeypatch):
    """On a dataset whose image side is pixels, a feature-only method is fitted on the declared GIST
    features (mirflickr25k-mini: 512-d at 128 px), and the record says so."""
    import datasets
    from methods.base import Hasher

    monkeypatch.setenv("CMH_CACHE_DIR", str(tmp_path / "cache"))
    assert not plugins.Spy.accepts_pixels and not Hasher.accepts_pixels
    out = evaluate_run(spec("plugins_evaluate:Spy", dataset="mirflickr25k-mini", options={"seed": 0}),
                       config=EvalConfig(topk=(10,), precision_ns=(1,)))
    (seen,) = plugins.Spy.fits
    assert seen["image"].shape == (624, 512) and seen["image"].dtype == np.float32
    assert out.dataset["image_features"] == "gist" and out.dataset["image"] == [724, 512]
    assert json.loads(out.dataset["image_features_params"])["image_size"] == 128
    assert datasets.default_image_features("mirflickr25k-mini") == {"image_features": "gist", "gist_size": 128}
    assert datasets.default_image_features("mirflickr25k") == {"image_features": "gist"}
