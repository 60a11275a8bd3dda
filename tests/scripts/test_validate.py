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


def test_heldout_database_retrieves_no_fitted_item_and_never_a_query_item(monkeypatch):
    import datasets
    import methods

    ds = datasets.load_dataset("wiki")
    subsets, fitted = [], []
    original_subset, original_fit = type(ds).subset, methods.get_method("random").fit

    def spy_subset(self, idx):
        subsets.append(np.asarray(idx))
        return original_subset(self, idx)

    def spy_fit(self, image, *args, **kwargs):
        fitted.append(image.shape[0])
        return original_fit(self, image, *args, **kwargs)

    monkeypatch.setattr(type(ds), "subset", spy_subset)
    monkeypatch.setattr(methods.get_method("random"), "fit", spy_fit)
    out = validation_map("random", {}, "wiki", n_bits=16, seed=0, fraction=0.3, database="heldout")
    fit, database, queries = subsets[0], subsets[1], subsets[2]  # fit set, then database, then queries
    assert fitted == [fit.size] and out["n_fit"] == fit.size
    assert (out["n_validation"], out["n_database"]) == (queries.size, database.size) == (217, 435)
    assert not np.intersect1d(fit, database).size and not np.intersect1d(queries, database).size
    used = np.concatenate(subsets)
    assert np.isin(used, ds.protocol.train).all() and not np.isin(used, ds.protocol.query).any()
    assert out["database"] == "heldout" and 0.0 < out["val_map_i2t"] < 1.0
    fit_db = validation_map("random", {}, "wiki", n_bits=16, seed=0, fraction=0.3)
    assert fit_db["n_database"] == fit_db["n_fit"] == fit.size and fit_db["n_validation"] == 652
    with pytest.raises(SystemExit, match="valid: fit, heldout"):
        validation_map("random", {}, "wiki", database="test")
    fitted.clear()
    with pytest.raises(SystemExit, match="at least 2 held-out items"):  # one held-out item: refused before the fit
        validation_map("random", {}, "wiki", fraction=0.0005, database="heldout")
    assert fitted == []


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


# ------------------------------------------------------------------------------- --selection
def test_grid_is_the_cartesian_product_with_json_values():
    from validate import parse_grid

    assert parse_grid(["sampler=bins,top", "lam=0.1,1"]) == [
        {"sampler": "bins", "lam": 0.1}, {"sampler": "bins", "lam": 1},
        {"sampler": "top", "lam": 0.1}, {"sampler": "top", "lam": 1}]
    with pytest.raises(SystemExit, match="PARAM=V1,V2"):
        parse_grid(["sampler"])


def test_candidates_file_yaml_and_json(tmp_path):
    from validate import load_candidates

    y = tmp_path / "c.yaml"
    y.write_text("bits: 32\nbase_params: {n_iter: 50}\ncandidates:\n  - {params: {lam: 0.1}}\n  - {lam: 1.0}\n"
                 "grid: {sampler: [bins, top]}\n")
    got = load_candidates(y)
    assert got["bits"] == 32 and got["base_params"] == {"n_iter": 50}
    assert [c["params"] for c in got["candidates"]] == [{"lam": 0.1}, {"lam": 1.0}, {"sampler": "bins"},
                                                        {"sampler": "top"}]
    j = tmp_path / "c.json"
    j.write_text('[{"lam": 0.5}]')
    assert load_candidates(j) == {"candidates": [{"params": {"lam": 0.5}}]}
    j.write_text("{}")
    with pytest.raises(SystemExit, match="no candidates"):
        load_candidates(j)


def test_run_selection_runs_every_candidate_for_every_seed(monkeypatch):
    import validate

    calls = []

    def fake(method, overrides, dataset, n_bits, seed, mask, fraction, device, match_steps, dataset_options,
             database):
        calls.append((method, dict(overrides), dataset, n_bits, seed, mask, fraction, match_steps, dataset_options,
                      database))
        return {"val_map_i2t": 0.1 * overrides["lam"] + seed / 100, "val_map_t2i": 0.2, "fit_s": 1.0}

    monkeypatch.setattr(validate, "validation_map", fake)
    sel = {"dataset": "wiki", "bits": 8, "mask": 0.3, "fraction": 0.25, "match_steps": False,
           "dataset_options": {"database": "train"}, "base_params": {"n_iter": 5}, "seeds": [9],
           "candidates": [{"params": {"lam": 1.0}, "map_i2t": [0.5, None]}, {"params": {"lam": 2.0, "n_iter": 7}}]}
    saved = []
    out = validate.run_selection("rdcmh", sel, seeds=[0, 1, 2], progress=lambda m: None,
                                 on_candidate=lambda r: saved.append(len(r["candidates"])))
    assert [(c[1], c[4]) for c in calls] == [({"n_iter": 5, "lam": 1.0}, s) for s in (0, 1, 2)] + [
        ({"n_iter": 7, "lam": 2.0}, s) for s in (0, 1, 2)]
    assert all(c[2:4] == ("wiki", 8) and c[5:] == (0.3, 0.25, False, {"database": "train"}, "fit") for c in calls)
    assert out["seeds"] == [0, 1, 2] and saved == [1, 2]
    first = out["candidates"][0]
    assert first["map_i2t"] == [0.11, 0.01]  # 0.10, 0.11, 0.12: mean 0.11, sample std 0.01
    assert first["map_t2i"] == [0.2, 0.0] and first["recorded"]["map_i2t"] == [0.5, None]
    assert "recorded" not in out["candidates"][1]
    table = validate.selection_table(out)
    assert "| lam=1.0 | 0.1100 ± 0.0100 | 0.2000 ± 0.0000 | 0.5000 | n/a |" in table


def test_rdcmh_selection_is_well_formed_and_names_real_parameters():
    from validate import check_selection

    from methods import get_method

    cls = get_method("rdcmh")
    sel = check_selection(cls.validation_selection, "rdcmh")
    names = set(cls._get_param_names())
    assert len(sel["candidates"]) >= 10 and sel["dataset"] == "wiki"
    for cand in sel["candidates"]:
        params = {**sel["base_params"], **cand["params"]}
        assert set(params) <= names
        cls(**params).validate_params()
        assert len(cand["map_i2t"]) == 2 and len(cand["map_t2i"]) == 2
    assert set(sel["chosen"]) <= names and all(cls().get_params()[k] == v for k, v in sel["chosen"].items())
    with pytest.raises(SystemExit, match="lacks"):
        check_selection({"dataset": "wiki"}, "x")


def test_selection_command_end_to_end_on_a_tiny_grid(tmp_path, capsys):
    import json

    from validate import main

    out = tmp_path / "sel.json"
    main(["--selection", "rdcmh", "--seeds", "0,1", "--grid", "sampler=bins,pairs", "--set", "n_iter=2",
          "--set", "image_hidden=16", "--set", "text_hidden=16", "--set", "batch_size=16", "--bits", "8",
          "--json", str(out)])
    text = capsys.readouterr().out
    assert "| sampler=bins |" in text and "| sampler=pairs |" in text and "seeds 0,1" in text
    res = json.loads(out.read_text())
    assert [len(c["runs"]) for c in res["candidates"]] == [2, 2] and res["bits"] == 8
    assert res["base_params"]["n_iter"] == 2
    with pytest.raises(SystemExit, match="exactly one"):
        main([])


def test_shipped_candidate_files_load_and_name_real_parameters():
    """scripts/selections/<method>_*.yaml: the files the method pages cite for their extra checks."""
    from validate import SETTINGS, load_candidates

    from methods import get_method

    files = sorted((Path(__file__).resolve().parents[2] / "scripts" / "selections").glob("*.yaml"))
    assert files
    for path in files:
        cls = get_method(path.stem.split("_")[0])
        got = load_candidates(path)
        assert set(got) <= {*SETTINGS, "base_params", "seeds", "candidates"}
        for cand in got["candidates"]:
            cls(**{**got.get("base_params", {}), **cand["params"]}).validate_params()
