"""scripts/bench_pixels.py at a tiny size: it runs, reports its figures and deletes its temporary file."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_pixels  # noqa: E402


def _run(capsys, argv):
    assert bench_pixels.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_pipeline_only(capsys, tmp_path):
    r = _run(capsys, ["--n", "40", "--size", "16", "--stored-size", "20", "--batch", "8", "--tmp-dir", str(tmp_path)])
    assert r["n"] == 40 and r["workers"] == 0 and r["pipeline_images_per_s"] > 0
    assert r["peak_rss_mb"] > 0 and r["peak_anon_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the synthetic .npy is gone


def test_with_cnnf_step(capsys, tmp_path):
    pytest.importorskip("methods.backbones")
    r = _run(capsys, ["--n", "8", "--size", "64", "--batch", "4", "--model", "cnnf", "--steps", "1",
                      "--tmp-dir", str(tmp_path)])
    assert r["model_only_images_per_s"] > 0 and r["pipeline_plus_model_images_per_s"] > 0
    assert r["pipeline_vs_model_ratio"] > 0
