"""Suites: shipped YAML files, expansion into frozen run specs, run ids, filters, bad files."""
from __future__ import annotations

import textwrap

import pytest

from benchmark.errors import InputError
from benchmark.suites import RunSpec, expand_suite, filter_specs, list_suites, load_suite

SMALL_DATA = "{name: synthetic, label: syn, options: {n_items: 120, n_labels: 4, image_dim: 8, text_dim: 20, latent_dim: 4}}"


def write_suite(tmp_path, body: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def basic(tmp_path, methods="[random, scm-orth]", extra=""):
    return write_suite(tmp_path, f"""
        name: t
        datasets: [{SMALL_DATA}]
        methods: {methods}
        bits: [8, 16]
        mask_rates: [0.0, 0.5]
        seeds: [0, 1]
        {extra}
    """)


# ---------------------------------------------------------------------------------------- shipped suites
def test_shipped_suites_are_listed():
    assert {"default", "quick", "full", "paper"} <= set(list_suites())


def test_quick_suite_is_small_synthetic():
    exp = expand_suite("quick")
    assert exp.specs and all(s.dataset == "synthetic" for s in exp.specs)
    assert "random" in {s.method for s in exp.specs}
    assert len(exp.specs) == len({s.run_id for s in exp.specs})
    # product of the grid: methods x bits x mask rates x seeds
    n = len({s.label for s in exp.specs}) * 2 * 2 * 2
    assert len(exp.specs) == n


@pytest.mark.parametrize("name, bits, masks, seeds", [
    ("default", {16, 32, 64}, {0.0, 0.7}, {0}),
    ("full", {16, 32, 64, 128}, {0.0, 0.3, 0.7}, {0, 1, 2}),
])
def test_default_and_full_grids(name, bits, masks, seeds):
    exp = expand_suite(name)
    if not exp.specs:
        pytest.skip(f"no dataset of suite {name} is present here")
    assert {s.n_bits for s in exp.specs} == bits
    assert {s.mask_rate for s in exp.specs} == masks
    assert {s.seed for s in exp.specs} == seeds
    if name == "default":
        assert {s.dataset for s in exp.specs} == {"wiki", "mirflickr25k-mini"}  # both bundled
        # On Wiki: every method of `full` except DCMH, which is too slow for a first CPU run (see default.yaml).
        full = {s.method for s in expand_suite("full").specs}
        assert {s.method for s in exp.specs if s.dataset == "wiki"} == full - {"dcmh"}


def test_paper_suite_expands():
    exp = expand_suite("paper")
    for s in exp.specs:  # every run is a real, validated spec
        assert s.n_bits in (16, 32, 64)


# ---------------------------------------------------------------------------------------- expansion
def test_product_and_grid_expansion(tmp_path):
    exp = expand_suite(basic(tmp_path, methods="[random, {name: scm-orth, params: {reg: [0.001, 0.01]}}]"))
    assert len(exp.specs) == 3 * 2 * 2 * 2
    labels = {s.label for s in exp.specs}
    assert labels == {"random", "scm-orth(reg=0.001)", "scm-orth(reg=0.01)"}
    regs = {s.params["reg"] for s in exp.specs if s.method == "scm-orth"}
    assert regs == {0.001, 0.01}


def test_params_are_filled_with_defaults_and_ids_are_canonical(tmp_path):
    from methods import get_method

    default_reg = get_method("scm-orth")().reg
    a = expand_suite(basic(tmp_path, methods="[scm-orth]"))
    b = expand_suite(write_suite(tmp_path, f"""
        seeds: [1, 0]
        mask_rates: [0.5, 0]
        bits: [16, 8]
        methods: [{{name: scm-orth, params: {{reg: {default_reg}}}}}]
        datasets: [{SMALL_DATA}]
    """, "b.yaml"))
    # explicit default == omitted; key order and list order do not matter
    assert {s.run_id for s in a.specs} == {s.run_id for s in b.specs}
    assert all(s.params == {"reg": default_reg} for s in a.specs)
    assert all(s.label == "scm-orth" for s in b.specs)


def test_int_given_for_float_parameter_is_the_same_run(tmp_path):
    a = expand_suite(basic(tmp_path, methods="[{name: scm-orth, params: {reg: 1}}]"))
    b = expand_suite(basic(tmp_path, methods="[{name: scm-orth, params: {reg: 1.0}}]"))
    assert [s.run_id for s in a.specs] == [s.run_id for s in b.specs]


def test_run_id_depends_on_every_spec_field_but_not_labels():
    base = dict(method="random", params_json="{}", dataset="synthetic", options_json="{}", n_bits=16,
                mask_rate=0.0, seed=0, label="random", dataset_label="synthetic")
    ids = {RunSpec(**base).run_id}
    for key, value in [("method", "scm-orth"), ("params_json", '{"reg":1.0}'), ("dataset", "wiki"),
                       ("options_json", '{"n_items":50}'), ("n_bits", 32), ("mask_rate", 0.7), ("seed", 1)]:
        ids.add(RunSpec(**{**base, key: value}).run_id)
    assert len(ids) == 8
    assert RunSpec(**{**base, "label": "other", "dataset_label": "x"}).run_id == RunSpec(**base).run_id
    spec = RunSpec(**base)
    assert RunSpec.from_dict(spec.to_dict()) == spec and RunSpec.from_dict(spec.to_dict()).run_id == spec.run_id


def test_same_run_in_two_experiments_is_one_run(tmp_path):
    path = write_suite(tmp_path, f"""
        datasets: [{SMALL_DATA}]
        bits: [8]
        seeds: [0]
        experiments:
          - {{name: a, methods: [random, scm-orth], mask_rates: [0.0]}}
          - {{name: b, methods: [random], mask_rates: [0.0, 0.5]}}
    """)
    exp = expand_suite(path)
    assert sorted((s.method, s.mask_rate) for s in exp.specs) == [("random", 0.0), ("random", 0.5), ("scm-orth", 0.0)]


def test_absent_dataset_is_skipped_with_one_line(tmp_path):
    path = write_suite(tmp_path, f"""
        datasets: [mirflickr25k, {SMALL_DATA}]
        methods: [random]
        bits: [8]
        mask_rates: [0.0]
        seeds: [0]
    """)
    exp = expand_suite(path, data_root=tmp_path / "empty")
    assert [s.dataset for s in exp.specs] == ["synthetic"]
    assert len(exp.skipped) == 1 and exp.skipped[0].startswith("skipped dataset mirflickr25k")
    assert "\n" not in exp.skipped[0]


def test_unavailable_method_is_skipped_with_one_line(tmp_path, monkeypatch):
    import methods

    monkeypatch.setitem(methods.REGISTRY, "ghost", "methods.no_such_module:Ghost")
    exp = expand_suite(basic(tmp_path, methods="[ghost, random]"))
    assert {s.method for s in exp.specs} == {"random"}
    assert len(exp.skipped) == 1 and exp.skipped[0].startswith("skipped method ghost: unavailable")


# ---------------------------------------------------------------------------------------- bad suites
BAD = {
    "unknown top-level key": ("colour: red", "unknown key(s) 'colour'"),
    "unknown method entry key": ("methods: [{name: random, parms: {}}]", "unknown key(s) 'parms'"),
    "unknown method": ("methods: [no-such-method]", "unknown method 'no-such-method'"),
    "unknown dataset": ("datasets: [no-such-data]", "unknown dataset 'no-such-data'"),
    "unknown method parameter": ("methods: [{name: scm-orth, params: {regg: 1}}]", "unknown parameter(s) regg"),
    "runner parameter in params": ("methods: [{name: random, params: {n_bits: 8}}]", "set by the runner"),
    "bits of wrong type": ("bits: sixteen", "'bits' has 'sixteen'"),
    "seed of wrong type": ("seeds: [1.5]", "'seeds' has 1.5"),
    "mask rate out of range": ("mask_rates: [1.0]", "'mask_rates' has 1.0"),
    "params not a mapping": ("methods: [{name: random, params: [1, 2]}]", "'params' must be a mapping"),
    "methods not a list of names": ("methods: [3]", "'methods' has 3"),
    "empty bits grid": ("bits: []", "'bits' is an empty list (empty grid)"),
    "empty methods grid": ("methods: []", "'methods' is an empty list (empty grid)"),
    "empty parameter grid": ("methods: [{name: scm-orth, params: {reg: []}}]", "parameter 'reg' is an empty list (empty grid)"),
    "bits outside the method's range": ("methods: [cdq]\nbits: [4]", "n_bits=4 is invalid; valid: an int in [8, 1024]"),
    "duplicate key": ("bits: [8]\nbits: [16]", "duplicate key 'bits'"),
    "missing grid key": (None, "missing key 'seeds'"),
    "invalid yaml": ("bits: [8, 16", "invalid YAML"),
    "top level not a mapping": ("TOP", "the top level must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_suite_fails_in_one_line_naming_the_problem(tmp_path, case):
    override, expected = BAD[case]
    lines = {"name": "bad", "datasets": f"[{SMALL_DATA}]", "methods": "[random]", "bits": "[8]",
             "mask_rates": "[0.0]", "seeds": "[0]"}
    if override is None:
        del lines["seeds"]
        text = "\n".join(f"{k}: {v}" for k, v in lines.items())
    elif override == "TOP":
        text = "- just\n- a list\n"
    else:
        for line in override.splitlines():
            key = line.split(":", 1)[0]
            lines.pop(key, None)
        text = "\n".join(f"{k}: {v}" for k, v in lines.items()) + "\n" + override + "\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        expand_suite(path)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message, message
    assert "bad" in message  # names the suite


def test_unknown_suite_name():
    with pytest.raises(InputError, match="unknown suite 'nope'; valid: .*quick"):
        load_suite("nope")


# ---------------------------------------------------------------------------------------- filters
def test_filters_narrow_and_reject_values_outside_the_suite(tmp_path):
    specs = expand_suite(basic(tmp_path)).specs
    out = filter_specs(specs, methods=["random"], bits=[8], mask_rates=[0.5], seeds=[1])
    assert len(out) == 1 and (out[0].method, out[0].n_bits, out[0].mask_rate, out[0].seed) == ("random", 8, 0.5, 1)
    assert len(filter_specs(specs, datasets=["synthetic"])) == len(specs)
    with pytest.raises(InputError, match=r"--bits 64 matches no run of suite; valid: 8, 16"):
        filter_specs(specs, bits=[64])
    with pytest.raises(InputError, match="--methods cdq matches no run"):
        filter_specs(specs, methods=["cdq"])


def test_dataset_options_are_checked_against_the_declared_ones_before_any_work(tmp_path):
    from datasets import declared_options

    suite = tmp_path / "s.yaml"
    suite.write_text("datasets: [{name: synthetic, options: {n_itmes: 10}}]\nmethods: [random]\nbits: [8]\n"
                     "mask_rates: [0.0]\nseeds: [0]\n")
    with pytest.raises(InputError, match=r"synthetic: unknown option\(s\) n_itmes; valid: .*n_items"):
        expand_suite(suite)
    assert "image_features" not in declared_options("synthetic")  # no pixels: feature options do not apply
    assert {"image_features", "gist_size"} <= set(declared_options("mirflickr25k-mini"))


def test_extra_methods_join_every_grid_once(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("datasets: [{name: synthetic, options: {n_items: 100}}]\nbits: [8]\nmask_rates: [0.0]\n"
                     "seeds: [0]\nexperiments:\n  - {name: a, methods: [random]}\n  - {name: b, methods: [scm-orth]}\n")
    exp = expand_suite(suite, extra_methods=["random", "scm-seq"])
    assert sorted(s.method for s in exp.specs) == ["random", "scm-orth", "scm-seq"]


def test_database_train_is_the_standard_protocol_with_the_same_run_ids(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("datasets: [wiki]\nmethods: [random]\nbits: [16]\nmask_rates: [0]\nseeds: [0]\n")
    spelled = tmp_path / "spelled.yaml"
    spelled.write_text("datasets: [{name: wiki, options: {database: train}}]\nmethods: [random]\nbits: [16]\n"
                       "mask_rates: [0]\nseeds: [0]\n")
    unseen = tmp_path / "unseen.yaml"
    unseen.write_text("datasets: [{name: wiki, options: {database: unseen}}]\nmethods: [random]\nbits: [16]\n"
                      "mask_rates: [0]\nseeds: [0]\n")
    ids = [[s.run_id for s in expand_suite(p).specs] for p in (plain, spelled, unseen)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
