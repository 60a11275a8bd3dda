"""The GIST descriptor of Oliva & Torralba (2001), as computed by the authors' ``LMgist``.

GIST is the 512-d image feature that SCM (Zhang & Li, AAAI 2014) and SePH (Lin et al., CVPR 2015) used
for MIRFlickr. The definition followed here is the authors' public MATLAB description (``LMgist.m``,
``createGabor.m``, ``imresizecrop.m`` of "Modeling the shape of the scene: a holistic representation of
the spatial envelope", IJCV 42(3):145-175, 2001), step by step:

1. greyscale = the mean of the three colour channels (``mean(img, 3)``);
2. resize (bilinear, antialiased when shrinking) so that the shorter side is ``image_size``, then crop the
   centre ``image_size x image_size`` (``imresizecrop``);
3. stretch the intensities to [0, 255] (``img - min``, then ``255 * img / max``);
4. prefilter (``prefilt``, ``fc = 4`` cycles/image): ``log(1 + img)``, 5 px symmetric padding, whitening
   by subtracting a Gaussian low-pass, division by ``0.2 +`` the local standard deviation (the same
   low-pass of the squared output);
5. pad 32 px symmetrically (``boundaryExtension``), FFT, multiply by each of the 4 x 8 Gabor-like
   transfer functions (``createGabor``), inverse FFT, keep the modulus and crop the padding;
6. average the modulus over a 4 x 4 grid of blocks (``downN``).

The output, per image, is 32 filters x 16 blocks = 512 values, in ``LMgist``'s order: filter-major (scale
by scale from the highest frequency, orientation inside a scale), then the blocks in MATLAB's
column-major order (block row fastest). Everything is vectorised over a stack of images with scipy FFTs
in single precision (as ``gistGabor`` casts to ``single``); the filter bank is computed once per size.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import scipy.fft as sfft
from PIL import Image

from cmhcore.errors import InputError

__all__ = ["gist", "gabor_bank", "prefilter", "gabor_energy", "greyscale_resize", "gist_dim",
           "GIST_VERSION", "IMAGE_SIZE", "ORIENTATIONS_PER_SCALE", "N_BLOCKS", "FC_PREFILT", "BOUNDARY_EXTENSION"]

# Bumped whenever the numbers this module produces change (it is part of every feature cache key).
GIST_VERSION = "lmgist-1"

# LMgist's parameters. imageSize: 256 in the authors' demo (demoGist.m: param.imageSize = [256 256]) and
# in the MIRFlickr GIST releases; LMgist.m's own fallback is 128.
IMAGE_SIZE = 256
ORIENTATIONS_PER_SCALE = (8, 8, 8, 8)   # param.orientationsPerScale = [8 8 8 8]
N_BLOCKS = 4                            # param.numberBlocks = 4 (a 4 x 4 grid)
FC_PREFILT = 4.0                        # param.fc_prefilt = 4 (cycles/image)
BOUNDARY_EXTENSION = 32                 # param.boundaryExtension = 32 (pixels padded before filtering)
PREFILT_PAD = 5                         # prefilt: w = 5 (symmetric padding against boundary artefacts)
LOCAL_STD_FLOOR = 0.2                   # prefilt: output ./ (.2 + localstd)


def gist_dim(orientations_per_scale=ORIENTATIONS_PER_SCALE, n_blocks: int = N_BLOCKS) -> int:
    return int(sum(orientations_per_scale)) * int(n_blocks) ** 2


def _fft_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fx, fy) of MATLAB's ``fftshift(meshgrid(-n/2:n/2-1))``: integer frequencies in FFT order."""
    f = np.fft.fftshift(np.arange(-n / 2, n / 2, dtype=np.float64))
    # fx varies along columns (x), fy along rows (y), as meshgrid returns them.
    return f[None, :], f[:, None]


@functools.lru_cache(maxsize=8)
def gabor_bank(n: int, orientations_per_scale: tuple[int, ...] = ORIENTATIONS_PER_SCALE) -> np.ndarray:
    """Transfer functions ``(n_filters, n, n)`` float32 (read-only), in unshifted FFT order.

    ``createGabor``: filter l at scale i (1-based, high to low frequency) and orientation j (1-based) of
    a scale with ``o`` orientations has parameters ``[0.35, 0.3 / 1.85**(i-1), 16 o^2 / 32^2,
    pi / o * (j-1)]`` and is ``exp(-10 p1 (fr / n / p2 - 1)^2 - 2 p3 pi tr^2)``, with ``fr`` the radial
    frequency (cycles per padded image), ``tr`` the angle ``atan2(fy, fx) + p4`` wrapped to [-pi, pi].
    """
    fx, fy = _fft_grid(n)
    fr = np.sqrt(fx ** 2 + fy ** 2)
    t = np.arctan2(fy, fx)
    out = []
    for i, n_or in enumerate(orientations_per_scale):
        p1, p2, p3 = 0.35, 0.3 / 1.85 ** i, 16.0 * n_or ** 2 / 32.0 ** 2
        radial = -10.0 * p1 * (fr / n / p2 - 1.0) ** 2
        for j in range(n_or):
            tr = t + math.pi / n_or * j
            # createGabor's wrap: + 2 pi where tr < -pi, - 2 pi where tr > pi.
            tr = tr + 2 * math.pi * (tr < -math.pi) - 2 * math.pi * (tr > math.pi)
            out.append(np.exp(radial - 2.0 * p3 * math.pi * tr ** 2))
    bank = np.stack(out).astype(np.float32)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=8)
def _prefilter_lowpass(n: int, fc: float) -> np.ndarray:
    """prefilt's Gaussian ``exp(-(fx^2 + fy^2) / s1^2)``, ``s1 = fc / sqrt(log 2)``, as an rfft2 half-plane.

    ``s1`` puts the half-amplitude point at ``fc`` cycles/image. The filter is even in (fx, fy), so the
    product with a real image's spectrum stays Hermitian and the real FFT pair is exact.
    """
    fx, fy = _fft_grid(n)
    s1 = fc / math.sqrt(math.log(2.0))
    g = np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2)[:, : n // 2 + 1].astype(np.float32)
    g.setflags(write=False)
    return g


def _symmetric_pad(x: np.ndarray, before: int, after: int | None = None) -> np.ndarray:
    """MATLAB ``padarray(.., 'symmetric')`` on the last two axes (the edge pixel is repeated)."""
    after = before if after is None else after
    width = [(0, 0)] * (x.ndim - 2) + [(before, after), (before, after)]
    return np.pad(x, width, mode="symmetric")


def greyscale_resize(images, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """``(b, H, W, 3)`` or ``(b, H, W)`` images -> ``(b, S, S)`` float32 in [0, 255], steps 1-3 of LMgist.

    Pillow's bilinear filter widens its triangle kernel by the reduction factor when shrinking, as
    MATLAB's ``imresize(.., 'bilinear')`` does with its default antialiasing.
    """
    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[-1] != 3:
            raise InputError(f"gist: images of shape {x.shape} are invalid; valid: (n, H, W, 3) or (n, H, W)")
        x = x.mean(axis=-1, dtype=np.float32)
    elif x.ndim != 3:
        raise InputError(f"gist: images of shape {x.shape} are invalid; valid: (n, H, W, 3) or (n, H, W)")
    x = x.astype(np.float32, copy=False)
    b, h, w = x.shape
    s = int(image_size)
    scaling = max(s / h, s / w)
    # imresizecrop: newsize = round([h w] * scaling) (MATLAB rounds halves away from zero).
    nh, nw = int(math.floor(h * scaling + 0.5)), int(math.floor(w * scaling + 0.5))
    top, left = (nh - s) // 2, (nw - s) // 2
    out = np.empty((b, s, s), dtype=np.float32)
    for k in range(b):
        img = x[k]
        if (nh, nw) != (h, w):
            img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((nw, nh), Image.BILINEAR))
        out[k] = img[top:top + s, left:left + s]
    # Stretch to [0, 255] per image; a uniform image has no contrast and stays 0 (MATLAB would give NaN).
    out -= out.min(axis=(1, 2), keepdims=True)
    peak = out.max(axis=(1, 2), keepdims=True)
    np.divide(255.0 * out, peak, out=out, where=peak > 0)
    return out


def prefilter(images: np.ndarray, fc: float = FC_PREFILT, workers: int | None = None) -> np.ndarray:
    """LMgist's ``prefilt`` on ``(b, S, S)`` float images in [0, 255]: whitening + local contrast normalisation."""
    x = np.log1p(np.asarray(images, dtype=np.float32))
    w = PREFILT_PAD
    x = _symmetric_pad(x, w)
    sn, sm = x.shape[-2:]
    n = max(sn, sm)
    n += n % 2  # prefilt pads to an even square (post-padding, symmetric)
    if (sn, sm) != (n, n):
        x = np.pad(x, [(0, 0), (0, n - sn), (0, n - sm)], mode="symmetric")
    gf = _prefilter_lowpass(n, float(fc))
    kw = {"s": (n, n), "axes": (-2, -1), "workers": workers}
    out = x - sfft.irfft2(sfft.rfft2(x, axes=(-2, -1), workers=workers) * gf, **kw)
    local = np.sqrt(np.abs(sfft.irfft2(sfft.rfft2(out * out, axes=(-2, -1), workers=workers) * gf, **kw)))
    out /= LOCAL_STD_FLOOR + local
    return np.ascontiguousarray(out[:, w:sn - w, w:sm - w], dtype=np.float32)


def _block_edges(size: int, n_blocks: int) -> np.ndarray:
    """downN's block boundaries ``fix(linspace(0, size, N + 1))``."""
    return np.floor(np.linspace(0, size, n_blocks + 1)).astype(np.int64)


def gabor_energy(images: np.ndarray, orientations_per_scale=ORIENTATIONS_PER_SCALE, n_blocks: int = N_BLOCKS,
                 boundary_extension: int = BOUNDARY_EXTENSION, workers: int | None = None) -> np.ndarray:
    """LMgist's ``gistGabor`` on prefiltered ``(b, S, S)`` images: ``(b, n_filters * n_blocks^2)`` float32."""
    x = np.asarray(images, dtype=np.float32)
    b, s, s2 = x.shape
    if s != s2:
        raise InputError(f"gist: prefiltered images of shape {x.shape} are invalid; valid: square (b, S, S)")
    be = int(boundary_extension)
    n = s + 2 * be
    bank = gabor_bank(n, tuple(int(o) for o in orientations_per_scale))
    n_filters = bank.shape[0]
    spectra = sfft.fft2(_symmetric_pad(x, be), workers=workers).astype(np.complex64, copy=False)
    edges = _block_edges(s, n_blocks)[:-1]
    sizes = np.diff(_block_edges(s, n_blocks)).astype(np.float32)
    area = sizes[:, None] * sizes[None, :]
    # One image at a time through all filters, in reused buffers: the (filters, n, n) product stays a
    # few tens of MB and is not re-allocated (allocation and page faults cost as much as the FFTs).
    prod = np.empty((n_filters, n, n), dtype=np.complex64)
    mag = np.empty((n_filters, s, s), dtype=np.float32)
    out = np.empty((b, n_filters, n_blocks, n_blocks), dtype=np.float32)
    for k in range(b):
        np.multiply(spectra[k], bank, out=prod)
        resp = sfft.ifft2(prod, workers=workers, overwrite_x=True)
        np.abs(resp[:, be:be + s, be:be + s], out=mag)
        # downN: the mean of the modulus over each block (block sums over rows, then over columns).
        out[k] = np.add.reduceat(np.add.reduceat(mag, edges, axis=-2), edges, axis=-1) / area
    # Column-major block order inside each filter (MATLAB's reshape(v, [W N])): block row fastest.
    return np.ascontiguousarray(out.transpose(0, 1, 3, 2)).reshape(b, -1)


def gist(images, image_size: int = IMAGE_SIZE, orientations_per_scale=ORIENTATIONS_PER_SCALE,
         n_blocks: int = N_BLOCKS, fc_prefilt: float = FC_PREFILT, boundary_extension: int = BOUNDARY_EXTENSION,
         batch_size: int = 32, workers: int | None = None,
         progress: Callable[[int], None] | None = None) -> np.ndarray:
    """GIST descriptors ``(n, 512)`` float32 of images ``(n, H, W, 3)`` (uint8 or float) or ``(n, H, W)``.

    ``images`` may be any container with ``len`` and slicing that returns arrays (a lazy image array is
    read ``batch_size`` images at a time). ``workers`` is scipy.fft's thread count (None: one).
    ``progress(k)`` is called after each batch with the number of images done in it.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise InputError(f"gist: image_size={image_size!r} is invalid; valid: an integer >= 8")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"gist: batch_size={batch_size!r} is invalid; valid: an integer >= 1")
    ndim = getattr(images, "ndim", None)
    if ndim is None:
        images = np.asarray(images)
        ndim = images.ndim
    if ndim not in (3, 4):
        raise InputError(f"gist: images with {ndim} dimensions are invalid; valid: (n, H, W, 3) or (n, H, W)")
    n = len(images)
    out = np.empty((n, gist_dim(orientations_per_scale, n_blocks)), dtype=np.float32)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        grey = greyscale_resize(images[start:stop], int(image_size))
        pre = prefilter(grey, fc_prefilt, workers=workers)
        out[start:stop] = gabor_energy(pre, orientations_per_scale, n_blocks, boundary_extension, workers=workers)
        if progress is not None:
            progress(stop - start)
    return out
