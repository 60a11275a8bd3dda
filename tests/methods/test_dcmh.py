"""DCMH: the B-step, fitting, and parameter checks (the losses: tests/methods/losses/test_likelihood.py)."""
import numpy as np
import pytest
import torch

from cmhcore.errors import InputError
from methods.dcmh import DCMH, dcmh_update_codes


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


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
    ({"epochs": True}, "epochs"),
    ({"image_size": 0}, "image_size"),
    ({"image_backbone": "resnet9000"}, "image_backbone"),
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
