"""The bundled MIRFlickr-25K mini set (datasets/mirflickr_mini.py, datasets/_data/mirflickr25k-mini/)."""
import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import datasets
from cmhcore.errors import DataFileError, InputError
from datasets import mirflickr_mini as mm
from datasets.base import file_checksum

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "mirflickr25k"
HAVE_SHARED = (SHARED / "mirflickr25k-lall.mat").is_file() and (SHARED / "images-first1000" / "index.csv").is_file()
needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason="shared MIRFlickr-25K copy (../shared/data/mirflickr25k) not available")


@pytest.fixture(scope="module")
def ds():
    return mm.load()


def _image_paths():
    with open(mm.ITEMS_FILE, newline="") as fh:
        return [mm.IMAGE_DIR / r["file"] for r in csv.DictReader(fh)]


@pytest.fixture
def bundle_copy(tmp_path, monkeypatch):
    """A writable copy of the bundle that the loader reads instead of the package's."""
    copy = tmp_path / "mini"
    shutil.copytree(mm.DATA_DIR, copy)
    monkeypatch.setattr(mm, "DATA_DIR", copy)
    monkeypatch.setattr(mm, "ITEMS_FILE", copy / "items.csv")
    monkeypatch.setattr(mm, "SUMS_FILE", copy / "SHA256SUMS")
    monkeypatch.setattr(mm, "IMAGE_DIR", copy / "images")
    return copy


def test_loads_by_name_without_any_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_ROOT_ENV, str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    d = datasets.load_dataset("mirflickr25k-mini")
    assert d.name == "mirflickr25k-mini" and d.n_items == 724
    assert datasets.dataset_status("mirflickr25k-mini") == (True, "")
    assert "mirflickr25k-mini" in datasets.list_datasets()


def test_shapes_and_types(ds):
    assert isinstance(ds.image, np.ndarray)
    assert ds.image.shape == (724, 128, 128, 3) and ds.image.dtype == np.uint8
    assert ds.image_kind == "pixels"
    assert sp.isspmatrix_csr(ds.text) and ds.text.shape == (724, 1386) and ds.text.dtype == np.float32
    assert np.array_equal(ds.text.data, np.ones_like(ds.text.data))          # binary tags
    assert ds.labels.shape == (724, 24) and ds.labels.dtype == np.uint8
    assert set(np.unique(ds.labels).tolist()) == {0, 1}
    # Every item has a label and a tag (checked at build time; the set must not lose it).
    assert ds.labels.sum(axis=1).min() >= 1
    assert np.diff(ds.text.indptr).min() >= 1
    # Real photographs: no constant image, and the 724 images are distinct.
    assert ds.image.reshape(724, -1).std(axis=1).min() > 1.0
    assert np.unique(ds.image.reshape(724, -1), axis=0).shape[0] == 724
    assert len(mm.LABEL_NAMES) == 24 and ds.meta["classes"].split(",") == list(mm.LABEL_NAMES)
    assert ds.meta["single_label"] is False and ds.meta["image_size"] == 128


def test_label_statistics_are_the_documented_ones(ds):
    # Column sums over the 724 items and over the stored split (SOURCE.md tables).
    assert ds.labels.sum(axis=0).tolist() == [99, 8, 22, 29, 140, 10, 158, 87, 28, 175, 6, 131, 95, 259, 249, 90,
                                              16, 40, 225, 260, 93, 60, 115, 103]
    p = ds.protocol
    assert ds.labels[p.query].sum(axis=0).tolist() == [16, 0, 3, 4, 16, 2, 28, 8, 6, 23, 2, 18, 13, 38, 28, 16,
                                                       2, 7, 33, 44, 16, 7, 12, 16]
    assert ds.text.nnz == 3530


def test_ids_columns(ds):
    image_id, dcmh_row = ds.meta["image_id"], ds.meta["dcmh_row"]
    assert image_id.shape == dcmh_row.shape == (724,)
    assert (np.diff(image_id) > 0).all() and (np.diff(dcmh_row) > 0).all()
    assert image_id[0] == 1 and dcmh_row[0] == 0 and image_id[-1] == 1000 and dcmh_row[-1] == 729
    # The 6 ambiguous DCMH rows of the first 1,000 images are left out (SOURCE.md).
    assert set(range(730)) - set(dcmh_row.tolist()) == {285, 301, 358, 486, 638, 689}
    assert [p.name for p in _image_paths()] == [f"im{i}.jpg" for i in image_id]


def test_stored_protocol(ds):
    p = ds.protocol
    assert p.seed == mm.STORED_SEED == 0
    assert p.sizes == {"query": 100, "database": 624, "train": 624}
    assert np.intersect1d(p.query, p.database).size == 0
    np.testing.assert_array_equal(np.union1d(p.query, p.database), np.arange(724))
    np.testing.assert_array_equal(p.train, p.database)
    assert (ds.labels[p.train].sum(axis=0) > 0).all()                        # every label can be learned
    # The stored split is the documented draw, and every query has a relevant database item.
    redrawn = mm.draw_protocol(ds.labels, 0)
    assert redrawn.digest == p.digest and redrawn.name == p.name
    assert ((ds.labels[p.query].astype(int) @ ds.labels[p.database].T.astype(int)) > 0).any(axis=1).all()
    assert mm.load().protocol.digest == p.digest


def test_seed_option_draws_another_split_by_the_same_rule(ds):
    a, b = mm.load(seed=7).protocol, mm.load(seed=7).protocol
    assert a.digest == b.digest != ds.protocol.digest
    assert a.seed == 7 and a.sizes == ds.protocol.sizes
    assert (ds.labels[a.train].sum(axis=0) > 0).all()
    assert datasets.load_dataset("mirflickr25k-mini", seed=0).protocol.digest == ds.protocol.digest


def test_unseen_database_divides_the_stored_non_query_items(ds):
    p = mm.load(database="unseen").protocol
    assert p.name == "mirflickr25k-mini-unseen-100q-208db-416t" and p.seed == 0
    assert p.sizes == {"query": 100, "database": 208, "train": 416}
    np.testing.assert_array_equal(p.query, ds.protocol.query)
    np.testing.assert_array_equal(np.union1d(p.train, p.database), ds.protocol.database)
    assert np.intersect1d(p.train, p.database).size == 0 and not p.train_in_database
    assert (ds.labels[p.train].sum(axis=0) > 0).all()  # every label can still be learned
    # stored, and the stored division is the documented seeded draw
    np.testing.assert_array_equal(p.train, np.loadtxt(mm.UNSEEN_TRAIN_FILE, dtype=np.int64))
    train, database = mm.draw_unseen_split(ds.labels, ds.protocol.database, 0)
    np.testing.assert_array_equal(train, p.train)
    np.testing.assert_array_equal(database, p.database)
    assert mm.load(database="train").protocol.digest == ds.protocol.digest == "a79c70c4d73b1830"


def test_unseen_database_with_another_seed_redraws_both_splits(ds):
    a, b = mm.load(seed=7, database="unseen").protocol, mm.load(seed=7, database="unseen").protocol
    std7 = mm.load(seed=7).protocol
    assert a.digest == b.digest and a.seed == 7
    np.testing.assert_array_equal(a.query, std7.query)
    np.testing.assert_array_equal(np.union1d(a.train, a.database), std7.database)
    assert a.sizes == {"query": 100, "database": 208, "train": 416}


def test_draw_unseen_split_redraws_until_every_label_is_in_training():
    labels = np.zeros((60, 2), dtype=np.uint8)
    labels[:, 0] = 1
    labels[23, 1] = 1
    rest = np.arange(10, 60)
    for seed in range(30):
        train, database = mm.draw_unseen_split(labels, rest, seed, n_database=25)
        assert 23 in train and train.size == database.size == 25
        np.testing.assert_array_equal(np.union1d(train, database), rest)
    with pytest.raises(InputError, match="does not fit 50 non-query items"):
        mm.draw_unseen_split(labels, rest, 0, n_database=50)


def test_draw_protocol_redraws_until_every_label_is_in_training():
    # A label held by a single item: any draw that makes that item a query must be rejected.
    labels = np.zeros((50, 2), dtype=np.uint8)
    labels[:, 0] = 1
    labels[17, 1] = 1
    for seed in range(30):
        p = mm.draw_protocol(labels, seed, n_query=25)
        assert 17 in p.train and p.sizes == {"query": 25, "database": 25, "train": 25}
    with pytest.raises(InputError, match="n_query"):
        mm.draw_protocol(labels, 0, n_query=50)


@pytest.mark.parametrize("options, match", [
    ({"foo": 1}, "unknown option"),
    ({"image_features": "x"}, "unknown option"),  # an image-feature option goes to load_dataset, not the loader
    ({"database": "all"}, "database='all' is invalid; valid: one of 'train', 'unseen'"),
    ({"seed": -1}, "seed=-1 is invalid"),
    ({"seed": "1"}, "seed='1' is invalid"),
    ({"seed": True}, "seed=True is invalid"),
])
def test_option_errors_are_one_line(options, match):
    with pytest.raises(InputError, match=match) as err:
        mm.load(**options)
    assert "\n" not in str(err.value) and str(err.value).startswith("mirflickr25k-mini")


def test_checksum_is_the_sha256_of_the_files_in_order_and_stable(ds):
    paths = _image_paths()
    assert ds.checksum == mm.CHECKSUM == file_checksum(mm.ITEMS_FILE, *paths)
    assert mm.load().checksum == ds.checksum
    # SHA256SUMS lists every file in that order with its real sha256.
    listed = [line.split("  ") for line in mm.SUMS_FILE.read_text().splitlines()]
    assert [mm.DATA_DIR / rel for _, rel in listed] == [mm.ITEMS_FILE] + paths
    for digest, rel in listed:
        assert hashlib.sha256((mm.DATA_DIR / rel).read_bytes()).hexdigest() == digest
    # SOURCE.md documents the checksum and the index files' sha256.
    note = (mm.DATA_DIR / "SOURCE.md").read_text()
    for f in (mm.ITEMS_FILE, mm.SUMS_FILE):
        assert hashlib.sha256(f.read_bytes()).hexdigest() in note
    assert mm.CHECKSUM in note


def test_bundle_is_small_enough_to_ship():
    total = sum(p.stat().st_size for p in mm.DATA_DIR.rglob("*") if p.is_file())
    assert total <= 10 * 2**20
    assert {p.name for p in mm.IMAGE_DIR.iterdir()} == {p.name for p in _image_paths()}  # nothing unlisted


def test_a_modified_image_is_refused_and_named(bundle_copy):
    victim = bundle_copy / "images" / "im3.jpg"
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(DataFileError, match="not the documented") as err:
        mm.load()
    assert "im3.jpg" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_image_is_reported(bundle_copy):
    (bundle_copy / "images" / "im1000.jpg").unlink()
    ok, why = mm.files_present()
    assert not ok and "im1000.jpg" in why and "\n" not in why
    with pytest.raises(DataFileError, match="missing"):
        mm.load()


def test_a_damaged_items_file_is_one_line(bundle_copy):
    items = bundle_copy / "items.csv"
    items.write_text(items.read_text().replace("row,image_id", "row,imageid", 1))
    with pytest.raises(DataFileError, match="header") as err:
        mm.load()
    assert "\n" not in str(err.value)


@needs_shared
def test_labels_and_tags_are_the_dcmh_rows(ds):
    import scipy.io

    lall = scipy.io.loadmat(SHARED / "mirflickr25k-lall.mat")["LAll"]
    yall = scipy.io.loadmat(SHARED / "mirflickr25k-yall.mat")["YAll"]
    rows = ds.meta["dcmh_row"]
    np.testing.assert_array_equal(ds.labels, lall[rows])
    np.testing.assert_array_equal(ds.text.toarray(), np.asarray(yall[rows].todense() if sp.issparse(yall) else yall[rows]))
    with open(SHARED / "images-first1000" / "index.csv", newline="") as fh:
        joined = {int(r["image_id"]): int(r["dcmh_row"]) for r in csv.DictReader(fh) if r["dcmh_row"]}
    assert dict(zip(ds.meta["image_id"].tolist(), rows.tolist())) == joined


@needs_shared
def test_pixels_are_the_shared_images_resized(ds):
    from PIL import Image

    errors = []
    for i, image_id in enumerate(ds.meta["image_id"]):
        with Image.open(SHARED / "images-first1000" / f"im{image_id}.jpg") as im:
            ref = np.asarray(im.convert("RGB").resize((128, 128), Image.Resampling.BICUBIC), dtype=np.int16)
        errors.append(np.abs(ds.image[i].astype(np.int16) - ref).mean())
    # JPEG q90 at 128 px costs ~2.5 grey levels on average (SOURCE.md); a wrong image would cost tens.
    assert np.mean(errors) < 3.5 and max(errors) < 8


@needs_shared
def test_build_is_reproducible(tmp_path):
    out = tmp_path / "rebuilt"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_mirflickr_mini.py"), "--shared", str(SHARED),
                          "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"checksum: {mm.CHECKSUM}" in res.stdout
    assert (out / "SHA256SUMS").read_bytes() == mm.SUMS_FILE.read_bytes()
    rebuilt = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(mm.DATA_DIR) for p in mm.DATA_DIR.rglob("*") if p.is_file() and p.name != "SOURCE.md")
    assert rebuilt == shipped
    for rel in rebuilt:
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == hashlib.sha256((mm.DATA_DIR / rel).read_bytes()).hexdigest()


@needs_shared
def test_build_refuses_a_wrong_input(tmp_path):
    fake = tmp_path / "mirflickr25k"
    shutil.copytree(SHARED / "images-first1000", fake / "images-first1000")
    shutil.copy(SHARED / "mirflickr25k-yall.mat", fake)
    (fake / "mirflickr25k-lall.mat").write_bytes((SHARED / "mirflickr25k-lall.mat").read_bytes()[:-1] + b"\1")
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_mirflickr_mini.py"), "--shared", str(tmp_path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "mirflickr25k-lall.mat has sha256" in res.stderr
    assert not (tmp_path / "out").exists()
