"""NUS-WIDE TC-10 / TC-21 loaders (datasets/nuswide.py) on tiny files written in the real formats."""
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import datasets
from cmhcore.errors import DataFileError, InputError
from datasets import nuswide
from datasets.base import file_checksum

N_IMAGES, N_CONCEPTS, N_TAGS, N_BOW = 80, 81, 1000, 500
SMALL = {"n_query": 5, "n_train": 10}


def _one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def write_official(root, n=N_IMAGES, seed=0, tag_sep="\t", labels=None):
    """The official distribution's layout and formats, for ``n`` images.

    Concept j is on with a probability that decreases with a shuffled rank, so the top concepts are
    not the first ones in Concepts81 order. Column 0 of the BoW file is the image index, which lets
    a test check that rows stay aligned after filtering.
    """
    rng = np.random.default_rng(seed)
    names = [f"concept{j:02d}" for j in range(N_CONCEPTS)]
    rank = rng.permutation(N_CONCEPTS)
    prob = np.where(rank < 21, 0.25 - 0.008 * rank, 0.02)
    if labels is None:
        labels = (rng.random((n, N_CONCEPTS)) < prob).astype(np.uint8)
    tags = (rng.random((n, N_TAGS)) < 0.004).astype(np.uint8)
    tags[:3] = 0                                     # a few images without any tag
    bow = rng.integers(0, 40, (n, N_BOW))
    bow[:, 0] = np.arange(n)
    (root / "ConceptsList").mkdir(parents=True)
    (root / "ConceptsList" / "Concepts81.txt").write_text("\n".join(names) + "\n")
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
    for j, name in enumerate(names):
        (root / "Groundtruth" / "AllLabels" / f"Labels_{name}.txt").write_text("\n".join(map(str, labels[:, j])) + "\n")
    (root / "NUS_WID_Tags").mkdir()
    (root / "NUS_WID_Tags" / "AllTags1k.txt").write_text(
        "\n".join(tag_sep.join(map(str, row)) + tag_sep for row in tags) + "\n")
    (root / "Low_Level_Features").mkdir()
    (root / "Low_Level_Features" / "BoW_int.dat").write_text("\n".join(" ".join(map(str, r)) + " " for r in bow) + "\n")
    return names, labels, tags, bow


def _expected(labels, tc):
    counts = labels.sum(axis=0, dtype=np.int64)
    top = np.sort(np.argsort(-counts, kind="stable")[:tc])
    kept = np.flatnonzero(labels[:, top].any(axis=1))
    return top, kept


@pytest.mark.parametrize("tc, loader", [(10, nuswide.load_tc10), (21, nuswide.load_tc21)])
def test_official_distribution(tmp_path, tc, loader):
    names, labels, tags, bow = write_official(tmp_path / "NUS-WIDE")
    top, kept = _expected(labels, tc)
    assert 0 < kept.size < N_IMAGES                           # some images fall outside TC-k
    ds = loader(tmp_path, **SMALL)
    assert ds.name == f"nuswide-tc{tc}" and ds.meta["source"] == "official"
    assert ds.meta["concepts"] == ",".join(names[j] for j in top)
    np.testing.assert_array_equal(ds.labels, labels[kept][:, top])
    np.testing.assert_array_equal(ds.meta["source_rows"], kept)
    np.testing.assert_array_equal(ds.image[:, 0], kept)         # rows stay aligned
    np.testing.assert_array_equal(ds.image, bow[kept].astype(np.float32))
    assert sp.issparse(ds.text) and ds.text.shape == (kept.size, N_TAGS)
    np.testing.assert_array_equal(ds.text.toarray(), tags[kept])
    assert ds.protocol.sizes == {"query": 5, "database": kept.size - 5, "train": 10}
    assert ds.protocol.train_in_database
    root = tmp_path / "NUS-WIDE"
    files = [root / "ConceptsList/Concepts81.txt",
             *[root / f"Groundtruth/AllLabels/Labels_{c}.txt" for c in names],
             root / "NUS_WID_Tags/AllTags1k.txt", root / "Low_Level_Features/BoW_int.dat"]
    assert ds.checksum == file_checksum(*files)
    assert nuswide.required_files(tmp_path, tc=tc) == files


def test_official_top_concepts_break_ties_in_concepts81_order(tmp_path):
    # Nine clear leaders, then concepts 50 and 3 tie for the tenth place: Concepts81 order picks 3.
    labels = np.zeros((N_IMAGES, N_CONCEPTS), np.uint8)
    for j in range(N_CONCEPTS):
        count = 30 if j >= 70 and j < 79 else 10 if j in (3, 50) else 2
        labels[(np.arange(count) * 7 + j) % N_IMAGES, j] = 1
    names, *_ = write_official(tmp_path, labels=labels)
    ds = nuswide.load_tc10(tmp_path, **SMALL)
    assert ds.meta["concepts"] == ",".join(names[j] for j in [3, *range(70, 79)])
    np.testing.assert_array_equal(ds.labels, labels[labels[:, [3, *range(70, 79)]].any(1)][:, [3, *range(70, 79)]])


def test_official_require_tags_and_seed(tmp_path):
    _, labels, tags, _ = write_official(tmp_path, seed=1)
    _, kept = _expected(labels, 10)
    with_tags = kept[tags[kept].any(axis=1)]
    assert with_tags.size < kept.size
    ds = nuswide.load_tc10(tmp_path, require_tags=True, **SMALL)
    np.testing.assert_array_equal(ds.meta["source_rows"], with_tags)
    np.testing.assert_array_equal(ds.image[:, 0], with_tags)
    assert (np.diff(ds.text.indptr) > 0).all()
    a = nuswide.load_tc10(tmp_path, seed=3, **SMALL).protocol
    b = nuswide.load_tc10(tmp_path, seed=3, **SMALL).protocol
    c = nuswide.load_tc10(tmp_path, seed=4, **SMALL).protocol
    assert a.digest == b.digest != c.digest


def test_official_other_feature_file(tmp_path):
    _, labels, _, _ = write_official(tmp_path)
    _, kept = _expected(labels, 10)
    ch = np.random.default_rng(2).random((N_IMAGES, 64)).astype(np.float32)
    np.savetxt(tmp_path / "Low_Level_Features" / "Normalized_CH.dat", ch, fmt="%.6f")
    ds = nuswide.load_tc10(tmp_path, image_features="Normalized_CH.dat", **SMALL)
    np.testing.assert_allclose(ds.image, ch[kept], atol=1e-6)
    np.save(tmp_path / "cnn.npy", ch)
    np.testing.assert_array_equal(nuswide.load_tc10(tmp_path, image_features="cnn.npy", **SMALL).image, ch[kept])


@pytest.mark.parametrize("case, expect", [
    ("missing_label_file", "Labels_concept07.txt"),
    ("short_label_file", "has 79 rows; expected 80"),
    ("non_binary_label", "must be 0/1"),
    ("short_tag_line", "fewer than 1000 values"),
    ("bow_rows", "rows; expected 80"),
])
def test_official_missing_and_corrupt(tmp_path, case, expect):
    write_official(tmp_path)
    lab_dir = tmp_path / "Groundtruth" / "AllLabels"
    if case == "missing_label_file":
        (lab_dir / "Labels_concept07.txt").unlink()
    elif case == "short_label_file":
        p = lab_dir / "Labels_concept05.txt"
        p.write_text("\n".join(p.read_text().split()[:-1]) + "\n")
    elif case == "non_binary_label":
        p = lab_dir / "Labels_concept05.txt"
        p.write_text("3\n" + "\n".join(p.read_text().split()[1:]) + "\n")
    elif case == "short_tag_line":
        p = tmp_path / "NUS_WID_Tags" / "AllTags1k.txt"
        lines = p.read_text().splitlines()
        lines[10] = " ".join(lines[10].split()[:-1])
        p.write_text("\n".join(lines) + "\n")
    elif case == "bow_rows":
        p = tmp_path / "Low_Level_Features" / "BoW_int.dat"
        p.write_text("\n".join(p.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(DataFileError) as err:
        nuswide.load_tc10(tmp_path, **SMALL)
    assert expect in _one_line(err)


# ---------------------------------------------------------------- .mat releases

def _write_dcmh(root, tc, n=40, seed=0, raw=False):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, tc)) < 0.3).astype(np.uint8)
    lab[lab.sum(1) == 0, 0] = 1
    tags = (rng.random((n, N_TAGS)) < 0.01).astype(np.uint8)
    feats = rng.standard_normal((n, 12)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / f"nus-wide-tc{tc}-lall.mat", {"LAll": lab})
    scipy.io.savemat(root / f"nus-wide-tc{tc}-yall.mat", {"YAll": tags})
    scipy.io.savemat(root / f"nus-wide-tc{tc}-xall-vgg.mat", {"XAll": feats})
    pixels = rng.integers(0, 256, (n, 4, 6, 3)).astype(np.uint8)
    if raw:
        scipy.io.savemat(root / f"nus-wide-tc{tc}-iall.mat", {"IAll": pixels.transpose(1, 2, 3, 0)})
    return lab, tags, feats, pixels


@pytest.mark.parametrize("tc", [10, 21])
def test_dcmh_release(tmp_path, tc):
    lab, tags, feats, _ = _write_dcmh(tmp_path / f"NUS-WIDE-TC{tc}", tc)
    ds = datasets.load_dataset(f"nuswide-tc{tc}", data_root=tmp_path,
                               image_features=f"nus-wide-tc{tc}-xall-vgg.mat", **SMALL)
    assert ds.meta["source"] == "dcmh"
    np.testing.assert_array_equal(ds.labels, lab)
    np.testing.assert_array_equal(ds.image, feats)
    np.testing.assert_array_equal(ds.text.toarray(), tags)
    assert ds.protocol.sizes == {"query": 5, "database": 35, "train": 10}


def test_dcmh_raw_images_by_default_and_preferred_over_official(tmp_path):
    write_official(tmp_path)
    lab, _, _, pixels = _write_dcmh(tmp_path, 10, raw=True)
    ds = nuswide.load_tc10(tmp_path, **SMALL)
    assert ds.meta["source"] == "dcmh" and ds.image_kind == "pixels"
    np.testing.assert_array_equal(ds.image, pixels)
    assert nuswide.load_tc10(tmp_path, source="official", **SMALL).meta["source"] == "official"


def test_dcmh_wrong_label_count(tmp_path):
    _write_dcmh(tmp_path, 10)
    scipy.io.savemat(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": np.eye(40, 21, dtype=np.uint8)})
    with pytest.raises(DataFileError) as err:
        nuswide.load_tc10(tmp_path, image_features="nus-wide-tc10-xall-vgg.mat", **SMALL)
    assert "21 columns" in _one_line(err)


def test_single_file_release(tmp_path):
    rng = np.random.default_rng(0)
    n_tr, n_te = 30, 8
    arrays = {}
    for part, n in (("tr", n_tr), ("te", n_te)):
        lab = (rng.random((n, 10)) < 0.3).astype(np.uint8)
        lab[lab.sum(1) == 0, 1] = 1
        arrays.update({f"I_{part}": rng.random((n, 500)), f"V_{part}": rng.random((n, 64)),
                       f"T_{part}": (rng.random((n, N_TAGS)) < 0.01).astype(np.float64), f"L_{part}": lab})
    scipy.io.savemat(tmp_path / "NUSWIDE10.mat", arrays)
    ds = nuswide.load_tc10(tmp_path, **SMALL)
    assert ds.meta["source"] == "single" and ds.meta["n_file_train"] == n_tr
    np.testing.assert_allclose(ds.image, np.vstack([arrays["I_tr"], arrays["I_te"]]).astype(np.float32))
    np.testing.assert_array_equal(ds.labels, np.vstack([arrays["L_tr"], arrays["L_te"]]))
    assert ds.text.shape == (n_tr + n_te, N_TAGS) and sp.issparse(ds.text)
    cnn = nuswide.load_tc10(tmp_path, image_key="V", **SMALL)
    assert cnn.image.shape == (n_tr + n_te, 64)
    with pytest.raises(DataFileError, match="no complete copy"):
        nuswide.load_tc21(tmp_path, **SMALL)  # no default single-file name for TC-21
    with pytest.raises(DataFileError, match="not used with image_features"):
        nuswide.load_tc10(tmp_path, image_features="cnn.npy", **SMALL)


def test_nothing_found_is_one_line_naming_every_source(tmp_path):
    with pytest.raises(DataFileError) as err:
        nuswide.load_tc21(tmp_path)
    msg = _one_line(err)
    for piece in ("nus-wide-tc21-lall.mat", "Concepts81.txt", str(tmp_path / "NUS-WIDE-TC21"), "docs/datasets.md"):
        assert piece in msg
    present, reason = nuswide.files_present(tmp_path)
    assert not present and "nuswide-tc10" in reason and "nuswide-tc21" in reason and "\n" not in reason
    assert nuswide.files_present_tc10(tmp_path)[0] is False


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="source='mat'"):
        nuswide.load_tc10(tmp_path, source="mat")
    with pytest.raises(InputError, match="unknown option"):
        nuswide.load_tc10(tmp_path, requires_tags=True)
    with pytest.raises(InputError, match="require_tags"):
        nuswide.load_tc10(tmp_path, require_tags="yes")
    with pytest.raises(InputError, match="tc=12"):
        nuswide.files_present(tmp_path, tc=12)
