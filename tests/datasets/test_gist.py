"""The GIST descriptor (datasets/gist.py): its properties and a slow direct reference of LMgist's steps."""
import math

import numpy as np
import pytest

from cmhcore.errors import InputError
from datasets.gist import gabor_bank, gist, gist_dim


def _grating(size, kx, ky, cycles_per_px, phase=0.0):
    """A sinusoid with wave vector along (kx, ky) (x = column, y = row), 27..227 grey levels."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (kx * x + ky * y) / math.hypot(kx, ky)
    return 127.0 + 100.0 * np.cos(2 * np.pi * cycles_per_px * u + phase)


def _orientation_energy(desc):
    """(8,) energy per orientation: the descriptor is 4 scales x 8 orientations x 16 blocks."""
    return desc.reshape(4, 8, 16).sum(axis=(0, 2))


# ---------------------------------------------------------------- properties

def test_shape_dtype_finite_and_deterministic():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    a = gist(imgs, image_size=64)
    assert a.shape == (5, 512) == (5, gist_dim()) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all() and a.max() > 0
    np.testing.assert_array_equal(a, gist(imgs, image_size=64))


def test_batch_equals_one_by_one_and_any_batch_size():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    whole = gist(imgs, image_size=32, batch_size=5)
    single = np.concatenate([gist(imgs[i:i + 1], image_size=32) for i in range(5)])
    np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gist(imgs, image_size=32, batch_size=2), whole, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k, channel", [((1, 0), 0), ((0, 1), 4), ((1, 1), 6), ((1, -1), 2)])
def test_grating_energy_in_its_orientation_channel(k, channel):
    # createGabor's filter j peaks at the spectrum angle -pi j / 8 (mod pi for a real image): a grating
    # varying along x (wave vector angle 0) -> channel 0, along y (rows) -> 4, along x + y (angle pi/4,
    # i.e. -3 pi/4) -> 6, along x - y -> 2.
    img = _grating(128, *k, cycles_per_px=0.162)
    e = _orientation_energy(gist(img[None], image_size=128)[0])
    assert np.argmax(e) == channel
    assert e[channel] / e.sum() > 0.45  # ~0.5-0.55 measured; a uniform spread would be 1/8
    # Orientations 90 degrees away get (next to) nothing.
    assert e[(channel + 4) % 8] / e.sum() < 0.03


def test_rotating_a_grating_by_90_degrees_moves_its_channel_by_4():
    img = _grating(96, 1, 0, 0.2, phase=0.3)
    e0 = _orientation_energy(gist(img[None], image_size=96)[0])
    e90 = _orientation_energy(gist(np.rot90(img)[None].copy(), image_size=96)[0])
    assert np.argmax(e0) == 0 and np.argmax(e90) == 4
    # The same distribution, shifted by 4 channels (up to the channels with ~0.1 % of the energy, where
    # the discrete grid's asymmetries, e.g. its unpaired Nyquist row, show).
    np.testing.assert_allclose(np.roll(e0, 4), e90, rtol=1e-3, atol=2e-3 * e0.sum())


def test_grating_energy_peaks_at_the_scale_of_its_frequency():
    # Scale i (0-based) peaks at 0.3 / 1.85^i cycles per pixel (createGabor: fr / n = param(2)).
    for scale, f in enumerate([0.3, 0.3 / 1.85, 0.3 / 1.85 ** 2]):
        d = gist(_grating(128, 1, 0, f)[None], image_size=128)[0].reshape(4, 8, 16)
        assert np.argmax(d.sum(axis=(1, 2))) == scale


def test_adding_a_constant_or_scaling_leaves_the_descriptor_unchanged():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 180, (2, 40, 40, 3)).astype(np.uint8)
    base = gist(img, image_size=40)
    shifted = gist(img + np.uint8(60), image_size=40)  # LMgist stretches each image to [0, 255]
    np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gist(img.astype(np.float32) * 0.5 + 3.0, image_size=40), base, rtol=1e-4, atol=1e-6)
    # ... while a change of the image does change it.
    other = img.copy()
    other[:, :20] = 0
    assert np.abs(gist(other, image_size=40) - base).max() > 1e-2


def test_uniform_image_gives_zero():
    flat = np.full((2, 32, 32, 3), 77, dtype=np.uint8)
    d = gist(flat, image_size=32)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_non_square_image_is_centre_cropped():
    # imresizecrop: a 32 x 48 image at image_size 32 needs no resize and keeps its centre 32 columns.
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    centre = np.ascontiguousarray(wide[:, :, 8:40])
    np.testing.assert_allclose(gist(wide, image_size=32), gist(centre, image_size=32), rtol=1e-5, atol=1e-7)


def test_gabor_bank_peaks_where_create_gabor_puts_them():
    n = 192
    bank = gabor_bank(n)
    assert bank.shape == (32, n, n) and bank.dtype == np.float32 and not bank.flags.writeable
    # Scale 0 orientation 0: maximum 1 at radius 0.3 n on the positive fx axis (row 0, FFT order).
    r, c = np.unravel_index(np.argmax(bank[0]), bank[0].shape)
    assert (r, c) == (0, round(0.3 * n)) and bank[0, r, c] == pytest.approx(1.0, abs=1e-3)
    # Scale 1 orientation 4 (theta = pi/2): the angle -pi/2, i.e. negative fy (rows from the end).
    r, c = np.unravel_index(np.argmax(bank[12]), bank[12].shape)
    assert c == 0 and n - r == round(0.3 / 1.85 * n)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 4)), np.zeros((8, 8)), np.zeros((1, 1, 8, 8, 3))])
def test_bad_images_rejected(bad):
    with pytest.raises(InputError, match="valid"):
        gist(bad, image_size=16)


@pytest.mark.parametrize("size", [0, 4, 16.0, True])
def test_bad_image_size_rejected(size):
    with pytest.raises(InputError, match="image_size"):
        gist(np.zeros((1, 16, 16, 3), np.uint8), image_size=size)


# ---------------------------------------------------------------- a slow direct reference

def _mirror_index(n, before, after):
    """Indices of MATLAB's symmetric padding (the edge sample is repeated), built one by one."""
    out = []
    for i in range(-before, n + after):
        j = i
        while j < 0 or j >= n:
            j = -j - 1 if j < 0 else 2 * n - j - 1
        out.append(j)
    return np.array(out)


def _freq(k, n):
    """Integer frequency of FFT bin k of n (n even): MATLAB's fftshift(-n/2:n/2-1)."""
    return k if k < n // 2 else k - n


def _reference_gist(grey):
    """LMgist on one square greyscale image already at its final size, with loops and float64."""
    s = grey.shape[0]
    img = grey - grey.min()
    img = 255.0 * img / img.max()
    # prefilt, fc = 4
    x = np.log(img + 1.0)
    idx = _mirror_index(s, 5, 5)
    x = x[np.ix_(idx, idx)]
    n = x.shape[0]
    s1 = 4.0 / math.sqrt(math.log(2.0))
    gf = np.empty((n, n))
    for r in range(n):
        for c in range(n):
            gf[r, c] = math.exp(-(_freq(c, n) ** 2 + _freq(r, n) ** 2) / s1 ** 2)
    out = x - np.real(np.fft.ifft2(np.fft.fft2(x) * gf))
    local = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out ** 2) * gf)))
    out = (out / (0.2 + local))[5:5 + s, 5:5 + s]
    # gistGabor, boundaryExtension 32, createGabor([8 8 8 8], s + 64), downN(., 4)
    be = 32
    idx = _mirror_index(s, be, be)
    spec = np.fft.fft2(out[np.ix_(idx, idx)])
    n = s + 2 * be
    edges = [int(math.floor(v)) for v in np.linspace(0, s, 5)]
    desc = []
    for i in range(4):
        for j in range(8):
            p1, p2, p3, p4 = 0.35, 0.3 / 1.85 ** i, 16 * 8 ** 2 / 32 ** 2, math.pi / 8 * j
            g = np.empty((n, n))
            for r in range(n):
                for c in range(n):
                    fx, fy = _freq(c, n), _freq(r, n)
                    tr = math.atan2(fy, fx) + p4
                    if tr < -math.pi:
                        tr += 2 * math.pi
                    elif tr > math.pi:
                        tr -= 2 * math.pi
                    g[r, c] = math.exp(-10 * p1 * (math.hypot(fx, fy) / n / p2 - 1) ** 2 - 2 * p3 * math.pi * tr ** 2)
            mag = np.abs(np.fft.ifft2(spec * g))[be:be + s, be:be + s]
            for bc in range(4):        # MATLAB's column-major reshape: block row fastest
                for br in range(4):
                    desc.append(mag[edges[br]:edges[br + 1], edges[bc]:edges[bc + 1]].mean())
    return np.array(desc)


def test_matches_a_slow_direct_implementation():
    rng = np.random.default_rng(4)
    grey = rng.random((32, 32)) * 200 + 20
    grey[8:20, 4:30] += 60 * np.sin(np.arange(26) / 2.0)  # some structure besides noise
    ref = _reference_gist(grey)
    fast = gist(grey[None].astype(np.float32), image_size=32)[0]
    assert ref.shape == fast.shape == (512,)
    np.testing.assert_allclose(fast, ref, rtol=2e-3, atol=2e-5)
