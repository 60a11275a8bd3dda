"""Dataset registry and data-root resolution (datasets/__init__.py)."""
from pathlib import Path

import pytest

import datasets
from cmhcore.errors import InputError


def test_unknown_dataset_name_is_one_line_error():
    with pytest.raises(InputError, match=r"unknown dataset 'wikki'; valid: wiki, mirflickr25k") as err:
        datasets.load_dataset("wikki")
    assert "\n" not in str(err.value)


def test_data_root_flag_beats_env_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv(datasets.DATA_ROOT_ENV, raising=False)
    assert datasets.resolve_data_root() == Path("data")
    monkeypatch.setenv(datasets.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert datasets.resolve_data_root() == tmp_path / "env"
    assert datasets.resolve_data_root(tmp_path / "flag") == tmp_path / "flag"


def test_every_registered_loader_imports():
    for name in datasets.list_datasets():
        present, reason = datasets.dataset_status(name, data_root="/nonexistent")
        assert isinstance(present, bool) and isinstance(reason, str)
        if not present:
            assert reason and "\n" not in reason


# ---------------------------------------------------------------- option constraints (one place)
from cmhcore.params import invalid_values  # noqa: E402


def test_every_dataset_declares_its_option_constraints():
    for name in datasets.list_datasets():
        constraints = datasets.option_constraints(name)
        assert constraints, name
        assert set(datasets.declared_options(name)) == set(constraints)
    assert datasets.declared_options("wiki") == ("database",)
    assert "image_features" not in datasets.declared_options("synthetic")  # no pixels: no feature options
    mini = datasets.declared_options("mirflickr25k-mini")
    assert {"seed", "database", "image_features", "gist_size"} <= set(mini)
    assert set(datasets.option_constraints("mirflickr25k-mini", features=False)) == {"seed", "database"}


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(InputError, match=r"^wiki: unknown option\(s\) databse; valid: database$"):
        datasets.check_options("wiki", {"databse": "unseen"})
    with pytest.raises(InputError, match=r"^mirflickr25k-mini: unknown option\(s\) gist_size; valid: database, seed$"):
        datasets.check_options("mirflickr25k-mini", {"gist_size": 64}, features=False)


def _bad_option_cases():
    for name in datasets.list_datasets():
        for option, forms in datasets.option_constraints(name).items():
            for kind, value in invalid_values(forms):
                yield pytest.param(name, option, value, id=f"{name}-{option}-{kind.replace(' ', '_')}")


@pytest.mark.parametrize("name,option,value", list(_bad_option_cases()))
def test_every_derivable_bad_option_value_is_one_line_naming_the_option(name, option, value):
    with pytest.raises(InputError) as err:
        datasets.check_options(name, {option: value})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name} option {option}=") and "; valid: " in msg


@pytest.mark.parametrize("name", ["wiki", "mirflickr25k-mini", "synthetic"])
def test_load_dataset_rejects_a_bad_option_before_reading_anything(name, monkeypatch):
    """The check runs before the loader: a loader that would fail differently is never reached."""
    import importlib

    module = importlib.import_module(datasets.LOADERS[name][0])
    option, forms = next(iter(datasets.option_constraints(name, features=False).items()))
    kind, value = invalid_values(forms)[0]
    monkeypatch.setattr(module, datasets.LOADERS[name][1], lambda *a, **k: pytest.fail("loader reached"))
    with pytest.raises(InputError, match=rf"^{name} option {option}="):
        datasets.load_dataset(name, **{option: value})


def test_valid_options_pass():
    datasets.check_options("wiki", {"database": "unseen"})
    datasets.check_options("mirflickr25k-mini", {"seed": 3, "database": "train", "image_features": "gist",
                                                 "gist_size": 64})
    datasets.check_options("mirflickr25k", {"image_features": "feats.npy", "n_query": 10, "database": "unseen"})
    datasets.check_options("nuswide-tc21", {"source": "official", "require_tags": True, "seed": 0})
    datasets.check_options("synthetic", {"n_items": 50, "noise": 0, "n_query": None})
