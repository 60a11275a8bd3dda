"""The random floor: centred Gaussian projections per modality, seeded, label-blind."""
import numpy as np
import pytest
import scipy.sparse as sp

from cmhcore.errors import InputError
from methods.random_projection import RandomProjection


def _data(n=50, dx=6, dy=9, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, n)]
    return rng.standard_normal((n, dx)) + 2.0, sp.csr_matrix((rng.random((n, dy)) < 0.3).astype(float)), labels


def test_codes_are_signs_of_centred_gaussian_projections_from_the_seed():
    x, y, labels = _data()
    h = RandomProjection(n_bits=8, random_state=3).fit(x, y, labels)
    rng = np.random.default_rng(3)
    wx, wy = rng.standard_normal((6, 8)), rng.standard_normal((9, 8))  # drawn in this order
    yd = y.toarray()
    np.testing.assert_array_equal(h.encode_image(x), np.where((x - x.mean(0)) @ wx >= 0, 1, -1))
    np.testing.assert_array_equal(h.encode_text(y), np.where((yd - yd.mean(0)) @ wy >= 0, 1, -1))


def test_labels_are_not_read():
    x, y, labels = _data()
    a = RandomProjection(n_bits=8).fit(x, y, labels)
    b = RandomProjection(n_bits=8).fit(x, y, np.roll(labels, 1, axis=1), np.zeros(labels.shape[0], dtype=bool))
    np.testing.assert_array_equal(a.encode_image(x), b.encode_image(x))
    np.testing.assert_array_equal(a.encode_text(y), b.encode_text(y))


@pytest.mark.parametrize("param,value,valid", [("n_bits", 0, "an int in [1, 1024]"), ("n_bits", 8.0, "an int in [1, 1024]"),
                                               ("random_state", -1, "an int in [0, inf) or None"),
                                               ("random_state", "0", "an int in [0, inf) or None")])
def test_bad_parameters_are_rejected_in_one_line(param, value, valid):
    x, y, labels = _data()
    with pytest.raises(InputError) as err:
        RandomProjection(**{param: value}).fit(x, y, labels)
    assert str(err.value) == f"RandomProjection parameter {param}={value!r} is invalid; valid: {valid}"
