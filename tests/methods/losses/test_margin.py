"""Max-margin losses (CHN's cosine and bitwise max-margin losses, DVSQ's label margin loss) against
plain Python loops, in float32 and float64, on the CPU and on CUDA when present."""
import math

import numpy as np
import pytest
import torch

from methods.losses.margin import bitwise_margin_loss, chn_losses, cosine_margin_loss, label_margin_loss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
DTYPES = [torch.float32, torch.float64]
REL = {torch.float32: 2e-5, torch.float64: 1e-11}


def _t(x, dtype=torch.float64, device="cpu"):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype, device=device)


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# Three items: two of class A, one of class B.
LABELS = [[1, 0], [1, 0], [0, 1]]
A = np.array([1, 1, -1, 1, -1, -1, 1, 1.0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("balanced", [False, True])
def test_cosine_margin_loss_equals_loop(balanced, dtype, device):
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    s = np.where(rng.random((4, 5)) < 0.4, 1.0, -1.0)
    hinges = {1.0: [], -1.0: []}
    for i in range(4):
        for j in range(5):
            hinges[s[i, j]].append(max(0.0, 0.5 - s[i, j] * _cos(u[i], v[j])))
    every = hinges[1.0] + hinges[-1.0]
    want = (sum(hinges[1.0]) / len(hinges[1.0]) + sum(hinges[-1.0]) / len(hinges[-1.0])) / 2 if balanced \
        else sum(every) / len(every)
    got = cosine_margin_loss(_t(u, dtype, device), _t(v, dtype, device), _t(s, dtype, device), 0.5, balanced)
    assert want > 0 and float(got) == pytest.approx(want, rel=REL[dtype])


def test_balanced_cosine_loss_with_one_kind_of_pair_is_that_kind_s_mean():
    u = _t([[1.0, 0.0], [0.0, 1.0]])
    s = torch.ones(2, 2, dtype=torch.float64)
    assert float(cosine_margin_loss(u, u, s, 0.5, balanced=True)) == pytest.approx(float(cosine_margin_loss(u, u, s, 0.5)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_margin_loss_equals_loop(dtype, device):
    h = [[0.9, -0.2, 0.5, 0.0], [-0.7, 0.4, -0.6, 1.0]]
    want = sum(max(0.0, 0.5 - abs(x)) for row in h for x in row) / 8
    assert float(bitwise_margin_loss(_t(h, dtype, device), 0.5)) == pytest.approx(want, rel=REL[dtype])
    assert want == pytest.approx(0.9 / 8)


@pytest.mark.parametrize("balanced", [False, True])
def test_chn_losses_are_zero_for_perfectly_separated_codes(balanced):
    # Similar pairs share a code (cos 1 >= mu_c); dissimilar ones are opposite (cos -1); every bit is +-1.
    codes = _t(np.stack([A, A, -A]))
    pair, quant = chn_losses(codes, codes, _t(LABELS), _t(LABELS), 0.5, 0.5, balanced)
    assert float(pair) == 0.0 and float(quant) == 0.0
    # Continuous codes past both margins also cost nothing: a max-margin loss, not a regression.
    soft = _t(np.stack([0.6 * A, 0.7 * A, -0.9 * A]))
    pair, quant = chn_losses(soft, soft, _t(LABELS), _t(LABELS), 0.5, 0.5, balanced)
    assert float(pair) == 0.0 and float(quant) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_chn_losses_equal_loop(dtype, device):
    rng = np.random.default_rng(3)
    u, v = np.tanh(rng.normal(size=(3, 8))), np.tanh(rng.normal(size=(3, 8)))
    pair_want, n = 0.0, 0
    for i in range(3):
        for j in range(3):
            s = 1.0 if any(a and b for a, b in zip(LABELS[i], LABELS[j])) else -1.0
            pair_want += max(0.0, 0.5 - s * _cos(u[i], v[j]))
            n += 1
    quant_want = sum(max(0.0, 0.3 - abs(x)) for x in u.ravel()) / 24 + sum(max(0.0, 0.3 - abs(x)) for x in v.ravel()) / 24
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    pair, quant = chn_losses(t(u), t(v), t(LABELS), t(LABELS), 0.5, 0.3)
    assert float(pair) == pytest.approx(pair_want / n, rel=REL[dtype])
    assert float(quant) == pytest.approx(quant_want, rel=REL[dtype])


def test_a_dissimilar_pair_inside_the_margin_is_penalised():
    # Opposite classes whose codes are orthogonal (cos 0 > -mu_c): each of the 4 such pairs costs 0.5.
    b = A.copy()
    b[:4] *= -1  # orthogonal to A
    codes = _t(np.stack([A, A, b]))
    pair, quant = chn_losses(codes, codes, _t(LABELS), _t(LABELS), 0.5, 0.5)
    assert float(pair) == pytest.approx(4 * 0.5 / 9) and float(quant) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_label_margin_loss_equals_loop(dtype, device):
    rng = np.random.default_rng(4)
    vec = rng.normal(size=(4, 3))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    margins = 1.0 - vec @ vec.T
    zx, zy = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    lab = np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=float)
    want, n_trip = 0.0, 0
    for i in range(2):
        for j in range(4):
            for k in range(4):
                if lab[i, j] == 1 and lab[i, k] == 0:
                    n_trip += 1
                    for z in (zx[i], zy[i]):
                        want += max(0.0, margins[j, k] - _cos(vec[j], z) + _cos(vec[k], z))
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    got = label_margin_loss((t(zx), t(zy)), t(lab), t(vec), t(margins))
    assert n_trip == 7 and want > 0
    assert float(got) == pytest.approx(want / n_trip, rel=REL[dtype])
