"""Synthetic multi-label two-modality data with controllable difficulty and any size.

Generative story (all seeded):

1. each item draws a multi-hot label vector (``n_labels`` labels, each on with probability
   ``label_density``, at least one on);
2. its latent semantic vector is the sum of its labels' prototypes plus isotropic noise of scale
   ``noise`` (the difficulty knob: 0 is trivially separable, ~2 is hard);
3. the image side is a random linear map of the latent (plus independent per-modality noise),
   passed through ``relu`` so features are non-negative like bag-of-visual-words;
4. the text side is a sparse binary bag of words: word ``w`` appears with probability
   ``sigmoid(2 a_w . latent + b)``. The shared bias ``b`` is calibrated numerically on a pilot draw
   from the same process (its own seeded stream), so that the expected number of words per item is
   ``words_per_item`` for every noise level and dimension (a closed-form ``log(p)`` bias ignores the
   spread of the logits and gave ~25 words when 8 were asked).

Memory is linear in the item count and generation runs in fixed blocks: NUS-WIDE scale (195,834
items, 21 labels, 500-d image, 1000-d text) took 18 s and a 0.48 GB peak (0.39 GB of it the image
matrix) on a shared 2-core machine.
"""
from __future__ import annotations

import hashlib
import inspect
import json

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import InputError
from cmhcore.params import Interval, check_params
from datasets import check_options
from datasets.base import Dataset, random_protocol

__all__ = ["make_synthetic", "load", "files_present", "GENERATOR_VERSION"]

# Part of the checksum: bump whenever the same parameters would generate different data.
# 2: calibrated text bias, per-block streams, float32 text draws.
GENERATOR_VERSION = 2
_BLOCK = 4096


def _draw_labels(rng, n_items: int, n_labels: int, label_density: float) -> np.ndarray:
    labels = (rng.random((n_items, n_labels)) < label_density).astype(np.uint8)
    empty = labels.sum(axis=1) == 0
    labels[np.flatnonzero(empty), rng.integers(0, n_labels, size=int(empty.sum()))] = 1
    return labels


def _latent(rng, labels: np.ndarray, prototypes: np.ndarray, noise: float) -> np.ndarray:
    lab = labels.astype(np.float64)
    latent = lab @ prototypes / np.sqrt(lab.sum(axis=1, keepdims=True))
    return latent + noise * rng.standard_normal(latent.shape)


def _calibrate_text_bias(prototypes, to_text, noise, label_density, words_per_item, seed,
                         max_logits: int = 1 << 18) -> float:
    """The bias b that makes the expected words per item equal ``words_per_item`` on a pilot draw.

    Expected words of an item = sum of its word probabilities + P(no word) (an empty text gets its
    most likely word). The pilot uses its own stream (seed, 1) so calibration does not shift the main
    draws; the expectation is monotone in b, so bisection brackets the answer.
    """
    text_dim = to_text.shape[1]
    n_pilot = max(64, max_logits // text_dim)
    rng = np.random.default_rng([int(seed), 1])
    labels = _draw_labels(rng, n_pilot, prototypes.shape[0], label_density)
    latent = _latent(rng, labels, prototypes, noise)
    txt_latent = latent + 0.5 * noise * rng.standard_normal(latent.shape)
    logits = 2.0 * (txt_latent @ to_text)
    lo, hi = -60.0, 60.0
    while hi - lo > 1e-3:  # 17 halvings; a 1e-3 error in b moves the mean word count by < 0.1 %
        mid = 0.5 * (lo + hi)
        z = logits + mid
        expected = (1.0 / (1.0 + np.exp(-z))).sum(axis=1) + np.exp(-np.logaddexp(0.0, z).sum(axis=1))
        if expected.mean() < words_per_item:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def make_synthetic(n_items: int = 2000, n_labels: int = 10, image_dim: int = 128, text_dim: int = 300,
                   latent_dim: int = 32, noise: float = 0.5, label_density: float = 0.15,
                   words_per_item: float = 8.0, n_query: int | None = None, n_train: int | None = None,
                   seed: int = 0) -> Dataset:
    """Generate a dataset; protocol: random queries, rest database, training sampled from the database.

    Items are generated in fixed blocks of ``_BLOCK`` items, each from its own stream derived from
    ``seed``, so memory stays bounded and the data depend on the parameters only.
    """
    check_params("synthetic", dict(n_items=n_items, n_labels=n_labels, image_dim=image_dim, text_dim=text_dim,
                                   latent_dim=latent_dim, noise=noise, label_density=label_density,
                                   words_per_item=words_per_item, n_query=n_query, n_train=n_train, seed=seed),
                 OPTION_CONSTRAINTS, kind="option")
    if not words_per_item < text_dim:
        # Every text has at least one word (hence the lower bound 1) and at most text_dim distinct ones.
        raise InputError(
            f"synthetic option words_per_item={words_per_item!r} is invalid; valid: a float in [1, text_dim={text_dim})"
        )
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((n_labels, latent_dim))
    to_image = rng.standard_normal((latent_dim, image_dim)) / np.sqrt(latent_dim)
    to_text = rng.standard_normal((latent_dim, text_dim)) / np.sqrt(latent_dim)
    bias = _calibrate_text_bias(prototypes, to_text, noise, label_density, words_per_item, seed)

    labels = _draw_labels(rng, n_items, n_labels, label_density)

    image = np.empty((n_items, image_dim), dtype=np.float32)
    text_parts = []
    to_text32 = to_text.astype(np.float32)
    for block, start in enumerate(range(0, n_items, _BLOCK)):
        stop = min(start + _BLOCK, n_items)
        brng = np.random.default_rng([seed, 2, block])
        latent = _latent(brng, labels[start:stop], prototypes, noise)
        img_latent = latent + 0.5 * noise * brng.standard_normal(latent.shape)
        image[start:stop] = np.maximum(img_latent @ to_image, 0.0) + 0.01 * brng.random((stop - start, image_dim))
        txt_latent = (latent + 0.5 * noise * brng.standard_normal(latent.shape)).astype(np.float32)
        logits = 2.0 * (txt_latent @ to_text32) + np.float32(bias)
        # u < sigmoid(z)  <=>  u * (1 + exp(-z)) < 1, in float32: the bulk of the cost at NUS scale.
        with np.errstate(over="ignore"):
            on = brng.random(logits.shape, dtype=np.float32) * (1.0 + np.exp(-logits)) < 1.0
        # Every text has at least one word (real BoW corpora drop empty documents).
        none = ~on.any(axis=1)
        on[np.flatnonzero(none), np.argmax(logits[none], axis=1)] = True
        text_parts.append(sp.csr_matrix(on, dtype=np.float32))
    text = sp.vstack(text_parts, format="csr")

    n_query = n_query if n_query is not None else max(1, n_items // 10)
    n_train = n_train if n_train is not None else min(n_items - n_query, max(2, n_items // 2))
    params = dict(n_items=n_items, n_labels=n_labels, image_dim=image_dim, text_dim=text_dim,
                  latent_dim=latent_dim, noise=noise, label_density=label_density,
                  words_per_item=words_per_item, n_query=n_query, n_train=n_train, seed=seed,
                  generator_version=GENERATOR_VERSION)
    protocol = random_protocol(f"synthetic-q{n_query}-t{n_train}", n_items, n_query, n_train, seed=seed)
    # The 'files' of a synthetic dataset are its generator parameters.
    checksum = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    dataset = Dataset("synthetic", image, text, labels, checksum, protocol, meta={"generator": json.dumps(params)})
    protocol.validate_for(dataset)
    return dataset


# The options a suite may give (checked before any work): make_synthetic's keyword arguments.
OPTION_CONSTRAINTS: dict[str, list] = {
    "n_items": [Interval(int, 10, None, closed="left")],
    "n_labels": [Interval(int, 1, None, closed="left")],
    "image_dim": [Interval(int, 1, None, closed="left")],
    "text_dim": [Interval(int, 1, None, closed="left")],
    "latent_dim": [Interval(int, 1, None, closed="left")],
    "noise": [Interval(float, 0, None, closed="left")],
    "label_density": [Interval(float, 0, 1, closed="right")],
    "words_per_item": [Interval(float, 1, None, closed="left")],
    "n_query": [Interval(int, 1, None, closed="left"), None],
    "n_train": [Interval(int, 1, None, closed="left"), None],
    "seed": [Interval(int, 0, None, closed="left")],
}
PIXELS = False  # the image side is a feature matrix: image-feature options do not apply


def load(data_root=None, **options) -> Dataset:
    """Loader entry point: options are :func:`make_synthetic`'s keyword arguments."""
    check_options("synthetic", options, features=False)
    return make_synthetic(**options)


def files_present(data_root=None, **options):
    return True, ""
