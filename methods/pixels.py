"""The raw-image input pipeline of the deep methods: uint8 images -> normalised float batches on a device.

Images are uint8 ``(n, H, W, 3)`` RGB arrays, memory maps or lazy containers
(``datasets.images.ImageArray``). Nothing here makes a float copy of a whole set: batches are read,
resized (Pillow, bilinear) and normalised one at a time, in torch DataLoader workers where useful, and
copied to the device from pinned memory with non-blocking copies on CUDA. Normalisation follows
MatConvNet's CNN-F convention (pixels on the 0..255 scale minus the average image; Chatfield et al.
2014), optionally divided by a per-channel std. There is no augmentation (the papers use none).
On an accelerator the uint8 batch is copied and normalised on the device (a quarter of the bytes of
float32 over the bus, and no float work in the CPU workers); the values are the same either way.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from cmhcore.errors import InputError

__all__ = ["is_pixels", "PixelTransform", "channel_stats", "PixelFeeder", "forward_pixels", "default_num_workers"]


def is_pixels(x) -> bool:
    """True for raw images: a 4-D uint8 ndarray / memmap, or a lazy image container of that kind."""
    if isinstance(x, np.ndarray) or getattr(type(x), "is_image_container", False):
        return getattr(x, "ndim", None) == 4 and np.dtype(x.dtype) == np.uint8
    return False


class PixelTransform:
    """uint8 ``(b, H, W, 3)`` -> float32 ``(b, 3, S, S)`` tensor on CPU: resize, then ``(x - mean) / std``.

    Images whose H or W differ from ``input_size`` S are resized with Pillow (bilinear). ``mean`` is
    ``(3,)`` (per channel) or ``(3, S, S)`` (an average image); ``std`` is ``(3,)``; both on the 0..255
    scale; None means 0 and 1. Deterministic and picklable (runs inside DataLoader workers).
    """

    def __init__(self, input_size: int, mean=None, std=None):
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise InputError(f"input_size={input_size!r} is invalid; valid: a positive integer")
        s = self.input_size = int(input_size)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        if self.mean is not None and self.mean.shape not in ((3,), (3, s, s)):
            raise InputError(f"mean: shape {self.mean.shape} is invalid; valid: (3,) or (3, {s}, {s})")
        if self.std is not None and (self.std.shape != (3,) or not (self.std > 0).all()):
            raise InputError(f"std: expected 3 positive numbers, got {self.std.tolist()}")
        for part, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and not np.isfinite(value).all():
                raise InputError(f"{part}: contains NaN or inf")
        self._cache: dict = {}  # device -> (mean, std) tensors

    def resize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (b, H, W, 3) -> uint8 (b, S, S, 3); a no-op when the images are already S x S."""
        s = self.input_size
        if batch.shape[1] == s and batch.shape[2] == s:
            return batch
        from PIL import Image

        out = np.empty((batch.shape[0], s, s, 3), dtype=np.uint8)
        for i in range(batch.shape[0]):
            out[i] = np.asarray(Image.fromarray(batch[i]).resize((s, s), Image.BILINEAR))
        return out

    def prepare(self, batch) -> torch.Tensor:
        """uint8 (b, H, W, 3) -> resized uint8 tensor (b, 3, S, S) on CPU (the part that needs Pillow)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[3] != 3 or batch.dtype != np.uint8:
            raise InputError(f"images: expected a uint8 batch (b, H, W, 3), got {batch.dtype} shape {batch.shape}")
        # Permuting uint8 before the float conversion moves 4x fewer bytes than permuting floats.
        return torch.from_numpy(np.ascontiguousarray(self.resize(batch))).permute(0, 3, 1, 2).contiguous()

    def _constants(self, device: torch.device):
        key = str(device)
        if key not in self._cache:
            mean = None if self.mean is None else torch.from_numpy(self.mean).to(device)
            if mean is not None and mean.ndim == 1:
                mean = mean.view(1, 3, 1, 1)
            std = None if self.std is None else torch.from_numpy(self.std).to(device).view(1, 3, 1, 1)
            self._cache[key] = (mean, std)
        return self._cache[key]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 tensor (b, 3, S, S) on any device -> float32 ``(x - mean) / std`` on that device.

        The same float32 operations on every device, so CPU and GPU give the same values.
        """
        mean, std = self._constants(x.device)
        x = x.to(torch.float32)
        if mean is not None:
            x.sub_(mean)
        if std is not None:
            x.div_(std)
        return x

    def __call__(self, batch) -> torch.Tensor:
        return self.normalize(self.prepare(batch))

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}

    def __repr__(self) -> str:
        mean = None if self.mean is None else ("average image" if self.mean.ndim == 3 else self.mean.round(2).tolist())
        std = None if self.std is None else self.std.round(2).tolist()
        return f"PixelTransform(input_size={self.input_size}, mean={mean}, std={std})"


def channel_stats(images, indices=None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 images on the 0..255 scale, streamed in chunks.

    Over all images or those at ``indices``, at their stored size. Sums are float64, so the result does
    not depend on ``chunk``; a channel with zero variance gets std 1 (normalising it then only centres it).
    """
    if not is_pixels(images):
        raise InputError(f"images: expected uint8 images (n, H, W, 3), got {getattr(images, 'dtype', type(images).__name__)} "
                         f"shape {getattr(images, 'shape', None)}")
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise InputError("indices: empty; channel statistics need at least one image")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk={chunk!r} is invalid; valid: a positive integer")
    total = np.zeros(3, np.float64)
    squares = np.zeros(3, np.float64)
    count = 0
    for start in range(0, idx.size, chunk):
        block = np.asarray(images[idx[start:start + chunk]]).reshape(-1, 3)
        # Exact integer sums (255^2 fits uint16; the int64 accumulation is buffered by NumPy, no big temporary).
        total += block.sum(axis=0, dtype=np.int64)
        sq = block.astype(np.uint16)
        sq *= sq
        squares += sq.sum(axis=0, dtype=np.int64)
        count += block.shape[0]
    mean = total / count
    var = np.maximum(squares / count - mean ** 2, 0.0)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(device, n_batches: int) -> int:
    """DataLoader workers used when none are given.

    On CUDA: ``min(4, cpus - 1)`` (decoding and resizing then overlap the GPU step; one core stays with
    the main process). On CPU: 0, because the model's own intra-op threads already use every core and a
    worker would only take cycles from it. Always 0 for fewer than 2 batches (nothing to overlap).
    """
    if n_batches < 2 or _device(device).type != "cuda":
        return 0
    return max(0, min(4, _cpu_count() - 1))


class _Batches(torch.utils.data.Dataset):
    """Item i is the whole batch ``index_batches[i]``, read and transformed in one go.

    ``prepare_only``: the item is the resized uint8 tensor (normalisation then happens on the device).
    """

    def __init__(self, images, transform, index_batches: Sequence[np.ndarray], prepare_only: bool):
        self.images, self.transform, self.index_batches = images, transform, index_batches
        self.prepare_only = prepare_only

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        batch = self.images[self.index_batches[i]]
        return self.transform.prepare(batch) if self.prepare_only else self.transform(batch)


class PixelFeeder:
    """Feeds transformed batches of raw images to a device.

    ``load(idx)`` reads and transforms one batch synchronously; ``batches(index_batches)`` iterates over
    a list of index arrays, prefetched by a torch DataLoader (items are whole batches, so each worker
    reads one batch with one indexing call). ``num_workers=None`` uses :func:`default_num_workers`;
    ``pin_memory=None`` pins on CUDA only; copies to the device are non-blocking from pinned memory.
    ``normalize_on_device`` (default: True unless the device is the CPU): workers read and resize, the
    uint8 batch (4x smaller than float32) is copied to the device and normalised there with the same
    float32 operations; otherwise workers run the whole transform. Results do not depend on the number
    of workers or on ``normalize_on_device`` (the transform is deterministic). Workers are not persistent.
    """

    def __init__(self, images, transform: PixelTransform, device="cpu", num_workers: int | None = None,
                 pin_memory: bool | None = None, normalize_on_device: bool | None = None):
        if not is_pixels(images):
            raise InputError(f"images: expected uint8 images (n, H, W, 3), got {getattr(images, 'dtype', type(images).__name__)} "
                             f"shape {getattr(images, 'shape', None)}")
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0):
            raise InputError(f"num_workers={num_workers!r} is invalid; valid: None or an integer >= 0")
        self.images, self.transform, self.device = images, transform, _device(device)
        self.num_workers = num_workers
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.normalize_on_device = (self.device.type != "cpu") if normalize_on_device is None else bool(normalize_on_device)

    def _index(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise InputError(f"indices: expected a 1-D integer array, got {idx.dtype} shape {idx.shape}")
        return idx.astype(np.int64, copy=False)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            x = x.to(self.device, non_blocking=x.is_pinned())
        return self.transform.normalize(x) if self.normalize_on_device else x

    def load(self, idx) -> torch.Tensor:
        """One batch, read and transformed in this process, as float32 ``(b, 3, S, S)`` on the device."""
        batch = self.images[self._index(idx)]
        x = self.transform.prepare(batch) if self.normalize_on_device else self.transform(batch)
        if self.pin_memory:
            x = x.pin_memory()
        return self._to_device(x)

    def batches(self, index_batches: Iterable) -> Iterator[torch.Tensor]:
        """Transformed batches for each index array, in order, prefetched by DataLoader workers."""
        index_batches = [self._index(b) for b in index_batches]
        if not index_batches:
            return iter(())
        workers = default_num_workers(self.device, len(index_batches)) if self.num_workers is None else int(self.num_workers)
        workers = min(workers, len(index_batches))
        loader = torch.utils.data.DataLoader(
            _Batches(self.images, self.transform, index_batches, self.normalize_on_device), batch_size=None,
            shuffle=False, num_workers=workers, pin_memory=self.pin_memory, persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )
        return (self._to_device(x) for x in loader)

    def __repr__(self) -> str:
        return (f"PixelFeeder({self.images!r}, {self.transform!r}, device={str(self.device)!r}, "
                f"num_workers={self.num_workers}, pin_memory={self.pin_memory}, "
                f"normalize_on_device={self.normalize_on_device})")


def forward_pixels(net: torch.nn.Module, images, device, transform: PixelTransform, batch_size: int = 128,
                   num_workers: int | None = None, indices=None) -> np.ndarray:
    """``net`` in eval mode over all images (or those at ``indices``), streamed; float32 ``(n, d)`` rows.

    Only one batch of floats exists at a time besides the output; rows do not depend on ``batch_size``
    (eval mode: no batch statistics, no dropout). The net's training flag is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} is invalid; valid: a positive integer")
    feeder = PixelFeeder(images, transform, device, num_workers=num_workers)
    idx = np.arange(len(images), dtype=np.int64) if indices is None else feeder._index(np.asarray(indices).reshape(-1))
    chunks = [idx[s:s + batch_size] for s in range(0, idx.size, batch_size)]
    was_training = net.training
    net.eval()
    out = None
    row = 0
    try:
        with torch.no_grad():
            for x in feeder.batches(chunks):
                y = net(x).reshape(x.shape[0], -1).to("cpu", torch.float32).numpy()
                if out is None:
                    out = np.empty((idx.size, y.shape[1]), dtype=np.float32)
                out[row:row + y.shape[0]] = y
                row += y.shape[0]
    finally:
        net.train(was_training)
    if out is None:
        return np.empty((0, int(getattr(net, "out_features", 0))), dtype=np.float32)
    return out
