"""CNN-F training throughput on this machine: forward + backward + SGD step, images per second.

    python scripts/bench_cnnf.py [--sizes 224,64,96,128] [--batch 128] [--iters 3] [--device cpu|cuda]

Random init (``methods.backbones.build_backbone("cnnf")``) plus a 64-bit hash layer, random
normalised input (the pipeline is not included: this is the model-only rate). One warm-up step,
then ``--iters`` timed steps per size. From the 224 rate it projects RDCMH's training time at
MIRFlickr size: Algorithm 1 runs ``n_iter`` (500) iterations of 3 x 128 images (query, positive,
negative), plus forward-only passes over the 10,000 training images (start) and the 20,015 images
to encode, counted at the forward-only rate.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from methods.nets import ImageNet, make_image_net, optimizer


def rate(size: int, batch: int, iters: int, device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    net: ImageNet = make_image_net("cnnf", None, 64, hidden=0, dropout=0.5, image_size=size).to(device)
    opt = optimizer("sgd", net.parameters(), device, lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        opt.step()

    net.train()
    step()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    train = batch * iters / (time.perf_counter() - t)
    net.eval()
    with torch.no_grad():
        net(x)
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            net(x)
        sync()
    fwd = batch * iters / (time.perf_counter() - t)
    return train, fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224,64,96,128")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, batch {args.batch}")
    rates = {}
    for size in (int(s) for s in args.sizes.split(",")):
        train, fwd = rate(size, args.batch, args.iters, device)
        rates[size] = (train, fwd)
        print(f"input {size:4d}: train {train:8.1f} img/s   forward {fwd:8.1f} img/s", flush=True)
    if 224 in rates:
        train, fwd = rates[224]
        n_iter, per_iter = 500, 3 * 128
        t_train = n_iter * per_iter / train
        t_fwd = (10_000 + 20_015) / fwd
        print(f"RDCMH at MIRFlickr size, 224 x 224 (projected): {n_iter} iterations x {per_iter} images "
              f"= {t_train / 60:.1f} min training + {t_fwd / 60:.1f} min forward passes (start buffers, encoding)")


if __name__ == "__main__":
    main()
