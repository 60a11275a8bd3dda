"""The Hasher contract's own behaviour: parameters, validation, binarisation, registry."""
import numpy as np
import pytest
import scipy.sparse as sp

from cmhcore.errors import InputError
from methods import get_method, list_methods, make_method
from methods.base import Hasher, NotFittedError, binarize, clone
from methods.random_projection import RandomProjection


def _data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((n, 5))
    txt = sp.random(n, 7, density=0.4, random_state=seed, format="csr")
    lab = np.zeros((n, 3), dtype=np.uint8)
    lab[np.arange(n), rng.integers(0, 3, n)] = 1
    return img, txt, lab


def test_binarize_maps_zero_to_plus_one():
    codes = binarize(np.array([[-0.5, 0.0, 2.0, -0.0]]))
    assert codes.dtype == np.int8
    assert codes.tolist() == [[-1, 1, 1, 1]]


def test_get_set_params_and_clone():
    h = RandomProjection(n_bits=8, random_state=3)
    assert h.get_params() == {"n_bits": 8, "random_state": 3}
    h2 = clone(h.set_params(n_bits=12))
    assert h2.get_params() == {"n_bits": 12, "random_state": 3} and h2 is not h
    with pytest.raises(InputError, match="unknown parameter 'bits'"):
        h.set_params(bits=3)


def test_var_kwargs_init_is_rejected():
    class Bad(Hasher):
        def __init__(self, **kw):
            pass

    with pytest.raises(TypeError):
        Bad().get_params()


@pytest.mark.parametrize("mutate,match", [
    (lambda i, t, l: (np.where(np.eye(20, 5, dtype=bool), np.inf, i), t, l), r"image: 5 row\(s\) contain NaN or inf"),
    (lambda i, t, l: (i, t[:-1], l), "row counts differ"),
    (lambda i, t, l: (i, t, l * 3), "labels: values must be 0 or 1"),
    (lambda i, t, l: (i, t, np.zeros_like(l)), "empty label set"),
    (lambda i, t, l: (i.astype(str), t, l), "image: dtype"),
    (lambda i, t, l: (i[:, :, None], t, l), "image: expected a 2-D"),
    (lambda i, t, l: (i, t, l[:, 0]), "labels: expected a 2-D"),
])
def test_fit_rejects_bad_input_in_one_line(mutate, match):
    img, txt, lab = mutate(*_data())
    with pytest.raises(InputError, match=match) as err:
        RandomProjection(n_bits=8).fit(img, txt, lab)
    assert "\n" not in str(err.value)


def test_nan_in_sparse_text_is_rejected():
    img, txt, lab = _data()
    txt = txt.copy()
    txt.data[0] = np.nan
    with pytest.raises(InputError, match="text: contains NaN"):
        RandomProjection(n_bits=8).fit(img, txt, lab)


@pytest.mark.parametrize("bits", [0, -3, 2000, 2.5, True, "16"])
def test_bits_outside_range_rejected(bits):
    with pytest.raises(InputError, match="n_bits="):
        RandomProjection(n_bits=bits).fit(*_data())


def test_labeled_mask_must_be_boolean_of_right_length():
    img, txt, lab = _data()
    with pytest.raises(InputError, match="labeled: expected a boolean mask"):
        RandomProjection(n_bits=8).fit(img, txt, lab, np.ones(19, dtype=bool))
    with pytest.raises(InputError, match="labeled: expected a boolean mask"):
        RandomProjection(n_bits=8).fit(img, txt, lab, np.ones(20))


def test_validate_fit_zeroes_unlabeled_rows_and_ignores_their_values():
    img, txt, lab = _data()
    labeled = np.arange(20) % 2 == 0
    garbage = lab.copy()
    garbage[~labeled] = 7  # invalid values in masked rows are never even read
    _, _, clean, lab_mask = RandomProjection(n_bits=8)._validate_fit(img, txt, garbage, labeled)
    assert (clean[~labeled] == 0).all() and np.array_equal(clean[labeled], lab[labeled])
    assert np.array_equal(lab_mask, labeled)


def test_supervised_method_needs_one_labeled_item():
    class Sup(RandomProjection):
        needs_labels = True

    img, txt, lab = _data()
    with pytest.raises(InputError, match="at least one training item must be labeled"):
        Sup(n_bits=8).fit(img, txt, lab, np.zeros(20, dtype=bool))


def test_encode_checks_fitted_and_feature_count():
    img, txt, lab = _data()
    with pytest.raises(NotFittedError, match="not fitted"):
        RandomProjection(n_bits=8).encode_image(img)
    h = RandomProjection(n_bits=8).fit(img, txt, lab)
    with pytest.raises(InputError, match="image: has 4 features, but RandomProjection was fitted with 5"):
        h.encode_image(img[:, :4])


def test_default_distance_is_hamming_and_not_own():
    rng = np.random.default_rng(0)
    a = binarize(rng.standard_normal((4, 16)))
    b = binarize(rng.standard_normal((6, 16)))
    d = RandomProjection().distance(a, b)
    assert np.array_equal(d, (a[:, None, :] != b[None, :, :]).sum(-1))
    assert not RandomProjection.uses_own_distance()

    class Own(RandomProjection):
        def distance(self, q, db):
            return np.zeros((len(q), len(db)))

    assert Own.uses_own_distance()


def test_registry_lookup_and_plugins():
    assert get_method("random") is RandomProjection
    assert get_method("methods.random_projection:RandomProjection") is RandomProjection
    with pytest.raises(InputError, match="unknown method 'nope'; valid:"):
        get_method("nope")
    with pytest.raises(InputError, match="no attribute"):
        get_method("methods.random_projection:Nope")
    with pytest.raises(InputError, match="not a subclass"):
        get_method("numpy:ndarray")
    with pytest.raises(InputError, match="unknown parameter"):
        make_method("random", bits=3)
    infos = {i.name: i for i in list_methods()}
    assert infos["random"].available


def test_every_registered_method_is_available():
    missing = {i.name: i.reason for i in list_methods() if not i.available}
    assert not missing, f"registered but not importable: {missing}"


# ---------------------------------------------------------------- raw images (lazy containers, memmaps)

def test_check_modality_accepts_lazy_images_without_reading(tmp_path):
    from datasets import images as im
    from methods.base import check_modality

    pixels = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3)).astype(np.uint8)
    reads = []

    class Counting(im._ArraySource):
        def read(self, idx):
            reads.append(idx.size)
            return super().read(idx)

    lazy = im.ImageArray(Counting(pixels, "nhwc")).take([5, 0, 2])
    assert check_modality(lazy, "image", allow_sparse=True, allow_pixels=True) is lazy
    assert reads == []
    with pytest.raises(InputError, match="image: raw images .* are not accepted here"):
        check_modality(lazy, "image", allow_sparse=True)
    np.save(tmp_path / "p.npy", pixels)
    mm = np.load(tmp_path / "p.npy", mmap_mode="r")
    got = check_modality(mm, "image", allow_sparse=True, allow_pixels=True)
    assert got.shape == pixels.shape and np.shares_memory(got, mm)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4, 4, 3), np.float32), "must be uint8"),
    (np.zeros((3, 4, 4, 2), np.uint8), "shape \\(n, H, W, 3\\)"),
    (np.zeros((3, 4, 4), np.uint8), "expected a 2-D feature matrix or 4-D uint8"),
])
def test_check_modality_rejects_bad_pixels_in_one_line(bad, match):
    from methods.base import check_modality

    with pytest.raises(InputError, match=match) as err:
        check_modality(bad, "image", allow_sparse=True, allow_pixels=True)
    assert "\n" not in str(err.value)
