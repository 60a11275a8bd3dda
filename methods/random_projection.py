"""The random floor: independent random projections per modality.

Every method must beat it. The image and text projections are drawn independently, so codes of the
two modalities are unrelated and cross-modal MAP sits near the chance level (0.111 on Wiki, see
``docs/protocols.md`` and ``docs/methods/random.md``). Labels are not used.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from methods.base import Hasher, binarize


def _mean(x) -> np.ndarray:
    return np.asarray(x.mean(axis=0)).ravel()


def _project(x, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    # (x - mean) @ w without densifying a sparse x.
    xw = x @ w if sp.issparse(x) else np.asarray(x, dtype=np.float64) @ w
    return np.asarray(xw) - mean @ w


class RandomProjection(Hasher):
    """Random-projection floor (locality-sensitive hashing per modality, no learning across them).

    Parameters
    ----------
    n_bits : int
        Code length.
    random_state : int or None
        Seed of the projection matrices.
    """

    needs_labels = False
    known_check_failures = {"beats_random_floor": "it is the random floor"}

    def __init__(self, n_bits: int = 32, random_state: int | None = 0):
        self.n_bits = n_bits
        self.random_state = random_state

    def fit(self, image, text, labels, labeled=None):
        self._validate_params()
        image, text, _, _ = self._validate_fit(image, text, labels, labeled)
        rng = np.random.default_rng(self.random_state)
        self.image_mean_ = _mean(image)
        self.text_mean_ = _mean(text)
        self.image_proj_ = rng.standard_normal((image.shape[1], self.n_bits))
        self.text_proj_ = rng.standard_normal((text.shape[1], self.n_bits))
        return self

    def encode_image(self, image):
        self._check_fitted("image_proj_")
        image = self._validate_encode(image, "image", self.image_proj_.shape[0])
        return binarize(_project(image, self.image_mean_, self.image_proj_))

    def encode_text(self, text):
        self._check_fitted("text_proj_")
        text = self._validate_encode(text, "text", self.text_proj_.shape[0])
        return binarize(_project(text, self.text_mean_, self.text_proj_))
