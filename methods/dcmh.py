"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017).

Two networks, ``F = f(X; theta_x)`` (image) and ``G = g(Y; theta_y)`` (text), and one matrix of
training codes ``B`` are learned by alternating minimisation of

    J = - sum_ij M_ij (S_ij Theta_ij - log(1 + e^Theta_ij))                  (Eq. 1-2, likelihood)
        + gamma (||B - F||^2 + ||B - G||^2)                                  (quantisation)
        + eta (||F^T 1||^2 + ||G^T 1||^2),   Theta_ij = 0.5 F_i . G_j        (bit balance)

where ``S_ij = 1`` when items i and j share a label. ``M_ij`` is our addition for partial labels:
it keeps only the pairs whose two items are both labeled (``M = 1`` everywhere when all labels are
visible, which is the paper's objective). Rows are items here (the paper stores F, G, B as c x n).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cmhcore.errors import InputError
from methods.base import Hasher, binarize
from methods.nets import (Standardizer, TextNet, TrainImages, check_image_input, check_image_params, encode_pixels,
                          forward_in_batches, is_pixels_input, make_image_net, optimizer, pixel_train_images,
                          resolve_device, resolve_image_backbone, seeded)

__all__ = ["DCMH", "dcmh_objective", "dcmh_update_codes", "dcmh_batch_loss", "pair_similarity", "encode_with", "check_number"]


def pair_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when row i of ``labels_a`` and row j of ``labels_b`` share at least one label."""
    return (labels_a @ labels_b.T > 0).to(labels_a.dtype)


def dcmh_update_codes(F: torch.Tensor, G: torch.Tensor, gamma: float) -> torch.Tensor:
    """The B-step, Eq. 5-6: B = sign(gamma (F + G)), with exact zeros sent to +1 (never ternary codes)."""
    v = gamma * (F + G)
    return torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v))


def _pair_terms(theta: torch.Tensor, S: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # log(1 + e^Theta) - S Theta, summed over visible pairs; softplus avoids overflow of e^Theta.
    terms = torch.nn.functional.softplus(theta) - S * theta
    return (terms if mask is None else mask * terms).sum()


def dcmh_objective(F, G, B, S, mask, gamma: float, eta: float, chunk: int = 1024) -> float:
    """The full objective J of Eq. 2 over all training items (rows of F, G, B), as a float.

    ``S`` and ``mask`` may be callables ``(rows) -> (len(rows), n)`` so that an n x n matrix is
    never formed for large n; dense matrices are accepted for small cases and tests.
    """
    n = F.shape[0]
    pair = 0.0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        theta = 0.5 * F[rows] @ G.T
        s = S(rows) if callable(S) else S[rows]
        m = mask(rows) if callable(mask) else mask[rows]
        pair += float(_pair_terms(theta, s, m))
    quant = float(((B - F) ** 2).sum() + ((B - G) ** 2).sum())
    balance = float((F.sum(0) ** 2).sum() + (G.sum(0) ** 2).sum())
    return pair + gamma * quant + eta * balance


def dcmh_batch_loss(out_b: torch.Tensor, idx: torch.Tensor, own: torch.Tensor, other: torch.Tensor,
                    B: torch.Tensor, S_b: torch.Tensor, mask_b: torch.Tensor | None, gamma: float, eta: float,
                    cols: torch.Tensor | None = None) -> torch.Tensor:
    """The part of J that depends on one mini-batch of one network's outputs, unnormalised.

    ``out_b`` are the batch outputs (with grad) of the network being trained; ``own`` is that
    network's output buffer over all n items (F or G, already holding ``out_b`` detached at
    ``idx``); ``other`` is the other network's buffer. Its gradient w.r.t. ``out_b[k]`` is Eq. 3
    (image step) or Eq. 4 (text step): 0.5 sum_j M (sigma(Theta) - S) other_j + 2 gamma (out - B)
    + 2 eta own^T 1.

    ``cols`` (optional) restricts the pairwise sum to those items of ``other``; ``S_b`` and ``mask_b``
    then have one column per entry of ``cols``. Leaving out items whose every pair is masked (the
    unlabeled ones) is exact and saves their share of the pairwise work (91 % of it at 70 % masking).
    ``mask_b`` may be ``None`` (every pair visible) or broadcastable, e.g. one column per batch row.
    """
    theta = 0.5 * out_b @ (other if cols is None else other[cols]).T
    pair = _pair_terms(theta, S_b, mask_b)
    quant = ((B[idx] - out_b) ** 2).sum()
    # Column sums over the items outside the batch are constants of this step.
    rest = own.sum(0) - own[idx].sum(0)
    balance = ((out_b.sum(0) + rest) ** 2).sum()
    return pair + gamma * quant + eta * balance


def encode_with(net: torch.nn.Module, scaler: Standardizer, x, device: torch.device, n_bits: int) -> np.ndarray:
    """Codes of rows ``x`` (dense or sparse) through a fitted scaler and network."""
    if x.shape[0] == 0:
        return np.zeros((0, n_bits), dtype=np.int8)
    return binarize(forward_in_batches(net, x, device, transform=scaler.transform))


def check_number(name, value, lo=None, hi=None, integer=False, lo_open=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi
    if not ok:
        what = "an integer" if integer else "a finite number"
        bounds = []
        if lo is not None:
            bounds.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            bounds.append(f"< {hi}")
        raise InputError(f"{name}={value!r} is invalid; valid: {what}{' ' + ' and '.join(bounds) if bounds else ''}")


# Why the pixel checks of the deep methods fail at the checks' budget (methods.checks, pixels_*).
_PIXEL_INIT = ("CNN-F trained from scratch (no pretrained weights offline): its ReLU features share a large "
               "common part across images (fc7 mean ~0.4, spread ~0.15 at He init), so the pixel check's few "
               "training steps end before the image codes separate the images")


class DCMH(Hasher):
    """Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017), on raw pixels (CNN-F) or feature vectors.

    Parameters
    ----------
    n_bits : int
        Code length c.
    gamma, eta : float
        Weights of the quantisation and bit-balance terms (paper: 1 and 1).
    epochs : int
        Outer iterations of Algorithm 1 (paper: 500). See "Cost and convergence" below.
    batch_size : int
        Mini-batch size (paper: 128).
    lr_start, lr_end : float
        Learning rate of the first and of the last epoch, log-spaced in between (the authors'
        code: ``logspace(-1.5, -3, epochs)``).
    weight_decay : float
        L2 weight decay of SGD (the authors' code: 5e-4).
    image_hidden, text_hidden : int
        Width of the image FC layers and of the text layer full1: 4096 (CNN-F's full6/full7) and
        8192 (the authors' code), the paper's. See "Network widths" below. ``image_hidden``
        applies to the feature-vector network only (CNN-F's fc6/fc7 are 4096 wide).
    image_backbone, image_weights, image_size, freeze_backbone :
        Image network: "auto" is the paper's CNN-F (then fc8 = c) on raw uint8 images (n, H, W, 3)
        and the MLP stand-in on feature vectors. On pixels: the weights file (``imagenet-vgg-f.mat``,
        as the authors start from), input size (None = the file's or 224), frozen trunk (default:
        fine-tuned, as in the paper); normalised by the file's average image or, from scratch, by
        the training images' channel statistics; read batch by batch. Ignored on feature vectors.
    dropout : float
        Dropout on the image FC layers.
    device : str
        'cpu', 'cuda', 'cuda:N' or 'auto'.
    random_state : int or None
        Seed of the initialisation, dropout and mini-batch order.

    Choices the paper leaves open, and ours
    ---------------------------------------
    * Image network on feature vectors: CNN-F's convolutional trunk is replaced by the shared
      ``nets.ImageNet`` MLP stand-in (identity output);
      inputs of both modalities are standardised with training statistics (``nets.Standardizer``).
    * Image network widths: the stand-in keeps CNN-F's fully connected part (feature -> 4096 -> 4096
      -> c); only the convolutional trunk is missing.
    * Text network: the shared ``nets.TextNet`` (BoW -> full1, ReLU -> full2 = c, identity) with
      8192 units and no dropout, as in the authors' code.
    * Mini-batches: each epoch visits every training item once per network, in a random order
      (the authors' code draws an independent random batch at every iteration).
    * The buffers F and G start as N(0, 1) draws, as in the authors' TensorFlow code; B starts as
      sign(gamma (F + G)). Each buffer row is overwritten by the network output when its item is
      visited.
    * Order within an epoch: F-step (image, Eq. 3), G-step (text, Eq. 4), B-step (Eq. 5-6).
    * Optimiser: plain SGD, each step's loss divided by n * batch size (the authors' code). Only
      the batch's terms of J are differentiated: the pairwise sum runs over the batch rows
      against all n columns (the labeled ones, see below), the mini-batch reading of Eq. 3-4.
    * Partial labels: S_ij is defined only when both items are labeled, so the likelihood term
      keeps only labeled-labeled pairs (mask M). Unlabeled items stay in F, G and B: they are
      trained by the quantisation and bit-balance terms alone and count in the balance sums.
    * No evaluation on query data during training (public ports compute query MAP every epoch);
      ``loss_history_`` records J of Eq. 2 on the training items after the first epoch, every
      ``history_every`` (10) epochs and the last (``extras_["loss_history_epochs"]`` says which).
      J sums over all n^2 pairs, so recording it every epoch cost 18 % of a Wiki run at RDCMH's
      widths (48 of 266 ms per epoch) and ~1 s per epoch at MIRFlickr size.

    Network widths
    --------------
    The paper's: 4096 and 8192. The networks are the shared ``nets`` modules that RDCMH also uses, so
    DCMH and RDCMH differ by method and width, not by plumbing. An earlier default used RDCMH's
    widths (1024 / 4096), chosen on a validation split of Wiki's training items where they beat the
    paper's (``validation_selection``: 500 epochs, 3 seeds). That split made 14 SGD steps per epoch
    instead of the benchmark's 17, and DCMH's outcome hinges on its step count (below). With the
    steps matched (``scripts/validate.py --match-steps``: 607 epochs on the 1738 fit items, 5 seeds)
    the paper's widths were the better ones on the mean of both directions (I->T 0.145 vs 0.152,
    T->I 0.182 vs 0.136). Validation is thus split on the width and no deviation from the paper is
    warranted. Disclosure: query MAP at RDCMH's widths (near the random floor) is what prompted
    the matched check; the width itself rests on the paper and the matched validation.
    The narrower networks remain a parameter: ``image_hidden=1024, text_hidden=4096`` (~6x cheaper).

    Deviations
    ----------
    * CNN-F is pretrained only when ``image_weights`` is given. The learning-rate schedule, weight decay and loss scaling
      come from the authors' public code; the paper does not state them.
    * Initialisation: torch's default for every layer. The authors' code draws the layers it trains
      from scratch (text full1 and full2, image fc8) from N(0, 0.01^2) and starts the rest of the
      image network from pretrained CNN-F. We have no pretrained trunk; with their small init on our
      randomly initialised stand-in, the objective stays at its F = G = 0 saddle value for the whole
      schedule (no late jumps either). Validation, matched steps, 16 bits, seeds 0-1, paper widths:
      0.187 / 0.159 and 0.189 / 0.157 with their init, against 0.162 / 0.177 and 0.195 / 0.233 with
      torch's (2 CPU runs of ~22 min each; not enough to choose on, so the default is unchanged).

    Cost and convergence
    --------------------
    With the loss scaled by 1/(n b), plain SGD is badly conditioned here: the bit-balance term
    acts on the common mode of every output (through the positive mean of the ReLU features) and
    caps the stable learning rate, while the pairwise term moves the outputs away from the
    F = G = 0 saddle slowly, so the method needs the paper's full schedule. With it (500 epochs,
    ~8,500 steps per network on Wiki) it learns, though unevenly between runs (README: Wiki, 3 seeds).
    Its training objective J (``loss_history_``) stays close to its value at the saddle
    (n^2 log 2 + 2 n c) and is unstable under these SGD settings on feature inputs. At RDCMH's
    widths, every one of 72 Wiki runs (36 CPU, 36 GPU) had J jump 10^3-10^5-fold around epoch 430
    of 500 and fall back by the end. At the paper's widths, 21 of 24 GPU runs jumped more than
    10-fold, mostly in the last epochs. We keep the authors' schedule and report this rather than
    add gradient clipping or a new schedule.
    Shortened schedules stay near the floor or land erratically between runs, and on small training
    sets (the common checks' 300 items: 3 steps per epoch) the method stays near the random floor,
    which is why ``beats_random_floor`` is a declared known failure. The paper's schedule at the
    paper's widths costs ~11 min per Wiki run on 2 CPU cores and ~2 h at MIRFlickr training size
    (scripts/bench_deep.py); use ``device="cuda"`` where a GPU is at hand (H200: ~50 s per Wiki run
    with five runs sharing it).
    """

    needs_labels = True
    accepts_pixels = True
    # How the default widths were chosen (runners record this with results); scripts/validate.py.
    validation_selection = {
        "protocol": "wiki train 2173 -> 1738 fit/database + 435 validation queries (scripts/validate.py, "
                    "rng([seed, 777]) permutation), 16 bits, mask 0, the paper's schedule and optimiser; "
                    "'matched' = --match-steps (607 epochs: as many SGD steps as 500 epochs on 2173 items)",
        "chosen": {"image_hidden": 4096, "text_hidden": 8192},
        "candidates": [  # (image_hidden, text_hidden, epochs, device, seed, val MAP I->T, T->I)
            (4096, 8192, 500, "cpu", 0, 0.1460, 0.1323), (4096, 8192, 500, "cpu", 1, 0.1149, 0.1344),
            (4096, 8192, 500, "cpu", 2, 0.1252, 0.1269),
            (1024, 4096, 500, "cpu", 0, 0.1833, 0.1522), (1024, 4096, 500, "cpu", 1, 0.1688, 0.1523),
            (1024, 4096, 500, "cpu", 2, 0.1765, 0.1422),
            (4096, 8192, 500, "cuda", 0, 0.1117, 0.1340), (4096, 8192, 500, "cuda", 1, 0.1447, 0.1498),
            (4096, 8192, 500, "cuda", 2, 0.1449, 0.1229),
            (4096, 8192, 607, "cuda", 0, 0.1624, 0.1767), (4096, 8192, 607, "cuda", 1, 0.1952, 0.2332),
            (4096, 8192, 607, "cuda", 2, 0.1462, 0.2514), (4096, 8192, 607, "cuda", 3, 0.1105, 0.1251),
            (4096, 8192, 607, "cuda", 4, 0.1105, 0.1251),
            (1024, 4096, 607, "cuda", 0, 0.1297, 0.1188), (1024, 4096, 607, "cuda", 1, 0.1231, 0.1115),
            (1024, 4096, 607, "cuda", 2, 0.1715, 0.1257), (1024, 4096, 607, "cuda", 3, 0.1629, 0.1555),
            (1024, 4096, 607, "cuda", 4, 0.1742, 0.1695),
        ],  # means, matched steps: 0.145 / 0.182 (paper widths) vs 0.152 / 0.136; 500 epochs (CPU):
            # 0.129 / 0.131 vs 0.176 / 0.149. Seeds 3-4 at the paper's widths ended with constant codes.
        "random_floor": {"i2t": 0.141, "t2i": 0.110},
        "why": "the paper's widths; validation at matched SGD steps does not support narrower networks",
    }
    pixel_check_params = {"image_size": 40, "epochs": 1}  # CNN-F at its smallest input (methods.checks)
    history_every = 10  # epochs between two evaluations of the full objective J (monitoring only)
    check_params = {"epochs": 3, "image_hidden": 32, "text_hidden": 32}
    known_check_failures = {
        **{name: _PIXEL_INIT for name in ("pixels_codes_format", "pixels_beats_random_floor")},
        "beats_random_floor": (
            "with the paper's SGD settings DCMH needs ~10^4 steps to leave the F = G = 0 saddle; the "
            "300-item check data gives 3 steps per epoch (measured: MAP within 0.03 of the floor even "
            "after 150-500 epochs; with batch 16, 500 epochs = 9,500 steps, I->T/T->I 0.29/0.33 against a floor "
            "of 0.28/0.29)"
        ),
    }

    def __init__(self, n_bits: int = 32, gamma: float = 1.0, eta: float = 1.0, epochs: int = 500,
                 batch_size: int = 128, lr_start: float = 10 ** -1.5, lr_end: float = 1e-3,
                 weight_decay: float = 5e-4, image_hidden: int = 4096, text_hidden: int = 8192,
                 dropout: float = 0.5, image_backbone: str = "auto", image_weights=None, image_size: int | None = None,
                 freeze_backbone: bool = False, device: str = "cpu", random_state: int | None = 0):
        self.n_bits = n_bits
        self.gamma = gamma
        self.eta = eta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr_start = lr_start
        self.lr_end = lr_end
        self.weight_decay = weight_decay
        self.image_hidden = image_hidden
        self.text_hidden = text_hidden
        self.dropout = dropout
        self.image_backbone = image_backbone
        self.image_weights = image_weights
        self.image_size = image_size
        self.freeze_backbone = freeze_backbone
        self.device = device
        self.random_state = random_state

    def _validate_params(self) -> torch.device:
        check_image_params("DCMH", self.image_backbone, self.image_weights, self.image_size, self.freeze_backbone)
        check_number("gamma", self.gamma, lo=0)
        check_number("eta", self.eta, lo=0)
        check_number("epochs", self.epochs, lo=1, integer=True)
        check_number("batch_size", self.batch_size, lo=1, integer=True)
        check_number("lr_start", self.lr_start, lo=0, lo_open=True)
        check_number("lr_end", self.lr_end, lo=0, lo_open=True)
        check_number("weight_decay", self.weight_decay, lo=0)
        check_number("image_hidden", self.image_hidden, lo=1, integer=True)
        check_number("text_hidden", self.text_hidden, lo=1, integer=True)
        check_number("dropout", self.dropout, lo=0, hi=1)
        return resolve_device(self.device)

    def fit(self, image, text, labels, labeled=None) -> "DCMH":
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        dev = self._validate_params()
        backbone = resolve_image_backbone("DCMH", self.image_backbone, image)
        pixels = is_pixels_input(image)
        n, c = image.shape[0], int(self.n_bits)
        gamma, eta = float(self.gamma), float(self.eta)
        rng = np.random.default_rng(self.random_state)
        self.image_scaler_ = None if pixels else Standardizer().fit(image)
        self.text_scaler_ = Standardizer().fit(text)
        X = None if pixels else TrainImages(torch.as_tensor(self.image_scaler_.transform(image), device=dev))
        Y = torch.as_tensor(self.text_scaler_.transform(text), device=dev)
        L = torch.as_tensor(labels, dtype=torch.float32, device=dev)
        vis = torch.as_tensor(labeled, dtype=torch.float32, device=dev)
        lrs = np.logspace(math.log10(self.lr_start), math.log10(self.lr_end), int(self.epochs))
        scale = 1.0 / (n * min(int(self.batch_size), n))

        with seeded(self.random_state):
            img_net = make_image_net(backbone, None if pixels else X.tensor.shape[1], c, hidden=int(self.image_hidden),
                                     dropout=float(self.dropout), weights=self.image_weights,
                                     image_size=self.image_size, freeze=self.freeze_backbone).to(dev)
            self.pixel_mean_ = self.pixel_std_ = self.image_size_ = None
            if pixels:
                X, self.pixel_mean_, self.pixel_std_, self.image_size_ = pixel_train_images(
                    image, img_net.backbone, dev)
            txt_net = TextNet(Y.shape[1], c, hidden=int(self.text_hidden), dropout=0.0).to(dev)
            # Buffers start as N(0, 1) draws, as in the authors' TensorFlow code. F = G = 0 is a saddle
            # of J (each pairwise gradient is proportional to the other side's outputs), and freshly
            # initialised networks output almost zero; random targets whose sums over similar items
            # differ by class start the first passes away from it.
            F = torch.randn(n, c, device=dev)
            G = torch.randn(n, c, device=dev)
            B = dcmh_update_codes(F, G, gamma)
            opt_x = optimizer("sgd", [p for p in img_net.parameters() if p.requires_grad], dev, lr=lrs[0],
                              weight_decay=float(self.weight_decay))
            opt_y = optimizer("sgd", txt_net.parameters(), dev, lr=lrs[0], weight_decay=float(self.weight_decay))
            history, history_epochs = [], []
            for epoch in range(int(self.epochs)):
                for opt in (opt_x, opt_y):
                    for group in opt.param_groups:
                        group["lr"] = float(lrs[epoch])
                # F-step (Eq. 3): theta_y and B fixed.
                self._network_pass(img_net, opt_x, X, F, G, B, L, vis, rng, gamma, eta, scale, dev)
                # G-step (Eq. 4): theta_x and B fixed.
                self._network_pass(txt_net, opt_y, TrainImages(Y), G, F, B, L, vis, rng, gamma, eta, scale, dev)
                # B-step (Eq. 5-6).
                B = dcmh_update_codes(F, G, gamma)
                if epoch % self.history_every == 0 or epoch == int(self.epochs) - 1:
                    history.append(dcmh_objective(
                        F, G, B, lambda r: pair_similarity(L[r], L), lambda r: vis[r, None] * vis[None, :], gamma, eta))
                    history_epochs.append(epoch)
        img_net.eval()
        txt_net.eval()
        self.image_net_, self.text_net_, self.device_ = img_net, txt_net, dev
        self.train_codes_ = B.cpu().numpy().astype(np.int8)
        self.loss_history_ = np.asarray(history)
        self.extras_ = {"loss_history_epochs": history_epochs}
        self.n_features_ = (None if pixels else image.shape[1], text.shape[1])
        return self

    def _network_pass(self, net, opt, inputs, own, other, B, L, vis, rng, gamma, eta, scale, dev):
        """One epoch of SGD on one network; ``own`` (its output buffer) is updated in place.

        ``inputs`` is a :class:`TrainImages` (feature tensor or raw pixels, prefetched per batch).
        """
        n = len(inputs)
        net.train()
        order = torch.as_tensor(rng.permutation(n), device=dev)
        # Only pairs of two labeled items enter the likelihood: the pairwise sum runs over labeled
        # columns, and a batch row of an unlabeled item is zeroed by its mask entry (no mask at all
        # when every item is labeled). Same loss as the full n-column masked sum.
        cols = None if bool(vis.all()) else torch.nonzero(vis, as_tuple=True)[0]
        L_cols = L if cols is None else L[cols]
        index_batches = [order[start:start + int(self.batch_size)] for start in range(0, n, int(self.batch_size))]
        for idx, rows in zip(index_batches, inputs.batches(index_batches)):
            out = net(rows)
            own[idx] = out.detach()
            S_b = pair_similarity(L[idx], L_cols)
            mask_b = None if cols is None else vis[idx, None]
            loss = scale * dcmh_batch_loss(out, idx, own, other, B, S_b, mask_b, gamma, eta, cols=cols)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def encode_image(self, image) -> np.ndarray:
        self._check_fitted("image_net_")
        image = self._validate_encode(image, "image", self.n_features_[0])
        check_image_input("DCMH", image, self.image_size_ is not None)
        if self.image_size_ is not None:
            return binarize(encode_pixels(self.image_net_, image, self.device_, self.image_size_, self.pixel_mean_,
                                          self.pixel_std_, self.train_codes_.shape[1]))
        return encode_with(self.image_net_, self.image_scaler_, image, self.device_, self.train_codes_.shape[1])

    def encode_text(self, text) -> np.ndarray:
        self._check_fitted("text_net_")
        text = self._validate_encode(text, "text", self.n_features_[1])
        return encode_with(self.text_net_, self.text_scaler_, text, self.device_, self.train_codes_.shape[1])
