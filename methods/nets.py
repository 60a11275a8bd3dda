"""Networks and torch plumbing shared by every deep method (RDCMH, DCMH, CHN, CDQ).

One module on purpose: differences in MAP between deep methods must come from the methods, not
from different networks, initialisations, input scaling or device handling.

* :class:`TextNet`: BoW -> 4096 (ReLU, dropout) -> c (identity), the text network of DCMH and RDCMH.
* :class:`ImageNet`: an image backbone followed by the hash layer. On feature vectors the backbone
  is an MLP standing in for CNN-F's trunk, followed by the two FC layers of the papers (fc7: 4096,
  ReLU, dropout; fc8: c, identity). On raw pixels the backbone is a network of
  :mod:`methods.backbones` (CNN-F by default) that already ends with fc6/fc7, so only the hash
  layer fc8 goes on top (:func:`make_image_net`, :func:`resolve_image_backbone`).
* :class:`TrainImages`: the image inputs of the training items by index on the training device: a
  tensor of standardised features, or raw images fetched batch by batch through
  :class:`methods.pixels.PixelFeeder` (never a float copy of the whole set).
* :class:`Standardizer`: input standardisation with training statistics. Wiki's L1-normalised
  histograms (entries ~0.008) fed raw make a network output only its biases (``docs/protocols.md``).
  Raw pixels are normalised by the backbone's mean/std or the training images' channel
  statistics instead (:func:`pixel_normalisation`).
* :func:`resolve_device`, :func:`seeded`, :func:`forward_in_batches`, :func:`encode_with`: device
  choice with no CUDA-only path, reproducible initialisation, and bounded-memory encoding of dense
  or sparse input.
* :data:`PIXEL_INIT_REASON`: why the deep methods' pixel common checks are declared known failures.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cmhcore.errors import InputError
from cmhcore.params import Interval
from methods.base import binarize

__all__ = [
    "TextNet", "ImageNet", "Dropout", "Standardizer", "resolve_device", "seeded", "forward_in_batches",
    "register_backbone", "BACKBONES", "to_tensor", "optimizer", "is_pixels_input", "is_pixel_backbone",
    "check_image_params", "resolve_image_backbone", "make_image_net", "pixel_normalisation", "pixel_transform", "pixel_train_images",
    "TrainImages", "encode_pixels", "check_image_input", "encode_with", "PIXEL_INIT_REASON",
    "IMAGE_PARAM_CONSTRAINTS", "check_image_backbone",
]

# Why the pixel common checks of the deep methods fail at the checks' budget (their known_check_failures).
PIXEL_INIT_REASON = ("CNN-F trained from scratch (no pretrained weights offline): its ReLU features share a large "
                     "common part across images (fc7 mean ~0.4, spread ~0.15 at He init), so the pixel check's few "
                     "training steps end before the image codes separate the images")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:N', 'mps' or 'auto' (GPU when present) -> torch.device, checked."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device={device!r} is invalid; valid: 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r} requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    return dev


@contextmanager
def seeded(seed: int | None):
    """Seed torch's global generators inside the block (forking the RNG state, so callers are unaffected)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else int(seed))
        yield


def to_tensor(x, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """Dense or scipy-sparse rows -> dense tensor on ``device``."""
    if sp.issparse(x):
        x = x.toarray()
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class Standardizer:
    """Per-feature ``(x - mean) / std`` with statistics of the training items (sparse-safe)."""

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def fit(self, x) -> "Standardizer":
        if sp.issparse(x):
            x = sp.csr_matrix(x, dtype=np.float64)
            mean = np.asarray(x.mean(axis=0)).ravel()
            sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
            var = np.maximum(sq - mean ** 2, 0.0)
        else:
            x = np.asarray(x, dtype=np.float64)
            mean, var = x.mean(axis=0), x.var(axis=0)
        std = np.sqrt(var)
        # Constant features: leave them at zero instead of dividing by ~0.
        self.mean_ = mean.astype(np.float32)
        self.scale_ = np.where(std > self.eps, std, 1.0).astype(np.float32)
        return self

    def transform(self, x) -> np.ndarray:
        if sp.issparse(x):
            x = x.toarray()
        return (np.asarray(x, dtype=np.float32) - self.mean_) / self.scale_


class Dropout(nn.Module):
    """Inverted dropout, ``x * keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)``: the distribution of
    ``nn.Dropout``, drawn faster on CPU, where drawing the mask is most of a dropout layer's cost.

    * ``p = 0.5`` on CPU (the papers' value): each ``randint`` word gives 31 independent fair bits,
      so a 384 x 4096 mask costs ~1/31 of the draws; forward + backward 7.4 ms vs 19.6 ms with
      ``rand_like`` and more with ``nn.Dropout`` on 2 threads (scripts/bench_rdcmh.py gains ~9 s).
    * otherwise (other p, or GPU, where drawing is cheap): ``rand_like(x) >= p``.

    Both are seeded by torch's generator of the tensor's device. Identity in eval mode and for p = 0.
    """

    _SHIFTS: dict = {}

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def _fair_bits(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel()
        shifts = self._SHIFTS.get(x.device)
        if shifts is None:
            shifts = self._SHIFTS[x.device] = torch.arange(31, dtype=torch.int32, device=x.device)
        words = torch.randint(0, 2 ** 31, ((n + 30) // 31,), dtype=torch.int32, device=x.device)
        return ((words[:, None] >> shifts) & 1).view(-1)[:n].view_as(x)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.p == 0.5 and x.device.type == "cpu":
            scale = self._fair_bits(x).to(x.dtype).mul_(2.0)
        else:
            scale = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * scale


class TextNet(nn.Module):
    """BoW -> full1 (4096, ReLU, dropout) -> full2 (c, identity)."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.full1 = nn.Linear(n_in, hidden)
        self.drop = Dropout(dropout)
        self.full2 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.full2(self.drop(torch.relu(self.full1(x))))


def _mlp_backbone(n_in: int, hidden: int = 4096, dropout: float = 0.5) -> tuple[nn.Module, int]:
    """Feature-vector stand-in for CNN-F's trunk: one FC layer (like CNN-F's fc6) with ReLU and dropout."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), Dropout(dropout)), hidden


BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {"mlp": _mlp_backbone}


def register_backbone(name: str, factory: Callable[..., tuple[nn.Module, int]]) -> None:
    """Add an image backbone: ``factory(n_in, **kw) -> (module, n_features_out)``."""
    BACKBONES[name] = factory


class ImageNet(nn.Module):
    """backbone -> [fc7 (``hidden``, ReLU, dropout)] -> fc8 (c, identity).

    ``backbone`` is a name in :data:`BACKBONES` (a feature-vector trunk built for ``n_in`` inputs,
    "mlp" by default) or a ready module. A module with ``ends_with_fc7 = True`` (CNN-F and the
    other pixel backbones of :mod:`methods.backbones`, which hold fc6/fc7 themselves) gets only the
    hash layer fc8 on top, from its ``out_features``; ``hidden`` then does not apply (``fc7`` is
    None). Any other module is followed by fc7 and fc8 like the feature trunks.
    """

    def __init__(self, n_in: int | None, n_out: int, backbone: str | nn.Module = "mlp", hidden: int = 4096,
                 dropout: float = 0.5):
        super().__init__()
        if isinstance(backbone, nn.Module):
            self.backbone, width = backbone, int(backbone.out_features)
            if getattr(backbone, "ends_with_fc7", False):
                self.fc7, self.drop = None, None
                self.fc8 = nn.Linear(width, n_out)
                return
        else:
            if backbone not in BACKBONES:
                raise InputError(f"backbone={backbone!r} is unknown; valid: {', '.join(BACKBONES)}")
            self.backbone, width = BACKBONES[backbone](n_in, hidden=hidden, dropout=dropout)
        self.fc7 = nn.Linear(width, hidden)
        self.drop = Dropout(dropout)
        self.fc8 = nn.Linear(hidden, n_out)

    def forward(self, x):
        if self.fc7 is None:
            return self.fc8(self.backbone(x))
        return self.fc8(self.drop(torch.relu(self.fc7(self.backbone(x)))))


# ------------------------------------------------------------------------------ raw pixels
def is_pixels_input(x) -> bool:
    """True for raw images: 4-D uint8 ``(n, H, W, 3)``, a numpy array or a lazy image container."""
    return getattr(x, "ndim", None) == 4 and getattr(x, "dtype", None) == np.uint8


def is_pixel_backbone(name) -> bool:
    """Names that :func:`methods.backbones.build_backbone` resolves: "cnnf" and "torchvision:<model name>"."""
    return isinstance(name, str) and (name == "cnnf" or (name.startswith("torchvision:") and len(name) > 12))


def _backbone_names() -> str:
    return "'auto', 'cnnf', 'torchvision:<model name>' or " + ", ".join(repr(b) for b in BACKBONES)


# Parameter constraints (cmhcore.params forms) shared by the deep methods' image side and device. The
# backbone's name is open-ended ("torchvision:<model name>", registered trunks): check_image_backbone.
IMAGE_PARAM_CONSTRAINTS: dict[str, list] = {
    "image_backbone": [str],
    "image_weights": [str, os.PathLike, None],
    "image_size": [Interval(int, 1, None), None],
    "freeze_backbone": [bool],
    "device": [str, torch.device, None],
}


def check_image_backbone(owner: str, backbone) -> None:
    """``image_backbone`` must be "auto", a registered trunk or a pixel backbone name (one-line InputError)."""
    if not (backbone == "auto" or (isinstance(backbone, str) and backbone in BACKBONES) or is_pixel_backbone(backbone)):
        raise InputError(f"{owner}: image_backbone={backbone!r} is unknown; valid: {_backbone_names()}")


def check_image_params(owner: str, backbone, weights, image_size, freeze) -> None:
    """Check the image-side parameters of a deep method before any work (one-line InputError)."""
    check_image_backbone(owner, backbone)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InputError(f"{owner}: image_weights={weights!r} is invalid; valid: None or the path of a weights file "
                         "(e.g. imagenet-vgg-f.mat)")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
                                   or image_size < 1):
        raise InputError(f"{owner}: image_size={image_size!r} is invalid; valid: None (the weights file's or 224) "
                         "or a positive integer")
    if not isinstance(freeze, (bool, np.bool_)):
        raise InputError(f"{owner}: freeze_backbone={freeze!r} is invalid; valid: True or False")


def resolve_image_backbone(owner: str, backbone: str, image) -> str:
    """"auto" -> "mlp" for 2-D features and "cnnf" for raw pixels; a backbone that does not fit the input fails.

    The error is one line naming the parameter, the input it got and what to pass instead.
    """
    pixels = is_pixels_input(image)
    if backbone == "auto":
        return "cnnf" if pixels else "mlp"
    if pixels and not is_pixel_backbone(backbone):
        raise InputError(f"{owner}: image_backbone={backbone!r} takes feature vectors, but the images are raw uint8 "
                         f"pixels of shape {tuple(image.shape)}; valid for pixels: 'auto', 'cnnf' or "
                         "'torchvision:<model name>'")
    if not pixels and is_pixel_backbone(backbone):
        raise InputError(f"{owner}: image_backbone={backbone!r} takes raw uint8 images (n, H, W, 3), but the image "
                         f"input is a feature matrix of shape {tuple(image.shape)}; valid for features: 'auto' or "
                         f"{', '.join(repr(b) for b in BACKBONES)}")
    return backbone


def make_image_net(backbone: str, n_in: int | None, n_out: int, *, hidden: int, dropout: float,
                   weights=None, image_size: int | None = None, freeze: bool = False) -> ImageNet:
    """The image network of a deep method for a resolved backbone name.

    Feature trunks ("mlp"): ``ImageNet(n_in, n_out, backbone, hidden, dropout)``. Pixel backbones: the module of
    :func:`methods.backbones.build_backbone` (weights, input size, frozen trunk, ``dropout`` after
    fc6/fc7) with the hash layer on top; ``hidden`` does not apply.
    """
    if not is_pixel_backbone(backbone):
        return ImageNet(n_in, n_out, backbone=backbone, hidden=hidden, dropout=dropout)
    from methods.backbones import build_backbone

    trunk = build_backbone(backbone, weights=None if weights is None else os.fspath(weights), input_size=image_size,
                           freeze=bool(freeze), dropout=dropout)
    return ImageNet(None, n_out, backbone=trunk, hidden=hidden, dropout=dropout)


def pixel_normalisation(images, backbone: nn.Module | None, indices=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, std) on the 0..255 scale for a pixel network's input.

    The backbone's own (``pixel_mean``/``pixel_std``, read from its weights file; std may be None,
    as in MatConvNet's CNN-F, which only subtracts the average image) when it has them; otherwise
    the per-channel statistics of the training images (``indices`` of ``images``), streamed.
    """
    mean = getattr(backbone, "pixel_mean", None) if backbone is not None else None
    if mean is not None:
        std = getattr(backbone, "pixel_std", None)
        return (np.asarray(mean, dtype=np.float32),
                None if std is None else np.asarray(std, dtype=np.float32))
    from methods.pixels import channel_stats

    mean, std = channel_stats(images, indices=None if indices is None else np.asarray(indices))
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def pixel_transform(input_size: int, mean, std):
    """:class:`methods.pixels.PixelTransform` (resize to ``input_size``, then ``(x - mean) / std``)."""
    from methods.pixels import PixelTransform

    return PixelTransform(int(input_size), mean=mean, std=std)


def pixel_train_images(images, backbone: nn.Module, device: torch.device, rows=None):
    """``(TrainImages, mean, std, input size)`` for training a pixel network on ``images`` (rows ``rows``):
    the normalisation of :func:`pixel_normalisation` and the backbone's input size, which the fitted
    method keeps for encoding."""
    mean, std = pixel_normalisation(images, backbone)
    size = int(backbone.input_size)
    feeder = TrainImages(pixels=images, transform=pixel_transform(size, mean, std), device=device, rows=rows)
    return feeder, mean, std, size


def _as_index(idx) -> np.ndarray:
    if isinstance(idx, torch.Tensor):
        idx = idx.cpu().numpy()
    return np.asarray(idx, dtype=np.int64)


class TrainImages:
    """Image inputs of the training items, by row index, on the training device.

    * features: a float tensor on the device (``TrainImages(tensor=x)``); ``images[idx]`` is ``x[idx]``;
    * raw pixels: ``TrainImages(pixels=images, transform=t, device=dev, rows=r)``; ``images[idx]``
      loads, resizes and normalises only those images (:class:`methods.pixels.PixelFeeder`) and
      :meth:`batches` prefetches a known sequence of batches with DataLoader workers. ``rows``
      maps training row ``i`` to image ``rows[i]`` of the container (a subset without a copy).

    Both give the same kind of tensor, so a training loop has one code path.
    """

    def __init__(self, tensor: torch.Tensor | None = None, *, pixels=None, transform=None, device=None, rows=None):
        self.tensor = tensor
        self.pixels = pixels
        self.transform = transform
        self.device = device
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._feeder = None
        if pixels is not None:
            from methods.pixels import PixelFeeder

            self._feeder = PixelFeeder(pixels, transform, device)

    @property
    def is_pixels(self) -> bool:
        return self.pixels is not None

    def __len__(self) -> int:
        if self.tensor is not None:
            return int(self.tensor.shape[0])
        return int(self.rows.size if self.rows is not None else len(self.pixels))

    def _map(self, idx) -> np.ndarray:
        idx = _as_index(idx)
        return idx if self.rows is None else self.rows[idx]

    def __getitem__(self, idx) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[idx]
        return self._feeder.load(self._map(idx))

    def batches(self, index_batches):
        """The inputs of each index batch in turn (pixels: prefetched by DataLoader workers)."""
        if self.tensor is not None:
            return (self.tensor[idx] for idx in index_batches)
        return self._feeder.batches([self._map(idx) for idx in index_batches])

    @torch.no_grad()
    def forward(self, net: nn.Module, batch_size: int = 128, chunk: int = 4096) -> torch.Tensor:
        """``net`` in eval mode over every training item, on the device (its training mode is restored)."""
        was = net.training
        net.eval()
        try:
            if self.tensor is not None:
                x = self.tensor
                return torch.cat([net(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])
            from methods.pixels import forward_pixels

            out = forward_pixels(net, self.pixels, self.device, self.transform, batch_size=batch_size,
                                 indices=self.rows)
            return torch.as_tensor(out, device=self.device)
        finally:
            net.train(was)


def check_image_input(owner: str, x, fitted_on_pixels: bool) -> None:
    """Encoding input must be the kind the image network was fitted on (one-line InputError)."""
    if is_pixels_input(x) != fitted_on_pixels:
        got = "raw uint8 images" if is_pixels_input(x) else "feature vectors"
        want = "raw uint8 images (n, H, W, 3)" if fitted_on_pixels else "feature vectors"
        raise InputError(f"image: {owner} was fitted on {want}, got {got} of shape {tuple(x.shape)}")


def encode_pixels(net: nn.Module, images, device: torch.device, input_size: int, mean, std, n_out: int,
                  batch_size: int = 128) -> np.ndarray:
    """Real-valued outputs (n, ``n_out``) of ``net`` (eval mode) over raw images, streamed in batches."""
    from methods.pixels import forward_pixels

    if len(images) == 0:
        return np.zeros((0, n_out), dtype=np.float32)
    return forward_pixels(net, images, device, pixel_transform(input_size, mean, std), batch_size=batch_size)


def optimizer(kind: str, params, device: torch.device, **kw) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``Adam`` with the update loop that is fastest for the case at hand.

    Same update rule either way; only how it is executed differs. On CPU, for networks with about
    a million parameters or more (the papers' 4096-wide layers), the fused kernel: the default
    per-tensor loop allocates a weight-decay temporary per step and is ~6x slower (189 vs 30 ms per
    SGD step on a 4096 x 4096 layer, 2 threads; Adam on RDCMH's 1.2M-parameter image net: 3.9 vs
    0.7 ms). Small networks and GPUs keep torch's default: the fused CPU kernel opens a parallel
    region even for tiny tensors, which costs milliseconds per step whenever the cores are
    oversubscribed (8.7 vs 0.3 ms for a 32 x 24 layer with the cores oversubscribed; equal
    when idle), and the common checks run small networks next to other work.
    """
    params = list(params)
    if params and isinstance(params[0], dict):  # parameter groups: materialise generators before counting
        params = [{**g, "params": list(g["params"])} for g in params]
        tensors = [p for g in params for p in g["params"]]
    else:
        tensors = params
    n = sum(p.numel() for p in tensors)
    fused = device.type == "cpu" and n >= 1_000_000
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind]
    return cls(params, fused=True, **kw) if fused else cls(params, **kw)


@torch.no_grad()
def forward_in_batches(net: nn.Module, x, device: torch.device, batch_size: int = 4096,
                       transform: Callable | None = None) -> np.ndarray:
    """Evaluate ``net`` (eval mode) over rows of ``x`` in fixed-size chunks; returns float32 numpy.

    Each row's output does not depend on which other rows share its chunk (no batch statistics),
    so batch encoding equals one-by-one encoding.
    """
    was_training = net.training
    net.eval()
    outs = []
    try:
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start:start + batch_size]
            chunk = transform(chunk) if transform is not None else chunk
            outs.append(net(to_tensor(chunk, device)).float().cpu().numpy())
    finally:
        net.train(was_training)
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), dtype=np.float32)


def encode_with(net: nn.Module, scaler: Standardizer, x, device: torch.device, n_bits: int) -> np.ndarray:
    """int8 codes in {-1, +1} of rows ``x`` (dense or sparse) through a fitted scaler and network."""
    if x.shape[0] == 0:
        return np.zeros((0, n_bits), dtype=np.int8)
    return binarize(forward_in_batches(net, x, device, transform=scaler.transform))
