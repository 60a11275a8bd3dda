"""CDQ's collective quantization loss against a plain Python loop, in float32 and float64, on the CPU
and on CUDA when present."""
import numpy as np
import pytest
import torch

from methods.losses.quantization import collective_quantization_loss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
REL = {torch.float32: 2e-5, torch.float64: 1e-11}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_collective_quantization_loss_equals_loop(dtype, device):
    rng = np.random.default_rng(0)
    books = rng.normal(size=(3, 4, 5))  # M = 3 codebooks of K = 4 codewords, dim 5, shared by both modalities
    zx, zy = np.tanh(rng.normal(size=(6, 5))), np.tanh(rng.normal(size=(6, 5)))
    hx, hy = rng.integers(0, 4, size=(6, 3)), rng.integers(0, 4, size=(6, 3))

    def recon(h):
        return np.array([[sum(books[m, h[i, m], d] for m in range(3)) for d in range(5)] for i in range(6)])

    rx, ry = recon(hx), recon(hy)
    want = 0.0
    for z, r in ((zx, rx), (zy, ry)):
        want += sum(sum((z[i, d] - r[i, d]) ** 2 for d in range(5)) for i in range(6)) / 6
    t = lambda x: torch.as_tensor(x, dtype=dtype, device=device)  # noqa: E731
    got = collective_quantization_loss(t(zx), t(rx), t(zy), t(ry))
    assert got.dtype == dtype and float(got) == pytest.approx(want, rel=REL[dtype])
    # Zero exactly when every z is its reconstruction.
    assert float(collective_quantization_loss(t(rx), t(rx), t(ry), t(ry))) == 0.0
