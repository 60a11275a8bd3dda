"""The shared deep-method plumbing in methods/nets.py."""
import numpy as np
import pytest
import torch

from benchmark.errors import InputError
from methods.nets import Dropout, ImageNet, Standardizer, TextNet, resolve_device


def test_dropout_matches_the_distribution_of_nn_dropout():
    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    d = Dropout(0.5)
    y = d(x)
    kept = (y != 0).float()
    assert abs(kept.mean().item() - 0.5) < 0.01          # P(keep) = 1 - p
    assert torch.all((y == 0) | (y == 2.0))              # kept entries are scaled by 1 / (1 - p)
    y.sum().backward()
    assert torch.equal(x.grad, kept * 2.0)               # gradient flows only through kept entries
    d.eval()
    assert torch.equal(d(x), x)                          # identity at evaluation
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_networks_use_the_fast_dropout_and_are_deterministic_in_eval():
    net = ImageNet(12, 8, hidden=16)
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())
    assert sum(isinstance(m, Dropout) for m in net.modules()) == 2
    net.eval()
    x = torch.randn(5, 12)
    assert torch.equal(net(x), net(x))
    assert TextNet(7, 4, hidden=16)(torch.randn(3, 7)).shape == (3, 4)


def test_standardizer_sparse_equals_dense_and_leaves_constant_columns():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = (rng.random((50, 6)) < 0.3).astype(np.float64)
    x[:, 2] = 1.0
    dense = Standardizer().fit(x).transform(x)
    sparse = Standardizer().fit(sp.csr_matrix(x)).transform(sp.csr_matrix(x))
    np.testing.assert_allclose(dense, sparse, atol=1e-6)
    assert np.all(dense[:, 2] == 0)


def test_bad_device_is_a_one_line_input_error():
    with pytest.raises(InputError, match="device='tpu9' is invalid"):
        resolve_device("tpu9")


def test_optimizer_fuses_only_big_networks_on_cpu_and_keeps_groups():
    from methods.nets import optimizer

    big, small = torch.nn.Linear(1024, 1024), torch.nn.Linear(8, 4)
    cpu = torch.device("cpu")
    assert optimizer("sgd", big.parameters(), cpu, lr=0.1).defaults["fused"] is True
    assert not optimizer("adam", small.parameters(), cpu, lr=0.1).defaults.get("fused")
    opt = optimizer("sgd", [{"params": big.parameters(), "lr": 0.2}, {"params": small.parameters()}], cpu,
                    lr=0.1, momentum=0.9)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]


def test_fused_and_default_sgd_take_the_same_step():
    from methods.nets import optimizer

    torch.manual_seed(0)
    a = torch.nn.Linear(1000, 1000)
    b = torch.nn.Linear(1000, 1000)
    b.load_state_dict(a.state_dict())
    x = torch.randn(16, 1000)
    fused = optimizer("sgd", a.parameters(), torch.device("cpu"), lr=0.1, momentum=0.9, weight_decay=5e-4)
    plain = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)


def test_resolve_image_backbone_auto_and_mismatches():
    from methods.nets import resolve_image_backbone

    feats, pixels = np.zeros((4, 6)), np.zeros((4, 8, 8, 3), dtype=np.uint8)
    assert resolve_image_backbone("X", "auto", feats) == "mlp"
    assert resolve_image_backbone("X", "auto", pixels) == "cnnf"
    with pytest.raises(InputError, match="image_backbone='mlp' takes feature vectors"):
        resolve_image_backbone("X", "mlp", pixels)
    with pytest.raises(InputError, match="image_backbone='cnnf' takes raw uint8 images"):
        resolve_image_backbone("X", "cnnf", feats)


def test_pixel_image_net_is_the_backbone_then_the_hash_layer():
    from methods.nets import TrainImages, make_image_net, pixel_transform

    torch.manual_seed(0)
    net = make_image_net("cnnf", None, 12, hidden=99, dropout=0.5, image_size=40)
    assert net.fc7 is None and net.fc8.in_features == net.backbone.out_features == 4096  # image_hidden unused
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    rows = TrainImages(pixels=images, transform=pixel_transform(40, np.full(3, 128.0), np.full(3, 60.0)),
                       device=torch.device("cpu"), rows=np.array([4, 2, 0]))
    assert len(rows) == 3 and rows[np.array([0, 1])].shape == (2, 3, 40, 40)
    # Training row 0 is image 4: a full pass equals the network on that image alone.
    full = rows.forward(net)
    net.eval()
    one = net(pixel_transform(40, np.full(3, 128.0), np.full(3, 60.0))(images[4:5]))
    torch.testing.assert_close(full[0:1], one, rtol=1e-5, atol=1e-6)
