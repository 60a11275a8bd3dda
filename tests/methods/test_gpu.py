"""The GPU path of every deep method (those with a ``device`` parameter).

Skipped where no CUDA GPU is present, which includes CI; run on a GPU machine with
``python -m pytest tests/methods/test_gpu.py``. CPU and GPU draw different random streams (dropout
masks, buffers created on the device), so codes are not expected to match across devices; the
cross-device comparison of MAP on Wiki is in docs/results.md, from ``--suite reference --device cuda``.
"""
import numpy as np
import pytest
import torch

from benchmark.metrics import mean_average_precision
from methods import REGISTRY, get_method
from benchmark.checks import CHECKS, check_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEEP = sorted(n for n in REGISTRY if "device" in get_method(n)._get_param_names())


def test_deep_methods_are_found():
    assert {"rdcmh", "dcmh", "chn", "cdq"} <= set(DEEP)


@pytest.mark.parametrize("name,check", [pytest.param(n, c, id=f"{n}-{c}") for n in DEEP for c in CHECKS])
def test_common_check_on_gpu(name, check):
    cls = get_method(name)
    reason = cls.known_check_failures.get(check)
    if reason:
        with pytest.raises(AssertionError):
            CHECKS[check](cls, {"device": "cuda"})
        pytest.xfail(reason)
    CHECKS[check](cls, {"device": "cuda"})


@pytest.mark.parametrize("name", DEEP)
def test_training_runs_on_the_gpu_and_codes_are_sane(name):
    """device='cuda' really allocates on the GPU, and the GPU model's MAP is close to the CPU model's."""
    cls = get_method(name)
    data = check_data()
    img, txt, lab, labeled = data.train
    q_img, q_txt, q_lab = data.query
    d_img, d_txt, d_lab = data.database
    maps = {}
    for device in ("cpu", "cuda"):
        # Measured relative to what this process already holds (earlier tests may leave tensors behind).
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
        h = cls(n_bits=16, device=device, random_state=0, **cls.check_params).fit(img, txt, lab, labeled)
        used = torch.cuda.max_memory_allocated() - held
        assert (used > 0) == (device == "cuda"), f"{name} on {device}: GPU bytes allocated {used}"
        i2t = mean_average_precision(h.encode_image(q_img), h.encode_text(d_txt), q_lab, d_lab).value
        t2i = mean_average_precision(h.encode_text(q_txt), h.encode_image(d_img), q_lab, d_lab).value
        maps[device] = np.array([i2t, t2i])
    print(name, {k: v.round(4).tolist() for k, v in maps.items()})
    # Different random streams per device: agreement within a few MAP points, not equality.
    assert np.all(np.abs(maps["cpu"] - maps["cuda"]) < 0.08), maps
