"""Pairwise likelihood losses (DCMH's J of Eq. 2 and its batch part, CDQ's adaptive cross-entropy)
against plain Python loops, in float32 and float64, on the CPU and on CUDA when present."""
import math

import numpy as np
import pytest
import torch

from methods.losses.likelihood import (adaptive_cross_entropy, balance_loss, dcmh_batch_loss, dcmh_objective,
                                       pair_similarity, pairwise_nll, quantization_loss)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
DTYPES = [torch.float32, torch.float64]
REL = {torch.float32: 2e-5, torch.float64: 1e-11}


def _case(seed=0, n=6, c=4, m=3):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, c))
    G = rng.normal(size=(n, c))
    L = (rng.random((n, m)) < 0.5).astype(np.float64)
    L[L.sum(1) == 0, 0] = 1
    vis = np.ones(n)
    vis[[1, 4]] = 0  # two unlabeled items
    L[vis == 0] = 0
    B = np.where(F + G >= 0, 1.0, -1.0)
    return F, G, B, L, vis


def _softplus(x):
    # log(1 + e^x) without overflow, for the reference only.
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _loop_objective(F, G, B, L, vis, gamma, eta):
    n, c = F.shape
    total = 0.0
    for i in range(n):
        for j in range(n):
            if vis[i] and vis[j]:
                theta = 0.5 * sum(F[i, k] * G[j, k] for k in range(c))
                s = 1.0 if any(L[i, k] and L[j, k] for k in range(L.shape[1])) else 0.0
                total += _softplus(theta) - s * theta
    quant = sum((B[i, k] - F[i, k]) ** 2 + (B[i, k] - G[i, k]) ** 2 for i in range(n) for k in range(c))
    balance = sum(sum(F[i, k] for i in range(n)) ** 2 + sum(G[i, k] for i in range(n)) ** 2 for k in range(c))
    return total + gamma * quant + eta * balance


def _t(x, dtype=torch.float64, device="cpu"):
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma,eta", [(1.0, 1.0), (0.3, 2.5)])
def test_objective_equals_loop(gamma, eta, dtype, device):
    F, G, B, L, vis = _case()
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    S = pair_similarity(t(L), t(L))
    got = dcmh_objective(t(F), t(G), t(B), S, t(np.outer(vis, vis)), gamma, eta, chunk=4)  # chunk < n
    assert got == pytest.approx(_loop_objective(F, G, B, L, vis, gamma, eta), rel=REL[dtype])


def test_objective_with_callables_equals_dense():
    F, G, B, L, vis = _case(seed=3, n=9)
    Lt, vt = _t(L), _t(vis)
    dense = dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(Lt, Lt), vt[:, None] * vt[None, :], 1.0, 1.0)
    lazy = dcmh_objective(_t(F), _t(G), _t(B), lambda r: pair_similarity(Lt[r], Lt),
                          lambda r: vt[r, None] * vt[None, :], 1.0, 1.0, chunk=2)
    assert lazy == pytest.approx(dense, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_terms_equal_loops(dtype, device):
    rng = np.random.default_rng(1)
    theta = rng.normal(scale=30.0, size=(4, 5))  # |theta| up to ~100: e^theta would overflow float32
    S = (rng.random((4, 5)) < 0.4).astype(float)
    mask = (rng.random((4, 5)) < 0.7).astype(float)
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    loop = [[_softplus(theta[i, j]) - S[i, j] * theta[i, j] for j in range(5)] for i in range(4)]
    got_sum = float(pairwise_nll(t(theta), t(S)))
    assert math.isfinite(got_sum)
    assert got_sum == pytest.approx(sum(map(sum, loop)), rel=REL[dtype])
    masked = sum(mask[i, j] * loop[i][j] for i in range(4) for j in range(5))
    assert float(pairwise_nll(t(theta), t(S), t(mask))) == pytest.approx(masked, rel=REL[dtype])
    assert float(pairwise_nll(t(theta), t(S), reduction="mean")) == pytest.approx(sum(map(sum, loop)) / 20, rel=REL[dtype])
    B, out = np.sign(rng.normal(size=(3, 4))), rng.normal(size=(3, 4))
    quant = sum((B[i, k] - out[i, k]) ** 2 for i in range(3) for k in range(4))
    assert float(quantization_loss(t(B), t(out))) == pytest.approx(quant, rel=REL[dtype])
    cols = [sum(out[i, k] for i in range(3)) for k in range(4)]
    assert float(balance_loss(t(out).sum(0))) == pytest.approx(sum(v * v for v in cols), rel=REL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_loss_value_and_gradient_equal_loops(dtype, device):
    """Value: the terms of J that involve the batch rows; gradient: Eq. 3,
    0.5 sum_j M_ij (sigma(Theta_ij) - S_ij) G_j + 2 gamma (F_i - B_i) + 2 eta F^T 1."""
    F, G, B, L, vis = _case(seed=1, n=7)
    gamma, eta = 0.5, 3.0
    idx = [0, 1, 5]
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    out = t(F[idx]).requires_grad_(True)
    loss = dcmh_batch_loss(out, torch.as_tensor(idx, device=device), t(F), t(G), t(B),
                           pair_similarity(t(L[idx]), t(L)), t(np.outer(vis[idx], vis)), gamma, eta)
    loss.backward()
    n, c = F.shape
    value = 0.0
    for i in idx:
        for j in range(n):
            theta = 0.5 * sum(F[i, k] * G[j, k] for k in range(c))
            s = 1.0 if L[i] @ L[j] > 0 else 0.0
            value += vis[i] * vis[j] * (_softplus(theta) - s * theta)
        value += gamma * sum((B[i, k] - F[i, k]) ** 2 for k in range(c))
    value += eta * sum(sum(F[i, k] for i in range(n)) ** 2 for k in range(c))
    assert float(loss.detach()) == pytest.approx(value, rel=REL[dtype])
    grad = np.zeros((len(idx), c))
    for a, i in enumerate(idx):
        for k in range(c):
            g = 0.0
            for j in range(n):
                theta = 0.5 * sum(F[i, q] * G[j, q] for q in range(c))
                s = 1.0 if L[i] @ L[j] > 0 else 0.0
                g += 0.5 * vis[i] * vis[j] * (1.0 / (1.0 + math.exp(-theta)) - s) * G[j, k]
            grad[a, k] = g + 2 * gamma * (F[i, k] - B[i, k]) + 2 * eta * sum(F[q, k] for q in range(n))
    np.testing.assert_allclose(out.grad.cpu().numpy(), grad, rtol=REL[dtype] * 10, atol=REL[dtype] * 10)


def test_text_step_gradient_is_eq4():
    """The same loss with the roles swapped gives Eq. 4: 0.5 sum_i M (sigma - S) F_i + 2 gamma (G_j - B_j) + 2 eta G^T 1."""
    F, G, B, L, vis = _case(seed=2, n=6)
    idx = np.array([2, 3])
    out = _t(G[idx]).requires_grad_(True)
    dcmh_batch_loss(out, torch.as_tensor(idx), _t(G), _t(F), _t(B), pair_similarity(_t(L[idx]), _t(L)),
                    _t(np.outer(vis[idx], vis)), 1.0, 1.0).backward()
    theta = 0.5 * G[idx] @ F.T
    sigma = 1.0 / (1.0 + np.exp(-theta))
    S = (L[idx] @ L.T > 0).astype(float)
    expected = 0.5 * (np.outer(vis[idx], vis) * (sigma - S)) @ F + 2 * (G[idx] - B[idx]) + 2 * G.sum(0)
    np.testing.assert_allclose(out.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_restricting_the_pair_sum_to_labeled_columns_is_exact():
    """What DCMH's fit does (labeled columns only, a per-row mask) equals the full n-column masked batch loss."""
    F, G, B, L, vis = _case(seed=6, n=9)
    vis[[2, 5, 7]] = 0.0
    idx = np.array([0, 2, 3, 8])
    cols = torch.as_tensor(np.flatnonzero(vis))
    grads, values = [], []
    for restricted in (False, True):
        out = _t(F[idx]).requires_grad_(True)
        if restricted:
            loss = dcmh_batch_loss(out, torch.as_tensor(idx), _t(F), _t(G), _t(B),
                                   pair_similarity(_t(L[idx]), _t(L[np.flatnonzero(vis)])), _t(vis[idx])[:, None],
                                   1.0, 1.0, cols=cols)
        else:
            loss = dcmh_batch_loss(out, torch.as_tensor(idx), _t(F), _t(G), _t(B), pair_similarity(_t(L[idx]), _t(L)),
                                   _t(np.outer(vis[idx], vis)), 1.0, 1.0)
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(out.grad.numpy())
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    out_a, out_b = _t(F[idx]).requires_grad_(True), _t(F[idx]).requires_grad_(True)
    S = pair_similarity(_t(L[idx]), _t(L))
    a = dcmh_batch_loss(out_a, torch.as_tensor(idx), _t(F), _t(G), _t(B), S, torch.ones_like(S), 1.0, 1.0)
    b = dcmh_batch_loss(out_b, torch.as_tensor(idx), _t(F), _t(G), _t(B), S, None, 1.0, 1.0)
    assert float(a.detach()) == float(b.detach())


def test_masked_items_only_enter_quantisation_and_balance():
    F, G, B, L, vis = _case(seed=4)
    Lt, mask = _t(L), _t(np.outer(vis, vis))
    base = dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(Lt, Lt), mask, 1.0, 1.0)
    L2 = L.copy()
    L2[1] = 1  # whatever labels an unlabeled item would have, the objective does not see them
    assert dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(_t(L2), _t(L2)), mask, 1.0, 1.0) == pytest.approx(base)
    for i, pairwise in ((1, False), (0, True)):
        out = _t(F[[i]]).requires_grad_(True)
        dcmh_batch_loss(out, torch.as_tensor([i]), _t(F), _t(G), _t(B), pair_similarity(_t(L[[i]]), Lt),
                        _t(np.outer(vis[[i]], vis)), 1.0, 1.0).backward()
        plain = 2 * (F[[i]] - B[[i]]) + 2 * F.sum(0)
        assert np.allclose(out.grad.numpy(), plain) != pairwise


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_cross_entropy_equals_loop(dtype, device):
    rng = np.random.default_rng(2)
    zx, zy = np.tanh(rng.normal(size=(3, 5))), np.tanh(rng.normal(size=(4, 5)))
    lab_x = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)
    lab_y = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=float)
    alpha = 7.0  # alpha <zx, zy> up to 35: the stable form matters in float32
    want = 0.0
    for i in range(3):
        for j in range(4):
            ip = alpha * sum(zx[i, k] * zy[j, k] for k in range(5))
            s = 1.0 if lab_x[i] @ lab_y[j] > 0 else 0.0
            want += _softplus(ip) - s * ip
    t = lambda x: _t(x, dtype, device)  # noqa: E731
    got = adaptive_cross_entropy(t(zx), t(zy), pair_similarity(t(lab_x), t(lab_y)), alpha)
    assert got.dtype == dtype and got.device.type == device
    assert float(got) == pytest.approx(want / 12, rel=REL[dtype])


def test_pairwise_nll_is_finite_where_the_naive_form_overflows():
    theta = torch.tensor([100.0, -100.0, 0.0], dtype=torch.float32)
    S = torch.tensor([1.0, 0.0, 1.0])
    naive = torch.log(1 + torch.exp(theta)) - S * theta
    assert not torch.isfinite(naive).all()  # e^100 overflows float32
    got = pairwise_nll(theta, S, reduction="sum")
    assert float(got) == pytest.approx(math.log(2) + 2 * _softplus(-100.0), rel=1e-6)
