"""CHN: fitting on labeled items only, tanh codes and parameter checks (the losses:
tests/methods/losses/test_margin.py)."""
import importlib

import numpy as np
import pytest
import torch

from cmhcore.errors import InputError
from methods.chn import CHN


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
    ({"lr": 0}, "lr"),
    ({"freeze_backbone": "yes"}, "freeze_backbone"),
])
def test_bad_parameters_fail_in_one_line(params, match):
    img, txt, lab = _data(n=20)
    with pytest.raises(InputError, match=match) as err:
        CHN(**{**CHN.check_params, **params}).fit(img, txt, lab)
    assert "\n" not in str(err.value)


def test_chn_uses_no_other_method_s_module():
    """Shared helpers come from methods.nets and methods.losses, never from another method's file."""
    import ast

    tree = ast.parse(open(importlib.import_module("methods.chn").__file__).read())
    sources = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    others = {"methods.dcmh", "methods.cdq", "methods.rdcmh", "methods.scm", "methods.cmssh", "methods.seph"}
    assert not sources & others
