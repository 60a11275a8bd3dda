"""The raw-image input pipeline (methods/pixels.py): transform, channel statistics, feeder, streamed forward."""
import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import InputError
from datasets.images import ImageArray
from methods.pixels import PixelFeeder, PixelTransform, channel_stats, default_num_workers, forward_pixels, is_pixels


def _pixels(n=10, h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3)).astype(np.uint8)


def _h5_images(tmp_path, pixels):
    import h5py

    with h5py.File(tmp_path / "iall.mat", "w", userblock_size=512) as f:
        f["IAll"] = np.ascontiguousarray(pixels.T)  # MATLAB's column-major n x H x W x 3
    with open(tmp_path / "iall.mat", "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file".ljust(128))
    return ImageArray.from_hdf5(tmp_path / "iall.mat", n_items=len(pixels))


def test_is_pixels():
    px = _pixels()
    assert is_pixels(px) and is_pixels(ImageArray.from_array(px).take([1]))
    assert not is_pixels(px.astype(np.float32)) and not is_pixels(px[0]) and not is_pixels(px.tolist())
    assert not is_pixels(torch.zeros((2, 3, 3, 3), dtype=torch.uint8))


# ---------------------------------------------------------------- transform

def _direct(batch, size, mean=None, std=None):
    """Reference: Pillow bilinear resize per image, then NumPy normalisation, NCHW float32."""
    out = []
    for img in batch:
        if img.shape[:2] != (size, size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        x = img.astype(np.float64).transpose(2, 0, 1)
        if mean is not None:
            x = x - (np.asarray(mean)[:, None, None] if np.ndim(mean) == 1 else np.asarray(mean))
        if std is not None:
            x = x / np.asarray(std)[:, None, None]
        out.append(x)
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("size", [6, 8, 4])
def test_transform_matches_direct_computation(size):
    px = _pixels(h=6, w=6 if size == 6 else 9)
    rng = np.random.default_rng(1)
    for mean, std in [(None, None), ([120.5, 110.0, 100.25], [60.0, 55.5, 50.0]),
                      (rng.random((3, size, size)) * 255, None)]:
        t = PixelTransform(size, mean, std)
        got = t(px)
        assert got.dtype == torch.float32 and tuple(got.shape) == (10, 3, size, size)
        np.testing.assert_allclose(got.numpy(), _direct(px, size, mean, std), rtol=1e-6, atol=1e-4)


def test_transform_orientation_is_pinned():
    # Height 2, width 3: a transposed (W, H) read would fail the shape and the values.
    px = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    got = PixelTransform(3)(px)  # resized to 3x3
    ref = _direct(px, 3)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4)
    same = PixelTransform(2)(np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3))
    assert same[0, :, 0, 1].tolist() == [3.0, 4.0, 5.0]  # channel axis first, pixel (0, 1)


def test_transform_pickles_and_prepares_uint8():
    import pickle

    px = _pixels()
    t = PixelTransform(8, mean=np.random.default_rng(2).random((3, 8, 8)) * 255, std=[50, 60, 70])
    ref = t(px)
    back = pickle.loads(pickle.dumps(t))
    assert back._cache == {} and torch.equal(back(px), ref)
    u = t.prepare(px)
    assert u.dtype == torch.uint8 and tuple(u.shape) == (10, 3, 8, 8) and u.is_contiguous()
    assert torch.equal(t.normalize(u), ref)


def test_transform_bad_inputs():
    with pytest.raises(InputError, match="mean: shape \\(4,\\)"):
        PixelTransform(4, mean=np.zeros(4))
    with pytest.raises(InputError, match="std: expected 3 positive"):
        PixelTransform(4, std=[1, 0, 1])
    with pytest.raises(InputError, match="input_size=0"):
        PixelTransform(0)
    with pytest.raises(InputError, match="uint8 batch"):
        PixelTransform(4)(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(InputError, match="NaN"):
        PixelTransform(4, mean=[0, np.nan, 0])
    assert "input_size=4" in repr(PixelTransform(4, std=[1, 2, 3]))


# ---------------------------------------------------------------- channel statistics

def test_channel_stats_match_numpy_and_ignore_chunking(tmp_path):
    px = _pixels(n=13)
    ref = px.reshape(-1, 3).astype(np.float64)
    for chunk in (1, 4, 256):
        mean, std = channel_stats(px, chunk=chunk)
        np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-6)
        np.testing.assert_allclose(std, ref.std(0), rtol=1e-5)
    idx = np.array([12, 3, 3, 0])
    mean, std = channel_stats(_h5_images(tmp_path, px), indices=idx, chunk=3)
    sub = px[idx].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, sub.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, sub.std(0), rtol=1e-5)


def test_channel_stats_constant_channel_and_errors():
    px = np.full((2, 3, 3, 3), 7, np.uint8)
    mean, std = channel_stats(px)
    assert mean.tolist() == [7, 7, 7] and std.tolist() == [1, 1, 1]
    with pytest.raises(InputError, match="uint8 images"):
        channel_stats(px.astype(np.float32))
    with pytest.raises(InputError, match="empty"):
        channel_stats(px, indices=[])


# ---------------------------------------------------------------- feeder

def test_feeder_workers_give_the_same_batches(tmp_path):
    px = _pixels(n=23, h=7, w=5)
    images = _h5_images(tmp_path, px).take(np.arange(23)[::-1])  # a view over an h5py-backed file
    t = PixelTransform(6, mean=[100, 110, 120], std=[50, 60, 70])
    order = np.random.default_rng(0).permutation(23)
    batches = [order[i:i + 5] for i in range(0, 23, 5)]
    seq = [b.clone() for b in PixelFeeder(images, t, "cpu", num_workers=0).batches(batches)]
    par = [b.clone() for b in PixelFeeder(images, t, "cpu", num_workers=2).batches(batches)]
    on_dev = [b.clone() for b in PixelFeeder(images, t, "cpu", num_workers=2, normalize_on_device=True).batches(batches)]
    assert len(seq) == len(par) == len(on_dev) == 5
    for a, b, c, idx in zip(seq, par, on_dev, batches):
        assert torch.equal(a, b) and torch.equal(a, c) and a.dtype == c.dtype == torch.float32
        np.testing.assert_allclose(a.numpy(), _direct(px[::-1][idx], 6, [100, 110, 120], [50, 60, 70]), atol=1e-4)
    one = PixelFeeder(images, t, "cpu").load(batches[2])
    assert torch.equal(one, seq[2])
    assert torch.equal(PixelFeeder(images, t, "cpu", normalize_on_device=True, pin_memory=False).load(batches[2]), seq[2])


def test_feeder_memmap_with_workers_and_pinning_flag(tmp_path):
    px = _pixels(n=9)
    np.save(tmp_path / "p.npy", px)
    images = ImageArray.from_npy(tmp_path / "p.npy")
    t = PixelTransform(9)
    got = list(PixelFeeder(images, t, "cpu", num_workers=2).batches([np.array([8, 1]), np.array([4])]))
    np.testing.assert_array_equal(got[0].numpy(), _direct(px[[8, 1]], 9))
    np.testing.assert_array_equal(got[1].numpy(), _direct(px[[4]], 9))
    assert PixelFeeder(images, t, "cpu").pin_memory is False
    assert PixelFeeder(images, t, torch.device("cuda", 0)).pin_memory is True  # constructing touches no GPU
    assert list(PixelFeeder(images, t, "cpu").batches([])) == []


def test_feeder_bad_inputs():
    t = PixelTransform(4)
    with pytest.raises(InputError, match="uint8 images"):
        PixelFeeder(np.zeros((3, 4)), t)
    with pytest.raises(InputError, match="num_workers=-1"):
        PixelFeeder(_pixels(), t, num_workers=-1)
    with pytest.raises(InputError, match="1-D integer array"):
        PixelFeeder(_pixels(), t).load(np.array([0.5]))


def test_default_num_workers(monkeypatch):
    monkeypatch.setattr("methods.pixels._cpu_count", lambda: 16)
    assert default_num_workers("cuda", 100) == 4
    assert default_num_workers("cuda", 1) == 0
    assert default_num_workers("cpu", 100) == 0
    monkeypatch.setattr("methods.pixels._cpu_count", lambda: 2)
    assert default_num_workers(torch.device("cuda"), 100) == 1


# ---------------------------------------------------------------- streamed forward

class _SmallNet(torch.nn.Module):
    """Conv + dropout + linear: dropout would differ between calls if eval mode were not used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)
        self.out_features = 5

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv(x))).flatten(1))


def test_forward_pixels_is_batch_size_invariant_and_restores_mode(tmp_path):
    px = _pixels(n=11, h=8, w=8)
    np.save(tmp_path / "p.npy", px)
    images = ImageArray.from_npy(tmp_path / "p.npy")
    net = _SmallNet().train()
    t = PixelTransform(8, mean=[128, 128, 128], std=[64, 64, 64])
    full = forward_pixels(net, images, "cpu", t, batch_size=11)
    assert net.training and full.dtype == np.float32 and full.shape == (11, 5)
    with torch.no_grad():
        ref = net.eval()(t(px)).numpy()
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-6)
    for bs, workers in ((1, 0), (3, 0), (4, 2)):
        np.testing.assert_allclose(forward_pixels(net, images, "cpu", t, batch_size=bs, num_workers=workers), full,
                                   rtol=1e-5, atol=1e-6)
    idx = np.array([10, 0, 5])
    np.testing.assert_allclose(forward_pixels(net, images, "cpu", t, batch_size=2, indices=idx), full[idx],
                               rtol=1e-5, atol=1e-6)
    assert forward_pixels(net, images, "cpu", t, indices=np.array([], np.int64)).shape == (0, 5)
    with pytest.raises(InputError, match="batch_size=0"):
        forward_pixels(net, images, "cpu", t, batch_size=0)
