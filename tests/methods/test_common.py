"""Every common check on every registered method: one pytest id per (method, check)."""
import pytest

from methods import REGISTRY, get_method
from methods.checks import CHECKS, applies, check_hasher, resolve_hasher

from benchmark.errors import InputError


# CNN-F makes each pixel check cost seconds: the RDCMH ablations, whose networks and pipeline are
# RDCMH's, run only the pixel check that exercises their own code paths (ND: a linear map of the
# pixels; NS: a subset of the images by index; NJ: two-stage fitting) within CI's time.
ABLATION_PIXEL_CHECKS = {"pixels_same_seed_same_codes"}


def _cases():
    for name in sorted(REGISTRY):
        cls = get_method(name)
        for check in CHECKS:
            if not applies(cls, check):  # the pixel variants run only where accepts_pixels is True
                continue
            if name.startswith("rdcmh-") and check.startswith("pixels_") and check not in ABLATION_PIXEL_CHECKS:
                continue
            yield pytest.param(name, check, id=f"{name}-{check}")


@pytest.mark.parametrize("name,check", list(_cases()))
def test_common_check(name, check):
    try:
        cls = get_method(name)
    except InputError as exc:
        pytest.fail(f"registered method {name!r} cannot be imported: {exc}")
    reason = cls.known_check_failures.get(check)
    if reason:
        # Declared failures must really fail (strict): a stale declaration is an error too.
        with pytest.raises(AssertionError):
            CHECKS[check](cls, {})
        pytest.xfail(reason)
    CHECKS[check](cls, {})


def test_check_hasher_reports_a_broken_plugin():
    """A user plug-in that ignores random_state is caught by the same one-call API."""
    import numpy as np

    from methods.base import Hasher, binarize

    class Unseeded(Hasher):
        needs_labels = False

        def __init__(self, n_bits=16, random_state=0):
            self.n_bits = n_bits
            self.random_state = random_state

        def fit(self, image, text, labels, labeled=None):
            image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
            rng = np.random.default_rng()  # ignores random_state on purpose
            self.wi_ = rng.standard_normal((image.shape[1], self.n_bits))
            self.wt_ = rng.standard_normal((text.shape[1], self.n_bits))
            return self

        def encode_image(self, image):
            self._check_fitted("wi_")
            return binarize(self._validate_encode(image, "image", self.wi_.shape[0]) @ self.wi_)

        def encode_text(self, text):
            self._check_fitted("wt_")
            return binarize(self._validate_encode(text, "text", self.wt_.shape[0]) @ self.wt_)

    with pytest.raises(AssertionError, match="same_seed_same_codes"):
        check_hasher(Unseeded, checks=["codes_format", "same_seed_same_codes"])
    assert check_hasher(Unseeded, checks=["codes_format", "rejects_bad_input"]) == {
        "codes_format": "passed", "rejects_bad_input": "passed"}


def test_resolve_hasher_accepts_plugin_string():
    cls, params = resolve_hasher("methods.random_projection:RandomProjection")
    assert cls.__name__ == "RandomProjection" and params == {}
