"""Image backbones (methods/backbones.py): CNN-F against an independent NumPy forward pass of MatConvNet's
definitions, the imagenet-vgg-f.mat reader (MATLAB v5 and v7.3), torchvision backbones, freeze, errors."""
import sys
import types

import numpy as np
import pytest
import scipy.io
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from benchmark.errors import DataFileError, InputError
from datasets._io import mat_kind
from methods import backbones as bb
from methods.backbones import CNNF, MatConvNetLRN, build_backbone, load_matconvnet

h5py = pytest.importorskip("h5py")


# ---------------------------------------------------------------- the MatConvNet layout, written as MATLAB would

class StructArray(list):
    """A 1xN MATLAB struct array (every element has the same fields), as opposed to a cell of structs."""


def _conv_layer(name, filters, biases, stride, pad):
    return {"name": name, "type": "conv", "weights": [filters, biases.reshape(1, -1)],
            "size": np.array([filters.shape], dtype=np.float64), "pad": np.array([pad], dtype=np.float64),
            "stride": np.array([stride], dtype=np.float64), "precious": np.array([[False]]),
            "dilate": np.array([[1.0, 1.0]]), "opts": []}


def make_vggf(seed=0, input_size=96, widths=(4096, 4096), n_classes=1000, mean="image",
              old_layout=False, lrn=(5.0, 2.0, 1e-4, 0.75)):
    """The variables of an imagenet-vgg-f.mat with random single-precision weights, in MATLAB's index
    order (filters H x W x Cin x Cout), layer for layer as MatConvNet's simplenn file lists them."""
    rng = np.random.default_rng(seed)
    m = bb._cnnf_map_size(input_size)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 256), (3, 3, 256, 256), (3, 3, 256, 256), (3, 3, 256, 256),
              (m, m, 256, widths[0]), (1, 1, widths[0], widths[1]), (1, 1, widths[1], n_classes)]
    ws = []
    for shp in shapes:
        fan_in = shp[0] * shp[1] * shp[2]
        # He scaling keeps activations at the input's magnitude (~100), where LRN's denominator
        # (2 + 1e-4 * sum x^2)^0.75 is far from constant: the test exercises every LRN constant.
        w = (rng.standard_normal(shp) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(shp[3]) * 0.5).astype(np.float32)
        ws.append((w, b))
    conv_specs = [("conv1", [4, 4], [0, 0, 0, 0]), ("conv2", [1, 1], [2, 2, 2, 2]), ("conv3", [1, 1], [1, 1, 1, 1]),
                  ("conv4", [1, 1], [1, 1, 1, 1]), ("conv5", [1, 1], [1, 1, 1, 1]), ("fc6", [1, 1], [0, 0, 0, 0]),
                  ("fc7", [1, 1], [0, 0, 0, 0]), ("fc8", [1, 1], [0, 0, 0, 0])]
    convs = {name: _conv_layer(name, w, b, st, pad) for (name, st, pad), (w, b) in zip(conv_specs, ws)}

    def relu(name):
        return {"name": name, "type": "relu", "leak": np.array([[0.0]]), "precious": np.array([[False]])}

    def norm(name):
        return {"name": name, "type": "normalize" if old_layout else "lrn", "param": np.array([lrn]),
                "precious": np.array([[False]])}

    def pool(name):
        return {"name": name, "type": "pool", "method": "max", "pool": np.array([[3.0, 3.0]]),
                "stride": np.array([[2.0, 2.0]]), "pad": np.array([[0.0, 1.0, 0.0, 1.0]]), "opts": [],
                "precious": np.array([[False]])}

    layers = [convs["conv1"], relu("relu1"), norm("norm1"), pool("pool1"), convs["conv2"], relu("relu2"),
              norm("norm2"), pool("pool2"), convs["conv3"], relu("relu3"), convs["conv4"], relu("relu4"),
              convs["conv5"], relu("relu5"), pool("pool5"), convs["fc6"], relu("relu6"), convs["fc7"],
              relu("relu7"), convs["fc8"], {"name": "prob", "type": "softmax", "precious": np.array([[False]])}]
    if old_layout:  # MatConvNet before beta 16: 'filters' and 'biases' instead of 'weights'
        for layer in layers:
            if "weights" in layer:
                layer["filters"], layer["biases"] = layer.pop("weights")
    avg = rng.uniform(60, 190, size=(input_size, input_size, 3)).astype(np.float32)
    if mean == "channel":
        avg = avg.mean(axis=(0, 1), keepdims=True)      # 1 x 1 x 3
    normalization = {"averageImage": avg, "imageSize": np.array([[input_size, input_size, 3.0]]),
                     "border": np.array([[32.0, 32.0]]), "interpolation": "bilinear", "keepAspect": np.array([[True]])}
    if old_layout:
        return {"layers": layers, "normalization": normalization, "classes": {"name": ["a", "b"]}}
    return {"layers": layers, "meta": {"normalization": normalization, "classes": {"name": ["a", "b"]}}}


def _to_v5(v):
    if isinstance(v, StructArray):
        fields = list(v[0])
        arr = np.empty((1, len(v)), dtype=[(k, object) for k in fields])
        for i, item in enumerate(v):
            for k in fields:
                arr[0, i][k] = _to_v5(item[k])
        return arr
    if isinstance(v, dict):
        return {k: _to_v5(x) for k, x in v.items()}
    if isinstance(v, list):
        arr = np.empty((1, len(v)), dtype=object)
        for i, x in enumerate(v):
            arr[0, i] = _to_v5(x)
        return arr
    return v


def write_v5(path, variables):
    scipy.io.savemat(path, _to_v5(variables), format="5", do_compression=False)


_MATLAB_CLASS = {"float64": "double", "float32": "single", "uint8": "uint8", "int32": "int32", "uint16": "uint16"}


def write_v73(path, variables):
    """A MATLAB v7.3 MAT-file as MATLAB writes it: HDF5 with a 512-byte MATLAB header; arrays with
    their axes reversed (column-major); structs as groups (a struct array's fields as arrays of
    references); cells as arrays of references into '#refs#'; chars as uint16; empties as their dims."""
    counter = [0]

    def attrs(obj, cls, **extra):
        obj.attrs["MATLAB_class"] = np.bytes_(cls)
        for k, val in extra.items():
            obj.attrs[k] = val

    def stash(f, value):
        counter[0] += 1
        name = f"r{counter[0]}"
        write(f, f["#refs#"], name, value)
        return f["#refs#"][name].ref

    def write(f, parent, name, value):
        if isinstance(value, StructArray):
            g = parent.create_group(name)
            attrs(g, "struct")
            for k in value[0]:
                refs = np.empty((len(value), 1), dtype=h5py.ref_dtype)   # MATLAB 1xN -> HDF5 (N, 1)
                for i, item in enumerate(value):
                    refs[i, 0] = stash(f, item[k])
                g.create_dataset(k, data=refs)                          # no MATLAB_class: struct-array field
        elif isinstance(value, dict):
            g = parent.create_group(name)
            attrs(g, "struct")
            dt = h5py.vlen_dtype(np.dtype("S1"))
            fields = np.empty(len(value), dtype=dt)
            for i, k in enumerate(value):
                fields[i] = np.frombuffer(k.encode(), dtype="S1")
            g.attrs.create("MATLAB_fields", fields, dtype=dt)
            for k, v in value.items():
                write(f, g, k, v)
        elif isinstance(value, list):
            if not value:
                ds = parent.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
                attrs(ds, "cell", MATLAB_empty=np.uint8(1))
            else:
                refs = np.empty((len(value), 1), dtype=h5py.ref_dtype)
                for i, v in enumerate(value):
                    refs[i, 0] = stash(f, v)
                attrs(parent.create_dataset(name, data=refs), "cell")
        elif isinstance(value, str):
            if not value:
                ds = parent.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
                attrs(ds, "char", MATLAB_empty=np.uint8(1))
            else:
                codes = np.array([[ord(c)] for c in value], dtype=np.uint16)      # 1xN -> (N, 1)
                attrs(parent.create_dataset(name, data=codes), "char", MATLAB_int_decode=np.int32(2))
        else:
            arr = np.asarray(value)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1)
            if arr.size == 0:
                ds = parent.create_dataset(name, data=np.array(arr.shape, dtype=np.uint64))
                attrs(ds, _MATLAB_CLASS.get(arr.dtype.name, "double"), MATLAB_empty=np.uint8(1))
            elif arr.dtype == bool:
                attrs(parent.create_dataset(name, data=arr.T.astype(np.uint8)), "logical", MATLAB_int_decode=np.int32(1))
            else:
                attrs(parent.create_dataset(name, data=arr.T), _MATLAB_CLASS[arr.dtype.name])

    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_group("#refs#")
        for k, v in variables.items():
            write(f, f, k, v)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Dec  6 12:00:00 2026 HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))


WRITERS = {"v5": write_v5, "v73": write_v73}


# ---------------------------------------------------------------- an independent forward pass (NumPy, float64)

def np_conv(x, f, b, stride, pad):
    """MatConvNet's vl_nnconv on one H x W x C image: y(i,j,k) = b(k) + sum_{u,v,c} f(u,v,c,k)
    x(S i + u - P_top, S j + v - P_left, c), zero padding [top bottom left right] (manual s. Convolution)."""
    t, bo, le, r = pad
    xp = np.pad(x, ((t, bo), (le, r), (0, 0)))
    win = sliding_window_view(xp, f.shape[:2], axis=(0, 1))[::stride, ::stride]   # (H', W', C, kh, kw)
    return np.einsum("ijcuv,uvck->ijk", win, f, optimize=True) + b


def np_lrn(x, n, kappa, alpha, beta):
    """vl_nnnormalize: y_k = x_k / (kappa + alpha * sum_{q in Q(k)} x_q^2)^beta, alpha not divided by n,
    Q(k) = [k - floor((n-1)/2), k + ceil((n-1)/2)] within the channels."""
    d = x.shape[-1]
    out = np.empty_like(x)
    for k in range(d):
        lo, hi = max(0, k - (n - 1) // 2), min(d - 1, k + n // 2)
        out[..., k] = x[..., k] / (kappa + alpha * (x[..., lo:hi + 1] ** 2).sum(-1)) ** beta
    return out


def np_maxpool(x, size, stride, pad):
    """vl_nnpool max: padding [top bottom left right] never wins a max (extends x with -inf)."""
    t, bo, le, r = pad
    lead = [(0, 0)] * (x.ndim - 3)                        # a batch axis in front, if any
    xp = np.pad(x, lead + [(t, bo), (le, r), (0, 0)], constant_values=-np.inf)
    win = sliding_window_view(xp, (size, size), axis=(-3, -2))
    return win[..., ::stride, ::stride, :, :, :].max(axis=(-2, -1))


def np_cnnf(variables, image_hwc):
    """imagenet-vgg-f's simplenn forward from conv1 to relu7 on one 0..255 RGB image, read straight off
    the MATLAB-layout variables, with MatConvNet's normalisation (image minus averageImage)."""
    meta = variables.get("meta", variables)
    x = image_hwc.astype(np.float64) - meta["normalization"]["averageImage"].astype(np.float64)
    for layer in variables["layers"]:
        kind = layer["type"]
        if kind == "conv":
            f, b = layer["weights"] if "weights" in layer else (layer["filters"], layer["biases"])
            if layer["name"] == "fc8":
                break
            x = np_conv(x, f.astype(np.float64), b.astype(np.float64).ravel(),
                        int(layer["stride"].ravel()[0]), [int(p) for p in layer["pad"].ravel()])
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        elif kind in ("lrn", "normalize"):
            n, kappa, alpha, beta = layer["param"].ravel()
            x = np_lrn(x, int(n), kappa, alpha, beta)
        elif kind == "pool":
            x = np_maxpool(x, 3, int(layer["stride"].ravel()[0]), [int(p) for p in layer["pad"].ravel()])
    return x.reshape(-1)


def torch_input(net, images_hwc):
    x = torch.from_numpy(np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2))).double()
    mean = torch.from_numpy(net.pixel_mean).double()
    mean = mean[:, None, None] if mean.ndim == 1 else mean
    return (x - mean) / torch.from_numpy(net.pixel_std).double()[:, None, None]


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).integers(0, 256, size=(2, 96, 96, 3)).astype(np.float64)


def _files(d, variables):
    paths = {}
    for kind, write in WRITERS.items():
        paths[kind] = d / f"imagenet-vgg-f-{kind}.mat"
        write(paths[kind], variables)
    return variables, paths


@pytest.fixture(scope="module")
def real_width_files(tmp_path_factory):
    """imagenet-vgg-f.mat at 96 x 96 with CNN-F's real layer shapes (fc6 2x2x256x4096, fc7 4096, fc8 1000)."""
    return _files(tmp_path_factory.mktemp("vggf"), make_vggf(seed=1, input_size=96))


@pytest.fixture(scope="module")
def real_width_ref(real_width_files, images):
    return np.stack([np_cnnf(real_width_files[0], im) for im in images])


@pytest.fixture(scope="module")
def narrow_files(tmp_path_factory):
    """The same layout with narrow fc layers (fc6 2x2x256x32, fc7 16): the conv filters are CNN-F's."""
    return _files(tmp_path_factory.mktemp("narrow"), make_vggf(seed=6, input_size=96, widths=(32, 16), n_classes=5))


# ---------------------------------------------------------------- the loaded network against the reference

@pytest.mark.parametrize("kind", ["v5", "v73"])
def test_loaded_cnnf_matches_the_numpy_forward_pass_to_1e_5(real_width_files, real_width_ref, images, kind):
    _, paths = real_width_files
    assert mat_kind(paths[kind]) == kind                # the writer made the format it claims
    net = build_backbone("cnnf", weights=paths[kind]).eval()
    assert (net.input_size, net.map_size, net.out_features, net.fc6.in_features) == (96, 2, 4096, 1024)
    ref = real_width_ref
    assert (ref > 0).mean() > 0.2                       # the random net is alive at fc7
    with torch.no_grad():
        out32 = net(torch_input(net, images).float()).numpy()
        out64 = net.double()(torch_input(net, images)).numpy()
    assert out32.shape == (2, 4096) and out32.dtype == np.float32
    assert rel_err(out32, ref) < 1e-5                   # the acceptance tolerance, float32 network
    assert rel_err(out64, ref) < 1e-10                  # same arithmetic in float64: exact up to rounding


@pytest.mark.parametrize("wrong", ["transpose_hw", "flip", "swap_in_out"])
def test_a_wrong_filter_layout_fails_the_comparison(narrow_files, images, monkeypatch, wrong):
    """The comparison above can fail: loading a file with the kernel transposed (H <-> W), flipped
    (convolution instead of MatConvNet's correlation) or with Cin and Cout swapped moves the output
    far beyond 1e-5, while the right layout matches."""
    variables, paths = narrow_files
    ref = np.stack([np_cnnf(variables, im) for im in images])
    net = build_backbone("cnnf", weights=paths["v5"]).eval().double()
    with torch.no_grad():
        assert rel_err(net(torch_input(net, images)).numpy(), ref) < 1e-10
    good = bb._conv_to_torch
    bad = {"transpose_hw": lambda f: np.ascontiguousarray(np.transpose(f, (3, 2, 1, 0))),
           "flip": lambda f: np.ascontiguousarray(good(f)[:, :, ::-1, ::-1]),
           # Cin and Cout swapped where the shapes allow it (conv3 .. conv5)
           "swap_in_out": lambda f: good(f) if f.shape[2] != f.shape[3] else np.ascontiguousarray(
               np.transpose(f, (2, 3, 0, 1)))}
    monkeypatch.setattr(bb, "_conv_to_torch", bad[wrong])
    net = build_backbone("cnnf", weights=paths["v5"]).eval().double()
    with torch.no_grad():
        out = net(torch_input(net, images)).numpy()
    assert rel_err(out, ref) > 1e-2


def test_an_asymmetric_one_hot_kernel_picks_the_pixel_matconvnet_defines(tmp_path):
    """conv1 with f(2, 8, 3, 1) = 1 (MATLAB's 1-based indices) and nothing else gives, at output (i, j),
    x(4 (i-1) + 2, 4 (j-1) + 8, 3): row offset from the filter's first axis, column from its second,
    no flip. Read through both file formats."""
    variables = make_vggf(seed=2, input_size=64, widths=(16, 8))
    f = np.zeros((11, 11, 3, 64), np.float32)
    f[1, 7, 2, 0] = 1.0
    variables["layers"][0]["weights"] = [f, np.zeros((1, 64), np.float32)]
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    for kind, write in WRITERS.items():
        path = tmp_path / f"onehot-{kind}.mat"
        write(path, variables)
        net = build_backbone("cnnf", weights=path).double()
        with torch.no_grad():
            y = net.conv1(x)[0, 0]
        assert y.shape == (14, 14)
        assert torch.equal(y, x[0, 2, 1:1 + 4 * 13 + 1:4, 7:7 + 4 * 13 + 1:4])
        assert not torch.equal(y, x[0, 2, 7:7 + 4 * 13 + 1:4, 1:1 + 4 * 13 + 1:4])   # the transposed pick


@pytest.mark.parametrize("kind", ["v5", "v73"])
@pytest.mark.parametrize("variant", ["old_layout", "struct_array", "net_wrapper", "channel_mean"])
def test_layout_variants_load_and_match(tmp_path, images, kind, variant):
    """Old MatConvNet files (top-level normalization, 'normalize', filters/biases), layers as a struct
    array, everything inside a 'net' struct, and a 1x1x3 average colour all read the same way."""
    variables = make_vggf(seed=3, input_size=96, widths=(32, 16), n_classes=5,
                          old_layout=variant == "old_layout", mean="channel" if variant == "channel_mean" else "image")
    stored = variables
    if variant == "struct_array":
        fields = sorted({k for layer in variables["layers"] for k in layer})
        unified = StructArray({k: layer.get(k, np.zeros((0, 0))) for k in fields} for layer in variables["layers"])
        stored = {**variables, "layers": unified}
    elif variant == "net_wrapper":
        stored = {"net": variables}
    path = tmp_path / f"{variant}.mat"
    WRITERS[kind](path, stored)
    layers, meta = load_matconvnet(path)
    assert [layer["name"] for layer in layers][:4] == ["conv1", "relu1", "norm1", "pool1"]
    assert isinstance(meta["normalization"], dict)
    net = build_backbone("cnnf", weights=path).eval().double()
    assert net.out_features == 16
    assert net.pixel_mean.shape == ((3,) if variant == "channel_mean" else (3, 96, 96))
    ref = np.stack([np_cnnf(variables, im) for im in images])
    with torch.no_grad():
        assert rel_err(net(torch_input(net, images)).numpy(), ref) < 1e-10


def test_reader_returns_matlab_index_order_in_both_formats(tmp_path):
    variables = make_vggf(seed=4, input_size=64, widths=(8, 8), n_classes=3)
    out = {}
    for kind, write in WRITERS.items():
        write(tmp_path / f"{kind}.mat", variables)
        out[kind] = load_matconvnet(tmp_path / f"{kind}.mat")
    for kind, (layers, meta) in out.items():
        w, b = layers[0]["weights"]
        assert w.shape == (11, 11, 3, 64) and w.dtype == np.float32
        np.testing.assert_array_equal(w, variables["layers"][0]["weights"][0])
        np.testing.assert_array_equal(b.ravel(), variables["layers"][0]["weights"][1].ravel())
        np.testing.assert_array_equal(meta["normalization"]["averageImage"],
                                      variables["meta"]["normalization"]["averageImage"])
        assert layers[3]["method"] == "max" and layers[2]["type"] == "lrn"
        assert layers[0]["opts"] == []                   # an empty cell
        np.testing.assert_array_equal(np.asarray(layers[3]["pad"]).ravel(), [0, 1, 0, 1])
        assert meta["normalization"]["interpolation"] == "bilinear"


def test_pixel_mean_keeps_the_average_image_orientation(narrow_files):
    variables, paths = narrow_files
    avg = variables["meta"]["normalization"]["averageImage"]
    for path in paths.values():
        net = build_backbone("cnnf", weights=path)
        assert net.pixel_mean.dtype == np.float32 and net.pixel_mean.shape == (3, 96, 96)
        np.testing.assert_array_equal(net.pixel_mean, avg.transpose(2, 0, 1))
        np.testing.assert_array_equal(net.pixel_std, np.ones(3, np.float32))


# ---------------------------------------------------------------- the blocks

@pytest.mark.parametrize("n", [1, 4, 5, 6])
def test_lrn_is_matconvnets_formula_not_torchs(n):
    x = torch.randn(2, 9, 3, 4, dtype=torch.float64) * 60
    got = MatConvNetLRN(n, 2.0, 1e-4, 0.75)(x).numpy()
    ref = np_lrn(x.numpy().transpose(0, 2, 3, 1), n, 2.0, 1e-4, 0.75).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # torch's LocalResponseNorm divides alpha by the window: it needs alpha * n to agree (odd n only,
    # since its even windows lean the other way), and without that it does not.
    if n % 2:
        np.testing.assert_allclose(nn.LocalResponseNorm(n, 1e-4 * n, 0.75, 2.0)(x).numpy(), ref, rtol=1e-12)
    if n > 1:
        assert np.abs(nn.LocalResponseNorm(n, 1e-4, 0.75, 2.0)(x).numpy() - ref).max() > 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize("side", [54, 27, 13, 14, 7, 3])
def test_pool_pad_0101_equals_the_reference_and_ceil_mode(side):
    x = torch.randn(2, 4, side, side, dtype=torch.float64)
    got = bb._MaxPool()(x).numpy()
    ref = np_maxpool(x.numpy().transpose(0, 2, 3, 1), 3, 2, (0, 1, 0, 1)).transpose(0, 3, 1, 2)
    assert got.shape[-1] == (side - 2) // 2 + 1
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, nn.functional.max_pool2d(x, 3, 2, ceil_mode=True).numpy())


@pytest.mark.parametrize("size,m", [(64, 1), (96, 2), (128, 3), (224, 6)])
def test_cnnf_any_input_size_and_the_contract_attributes(size, m):
    net = build_backbone("cnnf", input_size=size)
    assert isinstance(net, CNNF) and net.ends_with_fc7
    assert (net.input_size, net.map_size, net.fc6.in_features, net.out_features) == (size, m, 256 * m * m, 4096)
    assert net.pixel_mean is None and net.pixel_std is None
    assert all(p.requires_grad for p in net.parameters())
    if size <= 96:
        net.eval()
        x = torch.randn(2, 3, size, size) * 50
        with torch.no_grad():
            y = net(x)
        assert y.shape == (2, 4096) and torch.all(y >= 0) and torch.equal(y, net(x))


def test_cnnf_default_is_224_and_flops():
    net = build_backbone("cnnf")
    assert net.input_size == 224 and net.fc6.in_features == 9216
    # conv1 54^2*64*363, conv2 27^2*256*1600, conv3-5 3*13^2*256*2304, fc6 9216*4096, fc7 4096^2 multiply-adds
    macs = 54 ** 2 * 64 * 363 + 27 ** 2 * 256 * 1600 + 3 * 13 ** 2 * 256 * 2304 + 9216 * 4096 + 4096 ** 2
    assert net.flops() == 2 * macs


def test_dropout_only_in_training():
    torch.manual_seed(0)
    net = CNNF(64, dropout=0.5, fc_widths=(256, 256))
    x = torch.randn(3, 3, 64, 64) * 50
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    no_drop = CNNF(64, dropout=0.0, fc_widths=(256, 256)).train()
    assert torch.equal(no_drop(x), no_drop(x))


def test_freeze_sets_requires_grad_false_everywhere(narrow_files):
    _, paths = narrow_files
    for net in (build_backbone("cnnf", input_size=64, freeze=True),
                build_backbone("cnnf", weights=paths["v73"], freeze=True)):
        assert len(list(net.parameters())) == 14 and not any(p.requires_grad for p in net.parameters())
    # the default fine-tunes: gradients reach every parameter, of a random and of a loaded network
    for net, size in ((CNNF(64, fc_widths=(32, 16)), 64), (build_backbone("cnnf", weights=paths["v5"]), 96)):
        assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
        net(torch.randn(2, 3, size, size) * 50).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# ---------------------------------------------------------------- errors: one line, naming the input

def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_bad_names_and_sizes():
    with pytest.raises(InputError) as e:
        build_backbone("alexnet")
    assert "cnnf" in _one_line(e) and "torchvision:" in _one_line(e)
    for bad in (0, -3, 2.5, True, "224"):
        with pytest.raises(InputError):
            build_backbone("cnnf", input_size=bad)
    with pytest.raises(InputError) as e:
        build_backbone("cnnf", input_size=38)
    assert ">= 39" in _one_line(e)
    assert build_backbone("cnnf", input_size=39).map_size == 1
    with pytest.raises(InputError):
        CNNF(64, dropout=1.0)


def test_bad_weight_files(tmp_path):
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=tmp_path / "missing.mat")
    assert "missing.mat" in _one_line(e) and "imagenet-vgg-f.mat" in _one_line(e)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all" * 20)
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=junk)
    assert "junk.mat" in _one_line(e)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"XAll": np.zeros((3, 4))})
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=other)
    assert "layers" in _one_line(e)
    with pytest.raises(InputError):
        build_backbone("cnnf", weights=12)


@pytest.mark.parametrize("kind", ["v5", "v73"])
def test_a_file_that_is_not_cnnf_is_refused(tmp_path, kind):
    variables = make_vggf(seed=5, input_size=64, widths=(8, 8), n_classes=3)
    variables["layers"][0]["stride"] = np.array([[2.0, 2.0]])
    WRITERS[kind](tmp_path / "s.mat", variables)
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=tmp_path / "s.mat")
    assert "conv1" in _one_line(e) and "stride" in _one_line(e)
    variables = make_vggf(seed=5, input_size=64, widths=(8, 8), n_classes=3)
    variables["layers"][3]["pad"] = np.array([[0.0, 0.0, 0.0, 0.0]])
    WRITERS[kind](tmp_path / "p.mat", variables)
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=tmp_path / "p.mat")
    assert "pool1" in _one_line(e)
    variables = make_vggf(seed=5, input_size=64, widths=(8, 8), n_classes=3)
    del variables["layers"][2]                           # no norm1
    WRITERS[kind](tmp_path / "t.mat", variables)
    with pytest.raises(DataFileError) as e:
        build_backbone("cnnf", weights=tmp_path / "t.mat")
    assert "types" in _one_line(e)


def test_input_size_must_fit_the_files_fc6(real_width_files):
    _, paths = real_width_files
    with pytest.raises(InputError) as e:
        build_backbone("cnnf", weights=paths["v5"], input_size=224)
    assert "input_size=224" in _one_line(e) and "96" in _one_line(e)
    # a size with the same pool5 map is accepted, and the average image is resized to it
    net = build_backbone("cnnf", weights=paths["v5"], input_size=98)
    assert net.map_size == 2 and net.pixel_mean.shape == (3, 98, 98)


def test_v73_without_h5py_names_the_install(real_width_files, monkeypatch):
    _, paths = real_width_files
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataFileError) as e:
        load_matconvnet(paths["v73"])
    assert "pip install h5py" in _one_line(e)


# ---------------------------------------------------------------- torchvision backbones

class _TinyClassifier(nn.Module):
    def __init__(self, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Dropout(dropout), nn.Linear(6, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture
def fake_torchvision(monkeypatch):
    """A stand-in torchvision with one classification model, so that the backbone logic is tested
    where torchvision is absent or does not match the installed torch."""
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    calls = []

    def get_model(name, weights=None, **kw):
        calls.append((name, weights, kw))
        assert weights is None                           # never ask torchvision for (downloaded) weights
        return _TinyClassifier(**kw)

    models.list_models = lambda module=None: ["vgg_tiny"]
    models.get_model = get_model
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def test_torchvision_backbone_drops_the_classifier_and_loads_weights(fake_torchvision, tmp_path):
    torch.manual_seed(3)
    src = _TinyClassifier()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    net = build_backbone("torchvision:vgg_tiny", weights=tmp_path / "w.pth", dropout=0.25)
    assert fake_torchvision == [("vgg_tiny", None, {"dropout": 0.25})]
    assert (net.out_features, net.input_size, net.ends_with_fc7) == (6, 224, True)
    np.testing.assert_allclose(net.pixel_mean, [123.675, 116.28, 103.53], rtol=1e-6)
    np.testing.assert_allclose(net.pixel_std, [58.395, 57.12, 57.375], rtol=1e-6)
    x = torch.randn(2, 3, 32, 32)
    net.eval(), src.eval()
    with torch.no_grad():
        want = src.classifier[:3](torch.flatten(src.features(x), 1))   # penultimate activations
        assert torch.allclose(net(x), want)
    # a headless state dict (no classifier output layer) is fine too
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("classifier.3")}
    torch.save(sd, tmp_path / "headless.pth")
    assert build_backbone("torchvision:vgg_tiny", weights=tmp_path / "headless.pth", input_size=64).input_size == 64
    frozen = build_backbone("torchvision:vgg_tiny", freeze=True)
    assert frozen.pixel_mean is None and not any(p.requires_grad for p in frozen.parameters())


def test_torchvision_errors(fake_torchvision, tmp_path):
    with pytest.raises(InputError) as e:
        build_backbone("torchvision:resnet9000")
    assert "resnet9000" in _one_line(e) and "vgg_tiny" in _one_line(e)
    with pytest.raises(DataFileError) as e:
        build_backbone("torchvision:vgg_tiny", weights=tmp_path / "nope.pth")
    assert "nope.pth" in _one_line(e)
    torch.save({"features.9.weight": torch.zeros(2)}, tmp_path / "wrong.pth")
    with pytest.raises(DataFileError) as e:
        build_backbone("torchvision:vgg_tiny", weights=tmp_path / "wrong.pth")
    assert "does not match" in _one_line(e)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DataFileError) as e:
        build_backbone("torchvision:vgg_tiny", weights=tmp_path / "junk.pth")
    assert "junk.pth" in _one_line(e)


def test_missing_torchvision_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(InputError) as e:
        build_backbone("torchvision:resnet18")
    assert "pip install" in _one_line(e) and "[vision]" in _one_line(e)


def _real_torchvision():
    try:
        import torchvision.models as models
    except Exception:  # not installed, or a build that does not match this torch
        pytest.skip("torchvision is not importable here (optional extra [vision])")
    return models


def test_real_torchvision_resnet18(tmp_path):
    models = _real_torchvision()
    torch.manual_seed(0)
    src = models.resnet18(weights=None)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    net = build_backbone("torchvision:resnet18", weights=tmp_path / "r18.pth").eval()
    assert net.out_features == 512 and net.input_size == 224
    src.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), src.eval()(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cnnf_on_cuda_matches_cpu(real_width_files, images):
    _, paths = real_width_files
    net = build_backbone("cnnf", weights=paths["v5"]).eval()
    x = torch_input(net, images).float()
    with torch.no_grad():
        cpu = net(x)
        gpu = net.cuda()(x.cuda()).cpu()
    assert rel_err(gpu.numpy(), cpu.numpy().astype(np.float64)) < 1e-3


def test_cnnf_from_scratch_is_he_initialised_so_fc7_varies_across_images():
    """With torch's per-layer default init, fc7 of an untrained CNN-F is nearly the same for every image
    (its spread ~1e-4 sits under biases of ~1e-2), so every image gets one code; He init with zero biases
    keeps the images apart."""
    torch.manual_seed(0)
    net = CNNF(64).eval()
    for layer in (net.conv1, net.conv2, net.conv3, net.conv4, net.conv5, net.fc6, net.fc7):
        assert not layer.bias.detach().any()
        fan_in = layer.weight[0].numel()
        assert layer.weight.detach().std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.05)
    x = torch.randn(32, 3, 64, 64)

    def spread():
        with torch.no_grad():
            f = net(x)
        return f.std(dim=0).mean().item() / f.mean().item()

    he = spread()
    for layer in (net.conv1, net.conv2, net.conv3, net.conv4, net.conv5, net.fc6, net.fc7):
        layer.reset_parameters()  # torch's default
    default = spread()
    assert he > 0.1 and he > 3 * default, (he, default)
