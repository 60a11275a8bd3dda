"""Acceptance: the four deep methods fit and encode raw pixels of an IAll-style MIRFlickr set through the CLI, on CPU."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import scipy.io

from benchmark.cli import main
from benchmark.records import RecordStore

N_ITEMS, SIDE = 240, 64
METHODS = ("rdcmh", "dcmh", "chn", "cdq")


def write_mirflickr(root, rng) -> None:
    """The DCMH release's layout at toy size: LAll (24 labels), YAll (tags), IAll as uint8 (n, 64, 64, 3) .npy."""
    labels = (rng.random((N_ITEMS, 24)) < 0.1).astype(np.float64)
    labels[np.arange(N_ITEMS), rng.integers(0, 24, N_ITEMS)] = 1.0  # the DCMH set: every item has a label
    tags = (rng.random((N_ITEMS, 300)) < 0.03).astype(np.float64)
    scipy.io.savemat(root / "mirflickr25k-lall.mat", {"LAll": labels})
    scipy.io.savemat(root / "mirflickr25k-yall.mat", {"YAll": tags})
    np.save(root / "mirflickr25k-iall.npy", rng.integers(0, 256, (N_ITEMS, SIDE, SIDE, 3), dtype=np.uint8))


def test_deep_methods_run_on_raw_pixels_through_the_cli(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    write_mirflickr(root, np.random.default_rng(0))
    # Short schedules and CNN-F at the images' own size (64) keep this at seconds per method on 2 cores.
    suite = tmp_path / "pixels.yaml"
    suite.write_text(textwrap.dedent("""\
        name: pixels
        datasets: [{name: mirflickr25k, options: {n_query: 40, n_train: 120}}]
        methods:
          - {name: rdcmh, params: {n_iter: 4, batch_size: 8, text_hidden: 32, image_size: 64}}
          - {name: dcmh, params: {epochs: 1, batch_size: 32, text_hidden: 32, image_size: 64}}
          - {name: chn, params: {epochs: 1, batch_size: 32, text_hidden: 32, image_size: 64}}
          - {name: cdq, params: {n_epochs: 1, batch_size: 32, n_codewords: 16, dim: 16, hidden: 32, image_size: 64}}
        bits: [16]
        mask_rates: [0.0]
        seeds: [0]
        """))
    res = tmp_path / "results"
    argv = ["run", "--suite", str(suite), "--datasets", "mirflickr25k", "--methods", ",".join(METHODS),
            "--data-root", str(root), "--results-dir", str(res), "--reports-dir", str(tmp_path / "reports"),
            "--no-plots", "--threads", "2", "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "4 run(s) ok" in capsys.readouterr().err
    store = RecordStore(res)
    records = {json.loads(p.read_text())["spec"]["method"]: p.stem for p in sorted((res / "records").glob("*.json"))}
    assert sorted(records) == sorted(METHODS)
    for method, run_id in records.items():
        rec = store.read(run_id)
        assert rec.status == "ok", (method, rec.error)
        assert rec.spec["params"]["image_size"] == 64
        codes = store.read_codes(run_id)  # checks the codes file against the record's SHA-256
        n_bits = 16
        for key, n in (("db_image", N_ITEMS - 40), ("db_text", N_ITEMS - 40)):
            assert codes[key].shape == (n, n_bits), (method, key, codes[key].shape)
            assert np.isin(codes[key], (-1, 1)).all(), (method, key)
