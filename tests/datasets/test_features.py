"""Image feature extractors and their on-disk cache (datasets/features.py), and the dataset option."""
import json
import sys
import types

import numpy as np
import pytest

import datasets
from cmhcore.errors import InputError
from cmhcore.params import Interval
from datasets import features as feat
from datasets import gist as gist_mod
from datasets.base import Dataset, random_protocol


def _pixel_dataset(n=24, size=20, seed=0, checksum="pixels-abc"):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    text = rng.random((n, 10)).astype(np.float32)
    return Dataset("pix", images, text, labels, checksum, random_protocol("pix-p", n, 2, n // 2, seed=seed),
                   meta={"source": "test"})


@pytest.fixture
def gist_calls(monkeypatch):
    """Counts the images that go through GIST extraction."""
    calls = []
    real = gist_mod.gist

    def counting(images, **kw):
        calls.append(len(images))
        return real(images, **kw)

    monkeypatch.setattr(gist_mod, "gist", counting)
    return calls


@pytest.fixture
def pix_loader(monkeypatch):
    """A registered dataset 'pix-test' whose image side is pixels (the loader counts its loads)."""
    mod = types.ModuleType("cmh_test_pixloader")
    loads = []

    def load(data_root, **options):
        loads.append(options)
        return _pixel_dataset(**options)

    mod.load = load
    mod.files_present = lambda data_root, **options: (True, "")
    mod.OPTION_CONSTRAINTS = {"n": [Interval(int, 2, None, closed="left")]}
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(datasets.LOADERS, "pix-test", (mod.__name__, "load", "files_present"))
    return loads


GIST = {"image_features": "gist", "gist_size": 32}


# ---------------------------------------------------------------- apply + cache

def test_apply_gist_replaces_pixels_and_records_the_key(tmp_path, gist_calls):
    ds = _pixel_dataset()
    out = feat.apply_image_features(ds, GIST, cache_dir=tmp_path)
    assert out.image.shape == (24, 512) and out.image.dtype == np.float32 and out.image_kind == "features"
    np.testing.assert_allclose(out.image, gist_mod.gist(ds.image, image_size=32), rtol=1e-5, atol=1e-7)
    assert out.text is ds.text and out.labels is ds.labels and out.protocol is ds.protocol
    key = out.meta["image_features_cache_key"]
    assert len(key) == 64 and out.checksum not in (ds.checksum, key)
    desc = out.describe()
    assert desc["image_features"] == "gist" and desc["image_features_cache_key"] == key
    assert json.loads(desc["image_features_params"])["image_size"] == 32
    assert desc["pixels_checksum"] == ds.checksum and desc["image_kind"] == "features" and desc["source"] == "test"
    assert [p.name for p in tmp_path.glob("*.npz")] == [f"gist-{key[:32]}.npz"]


def test_second_load_reads_the_cache(tmp_path, gist_calls):
    ds = _pixel_dataset()
    a = feat.apply_image_features(ds, GIST, cache_dir=tmp_path)
    assert sum(gist_calls) == 24
    b = feat.apply_image_features(ds, GIST, cache_dir=tmp_path)
    assert sum(gist_calls) == 24  # not recomputed
    np.testing.assert_array_equal(a.image, b.image)
    assert a.checksum == b.checksum and a.meta == b.meta


def test_key_follows_images_parameters_and_version(tmp_path, monkeypatch):
    ds = _pixel_dataset()
    ex = feat.make_extractor("gist", image_size=32)
    key = feat.cache_key(ds.checksum, ds.image, ex)
    assert key == feat.cache_key(ds.checksum, ds.image.copy(), feat.make_extractor("gist", image_size=32))
    assert key != feat.cache_key("other", ds.image, ex)                                   # other files
    assert key != feat.cache_key(ds.checksum, ds.image, feat.make_extractor("gist", image_size=40))
    other = ds.image.copy()
    other[-1] ^= 1                                                       # same files, other pixels read
    assert key != feat.cache_key(ds.checksum, other, ex)
    monkeypatch.setattr(feat.GistExtractor, "version", "lmgist-test")
    assert key != feat.cache_key(ds.checksum, ds.image, feat.make_extractor("gist", image_size=32))


def _rewrite(path, features=None, header=None):
    with np.load(path) as z:
        f, h = z["features"], json.loads(bytes(z["header"]).decode())
    f = f if features is None else features(f)
    h = h if header is None else header(h)
    with open(path, "wb") as fh:
        np.savez(fh, features=f, header=np.frombuffer(json.dumps(h).encode(), dtype=np.uint8))


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(b"not a zip file"), "unreadable"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "unreadable"),
    (lambda p: _rewrite(p, features=lambda f: f + np.float32(1)), "corrupt"),
    (lambda p: _rewrite(p, features=lambda f: f[:-1]), "wrong array"),
    (lambda p: _rewrite(p, features=lambda f: f.astype(np.float64)), "wrong array"),
    (lambda p: _rewrite(p, header=lambda h: {**h, "key": "0" * 64}), "stale"),
])
def test_corrupt_or_stale_cache_is_rebuilt(tmp_path, gist_calls, damage, why):
    ds = _pixel_dataset(n=8)
    good = feat.apply_image_features(ds, GIST, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    damage(path)
    lines = []
    again = feat.apply_image_features(ds, GIST, cache_dir=tmp_path, log=lines.append)
    assert sum(gist_calls) == 16  # extracted again
    assert len(lines) == 1 and why in lines[0] and "rebuilding" in lines[0] and "\n" not in lines[0]
    np.testing.assert_array_equal(again.image, good.image)
    # The rebuilt file is good: a third load is a hit with no message.
    third = feat.apply_image_features(ds, GIST, cache_dir=tmp_path, log=lines.append)
    assert sum(gist_calls) == 16 and len(lines) == 1
    np.testing.assert_array_equal(third.image, good.image)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".lock"]  # no temporary files left


def test_parallel_loads_extract_once(tmp_path):
    """Two loads at once (parallel runs of a suite): one extracts, the other waits and reads its file."""
    import threading
    import time

    ds = _pixel_dataset(n=6)
    calls = []

    class Slow(feat.GistExtractor):
        def extract(self, images, progress):
            calls.append(1)
            time.sleep(0.5)
            return super().extract(images, progress)

    results = []

    def load():
        results.append(feat.extract_features(ds.image, Slow(image_size=32), ds.checksum, cache_dir=tmp_path)[1])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(r["cache_hit"] for r in results) == [False, True]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(feat.CACHE_ENV, str(tmp_path / "env-cache"))
    assert feat.resolve_cache_dir() == tmp_path / "env-cache"
    assert feat.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    feat.apply_image_features(_pixel_dataset(n=4), GIST)
    assert len(list((tmp_path / "env-cache").glob("gist-*.npz"))) == 1
    monkeypatch.delenv(feat.CACHE_ENV)
    assert feat.resolve_cache_dir().parts[-3:] == (".cache", "cmh-bench", "features")


def test_extraction_streams_over_chunks(tmp_path, monkeypatch):
    """The images are read in slices of the batch size, never all at once."""
    ds = _pixel_dataset(n=10)

    class Lazy:
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

        def __len__(self):
            return len(self.a)

        def __getitem__(self, item):
            out = self.a[item]
            self.reads.append(len(out))
            return out

    lazy = Lazy(ds.image)
    ex = feat.make_extractor("gist", image_size=32, batch_size=4)
    f, info = feat.extract_features(lazy, ex, ds.checksum, cache_dir=tmp_path, progress=False)
    assert f.shape == (10, 512) and not info["cache_hit"] and max(lazy.reads) <= 4
    np.testing.assert_allclose(f, gist_mod.gist(ds.image, image_size=32), rtol=1e-5, atol=1e-7)


def test_features_on_a_features_dataset_is_an_error(tmp_path):
    ds = _pixel_dataset()
    fds = Dataset("f", np.zeros((24, 5), np.float32), ds.text, ds.labels, "x", ds.protocol)
    with pytest.raises(InputError, match=r"image_features='gist' needs pixels .* feature matrix \(24, 5\)"):
        feat.apply_image_features(fds, GIST, cache_dir=tmp_path)


# ---------------------------------------------------------------- the dataset option

def test_load_dataset_with_image_features(tmp_path, monkeypatch, pix_loader, gist_calls):
    monkeypatch.setenv(feat.CACHE_ENV, str(tmp_path))
    pixels = datasets.load_dataset("pix-test", n=12)
    ds = datasets.load_dataset("pix-test", image_features="gist", gist_size=32, n=12)
    assert pix_loader == [{"n": 12}, {"n": 12}]  # the loader never sees the extractor's options
    assert ds.image.shape == (12, 512) and ds.meta["image_features"] == "gist"
    assert ds.checksum != pixels.checksum and pixels.image_kind == "pixels"
    again = datasets.load_dataset("pix-test", image_features="gist", gist_size=32, n=12)
    assert sum(gist_calls) == 12 and again.checksum == ds.checksum
    assert datasets.dataset_status("pix-test", image_features="gist", gist_size=32) == (True, "")


def test_load_dataset_features_on_features_data_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv(feat.CACHE_ENV, str(tmp_path))
    # Wiki declares PIXELS = False: the image-feature options are not among its options at all
    with pytest.raises(InputError, match=r"^wiki: unknown option\(s\) image_features; valid: database$") as err:
        datasets.load_dataset("wiki", image_features="gist")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("options, match", [
    ({"image_features": "hog"}, r"pix-test option image_features='hog' is invalid; valid: one of 'cnnf-fc7', 'gist'"),
    ({"image_features": "GIST"}, r"image_features='GIST' is invalid"),
    ({"gist_size": 64}, r"gist_size= needs image_features=gist"),
    ({"image_weights": "w.mat"}, r"image_weights= needs image_features=cnnf-fc7"),
    ({"image_features": "gist", "image_weights": "w.mat"}, r"image_weights= applies to image_features=cnnf-fc7"),
    ({"image_features": "cnnf-fc7", "gist_size": 64}, r"gist_size= applies to image_features=gist"),
    ({"image_features": "gist", "gist_size": 4}, r"gist_size=4 is invalid"),
    ({"image_features": "cnnf-fc7"}, r"needs image_weights=PATH"),
])
def test_bad_feature_options(tmp_path, monkeypatch, pix_loader, options, match):
    monkeypatch.setenv(feat.CACHE_ENV, str(tmp_path))
    with pytest.raises(InputError, match=match):
        datasets.load_dataset("pix-test", **options)


def test_feature_files_still_go_to_the_loader():
    # mirflickr25k / nuswide take image_features=<file>: a value with a suffix is not an extractor.
    opts, feature = feat.split_feature_options({"image_features": "xall-gist.mat", "seed": 1})
    assert feature is None and opts == {"image_features": "xall-gist.mat", "seed": 1}


def test_status_reports_a_missing_weights_file(tmp_path, pix_loader):
    ok, why = datasets.dataset_status("pix-test", image_features="cnnf-fc7", image_weights=str(tmp_path / "no.mat"))
    assert not ok and "no.mat" in why and "no such file" in why


# ---------------------------------------------------------------- cnnf-fc7

def _write_tiny_cnnf(path, input_size=64, fc=(8, 8), seed=0):
    """A MatConvNet simplenn file (MATLAB v5) with CNN-F's conv layers and narrow fc6/fc7 layers."""
    from scipy.io import savemat

    backbones = pytest.importorskip("methods.backbones")
    rng = np.random.default_rng(seed)
    m = backbones._cnnf_map_size(input_size)

    def cell(*items):
        c = np.empty((1, len(items)), dtype=object)
        for i, v in enumerate(items):
            c[0, i] = v
        return c

    def conv(name, k, cin, cout, stride, pad):
        w = (rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)
        return {"type": "conv", "name": name, "weights": cell(w, np.full((cout, 1), 0.01, np.float32)),
                "stride": np.array([[stride, stride]], float), "pad": np.array([[pad] * 4], float)}

    relu = lambda name: {"type": "relu", "name": name}                                    # noqa: E731
    lrn = lambda name: {"type": "lrn", "name": name, "param": np.array([[5, 2, 1e-4, 0.75]])}  # noqa: E731
    pool = lambda name: {"type": "pool", "name": name, "method": "max", "pool": np.array([[3.0, 3.0]]),  # noqa: E731
                         "stride": np.array([[2.0, 2.0]]), "pad": np.array([[0.0, 1.0, 0.0, 1.0]])}
    layers = [conv("conv1", 11, 3, 64, 4, 0), relu("relu1"), lrn("norm1"), pool("pool1"),
              conv("conv2", 5, 64, 256, 1, 2), relu("relu2"), lrn("norm2"), pool("pool2"),
              conv("conv3", 3, 256, 256, 1, 1), relu("relu3"), conv("conv4", 3, 256, 256, 1, 1), relu("relu4"),
              conv("conv5", 3, 256, 256, 1, 1), relu("relu5"), pool("pool5"),
              conv("fc6", m, 256, fc[0], 1, 0), relu("relu6"), conv("fc7", 1, fc[0], fc[1], 1, 0), relu("relu7")]
    meta = {"normalization": {"imageSize": np.array([[input_size, input_size, 3]], float),
                              "averageImage": np.array([120.0, 115.0, 100.0], np.float32).reshape(1, 1, 3)}}
    savemat(path, {"layers": cell(*layers), "meta": meta})
    return path


def test_cnnf_fc7_features_from_a_weights_file(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    backbones = pytest.importorskip("methods.backbones")
    pixels = pytest.importorskip("methods.pixels")
    weights = _write_tiny_cnnf(tmp_path / "imagenet-vgg-f.mat")
    ds = _pixel_dataset(n=6, size=40)
    option = {"image_features": "cnnf-fc7", "image_weights": str(weights), "feature_device": "cpu"}
    calls = []
    real = pixels.forward_pixels
    monkeypatch.setattr(pixels, "forward_pixels", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    out = feat.apply_image_features(ds, option, cache_dir=tmp_path / "cache")
    assert out.image.shape == (6, 8) and out.image.dtype == np.float32 and (out.image >= 0).all()
    # The same numbers as the backbone run by hand: eval mode, the file's mean image, 64 x 64 input.
    net = backbones.build_backbone("cnnf", weights=str(weights)).eval()
    assert net.input_size == 64
    x = pixels.PixelTransform(net.input_size, mean=net.pixel_mean, std=net.pixel_std)(ds.image)
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(out.image, ref, rtol=1e-4, atol=1e-5)
    assert out.meta["image_features"] == "cnnf-fc7" and out.meta["image_weights_file"] == "imagenet-vgg-f.mat"
    assert json.loads(out.meta["image_features_params"])["weights_sha256"] == feat.file_checksum(weights)
    n_calls = len(calls)
    again = feat.apply_image_features(ds, option, cache_dir=tmp_path / "cache")
    assert len(calls) == n_calls and again.checksum == out.checksum  # from the cache
    # Other weights (same path) are another key: extracted again, other numbers.
    _write_tiny_cnnf(weights, seed=1)
    other = feat.apply_image_features(ds, option, cache_dir=tmp_path / "cache")
    assert len(calls) > n_calls and other.checksum != out.checksum
    assert not np.allclose(other.image, out.image)


def test_cnnf_fc7_weights_file_must_exist(tmp_path):
    with pytest.raises(InputError, match="image_weights=.*no such file"):
        feat.apply_image_features(_pixel_dataset(), {"image_features": "cnnf-fc7",
                                                     "image_weights": str(tmp_path / "none.mat")}, cache_dir=tmp_path)
