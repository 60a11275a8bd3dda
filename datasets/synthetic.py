"""Synthetic multi-label two-modality data with controllable difficulty and any size.

Generative story (all seeded):

1. each item draws a multi-hot label vector (``n_labels`` labels, each on with probability
   ``label_density``, at least one on);
2. its latent semantic vector is the sum of its labels' prototypes plus isotropic noise of scale
   ``noise`` (the difficulty knob: 0 is trivially separable, ~2 is hard);
3. the image side is a random linear map of the latent (plus independent per-modality noise),
   passed through ``relu`` so features are non-negative like bag-of-visual-words;
4. the text side is a sparse binary bag of words: word ``w`` appears with probability
   ``sigmoid(a_w . latent + b)``, calibrated so about ``words_per_item`` words are on.

Memory is linear in the item count and generation is chunked, so NUS-WIDE scale
(~190k items) takes seconds and a few hundred MB.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import scipy.sparse as sp

from benchmark.errors import InputError
from datasets.base import Dataset, random_protocol

__all__ = ["make_synthetic", "load", "files_present"]


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"synthetic: {name}={value!r} is invalid; valid: an integer >= {lo}")


def make_synthetic(n_items: int = 2000, n_labels: int = 10, image_dim: int = 128, text_dim: int = 300,
                   latent_dim: int = 32, noise: float = 0.5, label_density: float = 0.15,
                   words_per_item: float = 8.0, n_query: int | None = None, n_train: int | None = None,
                   seed: int = 0, chunk: int = 65536) -> Dataset:
    """Generate a dataset; protocol: random queries, rest database, training sampled from the database."""
    _check_int("n_items", n_items, 10)
    _check_int("n_labels", n_labels, 1)
    _check_int("image_dim", image_dim, 1)
    _check_int("text_dim", text_dim, 1)
    _check_int("latent_dim", latent_dim, 1)
    if not (0 < label_density <= 1):
        raise InputError(f"synthetic: label_density={label_density!r} is invalid; valid: (0, 1]")
    if noise < 0:
        raise InputError(f"synthetic: noise={noise!r} is invalid; valid: >= 0")
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((n_labels, latent_dim))
    to_image = rng.standard_normal((latent_dim, image_dim)) / np.sqrt(latent_dim)
    to_text = rng.standard_normal((latent_dim, text_dim)) / np.sqrt(latent_dim)
    # Bias so that the expected number of words per item is about words_per_item.
    bias = np.log(words_per_item / text_dim) if words_per_item < text_dim else 0.0

    labels = (rng.random((n_items, n_labels)) < label_density).astype(np.uint8)
    empty = labels.sum(axis=1) == 0
    labels[np.flatnonzero(empty), rng.integers(0, n_labels, size=int(empty.sum()))] = 1

    image = np.empty((n_items, image_dim), dtype=np.float32)
    text_parts = []
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        lab = labels[start:stop].astype(np.float64)
        latent = lab @ prototypes / np.sqrt(lab.sum(axis=1, keepdims=True))
        latent += noise * rng.standard_normal(latent.shape)
        img_latent = latent + 0.5 * noise * rng.standard_normal(latent.shape)
        image[start:stop] = np.maximum(img_latent @ to_image, 0.0) + 0.01 * rng.random((stop - start, image_dim))
        txt_latent = latent + 0.5 * noise * rng.standard_normal(latent.shape)
        logits = 2.0 * (txt_latent @ to_text) + bias
        on = rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))
        # Every text has at least one word (real BoW corpora drop empty documents).
        none = ~on.any(axis=1)
        on[np.flatnonzero(none), np.argmax(logits[none], axis=1)] = True
        text_parts.append(sp.csr_matrix(on.astype(np.float32)))
    text = sp.vstack(text_parts, format="csr")

    n_query = n_query if n_query is not None else max(1, n_items // 10)
    n_train = n_train if n_train is not None else min(n_items - n_query, max(2, n_items // 2))
    params = dict(n_items=n_items, n_labels=n_labels, image_dim=image_dim, text_dim=text_dim,
                  latent_dim=latent_dim, noise=noise, label_density=label_density,
                  words_per_item=words_per_item, n_query=n_query, n_train=n_train, seed=seed)
    protocol = random_protocol(f"synthetic-q{n_query}-t{n_train}", n_items, n_query, n_train, seed=seed)
    # The 'files' of a synthetic dataset are its generator parameters.
    checksum = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return Dataset("synthetic", image, text, labels, checksum, protocol, meta={"generator": json.dumps(params)})


def load(data_root=None, **options) -> Dataset:
    """Loader entry point: options are :func:`make_synthetic`'s keyword arguments."""
    return make_synthetic(**options)


def files_present(data_root=None, **options):
    return True, ""
