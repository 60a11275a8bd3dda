"""DCMH: the objective, its gradient and the B-step against the paper's formulas computed by hand."""
import numpy as np
import pytest
import torch

from benchmark.errors import InputError
from methods.dcmh import DCMH, dcmh_batch_loss, dcmh_objective, dcmh_update_codes, pair_similarity


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


def _hand_objective(F, G, B, L, vis, gamma, eta):
    # J of Eq. 2 written out term by term, over labeled-labeled pairs only.
    n = F.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if vis[i] and vis[j]:
                theta = 0.5 * F[i] @ G[j]
                s = float(L[i] @ L[j] > 0)
                total -= s * theta - np.log1p(np.exp(theta))
    total += gamma * (((B - F) ** 2).sum() + ((B - G) ** 2).sum())
    total += eta * ((F.sum(0) ** 2).sum() + (G.sum(0) ** 2).sum())
    return total


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("gamma,eta", [(1.0, 1.0), (0.3, 2.5)])
def test_objective_equals_hand_formula(gamma, eta):
    F, G, B, L, vis = _case()
    S = pair_similarity(_t(L), _t(L))
    mask = _t(np.outer(vis, vis))
    got = dcmh_objective(_t(F), _t(G), _t(B), S, mask, gamma, eta, chunk=4)  # chunk < n: exercises chunking
    assert got == pytest.approx(_hand_objective(F, G, B, L, vis, gamma, eta), rel=1e-10)


def test_objective_with_callables_equals_dense():
    F, G, B, L, vis = _case(seed=3, n=9)
    Lt, vt = _t(L), _t(vis)
    dense = dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(Lt, Lt), vt[:, None] * vt[None, :], 1.0, 1.0)
    lazy = dcmh_objective(_t(F), _t(G), _t(B), lambda r: pair_similarity(Lt[r], Lt),
                          lambda r: vt[r, None] * vt[None, :], 1.0, 1.0, chunk=2)
    assert lazy == pytest.approx(dense, rel=1e-12)


@pytest.mark.parametrize("gamma,eta", [(1.0, 1.0), (0.5, 3.0)])
def test_batch_gradient_is_eq3(gamma, eta):
    """d(batch loss)/dF_i = 0.5 sum_j M_ij (sigma(Theta_ij) - S_ij) G_j + 2 gamma (F_i - B_i) + 2 eta F^T 1."""
    F, G, B, L, vis = _case(seed=1, n=7)
    idx = np.array([0, 1, 5])
    out = _t(F[idx]).requires_grad_(True)
    loss = dcmh_batch_loss(out, torch.as_tensor(idx), _t(F), _t(G), _t(B), pair_similarity(_t(L[idx]), _t(L)),
                           _t(np.outer(vis[idx], vis)), gamma, eta)
    loss.backward()
    theta = 0.5 * F[idx] @ G.T
    S = (L[idx] @ L.T > 0).astype(float)
    M = np.outer(vis[idx], vis)
    sigma = 1.0 / (1.0 + np.exp(-theta))
    expected = 0.5 * (M * (sigma - S)) @ G + 2 * gamma * (F[idx] - B[idx]) + 2 * eta * F.sum(0)
    np.testing.assert_allclose(out.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_text_step_gradient_is_eq4():
    """The same loss with the roles swapped gives Eq. 4: 0.5 sum_i M (sigma - S) F_i + 2 gamma (G_j - B_j) + 2 eta G^T 1."""
    F, G, B, L, vis = _case(seed=2, n=6)
    idx = np.array([2, 3])
    out = _t(G[idx]).requires_grad_(True)
    dcmh_batch_loss(out, torch.as_tensor(idx), _t(G), _t(F), _t(B), pair_similarity(_t(L[idx]), _t(L)),
                    _t(np.outer(vis[idx], vis)), 1.0, 1.0).backward()
    theta = 0.5 * G[idx] @ F.T  # Theta_ij with i the image, j the text: transposed here
    sigma = 1.0 / (1.0 + np.exp(-theta))
    S = (L[idx] @ L.T > 0).astype(float)
    expected = 0.5 * (np.outer(vis[idx], vis) * (sigma - S)) @ F + 2 * (G[idx] - B[idx]) + 2 * G.sum(0)
    np.testing.assert_allclose(out.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_b_step_sign_rule_sends_zero_to_plus_one():
    F = torch.tensor([[0.5, -0.25, 0.0, -1.0], [-0.0, 2.0, -3.0, 0.1]])
    G = torch.tensor([[-0.5, 0.25, 0.0, 0.5], [0.0, -1.0, 1.0, -0.2]])
    B = dcmh_update_codes(F, G, gamma=1.0)
    assert B.tolist() == [[1, 1, 1, -1], [1, 1, -1, -1]]
    # gamma > 0 only scales V = gamma (F + G): the codes do not change.
    assert torch.equal(dcmh_update_codes(F, G, gamma=7.0), B)
    assert set(torch.unique(B).tolist()) <= {-1.0, 1.0}


def test_b_step_maximises_trace():
    """Eq. 5: B = sign(V) maximises tr(B^T V) over {-1,+1} matrices (checked against every sign pattern of a row)."""
    rng = np.random.default_rng(5)
    F, G = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    V = F + G
    best = max((np.array(bits) * V).sum() for bits in np.array(np.meshgrid(*[[-1, 1]] * 6)).T.reshape(-1, 6))
    B = dcmh_update_codes(_t(F), _t(G), 1.0).numpy()
    assert (B * V).sum() == pytest.approx(best)


def test_masked_items_only_enter_quantisation_and_balance():
    F, G, B, L, vis = _case(seed=4)
    gamma, eta = 1.0, 1.0
    Lt, mask = _t(L), _t(np.outer(vis, vis))
    base = dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(Lt, Lt), mask, gamma, eta)
    # Whatever labels an unlabeled item would have, the objective does not see them.
    L2 = L.copy()
    L2[1] = 1
    assert dcmh_objective(_t(F), _t(G), _t(B), pair_similarity(_t(L2), _t(L2)), mask, gamma, eta) == pytest.approx(base)
    # The gradient of an unlabeled item's output holds no pairwise part: only 2 gamma (F - B) + 2 eta F^T 1.
    idx = np.array([1])
    out = _t(F[idx]).requires_grad_(True)
    dcmh_batch_loss(out, torch.as_tensor(idx), _t(F), _t(G), _t(B), pair_similarity(_t(L[idx]), Lt),
                    _t(np.outer(vis[idx], vis)), gamma, eta).backward()
    np.testing.assert_allclose(out.grad.numpy(), 2 * gamma * (F[idx] - B[idx]) + 2 * eta * F.sum(0), rtol=1e-10)
    # ...while a labeled item's gradient does have one.
    idx = np.array([0])
    out = _t(F[idx]).requires_grad_(True)
    dcmh_batch_loss(out, torch.as_tensor(idx), _t(F), _t(G), _t(B), pair_similarity(_t(L[idx]), Lt),
                    _t(np.outer(vis[idx], vis)), gamma, eta).backward()
    assert not np.allclose(out.grad.numpy(), 2 * gamma * (F[idx] - B[idx]) + 2 * eta * F.sum(0))


def _small_data(seed=0, n=120):
    from datasets.synthetic import make_synthetic

    ds = make_synthetic(n_items=n, n_labels=4, image_dim=12, text_dim=30, latent_dim=6, noise=0.3, seed=seed)
    return ds.image, ds.text, ds.labels


def test_fit_records_the_objective_and_the_training_codes():
    img, txt, lab = _small_data()
    labeled = np.arange(img.shape[0]) % 3 > 0
    h = DCMH(n_bits=8, **{**DCMH.check_params, "epochs": 4}).fit(img, txt, lab * labeled[:, None], labeled)
    assert h.loss_history_.shape == (2,) and np.isfinite(h.loss_history_).all() and (h.loss_history_ > 0).all()
    assert h.extras()["loss_history_epochs"] == [0, 3]  # the first epoch, every history_every (10), the last
    # B of the last B-step covers every training item, unlabeled ones included.
    assert h.train_codes_.shape == (img.shape[0], 8) and np.isin(h.train_codes_, (-1, 1)).all()


@pytest.mark.parametrize("params,match", [
    ({"epochs": 0}, "epochs"),
    ({"gamma": -1.0}, "gamma"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"lr_start": 0.0}, "lr_start"),
    ({"dropout": 1.0}, "dropout"),
    ({"device": "tpu:banana"}, "device"),
])
def test_bad_parameters_fail_in_one_line(params, match):
    img, txt, lab = _small_data(n=20)
    with pytest.raises(InputError, match=match) as err:
        DCMH(n_bits=8, **{**DCMH.check_params, **params}).fit(img, txt, lab)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without a GPU")
def test_cuda_request_without_gpu_is_an_input_error():
    img, txt, lab = _small_data(n=20)
    with pytest.raises(InputError, match="no CUDA GPU"):
        DCMH(n_bits=8, device="cuda", **DCMH.check_params).fit(img, txt, lab)


def test_restricting_the_pair_sum_to_labeled_columns_is_exact():
    """What fit does (labeled columns only, a per-row mask) equals the full n-column masked batch loss."""
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
    # With every item labeled, no mask at all is the same as a mask of ones.
    out_a, out_b = _t(F[idx]).requires_grad_(True), _t(F[idx]).requires_grad_(True)
    S = pair_similarity(_t(L[idx]), _t(L))
    a = dcmh_batch_loss(out_a, torch.as_tensor(idx), _t(F), _t(G), _t(B), S, torch.ones_like(S), 1.0, 1.0)
    b = dcmh_batch_loss(out_b, torch.as_tensor(idx), _t(F), _t(G), _t(B), S, None, 1.0, 1.0)
    assert float(a.detach()) == float(b.detach())
