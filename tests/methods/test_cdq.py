"""CDQ: bit packing, AQD by lookup tables, ICM, the codebook step, the losses and input checks."""
import itertools
import math

import numpy as np
import pytest
import torch

from cmhcore.errors import InputError
from methods.cdq import (CDQ, _icm, aqd_inner, inter_codebook_products, pack_indices,
                         unpack_indices)

FAST = dict(n_codewords=16, dim=16, hidden=32, n_epochs=3, batch_size=32, icm_sweeps=2)


def _toy(n=120, n_labels=4, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n_labels), dtype=np.uint8)
    lab[np.arange(n), rng.integers(0, n_labels, n)] = 1
    proto = rng.standard_normal((n_labels, 6))
    img = lab @ proto + 0.3 * rng.standard_normal((n, 6))
    txt = lab @ rng.standard_normal((n_labels, 9)) + 0.3 * rng.standard_normal((n, 9))
    return img, txt, lab


@pytest.fixture(scope="module")
def fitted():
    img, txt, lab = _toy()
    return CDQ(n_bits=8, **FAST).fit(img, txt, lab), img, txt, lab


# ------------------------------------------------------------------------------------ bit packing
@pytest.mark.parametrize("k", [2, 16, 256])
def test_pack_unpack_round_trip(k):
    rng = np.random.default_rng(k)
    idx = rng.integers(0, k, size=(50, 5))
    codes = pack_indices(idx, k)
    assert codes.dtype == np.int8 and codes.shape == (50, 5 * int(math.log2(k)))
    assert np.isin(codes, (-1, 1)).all()
    assert np.array_equal(unpack_indices(codes, k), idx)


def test_pack_is_most_significant_bit_first():
    # K = 4: index 2 = binary 10, index 1 = binary 01.
    assert pack_indices(np.array([[2, 1]]), 4).tolist() == [[1, -1, -1, 1]]


# ------------------------------------------------------------------------------------------- AQD
def test_aqd_lookup_equals_brute_force_inner_product():
    rng = np.random.default_rng(1)
    books = rng.standard_normal((3, 8, 5))
    idx = rng.integers(0, 8, size=(40, 3))
    q = rng.standard_normal((7, 5))
    brute = np.empty((7, 40))
    for a in range(7):
        for b in range(40):
            recon = sum(books[m, idx[b, m]] for m in range(3))
            brute[a, b] = -float(q[a] @ recon)
    assert np.allclose(aqd_inner(q, idx, books), brute)


def test_fitted_aqd_ranking_equals_brute_force_to_reconstructions(fitted):
    h, img, txt, _ = fitted
    q = h.query_image(img[:15])
    codes = h.encode_text(txt)
    idx = unpack_indices(codes, 16)
    # Reconstruct every database item by summing its selected codewords, one by one.
    recon = np.array([sum(h.codebooks_[m, idx[i, m]] for m in range(h.n_codebooks_)) for i in range(len(idx))])
    brute = -(q.astype(np.float64) @ recon.T)
    got = h.distance(q, codes)
    assert got.shape == (15, len(txt))
    assert np.allclose(got, brute, rtol=1e-10, atol=1e-10)
    assert np.array_equal(np.argsort(got, axis=1, kind="stable"), np.argsort(brute, axis=1, kind="stable"))
    assert np.allclose(h.reconstruct(codes), recon)


def test_cdq_declares_its_own_distance_and_real_valued_queries(fitted):
    h, img, txt, _ = fitted
    assert CDQ.uses_own_distance()
    q = h.query_text(txt[:4])
    assert q.dtype.kind == "f" and q.shape == (4, 16)
    assert np.abs(q).max() <= 1.0  # tanh bottleneck
    assert h.encode_image(img[:4]).shape == (4, 8)  # M = 2 codebooks of K = 16 -> 2 * 4 bits


# ------------------------------------------------------------------------------------- ICM, C step
def _quant_error(z, idx, books):
    return ((z - books[np.arange(books.shape[0])[None, :], idx].sum(1)) ** 2).sum(1)


def test_icm_codes_are_coordinatewise_optimal():
    rng = np.random.default_rng(2)
    books = rng.standard_normal((3, 6, 4))
    z = rng.standard_normal((30, 4))
    idx = _icm(z, books, sweeps=20)
    err = _quant_error(z, idx, books)
    for m, k in itertools.product(range(3), range(6)):
        alt = idx.copy()
        alt[:, m] = k
        assert (_quant_error(z, alt, books) >= err - 1e-12).all()


def test_icm_never_worse_than_its_warm_start():
    rng = np.random.default_rng(3)
    books = rng.standard_normal((4, 8, 5))
    z = rng.standard_normal((50, 5))
    start = rng.integers(0, 8, size=(50, 4))
    out = _icm(z, books, sweeps=1, init=start)
    assert (_quant_error(z, out, books) <= _quant_error(z, start, books) + 1e-12).all()


def test_codebook_step_solves_the_regularised_least_squares():
    rng = np.random.default_rng(4)
    h = CDQ(n_bits=8, n_codewords=16, dim=5)
    idx = rng.integers(0, 16, size=(200, 2))
    z = rng.standard_normal((200, 5))
    books = h._solve_codebooks(z, idx, 2, 16)
    onehot = np.zeros((200, 32))
    onehot[np.arange(200), idx[:, 0]] = 1
    onehot[np.arange(200), 16 + idx[:, 1]] = 1
    flat = books.reshape(32, 5)
    grad = onehot.T @ (onehot @ flat - z) + 1e-3 * flat
    assert np.abs(grad).max() < 1e-8


# ------------------------------------------------------------------------------ near-orthogonality
def test_inter_codebook_term_matches_its_definition():
    rng = np.random.default_rng(5)
    books = rng.standard_normal((3, 4, 6))
    idx = rng.integers(0, 4, size=(10, 3))
    brute = [sum(books[a, idx[i, a]] @ books[b, idx[i, b]] for a in range(3) for b in range(3) if a != b)
             for i in range(10)]
    assert np.allclose(inter_codebook_products(idx, books), brute)


def test_near_orthogonality_penalty_makes_the_inter_codebook_term_nearly_constant():
    rng = np.random.default_rng(6)
    h = CDQ(n_bits=12, n_codewords=16, dim=6)
    z = np.tanh(rng.standard_normal((300, 6)))
    idx = rng.integers(0, 16, size=(300, 3))
    free = h._solve_codebooks(z, idx, 3, 16)
    spreads, errors = [inter_codebook_products(idx, free).std()], [_quant_error(z, idx, free).sum()]
    for mu in (1.0, 10.0, 100.0):
        tied, eps = h._refine_near_orthogonal(z, idx, free, mu=mu)
        term = inter_codebook_products(idx, tied)
        assert eps == pytest.approx(term.mean())  # epsilon's closed-form update
        spreads.append(term.std())
        errors.append(_quant_error(z, idx, tied).sum())
    # A heavier penalty buys a more nearly constant term with more quantization error.
    assert all(a > b for a, b in zip(spreads, spreads[1:])) and spreads[-1] < 0.2 * spreads[0]
    assert all(a <= b + 1e-9 for a, b in zip(errors, errors[1:]))
    # With a constant term, |q - x|^2 = |q|^2 - 2<q, x> + sum_m |c_m|^2 + epsilon: table-computable.
    q = rng.standard_normal(6)
    sel = tied[np.arange(3)[None, :], idx]
    x = sel.sum(1)
    table_form = q @ q - 2 * x @ q + (sel ** 2).sum((1, 2)) + term
    assert np.allclose(((q - x) ** 2).sum(1), table_form)


def test_icm_penalty_pulls_codes_towards_epsilon():
    rng = np.random.default_rng(7)
    books = rng.standard_normal((3, 8, 4))
    z = rng.standard_normal((100, 4))
    plain = _icm(z, books, sweeps=5)
    eps = float(inter_codebook_products(plain, books).mean())
    tied = _icm(z, books, sweeps=5, ortho_weight=100.0, epsilon=eps)
    dev_plain = np.abs(inter_codebook_products(plain, books) - eps).mean()
    dev_tied = np.abs(inter_codebook_products(tied, books) - eps).mean()
    assert dev_tied < dev_plain


# ---------------------------------------------------------------------------------------- losses
def test_cross_entropy_uses_labeled_pairs_only():
    zx = torch.tensor([[0.5, -1.0], [1.0, 1.0], [0.2, 0.3]])
    zy = torch.tensor([[1.0, 0.0], [-0.5, 0.5], [0.9, -0.1]])
    lab = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ok = torch.tensor([True, True, False])  # item 2 is unlabeled: no pair may use it
    alpha = 0.7
    want = 0.0
    for i in range(2):
        for j in range(2):
            t = alpha * float(zx[i] @ zy[j])
            s = float((lab[i] @ lab[j]) > 0)
            want += math.log1p(math.exp(t)) - s * t
    assert float(CDQ._cross_entropy(zx, zy, lab, ok, alpha)) == pytest.approx(want / 4, rel=1e-6)
    assert float(CDQ._cross_entropy(zx, zy, lab, torch.zeros(3, dtype=torch.bool), alpha)) == 0.0


def test_margin_variant_fits_and_checks_embeddings():
    img, txt, lab = _toy(n=80)
    h = CDQ(n_bits=8, loss="margin", **FAST).fit(img, txt, lab)
    v = h.label_vectors_
    assert v.shape == (4, 16) and np.allclose(v @ v.T, np.eye(4))  # default: orthonormal, seeded
    with pytest.raises(InputError, match="label_embeddings"):
        CDQ(n_bits=8, loss="margin", label_embeddings=np.ones((4, 3)), **FAST).fit(img, txt, lab)


# ------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("params, match", [
    (dict(n_bits=12), "n_bits=12"),                     # not a multiple of log2 256 = 8
    (dict(n_bits=16, n_codewords=100), "n_codewords"),  # not a power of two
    (dict(n_bits=16, dim=1), "dim=1"),                  # fewer dimensions than codebooks
    (dict(n_bits=16, loss="hinge"), "loss"),
    (dict(n_bits=16, alpha=-1.0), "alpha"),
    (dict(n_bits=16, n_codewords=1), "n_codewords"),
    (dict(n_bits=16, lr_decay=0.0), "lr_decay"),
    (dict(n_bits=16, icm_sweeps=True), "icm_sweeps"),
    (dict(n_bits=16, label_embeddings="word2vec"), "label_embeddings"),
])
def test_invalid_parameters_raise_one_line_before_work(params, match):
    img, txt, lab = _toy(n=20)
    with pytest.raises(InputError, match=match) as err:
        CDQ(**params).fit(img, txt, lab)
    assert "\n" not in str(err.value)


def test_valid_bit_lengths_map_to_codebooks():
    for bits, m in ((16, 2), (32, 4), (64, 8), (128, 16)):
        assert CDQ(n_bits=bits)._validate_params() == (m, 8)


def test_distance_rejects_foreign_inputs(fitted):
    h, img, txt, _ = fitted
    codes = h.encode_text(txt[:5])
    with pytest.raises(InputError, match="queries"):
        h.distance(np.zeros((2, 3)), codes)
    with pytest.raises(InputError, match="database_codes"):
        h.distance(h.query_image(img[:2]), codes[:, :4])


# -------------------------------------------------------------------------------- distance state
def test_restored_distance_state_ranks_exactly_like_the_fitted_model(fitted):
    """Rescoring without refitting: a fresh instance from the recorded parameters plus the distance
    state gives the fitted model's distances bit for bit, hence the same ranking."""
    h, img, txt, _ = fitted
    state = h.distance_state()
    assert set(state) == {"codebooks"} and state["codebooks"].shape == (h.n_codebooks_, 16, 16)
    fresh = CDQ(**h.get_params())
    with pytest.raises(InputError, match="not fitted"):
        fresh.distance(h.query_image(img[:3]), h.encode_text(txt[:5]))
    # The state travels as plain arrays (as in a codes file): a copy, not the fitted object's own.
    assert fresh.set_distance_state({k: np.array(v) for k, v in state.items()}) is fresh
    for queries, database in ((h.query_image(img[:20]), h.encode_text(txt)), (h.query_text(txt[:20]), h.encode_image(img))):
        want = h.distance(queries, database)
        got = fresh.distance(queries, database)
        assert np.array_equal(got, want)
        assert np.array_equal(np.argsort(got, axis=1, kind="stable"), np.argsort(want, axis=1, kind="stable"))
    # The ranking depends on the state: other codebooks rank differently (the check above can fail).
    other = CDQ(**h.get_params()).set_distance_state({"codebooks": state["codebooks"][:, ::-1].copy()})
    assert not np.array_equal(other.distance(h.query_image(img[:20]), h.encode_text(txt)),
                              h.distance(h.query_image(img[:20]), h.encode_text(txt)))


def test_distance_state_of_the_wrong_shape_is_refused_in_one_line(fitted):
    h = fitted[0]
    books = h.distance_state()["codebooks"]
    for bad in ({"codebooks": books[:1]}, {}, {"codebooks": np.full(books.shape, np.nan)}):
        with pytest.raises(InputError, match="distance state") as err:
            CDQ(**h.get_params()).set_distance_state(bad)
        assert "\n" not in str(err.value)
