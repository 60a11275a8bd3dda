"""CHN: the structured max-margin losses against hand computations, and the use of labeled items only."""
import numpy as np
import pytest
import torch

from benchmark.errors import InputError
from methods.chn import CHN, bitwise_margin_loss, chn_losses, cosine_margin_loss


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# Three items: two of class A, one of class B.
LABELS = _t([[1, 0], [1, 0], [0, 1]])
A = np.array([1, 1, -1, 1, -1, -1, 1, 1.0])


@pytest.mark.parametrize("balanced", [False, True])
def test_losses_are_zero_for_perfectly_separated_codes(balanced):
    # Similar pairs share a code (cos = 1 >= mu_c); dissimilar ones are opposite (cos = -1 <= -mu_c);
    # every bit is +-1, so |h| >= mu_q everywhere.
    codes = _t(np.stack([A, A, -A]))
    pair, quant = chn_losses(codes, codes, LABELS, LABELS, 0.5, 0.5, balanced)
    assert float(pair) == 0.0 and float(quant) == 0.0
    # Continuous codes past both margins also cost nothing: the loss is a max-margin loss, not a regression.
    soft = _t(np.stack([0.6 * A, 0.7 * A, -0.9 * A]))
    pair, quant = chn_losses(soft, soft, LABELS, LABELS, 0.5, 0.5, balanced)
    assert float(pair) == 0.0 and float(quant) == 0.0


def test_cosine_loss_is_positive_and_equals_hand_value_otherwise():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    s = np.where(LABELS.numpy() @ LABELS.numpy().T > 0, 1.0, -1.0)
    cos = (u @ v.T) / np.outer(np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1))
    hinge = np.maximum(0.0, 0.5 - s * cos)
    got = float(cosine_margin_loss(_t(u), _t(v), _t(s), 0.5))
    assert got > 0 and got == pytest.approx(hinge.mean(), rel=1e-12)
    balanced = float(cosine_margin_loss(_t(u), _t(v), _t(s), 0.5, balanced=True))
    assert balanced == pytest.approx(0.5 * hinge[s > 0].mean() + 0.5 * hinge[s < 0].mean(), rel=1e-12)


def test_a_dissimilar_pair_inside_the_margin_is_penalised():
    # Opposite classes whose codes are orthogonal (cos 0 > -mu_c): each of the 4 such pairs costs 0.5.
    b = A.copy()
    b[:4] *= -1  # orthogonal to A
    codes = _t(np.stack([A, A, b]))
    pair, quant = chn_losses(codes, codes, LABELS, LABELS, 0.5, 0.5)
    assert float(pair) == pytest.approx(4 * 0.5 / 9) and float(quant) == 0.0


def test_bitwise_loss_penalises_bits_near_zero_only():
    h = _t([[0.9, -0.2, 0.5, 0.0], [-0.7, 0.4, -0.6, 1.0]])
    expected = np.array([[0, 0.3, 0, 0.5], [0, 0.1, 0, 0]]).mean()
    assert float(bitwise_margin_loss(h, 0.5)) == pytest.approx(expected)
    assert float(bitwise_margin_loss(torch.sign(h) + (h == 0), 0.5)) == 0.0


def _data(seed=0, n=160):
    from datasets.synthetic import make_synthetic

    ds = make_synthetic(n_items=n, n_labels=5, image_dim=12, text_dim=40, latent_dim=6, noise=0.3, seed=seed)
    return ds.image, ds.text, ds.labels


def test_unlabeled_items_are_not_used_for_training():
    """Shuffling the unlabeled items' features (breaking their image-text pairing, keeping the feature
    statistics) leaves the codes unchanged: CHN draws its pairs from labeled items only."""
    img, txt, lab = _data()
    rng = np.random.default_rng(1)
    labeled = rng.random(img.shape[0]) < 0.5
    lab = lab * labeled[:, None]
    params = {**CHN.check_params, "epochs": 5, "n_bits": 8}
    a = CHN(**params).fit(img, txt, lab, labeled)
    un = np.flatnonzero(~labeled)
    img2, txt2 = img.copy(), txt.copy().tolil()
    img2[un] = img[rng.permutation(un)]
    txt2[un] = txt[rng.permutation(un)]
    b = CHN(**params).fit(img2, txt2.tocsr(), lab, labeled)
    q_img, q_txt = img[:30], txt[:30]
    assert np.array_equal(a.encode_image(q_img), b.encode_image(q_img))
    assert np.array_equal(a.encode_text(q_txt), b.encode_text(q_txt))
    # Shuffling labeled items' pairing does change the model (the test above can fail).
    lab_idx = np.flatnonzero(labeled)
    img3 = img.copy()
    img3[lab_idx] = img[rng.permutation(lab_idx)]
    c = CHN(**params).fit(img3, txt, lab, labeled)
    assert not np.array_equal(a.encode_image(q_img), c.encode_image(q_img))


def test_codes_are_signs_of_the_hashing_layer():
    img, txt, lab = _data(n=80)
    h = CHN(**{**CHN.check_params, "epochs": 2, "n_bits": 8}).fit(img, txt, lab)
    x = torch.as_tensor(h.image_scaler_.transform(img[:10]))
    with torch.no_grad():
        u = h.image_net_(x).numpy()
    assert (np.abs(u) < 1).all()  # tanh hashing layer
    assert np.array_equal(h.encode_image(img[:10]), np.where(u >= 0, 1, -1).astype(np.int8))
    assert h.loss_history_.shape == (2,) and np.isfinite(h.loss_history_).all()


@pytest.mark.parametrize("params,match", [
    ({"pair_weighting": "weighted"}, "pair_weighting"),
    ({"margin_cos": -0.1}, "margin_cos"),
    ({"quant_weight": float("nan")}, "quant_weight"),
    ({"momentum": 1.0}, "momentum"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_parameters_fail_in_one_line(params, match):
    img, txt, lab = _data(n=20)
    with pytest.raises(InputError, match=match) as err:
        CHN(**{**CHN.check_params, **params}).fit(img, txt, lab)
    assert "\n" not in str(err.value)
