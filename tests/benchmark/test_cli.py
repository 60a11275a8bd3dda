"""Command line: help, list, check, run/report, exit codes, and resuming after kill -9 (real subprocesses)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.records import RecordStore
from benchmark.runner import RunSettings, run_suite
from benchmark.suites import expand_suite

REPO = Path(__file__).resolve().parents[2]
DATA = "{name: synthetic, label: syn, options: {n_items: 150, n_labels: 4, image_dim: 8, text_dim: 20, latent_dim: 4, noise: 0.3}}"
FAST = ["--threads", "1", "--device", "cpu"]

PLUGINS = textwrap.dedent('''
    import numpy as np
    from methods.random_projection import RandomProjection

    class Failing(RandomProjection):
        def fit(self, image, text, labels, labeled=None):
            raise RuntimeError("deliberate failure in fit")

    class BadCodes(RandomProjection):
        def encode_image(self, image):
            return super().encode_image(image).astype(np.float64)

    class Good(RandomProjection):
        pass
''')


def write_suite(tmp_path, methods="[random, scm-orth]", bits="[8, 16]", masks="[0.0, 0.5]", seeds="[0]", name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndatasets: [{DATA}]\nmethods: {methods}\nbits: {bits}\nmask_rates: {masks}\n"
                    f"seeds: {seeds}\nevaluation: {{topk: [10], precision_ns: [1, 10]}}\n")
    return path


def env_with(*paths) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "plugins_cli.py").write_text(PLUGINS)
    (tmp_path / "plugins_broken.py").write_text("from methods import Hasher\n1 / 0\n")
    sys.modules.pop("plugins_broken", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("plugins_cli", None)
    yield
    sys.modules.pop("plugins_cli", None)
    sys.modules.pop("plugins_broken", None)


# ---------------------------------------------------------------------------------------- help, list
@pytest.mark.parametrize("argv", [[], ["run"], ["report"], ["list"], ["check"]])
def test_help_everywhere_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "python -m benchmark" in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--jobs", "many"])
    assert info.value.code == 2


def test_list_methods_datasets_suites(capsys, tmp_path):
    assert main(["list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "methods:" in out and "datasets" in out and "suites:" in out
    lines = out.splitlines()
    assert any(l.split()[:1] == ["random"] and l.rstrip().endswith("available") for l in lines)
    assert any(l.split()[:3] == ["synthetic", "files", "present"] for l in lines)
    assert any(l.split()[:2] == ["mirflickr25k", "files"] and "absent" in l for l in lines)
    assert any(l.split()[:1] == ["quick"] for l in lines)


# ---------------------------------------------------------------------------------------- check
def test_check_passes_a_good_method_and_fails_a_bad_one(plugins, capsys):
    assert main(["check", "random", "--quiet"]) == 0
    assert "all common checks passed" in capsys.readouterr().out
    assert main(["check", "plugins_cli:BadCodes", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "codes_format" in err


def test_check_unknown_method_exits_2(capsys):
    assert main(["check", "no-such-method"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown method 'no-such-method'")


# ---------------------------------------------------------------------------------------- run, report
def test_run_prints_tables_and_report_reproduces_them_byte_for_byte(tmp_path, capsys):
    suite = write_suite(tmp_path, seeds="[0, 1]")
    res, rep = tmp_path / "results", tmp_path / "reports"
    argv = ["run", "--suite", str(suite), "--results-dir", str(res), "--reports-dir", str(rep), "--no-plots", *FAST]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "| method" in out and "syn I→T 8" in out and "mask rate 0.5" in out
    assert "16 run(s) ok (16 ran now, 0 already recorded)" in err
    first = {p.name: p.read_bytes() for p in rep.iterdir()}
    assert {"results.md", "table_map_mask0.md", "table_map_mask0.tex", "table_map_mask0.5.md", "table_timing.md"} <= set(first)
    shutil.rmtree(rep)
    assert main(["report", "--results-dir", str(res), "--reports-dir", str(rep), "--no-plots"]) == 0
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == first
    # a second run skips every recorded run and still prints the table
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "16 of 16 run(s) already recorded, skipped" in err and "| method" in out


def test_report_of_a_suite_shows_records_of_the_same_runs_under_its_own_labels(tmp_path, capsys):
    # The run id hashes the resolved spec, not the label: runs recorded by another suite (here under
    # the label "old") are the same runs, and `report --suite` names them as that suite does.
    other = write_suite(tmp_path, methods="[{name: random, label: old}]", bits="[8]", masks="[0.0]", name="other")
    mine = write_suite(tmp_path, methods="[random]", bits="[8]", masks="[0.0]", name="mine")
    res = tmp_path / "results"
    assert main(["run", "--suite", str(other), "--results-dir", str(res), "--no-report", *FAST]) == 0
    capsys.readouterr()
    assert main(["report", "--results-dir", str(res), "--reports-dir", str(tmp_path / "a"), "--no-plots"]) == 0
    assert "| old " in capsys.readouterr().out
    assert main(["report", "--suite", str(mine), "--results-dir", str(res), "--reports-dir", str(tmp_path / "b"),
                 "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| random " in out and "| old " not in out


def test_filters_dry_run_and_bad_filter(tmp_path, capsys):
    suite = write_suite(tmp_path)
    res = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--methods", "random", "--bits", "8",
                 "--dry-run", *FAST]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all("random on syn, 8 bits" in line and "[to run]" in line for line in out)
    assert not res.exists()
    assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--bits", "64", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --bits 64 matches no run of suite tiny; valid: 8, 16"]


def test_failed_run_exits_1_and_the_rest_is_recorded(tmp_path, plugins, capsys):
    suite = write_suite(tmp_path, methods="[random, 'plugins_cli:Failing']", bits="[8]", masks="[0.0]")
    res = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--no-report", "--quiet", *FAST]) == 1
    err = capsys.readouterr().err
    assert "failed: plugins_cli:Failing on syn" in err and "1 of 2 run(s) failed" in err
    statuses = sorted(json.loads(p.read_text())["status"] for p in (res / "records").glob("*.json"))
    assert statuses == ["failed", "ok"]


def test_absent_datasets_are_named_and_nothing_left_to_run_is_exit_2(tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    both = tmp_path / "both.yaml"
    both.write_text(f"datasets: [mirflickr25k, {DATA}]\nmethods: [random]\nbits: [8]\nmask_rates: [0.0]\nseeds: [0]\n")
    base = ["run", "--data-root", str(empty), "--results-dir", str(tmp_path / "r"), "--no-report", "--quiet", *FAST]
    # a suite that skips an absent dataset says which, and runs the rest
    assert main([*base, "--suite", str(both)]) == 0
    err = capsys.readouterr().err
    assert "skipped dataset mirflickr25k: mirflickr25k: missing file mirflickr25k-lall.mat" in err
    assert "1 run(s) ok" in err
    # the same dataset named explicitly: exit 2, one line
    assert main([*base, "--suite", str(both), "--datasets", "mirflickr25k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --datasets mirflickr25k: dataset mirflickr25k is absent:")
    # nothing left to run: exit 2, one line naming what was skipped
    only = tmp_path / "absent.yaml"
    only.write_text("datasets: [mirflickr25k]\nmethods: [random]\nbits: [8]\nmask_rates: [0.0]\nseeds: [0]\n")
    assert main([*base, "--suite", str(only)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: suite absent: nothing to run (skipped dataset mirflickr25k:")


def test_cuda_without_a_gpu_is_bad_input(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    suite = write_suite(tmp_path, methods="[dcmh]", bits="[8]", masks="[0.0]")
    assert main(["run", "--suite", str(suite), "--results-dir", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_suite_file_one_line_no_traceback_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [wiki]\nmethods: [random]\nbits: []\nmask_rates: [0]\nseeds: [0]\n")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", str(bad)], cwd=tmp_path,
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: suite bad: 'bits' is an empty list (empty grid); give at least one value"]
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------- kill -9, resume
def _records(results: Path) -> list[Path]:
    folder = results / "records"
    return [p for p in folder.glob("*.json") if not p.name.startswith(".")] if folder.is_dir() else []


def _check_consistent(results: Path, expected: set[str]) -> set[str]:
    """Every record parses, is complete, matches its file name and has loadable codes."""
    store = RecordStore(results)
    ids = set()
    for path in _records(results):
        rec = json.loads(path.read_text())
        assert rec["run_id"] == path.stem and rec["status"] == "ok", path
        assert rec["run_id"] in expected
        codes = store.read_codes(rec["run_id"])
        assert codes["db_image"].shape[1] == rec["spec"]["n_bits"]
        assert (results / rec["protocol"]["file"]).is_file()
        ids.add(rec["run_id"])
    return ids


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_loses_corrupts_and_duplicates_nothing(tmp_path):
    suite = write_suite(tmp_path, seeds="[0, 1, 2]")
    specs = expand_suite(suite).specs
    expected = {s.run_id for s in specs}
    assert len(expected) == 24
    seed = int(os.environ.get("CMH_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--results-dir", str(results),
           "--no-report", "--quiet", *FAST]
    kills = []
    for attempt in range(3):
        done = len(_records(results))
        if done >= len(expected) - 1:
            break
        target = rng.randint(done + 1, len(expected) - 1)  # kill once this many records exist ...
        delay = rng.uniform(0.0, 0.05)  # ... plus a little, to land inside a later run or write
        jobs = str(1 + attempt % 2)
        proc = subprocess.Popen(cmd + ["--jobs", jobs], cwd=tmp_path, env=env_with(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while proc.poll() is None and len(_records(results)) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, like kill -9 on the group
            kills.append((jobs, target, round(delay, 3)))
        proc.wait()
        _check_consistent(results, expected)
    assert kills, f"no kill landed (seed {seed})"
    final = subprocess.run(cmd + ["--jobs", "2"], cwd=tmp_path, env=env_with(), capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, (seed, kills, final.stderr)
    assert _check_consistent(results, expected) == expected, (seed, kills)
    assert len(_records(results)) == len(expected)
    leftovers = [p.name for sub in ("records", "codes", "protocols") for p in (results / sub).iterdir()
                 if p.name.startswith(".tmp-")]
    assert leftovers == []
    # the interrupted suite gives the same codes and metrics as an uninterrupted one
    ref = tmp_path / "reference"
    run_suite(specs, RunSettings(results_dir=str(ref), threads=1, evaluation=expand_suite(suite).evaluation),
              progress=False)
    a, b = RecordStore(results), RecordStore(ref)
    for rid in expected:
        ca, cb = a.read_codes(rid), b.read_codes(rid)
        assert all(np.array_equal(ca[k], cb[k]) for k in cb), rid
        assert json.dumps(a.read(rid).metrics, sort_keys=True) == json.dumps(b.read(rid).metrics, sort_keys=True)


# ---------------------------------------------------------------------------------------- checked before any work
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("dataset, option, valid", [
    ("mirflickr25k", "image_featurs: x.npy", "image_features, image_key"),
    ("synthetic", "n_itmes: 100", "n_items, n_labels"),
    ("wiki", "seed: 1", "valid: database"),
])
def test_dataset_option_typos_are_exit_2_before_any_work(tmp_path, capsys, dataset, option, valid):
    suite = tmp_path / "typo.yaml"
    suite.write_text(f"datasets: [{{name: {dataset}, options: {{{option}}}}}]\nmethods: [random]\nbits: [8]\n"
                     "mask_rates: [0.0]\nseeds: [0]\n")
    assert main(["run", "--suite", str(suite), "--data-root", str(tmp_path), "--results-dir", str(tmp_path / "r"),
                 *FAST]) == 2
    line = one_error_line(capsys)
    assert f"{dataset}: unknown option(s) {option.split(':')[0]}" in line and valid in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--timeout", "inf"], "--timeout inf is invalid"),
    (["--timeout", "nan"], "--timeout nan is invalid"),
    (["--timeout", "0"], "--timeout 0.0 is invalid"),
    (["--timeout", "1e300"], "--timeout 1e+300 is invalid"),
    (["--bits", ","], "--bits ',' is invalid (an empty item)"),
    (["--bits", "8,,16"], "--bits '8,,16' is invalid (an empty item)"),
    (["--bits", "0"], "--bits 0 is invalid; valid: positive integers"),
    (["--seeds", "-1"], "--seeds -1 is invalid"),
    (["--mask-rates", "1.5"], "--mask-rates 1.5 is invalid"),
    (["--methods", ""], "--methods '' is invalid (an empty item)"),
    (["--results-dir", ""], "--results-dir '' is invalid"),
    (["--results-dir", "FILE/results"], "is under"),
    (["--results-dir", "FILE"], "is a file"),
    (["--reports-dir", "FILE/reports"], "--reports-dir"),
    (["--data-root", "absent"], "--data-root 'absent' is not a directory"),
    (["--data-root", ""], "--data-root '' is invalid"),
])
def test_arguments_that_cannot_work_are_exit_2_before_any_work(tmp_path, capsys, monkeypatch, extra, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a regular file")
    suite = write_suite(tmp_path, methods="[random]", bits="[8]", masks="[0.0]")
    argv = ["run", "--suite", str(suite), *FAST]
    if "--results-dir" not in extra:
        argv += ["--results-dir", str(tmp_path / "r")]
    assert main([*argv, *extra]) == 2
    line = one_error_line(capsys)
    assert fragment in line, line
    assert not (tmp_path / "r").exists() and not (tmp_path / "records").exists()


def test_report_dir_under_a_file_is_exit_2(tmp_path, capsys):
    (tmp_path / "FILE").write_text("x")
    assert main(["report", "--results-dir", str(tmp_path), "--reports-dir", str(tmp_path / "FILE" / "rep")]) == 2
    assert "--reports-dir" in one_error_line(capsys)
    assert main(["report", "--results-dir", ""]) == 2
    assert "--results-dir '' is invalid" in one_error_line(capsys)


def test_a_plugin_named_by_methods_joins_any_suites_grid(tmp_path, plugins, capsys):
    res = tmp_path / "r"
    assert main(["run", "--suite", "quick", "--methods", "random,plugins_cli:Good", "--bits", "16", "--mask-rates", "0",
                 "--seeds", "0", "--results-dir", str(res), "--no-report", "--quiet", *FAST]) == 0
    assert "2 run(s) ok" in capsys.readouterr().err
    methods = sorted(json.loads(p.read_text())["spec"]["method"] for p in (res / "records").glob("*.json"))
    assert methods == ["plugins_cli:Good", "random"]


def test_a_plugin_whose_import_raises_is_one_line_exit_2(tmp_path, plugins, capsys):
    expected = "error: method 'plugins_broken:X' cannot be imported: ZeroDivisionError: division by zero"
    assert main(["check", "plugins_broken:X"]) == 2
    assert one_error_line(capsys) == expected
    assert main(["run", "--suite", "quick", "--methods", "plugins_broken:X", "--results-dir", str(tmp_path / "r"),
                 *FAST]) == 2
    assert one_error_line(capsys).endswith("cannot be imported: ZeroDivisionError: division by zero")


def test_an_installed_broken_plugin_and_a_name_clash_in_a_real_process(tmp_path):
    """A package registering a plug-in that raises on import, and one reusing a built-in name."""
    site = tmp_path / "site"
    dist = site / "brokenplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cmh_bench.methods]\nbroken = brokenmod:Hasher\nscm-orth = brokenmod:Other\n")
    (site / "brokenmod.py").write_text("raise RuntimeError('broken on purpose')\n")
    env = env_with(site)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert lines["random"].rstrip().endswith("available") and lines["cdq"].split()[2] in ("available", "unavailable:")
    assert "unavailable: method 'broken' (brokenmod:Hasher) cannot be imported: RuntimeError: broken on purpose" \
        in lines["broken"]
    assert "is both the built-in methods.scm:SCMOrth and the entry point brokenmod:Other" in lines["scm-orth"]
    run = subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", "quick", "--methods", "scm-orth",
                          "--results-dir", str(tmp_path / "r"), *FAST], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "methods.scm:SCMOrth" in run.stderr and "brokenmod:Other" in run.stderr


def test_records_codes_and_reports_get_the_users_umask(tmp_path, capsys):
    suite = write_suite(tmp_path, methods="[random]", bits="[8]", masks="[0.0]")
    res, rep = tmp_path / "r", tmp_path / "rep"
    old = os.umask(0o027)
    try:
        assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--reports-dir", str(rep), "--no-plots",
                     "--threads", "1", "--device", "cpu", "--quiet"]) == 0
    finally:
        os.umask(old)
    files = [p for sub in ("records", "codes", "protocols", "logs") for p in (res / sub).iterdir()]
    files += list(rep.iterdir())
    assert len(files) >= 6
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o640)}


def test_an_unrelated_corrupt_record_does_not_fail_run_but_fails_report(tmp_path, capsys):
    suite = write_suite(tmp_path, methods="[random]", bits="[8]", masks="[0.0]")
    res, rep = tmp_path / "r", tmp_path / "rep"
    (res / "records").mkdir(parents=True)
    (res / "records" / "0000000000000000.json").write_text('{"run_id": "0000')
    assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--reports-dir", str(rep), "--no-plots",
                 *FAST[:4], "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped record" in err and "0000000000000000.json: cannot be parsed" in err
    assert main(["report", "--results-dir", str(res), "--reports-dir", str(rep), "--no-plots"]) == 2
    assert "0000000000000000.json: cannot be parsed" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------- prepare
def _tiny_official(tmp_path, n_images=8):
    """A made-up official layout: generated JPEGs im1..imN and the 24 annotation files (every image an animal)."""
    from PIL import Image

    from datasets.prepare_mirflickr import LABEL_NAMES

    img = tmp_path / "mirflickr"
    img.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, n_images + 1):
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(img / f"im{i}.jpg", quality=90)
    ann = tmp_path / "annotations"
    ann.mkdir()
    for concept in LABEL_NAMES:
        ids = range(1, n_images + 1) if concept == "animals" else ()
        (ann / f"{concept}.txt").write_text("".join(f"{i}\n" for i in ids))
    return img, ann


def test_prepare_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--images", "--annotations", "--tags", "--lall", "--yall", "--out",
                                              "--size", "--rows", "--strict"))
    for argv in (["prepare", "mirflickr25k", "--images", "x", "--annotations", "y"],   # no --out
                 ["prepare", "nuswide", "--images", "x", "--annotations", "y", "--out", "z"]):  # not preparable
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_prepare_bad_input_is_one_line_exit_2(tmp_path, capsys):
    img, ann = _tiny_official(tmp_path, 2)
    base = ["prepare", "mirflickr25k", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(base + ["--images", str(tmp_path / "absent.zip"), "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "absent.zip does not exist" in err
    assert main(base + ["--images", str(img), "--annotations", str(ann), "--workers", "0"]) == 2
    assert "--workers 0 is invalid" in capsys.readouterr().err
    assert main(base + ["--images", str(img), "--annotations", str(ann)]) == 2  # all 20,015 rows, 2 images
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image im3.jpg is missing" in err and "--rows" in err
    assert not (tmp_path / "out").exists()


def test_prepare_cli_end_to_end_in_a_subprocess(tmp_path):
    img, ann = _tiny_official(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmark", "prepare", "mirflickr25k", "--images", str(img), "--annotations",
           str(ann), "--out", str(out), "--rows", "0:5", "--size", "16", "--chunk", "2", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_with(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mirflickr25k: rows 0:5 (5): 5 unique" in proc.stdout
    assert "labels: not compared (no --lall)" in proc.stdout
    arr = np.load(out / "mirflickr25k-iall.npy")
    assert arr.shape == (5, 16, 16, 3) and arr.dtype == np.uint8
    ids = (out / "mirflickr25k-imageids.csv").read_text().splitlines()
    assert ids == ["dcmh_row,image_id,status"] + [f"{r},{r + 1},unique" for r in range(5)]
    manifest = json.loads((out / "mirflickr25k-prepare-manifest.json").read_text())
    assert manifest["images"]["chunks"] == 3 and manifest["checks"]["labels"]["rows_without_label"] == 0
    # a second run finds every chunk done and decodes nothing
    again = subprocess.run(cmd, cwd=tmp_path, env=env_with(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 chunk(s) decoded now, 3 resumed" in again.stdout
