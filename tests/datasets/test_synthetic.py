"""Synthetic two-modality multi-label generator (datasets/synthetic.py)."""
import numpy as np
import pytest
import scipy.sparse as sp

import datasets
from cmhcore.errors import InputError
from datasets.synthetic import make_synthetic


def test_sizes_types_and_protocol():
    ds = make_synthetic(n_items=500, n_labels=7, image_dim=20, text_dim=60, n_query=50, n_train=200, seed=1)
    assert ds.image.shape == (500, 20) and ds.image.dtype == np.float32 and (ds.image >= 0).all()
    assert sp.issparse(ds.text) and ds.text.shape == (500, 60)
    assert set(np.unique(ds.text.data).tolist()) == {1.0}
    assert ds.labels.shape == (500, 7) and ds.labels.dtype == np.uint8
    assert (ds.labels.sum(axis=1) >= 1).all() and (np.diff(ds.text.indptr) >= 1).all()
    assert ds.protocol.sizes == {"query": 50, "database": 450, "train": 200}
    assert ds.protocol.train_in_database


def test_deterministic_by_seed():
    a, b, c = (make_synthetic(n_items=300, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.text != b.text).nnz == 0
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.checksum == b.checksum != c.checksum and a.protocol.digest == b.protocol.digest
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("noise, words, text_dim", [(0.0, 8, 300), (0.3, 8, 300), (1.5, 8, 300),
                                                    (0.5, 20, 1000), (0.5, 1.5, 100)])
def test_words_per_item_is_calibrated(noise, words, text_dim):
    ds = make_synthetic(n_items=3000, noise=noise, words_per_item=words, text_dim=text_dim, seed=2)
    mean_words = ds.text.nnz / ds.n_items
    assert abs(mean_words - words) <= 0.1 * words, mean_words


def _knn_label_agreement(x, labels, k=10):
    """Fraction of each item's k nearest neighbours (cosine) that share a label with it."""
    x = x - x.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argpartition(-sim, k, axis=1)[:, :k]
    rel = (labels.astype(np.int64) @ labels.T.astype(np.int64)) > 0
    return np.take_along_axis(rel, nn, axis=1).mean()


def test_noise_controls_separability():
    scores = {}
    for noise in (0.1, 1.0, 3.0):
        ds = make_synthetic(n_items=800, noise=noise, seed=0)
        scores[noise] = (_knn_label_agreement(ds.image, ds.labels),
                         _knn_label_agreement(ds.text.toarray(), ds.labels))
    labels = make_synthetic(n_items=800, noise=0.1, seed=0).labels
    chance = ((labels.astype(int) @ labels.T.astype(int)) > 0).mean()
    for modality in (0, 1):
        assert scores[0.1][modality] > scores[1.0][modality] > scores[3.0][modality]
        assert scores[0.1][modality] > chance + 0.2          # easy data is clearly separable


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_items=5), "n_items"), (dict(noise=-1.0), "noise"), (dict(noise=float("nan")), "noise"),
    (dict(label_density=0.0), "label_density"), (dict(words_per_item=0.5), "words_per_item"),
    (dict(words_per_item=300, text_dim=300), "words_per_item"), (dict(seed=-2), "seed"),
    (dict(n_labels=2.5), "n_labels"),
])
def test_invalid_arguments_are_one_line_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match) as err:
        make_synthetic(**kwargs)
    assert "\n" not in str(err.value)


def test_loader_entry_point():
    ds = datasets.load_dataset("synthetic", n_items=200, seed=3)
    assert ds.name == "synthetic" and ds.n_items == 200
    assert datasets.dataset_status("synthetic") == (True, "")


def test_option_constraints_cover_every_generator_argument():
    import inspect

    from datasets import synthetic

    assert list(synthetic.OPTION_CONSTRAINTS) == list(inspect.signature(synthetic.make_synthetic).parameters)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_items": 9}, r"^synthetic option n_items=9 is invalid; valid: an int in \[10, inf\)$"),
    ({"noise": float("nan")}, r"^synthetic option noise=nan is invalid"),
    ({"label_density": 0}, r"^synthetic option label_density=0 is invalid; valid: a float in \(0, 1\]$"),
    ({"seed": True}, r"^synthetic option seed=True is invalid"),
    ({"words_per_item": 20.0, "text_dim": 20}, r"words_per_item=20.0 is invalid; valid: a float in \[1, text_dim=20\)"),
])
def test_make_synthetic_rejects_bad_arguments_in_one_line(kwargs, match):
    from datasets.synthetic import make_synthetic

    with pytest.raises(InputError, match=match):
        make_synthetic(**kwargs)
