"""Image backbones on raw pixels: CNN-F (MatConvNet ``imagenet-vgg-f``) and torchvision models.

* :class:`CNNF`: CNN-F of Chatfield et al., "Return of the devil in the details" (BMVC 2014, Table 1),
  conv1 .. fc7, the image network of DCMH, RDCMH, CHN and CDQ.
* :func:`load_matconvnet`: reads a MatConvNet simplenn model (``imagenet-vgg-f.mat``), MATLAB v5
  (scipy) or v7.3 (HDF5, h5py), into plain Python: layer dicts and the ``meta`` dict.
* :func:`build_backbone`: ``"cnnf"`` or ``"torchvision:<model name>"``, with an optional local weights
  file (nothing is ever downloaded) and ``freeze``.

Every backbone returned by :func:`build_backbone` carries ``out_features``, ``input_size``,
``pixel_mean`` / ``pixel_std`` (0..255 scale, float32 numpy, or None) and ``ends_with_fc7 = True``;
its ``forward`` takes a normalised float tensor ``(b, 3, S, S)`` and returns ``(b, out_features)``.

Sources of every constant (cited again where used):

* [C14] Chatfield, Simonyan, Vedaldi, Zisserman, BMVC 2014, Table 1, column CNN-F.
* [MCN] MatConvNet manual (doc/blocks.tex): s. "Convolution" (correlation, filters H' x W' x D x D'',
  pad [top bottom left right]), s. "Spatial pooling" (max-pool padding acts as -inf) and the help
  text of ``vl_nnnormalize`` (``PARAM = [N KAPPA ALPHA BETA]``, no division of ALPHA by N).
* [DCMH] jiangqy/DCMH-CVPR2017, ``DCMH_tensorflow/net_structure_img.py``: reads ``imagenet-vgg-f.mat``
  (``layers``, ``normalization.averageImage``), pads conv/pool inputs as [top bottom left right],
  and uses LRN depth radius 2, bias 2, alpha 1e-4, beta 0.75, i.e. ``[5 2 1e-4 0.75]``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmhcore.errors import DataFileError, InputError
from methods.nets import Dropout

__all__ = ["CNNF", "MatConvNetLRN", "TorchvisionBackbone", "load_matconvnet", "build_backbone",
           "cnnf_weights_from_layers"]

# ImageNet's standard per-channel statistics (RGB) used by every torchvision classification model,
# on the 0..255 scale that the pixel pipeline works in.
IMAGENET_MEAN_255 = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD_255 = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0

# CNN-F's LRN as stored in imagenet-vgg-f.mat: [N KAPPA ALPHA BETA] = [5 2 1e-4 0.75] [DCMH]; this is
# Krizhevsky et al.'s n = 5, k = 2, alpha = 1e-4, beta = 0.75, which [C14] adopts for conv1 and conv2.
CNNF_LRN = (5, 2.0, 1e-4, 0.75)
# MatConvNet pads CNN-F's max-pools by [top bottom left right] = [0 1 0 1] (Caffe's ceil rounding of
# the output size, made explicit): 54 -> 27, 27 -> 13, 13 -> 6 at 224.
CNNF_POOL_PAD = (0, 1, 0, 1)
# The sequence of simplenn layer types from conv1 to relu7 ('normalize' is the old name of 'lrn').
_CNNF_TYPES = ("conv", "relu", "lrn", "pool", "conv", "relu", "lrn", "pool", "conv", "relu", "conv", "relu",
               "conv", "relu", "pool", "conv", "relu", "conv", "relu")
# (out channels, kernel, stride, pad) of conv1..conv5 [C14]: conv1 64x11x11 st. 4 pad 0; conv2 256x5x5
# st. 1 pad 2; conv3-5 256x3x3 st. 1 pad 1.
_CNNF_CONVS = ((64, 11, 4, 0), (256, 5, 1, 2), (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))


class MatConvNetLRN(nn.Module):
    """Cross-channel LRN exactly as MatConvNet's ``vl_nnnormalize`` with ``PARAM = [N KAPPA ALPHA BETA]``.

    ``y_k = x_k / (KAPPA + ALPHA * sum_{q in Q(k)} x_q^2) ^ BETA`` with the window
    ``Q(k) = [k - floor((N-1)/2), k + ceil((N-1)/2)]`` clipped to the channels [MCN]. ALPHA is *not*
    divided by N (``torch.nn.LocalResponseNorm`` divides it, and centres even windows the other way).
    """

    def __init__(self, n: int = 5, kappa: float = 2.0, alpha: float = 1e-4, beta: float = 0.75):
        super().__init__()
        self.n, self.kappa, self.alpha, self.beta = int(n), float(kappa), float(alpha), float(beta)

    def forward(self, x):
        lo, hi = (self.n - 1) // 2, self.n // 2          # floor((N-1)/2), ceil((N-1)/2)
        sq = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, lo, hi))
        # The window mean times N is the window sum (zero channels outside, as in the clipped window).
        win = F.avg_pool3d(sq, (self.n, 1, 1), stride=1).squeeze(1)
        return x / win.mul(self.alpha * self.n).add(self.kappa).pow(self.beta)

    def extra_repr(self) -> str:
        return f"param=[{self.n} {self.kappa:g} {self.alpha:g} {self.beta:g}]"


class _MaxPool(nn.Module):
    """3x3 max-pool, stride 2, with MatConvNet's asymmetric padding [top bottom left right] as -inf [MCN]."""

    def __init__(self, size: int = 3, stride: int = 2, pad=CNNF_POOL_PAD):
        super().__init__()
        self.size, self.stride, self.pad = int(size), int(stride), tuple(int(p) for p in pad)

    def forward(self, x):
        top, bottom, left, right = self.pad
        if any(self.pad):
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, pad={list(self.pad)}"


def _out_len(n: int, k: int, s: int, p_lo: int, p_hi: int) -> int:
    # [MCN] s. Convolution, "Output size": 1 + floor((H - H' + P- + P+) / S); same for pooling.
    return 1 + (n - k + p_lo + p_hi) // s


def _cnnf_map_size(input_size: int, pool_pad=CNNF_POOL_PAD) -> int:
    """Side of pool5's output map for a square input (6 at 224); < 1 means the input is too small."""
    s = int(input_size)
    for i, (_, k, st, p) in enumerate(_CNNF_CONVS):
        if s + 2 * p < k:
            return 0
        s = _out_len(s, k, st, p, p)
        if i in (0, 1, 4):                               # pool1, pool2, pool5
            if s + pool_pad[0] + pool_pad[1] < 3:
                return 0
            s = _out_len(s, 3, 2, pool_pad[0], pool_pad[1])
    return s


# The smallest input whose pool5 map is at least 1 x 1 (39).
CNNF_MIN_INPUT = next(s for s in range(1, 256) if _cnnf_map_size(s) >= 1)


class CNNF(nn.Module):
    """CNN-F (Chatfield et al. 2014, MatConvNet ``imagenet-vgg-f``): conv1 .. fc7 on raw pixels.

    Layers [C14, Table 1; MCN; DCMH]:

    * conv1 64 x 11x11, stride 4, pad 0; ReLU; LRN ``[5 2 1e-4 0.75]``; max-pool 3x3 stride 2 pad [0 1 0 1]
    * conv2 256 x 5x5, stride 1, pad 2; ReLU; LRN; max-pool (same)
    * conv3, conv4, conv5 256 x 3x3, stride 1, pad 1, each with ReLU; max-pool (same) -> 6 x 6 x 256 at 224
    * fc6 4096 (MatConvNet: a convolution over the whole pool5 map; here a linear layer on the flattened
      ``(256, m, m)`` map, m = 6 at 224); ReLU; dropout
    * fc7 4096; ReLU; dropout

    ``forward(x)``: ``x`` a float tensor ``(b, 3, S, S)``, already normalised (MatConvNet subtracts the
    average image of the 0..255 RGB input); returns the ``(b, 4096)`` fc7 activations after ReLU.
    Dropout acts in training mode only. Any ``input_size >= 39`` works: fc6's input width is
    ``256 * m * m`` with m the side of pool5's map (1 at 64, 2 at 96, 3 at 128, 6 at 224).

    Attributes: ``out_features`` (fc7's width), ``input_size``, ``pixel_mean`` / ``pixel_std``
    (float32 numpy on the 0..255 scale, or None: set from a weights file by :func:`build_backbone`),
    ``ends_with_fc7 = True``. ``fc_widths`` and ``lrn`` exist so that a file with other widths or LRN
    constants loads as stored; the defaults are CNN-F's.
    """

    ends_with_fc7 = True

    def __init__(self, input_size: int = 224, dropout: float = 0.5, *, fc_widths=(4096, 4096), lrn=CNNF_LRN):
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
            raise InputError(f"input_size={input_size!r} is invalid; valid: an integer >= {CNNF_MIN_INPUT}")
        m = _cnnf_map_size(int(input_size))
        if m < 1:
            raise InputError(f"input_size={input_size} is too small for CNN-F; valid: an integer >= {CNNF_MIN_INPUT}")
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout={dropout!r} is invalid; valid: a number in [0, 1)")
        self.input_size, self.map_size = int(input_size), m
        convs, c_in = [], 3
        for c_out, k, s, p in _CNNF_CONVS:
            convs.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
            c_in = c_out
        self.conv1, self.conv2, self.conv3, self.conv4, self.conv5 = convs
        self.norm1, self.norm2 = MatConvNetLRN(*lrn), MatConvNetLRN(*lrn)
        self.pool1, self.pool2, self.pool5 = _MaxPool(), _MaxPool(), _MaxPool()
        w6, w7 = (int(w) for w in fc_widths)
        self.fc6 = nn.Linear(256 * m * m, w6)
        self.fc7 = nn.Linear(w6, w7)
        self.drop6, self.drop7 = Dropout(dropout), Dropout(dropout)
        self.out_features = w7
        self.pixel_mean: np.ndarray | None = None
        self.pixel_std: np.ndarray | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation for training from scratch: He et al. (ICCV 2015) normal weights, std
        sqrt(2 / fan_in) (MatConvNet's ``xavierimproved``, its init for training ImageNet models), zero biases.

        torch's per-layer defaults (weights ~ U(+-1/sqrt(fan_in)) via kaiming_uniform with a = sqrt(5), and
        biases of the same range) shrink the signal by ~sqrt(3) per layer; after seven layers and two LRNs
        fc7's spread across images (~1e-4) is far below its biases (~0.01), so every image gets the same
        code until training undoes it. A weights file replaces all of this.
        """
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.fc6, self.fc7):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def features(self, x):
        """conv1 .. pool5: ``(b, 3, S, S)`` -> ``(b, 256, m, m)``."""
        x = self.pool1(self.norm1(torch.relu(self.conv1(x))))
        x = self.pool2(self.norm2(torch.relu(self.conv2(x))))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        return self.pool5(torch.relu(self.conv5(x)))

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)           # (c, h, w) order: see cnnf_weights_from_layers
        x = self.drop6(torch.relu(self.fc6(x)))
        return self.drop7(torch.relu(self.fc7(x)))

    def flops(self) -> int:
        """Forward FLOPs of one image: 2 per multiply-add of the convolutions and fc layers (bias, ReLU,
        LRN and pooling, under 1 % together, are not counted)."""
        total, s = 0, self.input_size
        for i, conv in enumerate((self.conv1, self.conv2, self.conv3, self.conv4, self.conv5)):
            k, st, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            s = _out_len(s, k, st, p, p)
            total += 2 * s * s * conv.out_channels * conv.in_channels * k * k
            if i in (0, 1, 4):
                s = _out_len(s, 3, 2, CNNF_POOL_PAD[0], CNNF_POOL_PAD[1])
        return total + 2 * (self.fc6.in_features * self.fc6.out_features + self.fc7.in_features * self.fc7.out_features)


# ---------------------------------------------------------------- MatConvNet files

def _weights_error(path, what: str) -> DataFileError:
    return DataFileError(f"weights={str(path)!r}: {what}")


def _check_file(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"weights={path!r} is invalid; valid: the path of a local weights file")
    p = Path(path)
    if not p.is_file():
        raise _weights_error(path, "no such file; pass the path of a local weights file "
                                   "(imagenet-vgg-f.mat for cnnf, a torch state dict for torchvision)")
    return p


def _v5_to_python(obj):
    """scipy.io.loadmat(struct_as_record=False, squeeze_me=False) objects -> dict / list / str / ndarray.

    A struct is a dict (a struct array of several elements, a list of dicts), a cell array a list in
    MATLAB's column-major element order, a char array a str, numbers an ndarray in MATLAB's index order.
    """
    from scipy.io.matlab import mat_struct

    if isinstance(obj, mat_struct):
        return {name: _v5_to_python(getattr(obj, name)) for name in obj._fieldnames}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            items = obj.ravel(order="F")
            if items.size and all(isinstance(v, mat_struct) for v in items):   # a struct (array)
                out = [_v5_to_python(v) for v in items]
                return out[0] if len(out) == 1 else out
            return [_v5_to_python(v) for v in items]                            # a cell array
        if obj.dtype.kind == "U":                        # chars_as_strings=True: an array of rows
            return "".join(obj.ravel(order="F").tolist())
        return obj
    if isinstance(obj, str):
        return obj
    return np.asarray(obj)


def _h5_to_python(f, obj):
    """An h5py object of a MATLAB v7.3 file -> dict / list / str / ndarray, as :func:`_v5_to_python`.

    MATLAB's v7.3 layout: a struct is a group of its fields, except a struct array of several elements,
    whose fields are arrays of object references without a MATLAB_class; a cell array is an array of
    references (MATLAB_class 'cell') into ``#refs#``; every array has its axes reversed (column-major);
    chars are uint16 codes; an empty array stores its dimensions and has the attribute MATLAB_empty.
    """
    import h5py

    def refs_of_struct_array(child) -> bool:
        return (isinstance(child, h5py.Dataset) and child.dtype == h5py.ref_dtype
                and "MATLAB_class" not in child.attrs)

    if isinstance(obj, h5py.Group):
        items = list(obj.items())
        if items and all(refs_of_struct_array(c) for _, c in items):
            cols = {k: [_h5_to_python(f, f[r]) for r in c[()].T.ravel(order="F")] for k, c in items}
            n = len(next(iter(cols.values())))
            out = [{k: v[i] for k, v in cols.items()} for i in range(n)]
            return out[0] if n == 1 else out
        return {k: _h5_to_python(f, c) for k, c in items}
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if "MATLAB_empty" in obj.attrs and int(np.asarray(obj.attrs["MATLAB_empty"]).ravel()[0]):
        return "" if cls == "char" else ([] if cls == "cell" else np.zeros((0, 0)))
    data = obj[()]
    if cls == "cell" or obj.dtype == h5py.ref_dtype:
        return [_h5_to_python(f, f[r]) for r in np.asarray(data).T.ravel(order="F")]
    arr = np.asarray(data).T                            # HDF5 sees MATLAB's column-major axes reversed
    if cls == "char":
        return "".join(chr(c) for c in arr.ravel(order="F"))
    if cls == "logical":
        return arr.astype(bool)
    return np.ascontiguousarray(arr)


_WANTED = ("layers", "meta", "normalization", "net")


def load_matconvnet(path) -> tuple[list[dict], dict]:
    """Read a MatConvNet simplenn model file (e.g. ``imagenet-vgg-f.mat``), MATLAB v5 or v7.3.

    Returns ``(layers, meta)``: ``layers`` a list of dicts (``type``, ``name``, ``weights`` = [filters,
    biases] as numpy arrays in MATLAB's index order, so a conv filter bank is ``H x W x Cin x Cout``,
    ``stride``, ``pad``, ``param``, ``method``, ``pool``, ...), ``meta`` a dict holding ``normalization``
    (``averageImage``, ``imageSize``, ...). Both the current layout (``meta.normalization``) and the
    older one (top-level ``normalization``), and either at top level or inside a ``net`` struct, are read.
    """
    from datasets._io import mat_kind

    p = _check_file(path)
    try:
        kind = mat_kind(p)
    except OSError as exc:
        raise _weights_error(path, f"cannot be read ({exc})") from None
    try:
        if kind == "v5":
            import scipy.io

            raw = scipy.io.loadmat(p, variable_names=list(_WANTED), struct_as_record=False,
                                   squeeze_me=False, chars_as_strings=True)
            tree = {k: _v5_to_python(raw[k]) for k in _WANTED if k in raw}
        else:
            try:
                import h5py
            except ImportError:
                raise _weights_error(path, "is a MATLAB v7.3 (HDF5) file and h5py is not installed; "
                                           "install it (pip install h5py)") from None
            with h5py.File(p, "r") as f:
                tree = {k: _h5_to_python(f, f[k]) for k in _WANTED if k in f}
    except DataFileError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for a damaged or foreign file
        detail = f"{type(exc).__name__}: {exc}".strip()[:200]
        raise _weights_error(path, f"cannot be read as a MATLAB .mat file (corrupt or wrong format; {detail})") from None
    if "layers" not in tree and isinstance(tree.get("net"), dict):
        tree = tree["net"]
    layers = tree.get("layers") if isinstance(tree, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise _weights_error(path, "has no MatConvNet 'layers' cell array of structs; "
                                   "expected a simplenn model such as imagenet-vgg-f.mat")
    meta = tree.get("meta") if isinstance(tree.get("meta"), dict) else {}
    meta = dict(meta)
    if "normalization" not in meta and isinstance(tree.get("normalization"), dict):
        meta["normalization"] = tree["normalization"]
    return layers, meta


def _vec(value, n: int, what: str, path) -> tuple[int, ...]:
    v = np.asarray(value, dtype=np.float64).ravel()
    if v.size == 1:
        v = np.repeat(v, n)
    if v.size != n or not np.all(v == np.round(v)):
        raise _weights_error(path, f"{what}={v.tolist()} is invalid (expected {n} integers)")
    return tuple(int(x) for x in v)


def _conv_to_torch(filters: np.ndarray) -> np.ndarray:
    """MatConvNet filters ``H x W x Cin x Cout`` (MATLAB index order) -> torch ``Cout x Cin x H x W``.

    Both MatConvNet and torch compute a correlation (no kernel flip): [MCN] s. Convolution,
    ``y(i'',j'',d'') = b(d'') + sum f(i',j',d',d'') x(S_h(i''-1)+i'-P_h^-, S_w(j''-1)+j'-P_w^-, d')``,
    where the first filter axis runs along the image's first (vertical) axis, like torch's ``H``.
    """
    return np.ascontiguousarray(np.transpose(filters, (3, 2, 0, 1)))


def _layer_type(layer: dict) -> str:
    t = str(layer.get("type", "")).strip().lower()
    return "lrn" if t == "normalize" else t


def _conv_arrays(layer: dict, path) -> tuple[np.ndarray, np.ndarray]:
    if "weights" in layer:
        w = layer["weights"]
        if not isinstance(w, list) or len(w) != 2:
            raise _weights_error(path, f"layer {layer.get('name', '?')!r}: 'weights' is not a cell {{filters, biases}}")
        filters, biases = w
    elif "filters" in layer and "biases" in layer:       # the layout of MatConvNet before beta 16
        filters, biases = layer["filters"], layer["biases"]
    else:
        raise _weights_error(path, f"layer {layer.get('name', '?')!r} has no weights")
    filters = np.asarray(filters)
    filters = filters.reshape(filters.shape + (1,) * (4 - filters.ndim))  # MATLAB drops trailing 1s
    return filters, np.asarray(biases).ravel()


def cnnf_weights_from_layers(layers: list[dict], path="<layers>") -> dict:
    """Check a simplenn layer list against CNN-F and convert it: returns ``state_dict`` (torch tensors,
    float32), ``lrn`` (the file's ``[N KAPPA ALPHA BETA]``), ``fc_widths`` and ``map_size`` (fc6's kernel)."""
    seq = [(i, _layer_type(layer)) for i, layer in enumerate(layers) if _layer_type(layer) != "dropout"]
    types = tuple(t for _, t in seq[:len(_CNNF_TYPES)])
    if types != _CNNF_TYPES:
        raise _weights_error(path, f"layer types {list(types)} are not CNN-F's {list(_CNNF_TYPES)}")
    picked = [layers[i] for i, _ in seq[:len(_CNNF_TYPES)]]
    convs = [layer for layer in picked if _layer_type(layer) == "conv"]
    state, c_in, lrn = {}, 3, None
    for j, layer in enumerate(convs):
        name = layer.get("name") or f"conv{j + 1}"
        filters, biases = _conv_arrays(layer, path)
        h, w, cin, cout = filters.shape
        stride = _vec(layer.get("stride", 1), 2, f"layer {name!r} stride", path)
        pad = _vec(layer.get("pad", 0), 4, f"layer {name!r} pad", path)
        if j < 5:
            want_out, k, s, p = _CNNF_CONVS[j]
            if (h, w, cin, cout) != (k, k, c_in, want_out) or stride != (s, s) or pad != (p,) * 4:
                raise _weights_error(path, f"layer {name!r} has filters {h}x{w}x{cin}x{cout}, stride {list(stride)}, "
                                           f"pad {list(pad)}; CNN-F's is {k}x{k}x{c_in}x{want_out}, stride {s}, pad {p}")
            key = f"conv{j + 1}"
        else:
            if h != w or stride != (1, 1) or pad != (0,) * 4 or cin != (256 if j == 5 else c_in):
                raise _weights_error(path, f"layer {name!r} has filters {h}x{w}x{cin}x{cout}, stride {list(stride)}, "
                                           f"pad {list(pad)}; expected a fully connected layer (square, stride 1, pad 0)")
            key = f"fc{j + 1}"
        if biases.size != cout:
            raise _weights_error(path, f"layer {name!r} has {biases.size} biases for {cout} filters")
        weight = _conv_to_torch(filters)
        if key.startswith("fc"):
            # fc6 is a convolution over the whole pool5 map: flattening its (Cin, H, W) slices in
            # C order matches torch.flatten of the (b, 256, m, m) map, element for element.
            weight = weight.reshape(cout, -1)
        state[f"{key}.weight"] = torch.from_numpy(np.asarray(weight, dtype=np.float32))
        state[f"{key}.bias"] = torch.from_numpy(np.asarray(biases, dtype=np.float32))
        c_in = cout
    for layer in picked:
        name = layer.get("name", "?")
        if _layer_type(layer) == "lrn":
            param = np.asarray(layer.get("param", []), dtype=np.float64).ravel()
            if param.size != 4 or param[0] < 1 or param[0] != round(param[0]):
                raise _weights_error(path, f"layer {name!r} LRN param={param.tolist()} is invalid "
                                           "(expected [N KAPPA ALPHA BETA])")
            this = (int(param[0]), float(param[1]), float(param[2]), float(param[3]))
            if lrn is not None and this != lrn:
                raise _weights_error(path, f"layers norm1 and norm2 differ ({list(lrn)} vs {list(this)}); "
                                           "CNN-F uses one LRN")
            lrn = this
        elif _layer_type(layer) == "pool":
            method = str(layer.get("method", "max")).lower()
            size = _vec(layer.get("pool", 3), 2, f"layer {name!r} pool", path)
            stride = _vec(layer.get("stride", 1), 2, f"layer {name!r} stride", path)
            pad = _vec(layer.get("pad", 0), 4, f"layer {name!r} pad", path)
            if method != "max" or size != (3, 3) or stride != (2, 2) or pad != CNNF_POOL_PAD:
                raise _weights_error(path, f"layer {name!r} is {method} pool {list(size)} stride {list(stride)} "
                                           f"pad {list(pad)}; "
                                           f"CNN-F's is max pool [3 3] stride [2 2] pad {list(CNNF_POOL_PAD)}")
    fc6 = state["fc6.weight"]
    map_size = int(round(math.sqrt(fc6.shape[1] / 256)))
    return {"state_dict": state, "lrn": lrn, "map_size": map_size,
            "fc_widths": (int(fc6.shape[0]), int(state["fc7.weight"].shape[0]))}


def _normalization(meta: dict, path) -> tuple[int | None, np.ndarray | None]:
    norm = meta.get("normalization") if isinstance(meta, dict) else None
    if not isinstance(norm, dict):
        return None, None
    size = None
    if "imageSize" in norm and np.asarray(norm["imageSize"]).size >= 2:
        hw = np.asarray(norm["imageSize"], dtype=np.float64).ravel()[:2]
        if hw[0] != hw[1]:
            raise _weights_error(path, f"normalization.imageSize={hw.tolist()} is not square; CNN-F takes square images")
        size = int(hw[0])
    mean = None
    avg = norm.get("averageImage")
    if avg is not None and np.asarray(avg).size > 0:
        avg = np.asarray(avg, dtype=np.float32)
        if avg.size == 3:                                # a 1x1x3 (or 3x1) per-channel mean
            mean = avg.ravel()
        elif avg.ndim == 3 and avg.shape[2] == 3:        # an H x W x 3 average image (MATLAB order)
            mean = np.ascontiguousarray(np.transpose(avg, (2, 0, 1)))
        else:
            raise _weights_error(path, f"normalization.averageImage has shape {list(avg.shape)}; expected HxWx3 or 1x1x3")
    return size, mean


def _resize_mean(mean: np.ndarray, size: int) -> np.ndarray:
    """Resize an average image (3, H, W) like the pixel pipeline resizes images (Pillow, bilinear):
    resizing is linear, so the mean of resized images is the resized mean image (up to uint8 rounding)."""
    from PIL import Image

    chans = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
             for c in mean]
    return np.stack(chans).astype(np.float32)


def _build_cnnf(weights, input_size, dropout) -> CNNF:
    if weights is None:
        return CNNF(224 if input_size is None else input_size, dropout)
    layers, meta = load_matconvnet(weights)
    conv = cnnf_weights_from_layers(layers, weights)
    file_size, mean = _normalization(meta, weights)
    size = input_size if input_size is not None else (file_size or 224)
    m = _cnnf_map_size(int(size)) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else None
    if m is not None and m != conv["map_size"]:
        raise InputError(f"input_size={size} does not fit {weights}: its fc6 spans a {conv['map_size']}x{conv['map_size']} "
                         f"pool5 map ({m}x{m} at {size}); pass input_size={file_size or 'None'} (the file's image size)")
    with torch.device("meta"):                           # no random initialisation to overwrite
        net = CNNF(size, dropout, fc_widths=conv["fc_widths"], lrn=conv["lrn"])
    net.load_state_dict(conv["state_dict"], strict=True, assign=True)
    if mean is not None and mean.ndim == 3 and mean.shape[1:] != (net.input_size, net.input_size):
        mean = _resize_mean(mean, net.input_size)
    # MatConvNet's preprocessing is x - averageImage on the 0..255 scale, with no division [DCMH].
    net.pixel_mean = mean
    net.pixel_std = None if mean is None else np.ones(3, dtype=np.float32)
    return net


# ---------------------------------------------------------------- torchvision backbones

class TorchvisionBackbone(nn.Module):
    """A torchvision classification model whose last linear layer (the classifier) is an identity, so
    that ``forward`` returns the penultimate features; auxiliary outputs (Inception, GoogLeNet) are dropped."""

    ends_with_fc7 = True

    def __init__(self, model: nn.Module, name: str, out_features: int, input_size: int):
        super().__init__()
        self.model, self.name = model, name
        self.out_features, self.input_size = int(out_features), int(input_size)
        self.pixel_mean: np.ndarray | None = None
        self.pixel_std: np.ndarray | None = None

    def forward(self, x):
        y = self.model(x)
        if isinstance(y, tuple):                         # InceptionOutputs / GoogLeNetOutputs in training
            y = y[0]
        return torch.flatten(y, 1)


def _import_torchvision():
    try:
        import torchvision  # noqa: F401
        import torchvision.models as models
    except Exception as exc:  # ImportError, or a build that does not match torch (RuntimeError)
        why = "is not installed" if isinstance(exc, ImportError) else f"cannot be imported ({type(exc).__name__}: {exc})"
        raise InputError(f"torchvision backbones need torchvision, which {why}; install a build matching torch "
                         f"{torch.__version__} (pip install 'cmh-bench[vision]'), or use image_backbone='cnnf'") from None
    return models


def _load_state_dict(path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}".strip()[:200]
        raise _weights_error(path, f"cannot be read as a torch state dict ({detail})") from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise _weights_error(path, "is not a torch state dict (a dict of parameter name -> tensor)")
    return sd


def _build_torchvision(model_name: str, weights, input_size, dropout) -> TorchvisionBackbone:
    models = _import_torchvision()
    names = sorted(models.list_models(module=models))
    if model_name not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise InputError(f"torchvision model {model_name!r} is unknown; valid: a classification model of "
                         f"torchvision.models.list_models(module=torchvision.models) ({shown})")
    state = None if weights is None else _load_state_dict(_check_file(weights))
    # VGG's and AlexNet's classifiers hold the fc6/fc7 dropouts that CNN-F's ``dropout`` stands for;
    # other models keep torchvision's own dropout.
    kw = {"dropout": float(dropout)} if model_name.startswith(("vgg", "alexnet")) else {}
    model = models.get_model(model_name, weights=None, **kw)   # weights=None: never a download
    last = None
    for qual, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (qual, mod)
    if last is None:
        raise InputError(f"torchvision model {model_name!r} has no final linear classifier to remove; choose another")
    qual, linear = last
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        head = {f"{qual}.weight", f"{qual}.bias"}
        missing = [k for k in missing if k not in head]
        if missing or unexpected:
            bad = (["missing " + k for k in missing] + ["unexpected " + k for k in unexpected])[:4]
            raise _weights_error(weights, f"does not match torchvision's {model_name} ({'; '.join(bad)})")
    parent = model.get_submodule(qual.rsplit(".", 1)[0]) if "." in qual else model
    setattr(parent, qual.rsplit(".", 1)[-1], nn.Identity())
    if input_size is None:
        try:
            input_size = int(models.get_model_weights(model_name).DEFAULT.transforms().crop_size[0])
        except Exception:  # models without registered weights metadata
            input_size = 224
    net = TorchvisionBackbone(model, model_name, linear.in_features, input_size)
    if state is not None:
        net.pixel_mean, net.pixel_std = IMAGENET_MEAN_255.copy(), IMAGENET_STD_255.copy()
    return net


# ---------------------------------------------------------------- entry point

def build_backbone(name: str, *, weights=None, input_size=None, freeze: bool = False, dropout: float = 0.5) -> nn.Module:
    """An image backbone on raw pixels: ``"cnnf"`` or ``"torchvision:<model name>"``.

    ``weights``: a local file (``imagenet-vgg-f.mat``, MATLAB v5 or v7.3, for cnnf; a torch state dict for
    torchvision) or None (random initialisation, ``pixel_mean``/``pixel_std`` None). ``input_size``: the
    square input side (None: the file's ``imageSize``, else 224; a torchvision model's own crop size).
    ``freeze``: ``requires_grad = False`` on every parameter (the papers fine-tune, the default).
    """
    if not isinstance(name, str):
        raise InputError(f"backbone={name!r} is invalid; valid: 'cnnf' or 'torchvision:<model name>'")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer))
                                   or input_size < 1):
        raise InputError(f"input_size={input_size!r} is invalid; valid: a positive integer or None")
    if name == "cnnf":
        net = _build_cnnf(weights, input_size, dropout)
    elif name.startswith("torchvision:") and name[len("torchvision:"):]:
        net = _build_torchvision(name[len("torchvision:"):], weights, input_size, dropout)
    else:
        raise InputError(f"backbone={name!r} is unknown; valid: 'cnnf' or 'torchvision:<model name>'")
    if freeze:
        for p in net.parameters():
            p.requires_grad_(False)
    return net
