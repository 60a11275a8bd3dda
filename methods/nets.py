"""Networks and torch plumbing shared by every deep method (RDCMH, DCMH, CHN, CDQ).

One module on purpose: differences in MAP between deep methods must come from the methods, not
from different networks, initialisations, input scaling or device handling.

* :class:`TextNet`: BoW -> 4096 (ReLU, dropout) -> c (identity), the text network of DCMH and RDCMH.
* :class:`ImageNet`: a pluggable backbone followed by the two FC layers of the papers
  (fc7: 4096, ReLU, dropout; fc8: c, identity). The default backbone is an MLP on feature vectors
  that stands in for CNN-F's convolutional trunk (we have no raw pixels for the bundled data).
  ``register_backbone`` adds others (a CNN-F on raw pixels is a later piece of work).
* :class:`Standardizer`: input standardisation with training statistics. Wiki's L1-normalised
  histograms (entries ~0.008) fed raw make a network output only its biases (PROTOCOLS.md s. 6).
* :func:`resolve_device`, :func:`seeded`, :func:`forward_in_batches`: device choice with no
  CUDA-only path, reproducible initialisation, and bounded-memory encoding of dense or sparse input.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from benchmark.errors import InputError

__all__ = [
    "TextNet", "ImageNet", "Dropout", "Standardizer", "resolve_device", "seeded", "forward_in_batches",
    "register_backbone", "BACKBONES", "to_tensor", "optimizer",
]


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
    """backbone -> fc7 (4096, ReLU, dropout) -> fc8 (c, identity)."""

    def __init__(self, n_in: int, n_out: int, backbone: str = "mlp", hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        if backbone not in BACKBONES:
            raise InputError(f"backbone={backbone!r} is unknown; valid: {', '.join(BACKBONES)}")
        self.backbone, width = BACKBONES[backbone](n_in, hidden=hidden, dropout=dropout)
        self.fc7 = nn.Linear(width, hidden)
        self.drop = Dropout(dropout)
        self.fc8 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc8(self.drop(torch.relu(self.fc7(self.backbone(x)))))


def optimizer(kind: str, params, device: torch.device, **kw) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``Adam`` with the update loop that is fastest for the case at hand.

    Same update rule either way; only how it is executed differs. On CPU, for networks with about
    a million parameters or more (the papers' 4096-wide layers), the fused kernel: the default
    per-tensor loop allocates a weight-decay temporary per step and is ~6x slower (189 vs 30 ms per
    SGD step on a 4096 x 4096 layer, 2 threads; Adam on RDCMH's 1.2M-parameter image net: 3.9 vs
    0.7 ms). Small networks and GPUs keep torch's default: the fused CPU kernel opens a parallel
    region even for tiny tensors, which costs milliseconds per step whenever the cores are
    oversubscribed (8.7 vs 0.3 ms for a 32 x 24 layer while two other runs held the cores; equal
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
