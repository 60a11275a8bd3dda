"""RDCMH's ranking losses (methods.losses.ranking) against plain Python loops, in float32 and float64,
on the CPU and on CUDA when present."""
import numpy as np
import pytest
import torch

from methods.losses.ranking import ranking_terms, rdcmh_loss, relaxed_hamming

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
DTYPES = [torch.float32, torch.float64]
REL = {torch.float32: 2e-5, torch.float64: 1e-11}
C, K = 6, 5  # bits, triplets


def _t(x, dtype, device):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype, device=device)


def _case(seed=0):
    """K triplets of image outputs f, text outputs g, codes b; per-term weights; a validity mask."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(3, K, C))
    g = rng.normal(size=(3, K, C))
    b = np.where(rng.random((3, K, C)) < 0.5, -1.0, 1.0)
    w = {k: rng.random(K) for k in ("xx", "yy", "xy", "yx")}
    valid = np.array([True, True, False, True, True])
    return f, g, b, w, valid


def _dh(a, b):
    return 0.5 * (C - sum(x * y for x, y in zip(a, b)))


def _loop_terms(f, g, k, cross):
    (fq, fi, fj), (gq, gi, gj) = (x[k] for x in f), (x[k] for x in g)
    out = {"xx": _dh(fq, fi) - _dh(fq, fj), "yy": _dh(gq, gi) - _dh(gq, gj)}
    if cross == "eq5":  # Eq. 5 as printed
        out["xy"] = _dh(fq, fi) - _dh(gq, gj)
        out["yx"] = _dh(gq, gi) - _dh(fq, fj)
    else:
        out["xy"] = _dh(fq, gi) - _dh(fq, gj)
        out["yx"] = _dh(gq, fi) - _dh(gq, fj)
    return out


def _loop_loss(f, g, b, w, valid, lam, loss, margin, cross):
    total, count = 0.0, 0
    for k in range(K):
        if not valid[k]:
            continue
        per = 0.0
        for name, delta in _loop_terms(f, g, k, cross).items():
            per += w[name][k] * (delta if loss == "linear" else max(0.0, delta + margin))
        for a in range(3):
            per += 0.5 * lam * sum((b[a][k][c] - f[a][k][c]) ** 2 + (b[a][k][c] - g[a][k][c]) ** 2 for c in range(C))
        total += per
        count += 1
    return total / count


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_relaxed_hamming_equals_loop_and_is_exact_on_codes(dtype, device):
    f, g, b, _, _ = _case()
    got = relaxed_hamming(_t(f[0], dtype, device), _t(g[1], dtype, device), C).cpu().numpy()
    want = [_dh(f[0][k], g[1][k]) for k in range(K)]
    assert got == pytest.approx(want, rel=REL[dtype])
    hamming = [(b[0][k] != b[1][k]).sum() for k in range(K)]
    assert relaxed_hamming(_t(b[0], dtype, device), _t(b[1], dtype, device), C).cpu().numpy().tolist() == hamming


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cross", ["eq5", "cross"])
def test_ranking_terms_equal_loop(cross, dtype, device):
    f, g, _, _, _ = _case(1)
    got = ranking_terms(*(_t(x, dtype, device) for x in f), *(_t(x, dtype, device) for x in g), C, cross)
    for k in range(K):
        want = _loop_terms(f, g, k, cross)
        for name in ("xx", "yy", "xy", "yx"):
            assert float(got[name][k]) == pytest.approx(want[name], rel=REL[dtype], abs=REL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,margin", [("linear", 0.0), ("hinge", 0.0), ("hinge", 1.5)])
@pytest.mark.parametrize("cross", ["eq5", "cross"])
def test_rdcmh_loss_equals_loop(cross, loss, margin, dtype, device):
    f, g, b, w, valid = _case(2)
    lam = 0.3
    want = _loop_loss(f, g, b, w, valid, lam, loss, margin, cross)
    got = rdcmh_loss(tuple(_t(x, dtype, device) for x in f), tuple(_t(x, dtype, device) for x in g),
                     tuple(_t(x, dtype, device) for x in b), {k: _t(v, dtype, device) for k, v in w.items()},
                     torch.as_tensor(valid, device=device), C, lam, loss=loss, margin=margin, cross_terms=cross)
    assert got.dtype == dtype and got.device.type == device
    assert float(got) == pytest.approx(want, rel=REL[dtype])


def test_the_hinge_cuts_satisfied_terms_the_linear_loss_does_not():
    # The loop case has terms of both signs, so the readings must differ there.
    f, g, b, w, valid = _case(2)
    linear = _loop_loss(f, g, b, w, valid, 0.0, "linear", 0.0, "eq5")
    hinge = _loop_loss(f, g, b, w, valid, 0.0, "hinge", 0.0, "eq5")
    assert hinge > linear
    deltas = [d for k in range(K) if valid[k] for d in _loop_terms(f, g, k, "eq5").values()]
    assert min(deltas) < 0 < max(deltas)


def test_no_valid_triplet_gives_zero_not_nan():
    z = torch.zeros(2, C)
    w = {k: torch.ones(2) for k in ("xx", "yy", "xy", "yx")}
    out = rdcmh_loss((z, z, z), (z, z, z), (z, z, z), w, torch.zeros(2, dtype=torch.bool), C, 1.0)
    assert float(out) == 0.0
