"""Image features for datasets whose image side is pixels, computed once and cached on disk.

A dataset option selects the extractor (``load_dataset(name, image_features="gist")``):

* ``gist``: the 512-d GIST descriptor (:mod:`datasets.gist`); ``gist_size`` sets the square size the
  images are resized to (default 256);
* ``cnnf-fc7``: the 4096-d fc7 activations (after ReLU) of a CNN-F with the user's MatConvNet weights
  (``image_weights=PATH`` to ``imagenet-vgg-f.mat``; ``cnnf_size`` overrides the file's input size;
  ``feature_device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``).

Features are float32 ``(n, d)``, extracted in chunks (never a float copy of every image) with a progress
bar on stderr when stderr is a terminal. They are cached under ``cache_dir``, else ``$CMH_CACHE_DIR``,
else ``~/.cache/cmh-bench/features``, in one uncompressed ``.npz`` per cache key, written atomically, with
the key and the sha256 of the array inside. The key is the sha256 of the dataset checksum (the files the
images came from), the image array's shape, dtype and a sample of its pixels, the extractor's name, all its
parameters (CNN-F weights by their sha256) and its version. An unreadable file, a wrong shape or dtype, an
array checksum mismatch or a different key inside is reported in one line and the cache is rebuilt. An
advisory lock per cache file (POSIX) makes parallel runs of a suite extract once and share the file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cmhcore.errors import InputError
from cmhcore.params import Interval, Options
from datasets import gist as gist_mod
from datasets.base import Dataset, file_checksum

__all__ = ["FEATURE_EXTRACTORS", "FEATURE_OPTIONS", "FEATURE_OPTION_CONSTRAINTS", "CACHE_ENV", "GistExtractor", "CnnfFc7Extractor",
           "make_extractor", "register_network_features", "NETWORK_FEATURES", "split_feature_options", "feature_status", "resolve_cache_dir", "cache_key",
           "extract_features", "apply_image_features"]

CACHE_ENV = "CMH_CACHE_DIR"
FEATURE_EXTRACTORS = ("gist", "cnnf-fc7")
# Dataset options that belong to the extractor, not to the dataset's loader.
FEATURE_OPTIONS = ("image_features", "image_weights", "gist_size", "cnnf_size", "feature_device")
# Their forms, merged into every pixel dataset's options by datasets.check_options. The extractor
# classes still check the values they are built with (they are also built directly).
FEATURE_OPTION_CONSTRAINTS: dict[str, list] = {
    "image_features": [Options(FEATURE_EXTRACTORS)],
    "image_weights": [str, os.PathLike, None],
    "gist_size": [Interval(int, 8, None, closed="left")],
    "cnnf_size": [Interval(int, 32, None, closed="left"), None],
    "feature_device": [Options({"auto", "cpu", "cuda"})],
}
_EXTRACTOR_OF = {"gist_size": "gist", "image_weights": "cnnf-fc7", "cnnf_size": "cnnf-fc7",
                 "feature_device": "cnnf-fc7"}
_N_FINGERPRINT = 8  # images sampled into the key: the same files read with other options give other pixels


def _positive_int(owner: str, name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{owner}: {name}={value!r} is invalid; valid: an integer >= {lo}")
    return int(value)


class GistExtractor:
    """GIST (Oliva & Torralba 2001, LMgist): 4 scales x 8 orientations x 4 x 4 blocks = 512 values."""

    name = "gist"
    version = gist_mod.GIST_VERSION

    def __init__(self, image_size: int = gist_mod.IMAGE_SIZE, batch_size: int = 32, workers: int | None = -1):
        self.image_size = _positive_int("image_features=gist", "gist_size", image_size, 8)
        self.batch_size = _positive_int("image_features=gist", "batch_size", batch_size, 1)
        self.workers = workers  # scipy.fft threads; not a parameter of the numbers

    @property
    def params(self) -> dict:
        return {"image_size": self.image_size, "orientations_per_scale": list(gist_mod.ORIENTATIONS_PER_SCALE),
                "n_blocks": gist_mod.N_BLOCKS, "fc_prefilt": gist_mod.FC_PREFILT,
                "boundary_extension": gist_mod.BOUNDARY_EXTENSION}

    @property
    def dim(self) -> int:
        return gist_mod.gist_dim()

    def extract(self, images, progress: Callable[[int], None]) -> np.ndarray:
        return gist_mod.gist(images, image_size=self.image_size, batch_size=self.batch_size,
                             workers=self.workers, progress=progress)


class CnnfFc7Extractor:
    """fc7 (after ReLU, eval mode) of CNN-F (Chatfield et al. 2014) with the user's MatConvNet weights."""

    name = "cnnf-fc7"
    version = "cnnf-fc7-1"
    dim = None  # fc7's width comes from the weights file (4096 in imagenet-vgg-f.mat)

    def __init__(self, weights, input_size: int | None = None, device: str = "auto", batch_size: int = 64,
                 chunk: int = 2048):
        if weights is None:
            raise InputError("image_features=cnnf-fc7 needs image_weights=PATH (MatConvNet imagenet-vgg-f.mat)")
        if not isinstance(weights, (str, os.PathLike)):
            raise InputError(f"image_weights={weights!r} is invalid; valid: a path to imagenet-vgg-f.mat")
        self.weights = Path(weights).expanduser()
        if not self.weights.is_file():
            raise InputError(f"image_weights={str(weights)!r}: no such file; valid: a path to imagenet-vgg-f.mat")
        self.input_size = None if input_size is None else _positive_int("image_features=cnnf-fc7", "cnnf_size",
                                                                        input_size, 32)
        if device not in ("auto", "cpu", "cuda"):
            raise InputError(f"feature_device={device!r} is invalid; valid: auto, cpu, cuda")
        self.device = device
        self.batch_size = _positive_int("image_features=cnnf-fc7", "batch_size", batch_size, 1)
        self.chunk = _positive_int("image_features=cnnf-fc7", "chunk", chunk, 1)
        # The weights enter the key by content: a moved file keeps its cache, an edited one does not.
        self.weights_sha256 = file_checksum(self.weights)

    @property
    def params(self) -> dict:
        return {"weights_sha256": self.weights_sha256, "input_size": self.input_size}

    def extract(self, images, progress: Callable[[int], None]) -> np.ndarray:
        forward = NETWORK_FEATURES.get(self.name)
        if forward is None:
            raise InputError(f"image_features={self.name} runs a network of the methods package, which registers it "
                             "when imported; valid: `import methods` before loading (the runner and scripts do)")
        return forward(images, weights=str(self.weights), input_size=self.input_size, device=self.device,
                       batch_size=self.batch_size, chunk=self.chunk, progress=progress)


# Extractors that run a network: the datasets layer declares their options and caches their output, the
# methods layer (which owns the networks) registers the forward pass, so this layer never imports methods.
NETWORK_FEATURES: dict[str, Callable[..., np.ndarray]] = {}


def register_network_features(name: str, forward: Callable[..., np.ndarray]) -> None:
    """Register the forward pass of the network extractor ``name`` (one of ``FEATURE_EXTRACTORS``)."""
    if name not in FEATURE_EXTRACTORS or name == "gist":
        raise InputError(f"register_network_features: {name!r} is not a network extractor; valid: cnnf-fc7")
    NETWORK_FEATURES[name] = forward


def make_extractor(name: str, **params):
    """The extractor named ``name`` (one of ``FEATURE_EXTRACTORS``) with its parameters."""
    if name == "gist":
        return GistExtractor(**params)
    if name == "cnnf-fc7":
        return CnnfFc7Extractor(**params)
    raise InputError(f"image_features={name!r} is not an extractor; valid: {', '.join(FEATURE_EXTRACTORS)} "
                     "(or, for loaders that take one, a feature file name with its suffix)")


def split_feature_options(options: dict) -> tuple[dict, dict | None]:
    """(loader options, extractor options or None) from a dataset's options.

    ``image_features`` is an extractor only when it names one; any other value (a feature file, for the
    loaders that take one) stays with the loader. Extractor parameters without their extractor are errors.
    """
    options = dict(options)
    which = options.get("image_features")
    if isinstance(which, str) and which not in FEATURE_EXTRACTORS and not Path(which).suffix:
        # Feature files have a suffix (.mat, .npy, .npz, .dat, ...); a bare word is a mistyped extractor.
        make_extractor(which)
    if not (isinstance(which, str) and which in FEATURE_EXTRACTORS):
        stray = sorted(k for k in _EXTRACTOR_OF if k in options)
        if stray:
            raise InputError(f"dataset option {stray[0]}= needs image_features={_EXTRACTOR_OF[stray[0]]}; "
                             f"got image_features={which!r}")
        return options, None
    feature = {k: options.pop(k) for k in FEATURE_OPTIONS if k in options}
    for key in feature:
        if key != "image_features" and _EXTRACTOR_OF[key] != which:
            raise InputError(f"dataset option {key}= applies to image_features={_EXTRACTOR_OF[key]}, "
                             f"not image_features={which}")
    return options, feature


def _extractor_from_options(feature: dict, **kw):
    which = feature["image_features"]
    if which == "gist":
        return make_extractor("gist", image_size=feature.get("gist_size", gist_mod.IMAGE_SIZE), **kw)
    return make_extractor("cnnf-fc7", weights=feature.get("image_weights"), input_size=feature.get("cnnf_size"),
                          device=feature.get("feature_device", "auto"), **kw)


def feature_status(feature: dict) -> tuple[bool, str]:
    """(usable?, one-line reason) for extractor options, without extracting (a missing weights file -> False)."""
    weights = feature.get("image_weights")
    if feature["image_features"] == "cnnf-fc7":
        if weights is None:
            raise InputError("image_features=cnnf-fc7 needs image_weights=PATH (MatConvNet imagenet-vgg-f.mat)")
        if not Path(weights).expanduser().is_file():
            return False, f"image_weights={str(weights)!r}: no such file (the CNN-F weights, imagenet-vgg-f.mat)"
    return True, ""


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "cmh-bench" / "features"


def _fingerprint(images) -> str:
    n = len(images)
    h = hashlib.sha256()
    for i in np.unique(np.linspace(0, n - 1, min(n, _N_FINGERPRINT)).round().astype(np.int64)):
        h.update(np.ascontiguousarray(np.asarray(images[int(i):int(i) + 1])).tobytes())
    return h.hexdigest()


def cache_key(dataset_checksum: str, images, extractor) -> str:
    """sha256 (hex) identifying the features of ``images`` by ``extractor``."""
    ident = {
        "dataset_checksum": str(dataset_checksum),
        "images": {"shape": [int(s) for s in images.shape], "dtype": str(np.dtype(images.dtype)),
                   "sample_sha256": _fingerprint(images)},
        "extractor": extractor.name,
        "params": extractor.params,
        "version": extractor.version,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()


def _read_cache(path: Path, key: str, n: int, dim: int | None) -> tuple[np.ndarray | None, str]:
    """(features, "") when the file is valid for ``key`` (n rows; ``dim`` columns unless None); (None, why) otherwise."""
    if not path.exists():
        return None, ""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            feats = z["features"]
    except Exception as exc:  # any failure to read (truncated zip, bad JSON, missing member) means rebuild
        return None, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    if header.get("key") != key:
        return None, "stale (its key is for other images, parameters or extractor version)"
    if feats.dtype != np.float32 or feats.ndim != 2 or feats.shape[0] != n or (dim is not None and feats.shape[1] != dim):
        return None, f"wrong array {feats.dtype} {feats.shape}, expected float32 ({n}, {dim or 'd'})"
    if header.get("sha256") != _array_sha256(feats):
        return None, "corrupt (array checksum mismatch)"
    return feats, ""


def _write_cache(path: Path, key: str, feats: np.ndarray, extractor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"key": key, "sha256": _array_sha256(feats), "extractor": extractor.name,
              "params": extractor.params, "version": extractor.version, "shape": list(feats.shape)}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, features=feats, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive advisory lock (POSIX flock) so parallel runs extract once; a no-op where unsupported."""
    try:
        import fcntl
    except ImportError:  # Windows: parallel runs may both extract; the atomic write keeps the file whole
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def extract_features(images, extractor, dataset_checksum: str, *, cache_dir=None, progress: bool | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[np.ndarray, dict]:
    """Features ``(n, d)`` float32 of ``images`` from the cache, or extracted and cached.

    Returns ``(features, info)`` with ``info = {"cache_key", "cache_path", "cache_hit"}``. ``progress``:
    True/False forces the bar on/off; None shows it only when stderr is a terminal.
    """
    from tqdm.auto import tqdm

    log = log or (lambda line: print(line, file=sys.stderr))
    n = len(images)
    key = cache_key(dataset_checksum, images, extractor)
    path = resolve_cache_dir(cache_dir) / f"{extractor.name}-{key[:32]}.npz"
    feats, why = _read_cache(path, key, n, extractor.dim)
    if feats is not None:
        return feats, {"cache_key": key, "cache_path": str(path), "cache_hit": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(path.name + ".lock")):
        # Another process (a parallel run of the same suite) may have built it while we waited.
        feats, why_now = _read_cache(path, key, n, extractor.dim)
        if feats is not None:
            return feats, {"cache_key": key, "cache_path": str(path), "cache_hit": True}
        if why and why_now:
            log(f"features cache {path}: {why_now}; rebuilding")
        bar = tqdm(total=n, desc=f"{extractor.name} features", unit="img", file=sys.stderr, mininterval=1.0,
                   disable=(not progress) if progress is not None else None, leave=False)
        try:
            feats = np.ascontiguousarray(extractor.extract(images, bar.update), dtype=np.float32)
        finally:
            bar.close()
        if feats.ndim != 2 or feats.shape[0] != n or not np.isfinite(feats).all():
            raise RuntimeError(f"{extractor.name}: extracted features {feats.shape} for {n} images are not "
                               "a finite (n, d) array")
        _write_cache(path, key, feats, extractor)
    return feats, {"cache_key": key, "cache_path": str(path), "cache_hit": False}


def apply_image_features(dataset: Dataset, feature: dict, *, cache_dir=None, progress: bool | None = None,
                         log: Callable[[str], None] | None = None, **extractor_kw: Any) -> Dataset:
    """``dataset`` with its pixels replaced by the features that ``feature`` (the extractor options) selects.

    The new checksum is ``sha256(pixel checksum + ":" + cache key)``, so results on features and on
    pixels (or on two extractors) are never taken for the same data. ``meta`` records the extractor, its
    parameters (JSON), version and cache key.
    """
    which = feature.get("image_features")
    if dataset.image_kind != "pixels":
        raise InputError(f"dataset {dataset.name!r}: image_features={which!r} needs pixels (n, H, W, 3) on the "
                         f"image side; it has a feature matrix {tuple(dataset.image.shape)}")
    extractor = _extractor_from_options(feature, **extractor_kw)
    feats, info = extract_features(dataset.image, extractor, dataset.checksum, cache_dir=cache_dir,
                                   progress=progress, log=log)
    key = info["cache_key"]
    meta = {**dataset.meta, "image_features": extractor.name,
            "image_features_params": json.dumps(extractor.params, sort_keys=True),
            "image_features_version": extractor.version, "image_features_cache_key": key,
            "pixels_shape": "x".join(str(int(s)) for s in dataset.image.shape),
            "pixels_checksum": dataset.checksum}
    if isinstance(extractor, CnnfFc7Extractor):
        meta["image_weights_file"] = extractor.weights.name
    checksum = hashlib.sha256(f"{dataset.checksum}:{key}".encode()).hexdigest()
    return dataclasses.replace(dataset, image=feats, checksum=checksum, meta=meta)
