"""scripts/validate.py: the validation split stays inside the training items, overrides parse."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from validate import parse_overrides, validation_map, validation_split  # noqa: E402


def test_split_is_a_seeded_partition_of_the_training_items_only():
    train = np.arange(100, 600)  # training indices of some protocol; queries live elsewhere
    fit, val = validation_split(train, seed=0)
    assert val.size == 100 and fit.size == 400
    assert np.array_equal(np.sort(np.concatenate([fit, val])), train)  # disjoint, covers train, nothing else
    again = validation_split(train, seed=0)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], val)
    assert not np.array_equal(validation_split(train, seed=1)[1], val)


def test_overrides_parse_json_values_and_reject_bad_pairs():
    assert parse_overrides(["lam=0.1", "loss=hinge", "n_iter=5", "flag=true"]) == {
        "lam": 0.1, "loss": "hinge", "n_iter": 5, "flag": True}
    with pytest.raises(SystemExit, match="PARAM=VALUE"):
        parse_overrides(["lam"])
    with pytest.raises(SystemExit, match=r"\(0, 1\)"):
        validation_split(np.arange(10), seed=0, fraction=1.0)


def test_validation_map_on_wiki_never_uses_query_items(monkeypatch):
    import datasets

    ds = datasets.load_dataset("wiki")
    seen = []
    original = type(ds).subset

    def spy(self, idx):
        seen.append(np.asarray(idx))
        return original(self, idx)

    monkeypatch.setattr(type(ds), "subset", spy)
    out = validation_map("random", {}, "wiki", n_bits=16, seed=0)
    used = np.concatenate(seen)
    assert np.isin(used, ds.protocol.train).all() and not np.isin(used, ds.protocol.query).any()
    assert out["n_fit"] + out["n_validation"] == len(ds.protocol.train)
    assert 0.0 < out["val_map_i2t"] < 1.0 and 0.0 < out["val_map_t2i"] < 1.0
    with pytest.raises(SystemExit, match="not a parameter of random"):
        validation_map("random", {"bogus": 1}, "wiki")


def test_matched_epochs_keep_the_number_of_sgd_steps():
    from validate import matched_epochs

    # Wiki: 2173 training items -> 17 batches of 128 per epoch; the 1738-item fit set -> 14.
    assert matched_epochs(500, 128, 2173, 1738) == round(500 * 17 / 14)
    assert matched_epochs(500, 128, 2173, 2173) == 500
    assert matched_epochs(10, 1000, 300, 240) == 10  # one (short) batch per epoch either way


def test_match_steps_sets_epochs_and_records_the_training_objective():
    out = validation_map("dcmh", {"epochs": 6, "image_hidden": 16, "text_hidden": 16}, "wiki", n_bits=8,
                         seed=0, match_steps=True)
    assert out["epochs"] == 7  # round(6 * 17 / 14)
    assert out["loss_history_epochs"] == [0, 6] and len(out["loss_history"]) == 2
    with pytest.raises(SystemExit, match="no epochs and batch_size"):
        validation_map("random", {}, "wiki", match_steps=True)
