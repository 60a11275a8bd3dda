"""Dataset registry and data-root resolution (datasets/__init__.py)."""
from pathlib import Path

import pytest

import datasets
from benchmark.errors import InputError


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
