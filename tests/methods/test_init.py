"""The method registry: plug-ins that fail to import, entry points, and name clashes with built-ins."""
from __future__ import annotations

import sys

import pytest

import methods
from benchmark.errors import InputError
from benchmark.suites import expand_suite


@pytest.fixture
def broken_modules(tmp_path, monkeypatch):
    bodies = {
        "plug_zero": "1 / 0\n",
        "plug_runtime": "raise RuntimeError('no GPU driver, say')\n",
        "plug_exit": "raise SystemExit(3)\n",
        "plug_import": "import a_module_that_is_not_installed\n",
    }
    for name, body in bodies.items():
        (tmp_path / f"{name}.py").write_text(body)
        sys.modules.pop(name, None)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in bodies:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("module, error", [
    ("plug_zero", "cannot be imported: ZeroDivisionError: division by zero"),
    ("plug_runtime", "cannot be imported: RuntimeError: no GPU driver, say"),
    ("plug_exit", "cannot be imported: SystemExit: 3"),
    ("plug_import", "is unavailable: No module named 'a_module_that_is_not_installed'"),
])
def test_any_exception_while_importing_a_plugin_is_one_line_naming_it(broken_modules, module, error):
    with pytest.raises(InputError) as info:
        methods.get_method(f"{module}:X")
    assert str(info.value) == f"method '{module}:X' {error}"


def test_a_broken_entry_point_is_listed_unavailable_and_the_rest_still_work(broken_modules, monkeypatch):
    monkeypatch.setattr(methods, "_entry_points", lambda: {"broken": "plug_runtime:Hasher"})
    infos = {i.name: i for i in methods.list_methods()}
    assert not infos["broken"].available
    assert infos["broken"].reason == ("method 'broken' (plug_runtime:Hasher) cannot be imported: "
                                      "RuntimeError: no GPU driver, say")
    assert infos["random"].available and infos["scm-orth"].available
    assert methods.get_method("random").__name__ == "RandomProjection"


def test_an_entry_point_reusing_a_built_in_name_is_an_error_naming_both(monkeypatch, tmp_path):
    monkeypatch.setattr(methods, "_entry_points", lambda: {"random": "mypkg.hashers:Mine", "mine": "mypkg:Other"})
    expected = ("method name 'random' is both the built-in methods.random_projection:RandomProjection and the "
                "entry point mypkg.hashers:Mine (group cmh_bench.methods); rename the entry point")
    assert methods.name_clashes() == {"random": expected}
    with pytest.raises(InputError) as info:
        methods.get_method("random")
    assert str(info.value) == expected
    assert methods.method_info("random").reason == expected
    suite = tmp_path / "s.yaml"
    suite.write_text("datasets: [wiki]\nmethods: [random]\nbits: [8]\nmask_rates: [0.0]\nseeds: [0]\n")
    with pytest.raises(InputError, match="is both the built-in"):
        expand_suite(suite)  # an error, not a silently skipped method
