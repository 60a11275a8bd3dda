"""``prepare mirflickr25k`` (datasets/prepare_mirflickr.py) on fake official-layout folders built from real files.

Real data used (``../shared/data/mirflickr25k``): the original photographs im1 ... im1000 (256-px JPEGs),
the real MIRFlickr annotations of those images (the DeepHash 38-column rows, mapped to the 24 potential
concepts as SOURCE.md derives it; the 14 ``_r1`` columns are written as ``<concept>_r1.txt`` decoys) and
the DCMH ``LAll``/``YAll``. From them the tests build ``mirflickr/im<N>.jpg`` and
``mirflickr25k_annotations_v080/<concept>.txt`` (as folders and as zips) and check that the first 730
DCMH rows' labels equal ``LAll`` exactly (724 rows map to one image, 6 rows to two with equal labels).

Cannot be checked here, for lack of the MIRFlickr tag files (``meta/tags/tags<N>.txt`` are not public in
any copy found): that the >= 20-images rule gives 1,386 tags on the real tags, the real column order of
``YAll``, the real tag vectors, the set rule on the real data (20,015 images with a label and a
vocabulary tag), and which candidate each of the 100 ambiguous rows really is. The tag code paths
(vocabulary rule, column-order recovery, ambiguity resolution, comparison with ``YAll``) are tested on
synthetic tag files written from the real ``YAll`` rows under made-up tag names. The pixels are checked
against an independent Pillow resize, not against the release's ``IAll`` (not available).
"""
from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from benchmark.cli import main
from cmhcore.errors import DataFileError, InputError
from datasets import prepare_mirflickr as pm

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mirflickr25k"
IMAGES = SHARED / "images-first1000"
needs_shared = pytest.mark.skipif(not (IMAGES / "index.csv").is_file() or not (SHARED / "mirflickr25k-lall.mat").is_file(),
                                  reason="../shared/data/mirflickr25k (real images, annotations, LAll/YAll) not available")
# LAll column j (alphabetical concept) = DeepHash column DH[j]; the other 14 DeepHash columns are _r1 labels
# (both from shared/data/mirflickr25k/SOURCE.md).
DH = [0, 1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 20, 22, 24, 25, 27, 29, 31, 32, 33, 34, 35, 37]
R1 = {2: "baby", 4: "bird", 6: "car", 8: "clouds", 10: "dog", 12: "female", 14: "flower", 19: "male", 21: "night",
      23: "people", 26: "portrait", 28: "river", 30: "sea", 36: "tree"}
AMBIGUOUS = {285: (378, 379), 301: (397, 398), 358: (472, 474), 486: (649, 650), 638: (857, 860), 689: (938, 939)}
SIZE = 32


def _lall():
    return scipy.io.loadmat(SHARED / "mirflickr25k-lall.mat")["LAll"].astype(np.uint8)


def _yall():
    return scipy.io.loadmat(SHARED / "mirflickr25k-yall.mat")["YAll"].astype(np.uint8)


def _index():
    with open(IMAGES / "index.csv", newline="") as fh:
        return {int(r["image_id"]): (int(r["dcmh_row"]) if r["dcmh_row"] else None) for r in csv.DictReader(fh)}


def _deephash_first1000() -> np.ndarray:
    rows = np.zeros((1000, 38), dtype=np.uint8)
    for part in ("train", "test", "database"):
        for line in (SHARED / f"deephash-mirflickr-{part}.txt").read_text().splitlines():
            name, *vals = line.split()
            i = int(name[2:-4])
            if i <= 1000:
                rows[i - 1] = np.array(vals, dtype=np.uint8)
    return rows


def _write_annotations(folder: Path, dh: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for j, concept in enumerate(pm.LABEL_NAMES):
        ids = np.flatnonzero(dh[:, DH[j]]) + 1
        (folder / f"{concept}.txt").write_text("".join(f"{i}\n" for i in ids))
    for col, concept in R1.items():
        (folder / f"{concept}_r1.txt").write_text("".join(f"{i}\n" for i in np.flatnonzero(dh[:, col]) + 1))
    (folder / "README.txt").write_text("annotations v080 (test copy)\n")
    return folder


def _zip(folder: Path, dest: Path, prefix: str, only=None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and (only is None or p.name in only):
                z.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return dest


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Fake official layout: mirflickr/im1..im1000.jpg (symlinks to the real files) and the annotations."""
    if not (IMAGES / "index.csv").is_file():
        pytest.skip("../shared/data/mirflickr25k not available")
    root = tmp_path_factory.mktemp("official")
    img = root / "mirflickr"
    img.mkdir()
    for i in range(1, 1001):
        (img / f"im{i}.jpg").symlink_to(IMAGES / f"im{i}.jpg")
    ann = _write_annotations(root / "mirflickr25k_annotations_v080", _deephash_first1000())
    return root, img, ann


@pytest.fixture(scope="module")
def built730(official, tmp_path_factory):
    root, img, ann = official
    out = tmp_path_factory.mktemp("out730")
    lines = []
    result = pm.prepare(img, ann, out, lall=SHARED / "mirflickr25k-lall.mat", size=SIZE, rows="0:730", chunk=200,
                        progress=False, echo=lines.append)
    return out, result, lines


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ real rows
@needs_shared
def test_first_730_rows_labels_equal_lall(built730):
    out, result, lines = built730
    lall = _lall()
    got = scipy.io.loadmat(out / pm.OUT_LABELS)["LAll"]
    assert got.dtype == np.uint8 and got.shape == (730, 24)
    index = _index()
    with open(out / pm.OUT_IDS, newline="") as fh:
        ids = list(csv.DictReader(fh))
    assert [int(r["dcmh_row"]) for r in ids] == list(range(730))
    unique = [int(r["dcmh_row"]) for r in ids if r["status"] == "unique"]
    assert len(unique) == 724
    # the 724 uniquely mapped rows: the same image as the shared index, and exactly LAll's labels
    by_row = {row: i for i, row in index.items() if row is not None}
    assert all(int(ids[r]["image_id"]) == by_row[r] for r in unique)
    np.testing.assert_array_equal(got[unique], lall[unique])
    np.testing.assert_array_equal(got, lall[:730])  # the 6 ambiguous rows' candidates carry the same labels
    checks = result.manifest["checks"]
    assert checks["labels"]["vs_LAll"]["equal"] and checks["labels"]["vs_LAll"]["rows_compared"] == 730
    assert checks["rows"]["ambiguous"] == 6 and set(map(int, checks["rows"]["ambiguous_rows"])) == set(AMBIGUOUS)
    assert {int(ids[r]["image_id"]) for r in AMBIGUOUS} == {c[0] for c in AMBIGUOUS.values()}  # earliest taken
    assert "labels: equal to LAll in every column" in lines
    assert not (out / pm.OUT_TEXT).exists()  # no tag files, no --yall: no text written


@needs_shared
def test_pixels_are_the_whole_image_resized_to_s(built730):
    out, result, _ = built730
    arr = np.load(out / pm.OUT_IMAGES, mmap_mode="r")
    assert arr.shape == (730, SIZE, SIZE, 3) and arr.dtype == np.uint8
    with open(out / pm.OUT_IDS, newline="") as fh:
        ids = [int(r["image_id"]) for r in csv.DictReader(fh)]
    for row in (0, 1, 285, 729):
        with Image.open(IMAGES / f"im{ids[row]}.jpg") as im:
            ref = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC))
        np.testing.assert_array_equal(arr[row], ref)
    assert len({arr[r].tobytes() for r in range(0, 730, 7)}) == len(range(0, 730, 7))  # distinct photographs
    # the manifest holds the sha256 of every output and input
    for name, info in result.manifest["outputs"].items():
        assert info["sha256"] == _sha(out / name)
    assert result.manifest["inputs"]["lall"]["sha256"] == _sha(SHARED / "mirflickr25k-lall.mat")
    assert len(result.manifest["inputs"]["annotation_files"]) == 24


@needs_shared
def test_output_loads_with_the_mirflickr_loader(built730, tmp_path):
    from datasets import mirflickr

    out, _, _ = built730
    # the loader needs a YAll; a slice of the release's stands in for the text side here
    scipy.io.savemat(out / "mirflickr25k-yall.mat", {"YAll": _yall()[:730]})
    try:
        ds = mirflickr.load(out, image_features=str(out / pm.OUT_IMAGES), n_query=100, n_train=300)
        assert ds.image.shape == (730, SIZE, SIZE, 3) and ds.labels.shape == (730, 24)
        np.testing.assert_array_equal(ds.labels, _lall()[:730])
    finally:
        (out / "mirflickr25k-yall.mat").unlink()


@needs_shared
def test_a_wrong_annotation_is_reported_per_column_and_strict_fails(official, tmp_path, capsys):
    root, img, ann = official
    bad = tmp_path / "ann"
    bad.mkdir()
    for p in ann.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    sky = [int(x) for x in (bad / "sky.txt").read_text().split()]
    (bad / "sky.txt").write_text("".join(f"{i}\n" for i in sky[1:]))  # drop the first sky image (im1 -> row 0)
    args = ["prepare", "mirflickr25k", "--images", str(img), "--annotations", str(bad), "--lall",
            str(SHARED / "mirflickr25k-lall.mat"), "--rows", "0:40", "--size", "8", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "1 row(s) differ from LAll; per column {'sky': 1}" in captured.out
    assert any(line.startswith("warning:") for line in captured.err.splitlines())
    manifest = json.loads((tmp_path / "a" / pm.OUT_MANIFEST).read_text())
    assert manifest["checks"]["labels"]["vs_LAll"]["mismatches_per_column"] == {"sky": 1}
    assert manifest["checks"]["labels"]["vs_LAll"]["first_mismatched_rows"] == [0] and not manifest["ok"]
    assert main(args + ["--out", str(tmp_path / "b"), "--strict"]) == 1


@needs_shared
def test_zip_inputs_give_the_same_files_as_folders(official, tmp_path):
    root, img, ann = official
    rows = "0:40"  # images im1 .. im55
    names = {f"im{i}.jpg" for i in range(1, 60)}
    zimg = _zip(img, tmp_path / "mirflickr25k.zip", "mirflickr", only=names)
    zann = _zip(ann, tmp_path / "mirflickr25k_annotations_v080.zip", "mirflickr25k_annotations_v080")
    a = pm.prepare(img, ann, tmp_path / "a", size=SIZE, rows=rows, chunk=16, progress=False, echo=lambda s: None)
    b = pm.prepare(zimg, zann, tmp_path / "b", size=SIZE, rows=rows, chunk=16, progress=False, echo=lambda s: None)
    for name in (pm.OUT_IMAGES, pm.OUT_LABELS, pm.OUT_IDS):
        assert a.manifest["outputs"][name]["sha256"] == b.manifest["outputs"][name]["sha256"], name
    info = b.manifest["inputs"]["images"]
    assert info["kind"] == "zip" and info["sha256"] == _sha(zimg) and info["md5_is_the_published_2008_zip"] is False


# ------------------------------------------------------------------------------------------ resuming
@needs_shared
def test_an_interrupted_run_resumes_to_the_same_bytes(official, tmp_path, monkeypatch):
    root, img, ann = official
    kw = dict(size=SIZE, rows="0:60", chunk=16, workers=2, progress=False, echo=lambda s: None)
    ref = pm.prepare(img, ann, tmp_path / "ref", **kw)
    real = pm._load_image
    calls = {"n": 0}

    def failing(data, size, label):
        calls["n"] += 1
        if calls["n"] > 20:  # the first chunk (16 images) completes, the second fails part-way
            raise RuntimeError("injected failure")
        return real(data, size, label)

    monkeypatch.setattr(pm, "_load_image", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        pm.prepare(img, ann, tmp_path / "run", **kw)
    state = json.loads((tmp_path / "run" / pm.STATE_FILE).read_text())
    assert state["done"] == [0]
    assert not (tmp_path / "run" / pm.OUT_MANIFEST).exists()

    counted = {"n": 0}

    def counting(data, size, label):
        counted["n"] += 1
        return real(data, size, label)

    monkeypatch.setattr(pm, "_load_image", counting)
    again = pm.prepare(img, ann, tmp_path / "run", **kw)
    assert counted["n"] == 60 - 16  # only the chunks not done were decoded
    assert again.manifest["images"]["chunks_resumed"] == 1
    for name in (pm.OUT_IMAGES, pm.OUT_LABELS, pm.OUT_IDS):
        assert again.manifest["outputs"][name]["sha256"] == ref.manifest["outputs"][name]["sha256"], name
    # a finished run reruns without decoding anything
    counted["n"] = 0
    pm.prepare(img, ann, tmp_path / "run", **kw)
    assert counted["n"] == 0


@needs_shared
def test_a_changed_input_starts_over(official, tmp_path):
    root, img, ann = official
    ann2 = tmp_path / "ann"
    ann2.mkdir()
    for p in ann.iterdir():
        (ann2 / p.name).write_bytes(p.read_bytes())
    kw = dict(size=8, rows="0:30", chunk=10, progress=False, echo=lambda s: None)
    first = pm.prepare(img, ann2, tmp_path / "out", **kw)
    assert first.manifest["images"]["chunks_decoded_now"] == 3
    with open(ann2 / "dog.txt", "a") as fh:
        fh.write("999\n")
    second = pm.prepare(img, ann2, tmp_path / "out", **kw)
    assert second.manifest["images"]["chunks_decoded_now"] == 3 and second.manifest["images"]["chunks_resumed"] == 0
    assert second.manifest["inputs"]["annotations"]["sha256"] != first.manifest["inputs"]["annotations"]["sha256"]


# ------------------------------------------------------------------------------------------ errors
@needs_shared
@pytest.mark.parametrize("case", ["no_images", "empty_images", "missing_concept", "bad_line", "bad_zip",
                                  "rows_beyond_images", "bad_rows", "bad_lall", "out_is_file", "bad_size"])
def test_bad_inputs_fail_in_one_line_naming_the_file_before_any_work(official, tmp_path, capsys, case):
    root, img, ann = official
    out = tmp_path / "out"
    a = {"images": str(img), "annotations": str(ann), "rows": "0:20", "size": "8"}
    extra: list[str] = []
    needle = None
    if case == "no_images":
        a["images"], needle = str(tmp_path / "nowhere"), "nowhere"
    elif case == "empty_images":
        (tmp_path / "empty").mkdir()
        a["images"], needle = str(tmp_path / "empty"), "holds no im<N>.jpg"
    elif case in ("missing_concept", "bad_line"):
        copy = tmp_path / "ann"
        copy.mkdir()
        for p in ann.iterdir():
            (copy / p.name).write_bytes(p.read_bytes())
        if case == "missing_concept":
            (copy / "water.txt").unlink()
            needle = "water.txt is missing"
        else:
            (copy / "night.txt").write_text("12\nim13\n")
            needle = f"{copy / 'night.txt'}: 'im13' is not an image id"
        a["annotations"] = str(copy)
    elif case == "bad_zip":
        (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
        a["images"], needle = str(tmp_path / "broken.zip"), "broken.zip is not a readable zip file"
    elif case == "rows_beyond_images":
        a["rows"], needle = "700:800", "image im1001.jpg is missing"
    elif case == "bad_rows":
        a["rows"], needle = "20:10", "--rows 20:10 is invalid"
    elif case == "bad_lall":
        scipy.io.savemat(tmp_path / "lall.mat", {"LAll": np.ones((10, 24), dtype=np.uint8)})
        extra, needle = ["--lall", str(tmp_path / "lall.mat")], "lall.mat: LAll has shape (10, 24)"
    elif case == "out_is_file":
        out = tmp_path / "file"
        out.write_text("x")
        needle = "is a file"
    elif case == "bad_size":
        a["size"], needle = "2", "--size 2 is invalid"
    argv = ["prepare", "mirflickr25k"] + [x for k, v in a.items() for x in (f"--{k}", v)] + extra + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    if case != "out_is_file":
        assert not out.exists()  # nothing was written


@needs_shared
def test_an_undecodable_image_stops_in_one_line_naming_it(official, tmp_path, capsys):
    root, img, ann = official
    broken = tmp_path / "mirflickr"
    broken.mkdir()
    for i in range(1, 31):
        (broken / f"im{i}.jpg").symlink_to(IMAGES / f"im{i}.jpg")
    (broken / "im3.jpg").unlink()
    (broken / "im3.jpg").write_bytes(b"\xff\xd8 truncated")
    argv = ["prepare", "mirflickr25k", "--images", str(broken), "--annotations", str(ann), "--rows", "0:20",
            "--size", "8", "--chunk", "2", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot decode image" in err and "im3.jpg" in err
    assert json.loads((tmp_path / "out" / pm.STATE_FILE).read_text())["done"] == [0]  # rows 0-1 kept


# ------------------------------------------------------------------------------------------ tags (synthetic)
def test_vocabulary_keeps_tags_in_at_least_20_images_sorted():
    sets = {i: frozenset({"common"} | ({"edge"} if i <= 20 else set()) | ({"rare"} if i <= 19 else set())
                         | ({"b-tag"} if i % 2 else set())) for i in range(1, 41)}
    vocab, counts = pm.build_vocabulary(sets)
    assert vocab == ["b-tag", "common", "edge"] and counts.tolist() == [20, 40, 20]
    assert pm.build_vocabulary(sets, min_images=19)[0] == ["b-tag", "common", "edge", "rare"]


def test_match_columns_recovers_a_permutation_and_counts_ties():
    rng = np.random.default_rng(0)
    ours = (rng.random((200, 30)) < 0.2).astype(np.uint8)
    ours[:, 7] = ours[:, 3]  # a tie: two tags with the same vector
    perm = rng.permutation(30)
    assign, tied = pm.match_columns(ours, ours[:, perm])
    np.testing.assert_array_equal(ours[:, assign], ours[:, perm])
    assert tied == 2 and all(assign[j] == perm[j] for j in range(30) if perm[j] not in (3, 7))
    other = ours[:, perm].copy()
    other[0, 0] ^= 1
    assert pm.match_columns(ours, other)[0][0] in (-1, perm[0]) and (pm.match_columns(ours, other)[0] == -1).sum() <= 1


def test_resolve_rows_uses_the_tags_and_overlapping_neighbours():
    # rows 1-2 share candidate 5 (as rows 2848/2849 of the real map do); row 4 has three candidates
    cands = [(1,), (4, 5), (5, 6), (8,), (9, 10, 11)]
    ids, status, notes = pm.resolve_rows(cands, range(5))
    assert ids.tolist() == [1, 4, 5, 8, 9] and status == ["unique", "ambiguous", "ambiguous", "unique", "ambiguous"]
    tagged = {1: True, 4: False, 5: True, 6: True, 8: True, 9: False, 10: True, 11: False}
    ids, status, notes = pm.resolve_rows(cands, range(5), tagged=tagged.get)
    assert ids.tolist() == [1, 5, 6, 8, 10] and status == ["unique", "resolved", "resolved", "unique", "resolved"]
    # the YAll rows decide where the set rule cannot (11 and 10 both tagged)
    tagged[11] = True
    ids, status, notes = pm.resolve_rows(cands, range(5), tagged=tagged.get, row_matches=lambda r, i: r != 4 or i == 11)
    assert ids[4] == 11 and status[4] == "resolved" and notes  # the set rule was dropped for that group
    ids, status, notes = pm.resolve_rows(cands, range(5), tagged=tagged.get)  # without YAll: undecided
    assert ids[4] == 9 and status[4] == "ambiguous" and status[1:3] == ["resolved", "resolved"] and len(notes) == 1


def _fake_tag_files(folder: Path, yall: np.ndarray, index: dict, names: list[str], pick: dict[int, int]):
    """tags<N>.txt from the real YAll rows under made-up names; ambiguous rows' other candidates get no vocabulary tag."""
    folder.mkdir(parents=True, exist_ok=True)
    rows_of = {i: r for i, r in index.items() if r is not None}
    for r, i in pick.items():
        rows_of[i] = r
    for i in range(1, 1001):
        r = rows_of.get(i)
        tags = [names[j] for j in np.flatnonzero(yall[r])] if r is not None else []
        tags += [f"rare{i}"]  # in one image only: below the threshold
        (folder / f"tags{i}.txt").write_text("".join(f"{t}\n" for t in tags))
    # unlabelled images beyond the first 1000 carry every tag, so each reaches the 20-image threshold
    for i in range(1001, 1021):
        (folder / f"tags{i}.txt").write_text("".join(f"{t}\n" for t in names))


@needs_shared
def test_tags_rebuild_yall_recover_its_order_and_resolve_ambiguous_rows(official, tmp_path):
    root, img, ann = official
    yall = _yall()
    rng = np.random.default_rng(1)
    names = [f"tag{k:04d}" for k in rng.permutation(pm.N_TAGS)]  # YAll's order is not alphabetical here
    pick = {285: 379, 301: 397, 358: 474, 486: 650, 638: 857, 689: 939}  # the designed true candidates
    images = tmp_path / "mirflickr"
    images.mkdir()
    for p in img.iterdir():
        (images / p.name).symlink_to(p.resolve())
    _fake_tag_files(images / "meta" / "tags", yall, _index(), names, pick)
    (images / "meta" / "tags_raw").mkdir()
    (images / "meta" / "tags_raw" / "tags1.txt").write_text("Not Processed\n")  # must be ignored
    result = pm.prepare(images, ann, tmp_path / "out", lall=SHARED / "mirflickr25k-lall.mat",
                        yall=SHARED / "mirflickr25k-yall.mat", size=8, rows="0:730", progress=False, echo=lambda s: None)
    checks = result.manifest["checks"]
    assert checks["vocabulary"]["size"] == pm.N_TAGS and checks["vocabulary"]["equal_to_expected"]
    assert checks["rows"]["resolved_from_tags"] == 6 and checks["rows"]["ambiguous"] == 0
    with open(tmp_path / "out" / pm.OUT_IDS, newline="") as fh:
        ids = {int(r["dcmh_row"]): int(r["image_id"]) for r in csv.DictReader(fh)}
    assert all(ids[r] == i for r, i in pick.items())
    got = scipy.io.loadmat(tmp_path / "out" / pm.OUT_TEXT)["YAll"]
    np.testing.assert_array_equal(got, yall[:730])
    assert checks["tags"]["vs_YAll"]["equal"] and checks["labels"]["vs_LAll"]["equal"] and result.ok
    # the recovered names of the columns that are not tied over these rows are the designed ones
    vocab = (tmp_path / "out" / pm.OUT_VOCAB).read_text().splitlines()
    nonzero = np.flatnonzero(yall[:730].any(axis=0))
    keys = {}
    for j in nonzero:
        keys.setdefault(yall[:730, j].tobytes(), []).append(j)
    untied = [j for j in nonzero if len(keys[yall[:730, j].tobytes()]) == 1]
    assert len(untied) > 300 and all(vocab[j] == names[j] for j in untied)
    assert checks["yall_columns"]["order"] == "other"


@needs_shared
def test_tags_without_yall_resolve_by_the_set_rule_and_with_a_tags_zip(official, tmp_path):
    root, img, ann = official
    yall = _yall()
    names = [f"t{k:04d}" for k in range(pm.N_TAGS)]
    pick = {285: 378, 301: 398, 358: 472, 486: 649, 638: 860, 689: 938}
    _fake_tag_files(tmp_path / "tags", yall, _index(), names, pick)
    ztags = _zip(tmp_path / "tags", tmp_path / "tags.zip", "mirflickr/meta/tags")
    result = pm.prepare(img, ann, tmp_path / "out", tags=ztags, size=8, rows="280:300", progress=False,
                        echo=lambda s: None)
    assert result.manifest["checks"]["rows"]["resolved_from_tags"] == 1  # row 285
    with open(tmp_path / "out" / pm.OUT_IDS, newline="") as fh:
        assert {int(r["dcmh_row"]): int(r["image_id"]) for r in csv.DictReader(fh)}[285] == 378
    # alphabetical names = YAll's column order, so the rebuilt matrix equals YAll without --yall
    np.testing.assert_array_equal(scipy.io.loadmat(tmp_path / "out" / pm.OUT_TEXT)["YAll"], yall[280:300])
    with pytest.raises(DataFileError, match="holds no tags<N>.txt"):
        pm.prepare(img, ann, tmp_path / "x", tags=tmp_path / "out", rows="0:5", progress=False, echo=lambda s: None)


def test_row_map_is_bundled_and_consistent():
    ids, cands = pm.load_row_map()
    assert ids.shape == (pm.N_ROWS,) and np.all(np.diff(ids) > 0)
    n = np.array([len(c) for c in cands])
    assert (n == 1).sum() == 19915 and (n == 2).sum() == 98 and (n == 3).sum() == 2
    assert ids[0] == 1 and ids.max() <= pm.N_IMAGES
    with pytest.raises(InputError, match="--rows"):
        pm._parse_rows("5")
