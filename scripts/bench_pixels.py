"""Throughput and memory of the raw-image pipeline (methods/pixels.py) on a synthetic MIRFlickr-sized set.

Writes ``--n`` random uint8 images of ``--stored-size`` (default: ``--size``) into a ``.npy`` in a temp
dir (chunkwise, with ``np.lib.format.open_memmap``; 20,015 x 224 x 224 x 3 is 3 GB on disk), opens it
lazily as :class:`datasets.images.ImageArray`, then measures

* ``pipeline``: images/s of one epoch of the pipeline alone in random order (read from the memmap,
  resize if needed, normalise, pin + copy to ``--device``), at ``--batch`` images per batch;
* peak memory while streaming, sampled every 20 ms over this process and its DataLoader workers:
  resident set (RSS, which includes file pages of the memmap that the kernel may drop at any time) and
  anonymous memory (RssAnon: what the pipeline itself allocates);
* with ``--model cnnf`` (``methods.backbones.build_backbone``): CNN-F forward + backward + SGD step,
  images/s for the model alone (one batch already on the device, reused) against pipeline + model over
  ``--steps`` batches, and their ratio.

The file is deleted afterwards (``--keep`` keeps it). Prints readable lines and one JSON line.
Example: ``python scripts/bench_pixels.py --n 2000 --device cpu``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0])
    except OSError:  # process ended between listing and reading
        pass
    return out


class MemorySampler:
    """Peak RSS and RssAnon (MiB) of this process plus its children, sampled in a thread."""

    def __init__(self, period: float = 0.02):
        self.period, self.peak_rss, self.peak_anon = period, 0.0, 0.0
        self._stop = threading.Event()

    def _pids(self) -> list[int]:
        pids = [os.getpid()]
        try:
            import psutil

            pids += [c.pid for c in psutil.Process().children(recursive=True)]
        except ImportError:  # without psutil only this process is sampled
            pass
        return pids

    def sample(self) -> tuple[float, float]:
        stats = [_status_kb(p) for p in self._pids()]
        rss = sum(s.get("VmRSS", 0) for s in stats) / 1024
        anon = sum(s.get("RssAnon", 0) for s in stats) / 1024
        return rss, anon

    def _run(self):
        while not self._stop.is_set():
            rss, anon = self.sample()
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_images(path: Path, n: int, size: int, seed: int = 0, chunk: int = 512) -> None:
    rng = np.random.default_rng(seed)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        mm[start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), dtype=np.uint8)
    mm.flush()
    del mm


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args) -> dict:
    import torch

    from datasets.images import ImageArray
    from methods.pixels import PixelFeeder, PixelTransform, default_num_workers

    device = torch.device(args.device)
    stored = args.stored_size or args.size
    tmp = Path(tempfile.mkdtemp(prefix="bench_pixels_", dir=args.tmp_dir))
    path = tmp / "iall.npy"
    result: dict = {"n": args.n, "size": args.size, "stored_size": stored, "batch": args.batch,
                    "device": str(device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    try:
        t0 = time.perf_counter()
        write_images(path, args.n, stored, seed=args.seed)
        result["write_s"] = round(time.perf_counter() - t0, 2)
        result["file_gb"] = round(path.stat().st_size / 1e9, 3)
        images = ImageArray.from_npy(path)
        # Fixed ImageNet-like statistics: the benchmark measures the pipeline, not the statistics pass.
        transform = PixelTransform(args.size, mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4])
        order = np.random.default_rng(args.seed).permutation(args.n)
        batches = [order[i:i + args.batch] for i in range(0, args.n, args.batch)]
        workers = args.workers if args.workers is not None else default_num_workers(device, len(batches))
        result["workers"] = workers
        feeder = PixelFeeder(images, transform, device, num_workers=workers)

        sampler = MemorySampler()
        result["rss_before_mb"], result["anon_before_mb"] = (round(v, 1) for v in sampler.sample())
        with sampler:
            t0 = time.perf_counter()
            seen = 0
            check = torch.zeros((), device=device)
            for x in feeder.batches(batches):
                check += x[:, :, 0, 0].sum()  # touch each batch on the device
                seen += x.shape[0]
            _sync(torch, device)
            dt = time.perf_counter() - t0
        result["pipeline_images_per_s"] = round(seen / dt, 1)
        result["pipeline_epoch_s"] = round(dt, 2)
        result["peak_rss_mb"] = round(sampler.peak_rss, 1)
        result["peak_anon_mb"] = round(sampler.peak_anon, 1)

        if args.model != "none":
            result.update(_bench_model(args, torch, device, feeder, transform, images, batches))
    finally:
        if args.keep:
            result["kept_file"] = str(path)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _bench_model(args, torch, device, feeder, transform, images, batches) -> dict:
    from methods.backbones import build_backbone

    torch.manual_seed(args.seed)
    net = build_backbone(args.model, input_size=args.size).to(device).train()
    head = torch.nn.Linear(net.out_features, 64).to(device)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step(x):
        opt.zero_grad(set_to_none=True)
        codes = torch.tanh(head(net(x)))
        loss = (codes - 1).pow(2).mean()  # any loss: the cost is the network's forward + backward
        loss.backward()
        opt.step()
        return loss.detach()

    steps = max(1, min(args.steps, len(batches)))
    fixed = feeder.load(batches[0])
    step(fixed)  # warm-up (allocations, cuDNN algorithm choice)
    _sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(fixed)
    _sync(torch, device)
    model_rate = steps * fixed.shape[0] / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    seen = 0
    for x in feeder.batches(batches[1:steps + 1] if len(batches) > steps else batches[:steps]):
        step(x)
        seen += x.shape[0]
    _sync(torch, device)
    full_rate = seen / (time.perf_counter() - t0)
    return {"model": args.model, "model_steps": steps, "model_only_images_per_s": round(model_rate, 1),
            "pipeline_plus_model_images_per_s": round(full_rate, 1),
            "pipeline_vs_model_ratio": round(full_rate / model_rate, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20015, help="number of synthetic images (MIRFlickr: 20015)")
    p.add_argument("--size", type=int, default=224, help="network input size S")
    p.add_argument("--stored-size", type=int, default=None, help="stored image size (default: --size; "
                   "another value makes the pipeline resize)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the pipeline's)")
    p.add_argument("--model", default="none", help="'none' (pipeline only) or a build_backbone name, e.g. cnnf")
    p.add_argument("--steps", type=int, default=5, help="training steps timed with --model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp-dir", default=None, help="where the temporary .npy is written")
    p.add_argument("--keep", action="store_true", help="keep the .npy file")
    args = p.parse_args(argv)
    if args.n < 1 or args.size < 1 or args.batch < 1:
        p.error("--n, --size and --batch must be positive")
    r = bench(args)
    print(f"device {r['device']}{' (' + r['device_name'] + ')' if 'device_name' in r else ''}, "
          f"{r['cpus']} cpus, {r['torch_threads']} torch threads, workers {r['workers']}")
    print(f"images {r['n']} x {r['stored_size']}^2 x 3 uint8 ({r['file_gb']} GB), input {r['size']}, batch {r['batch']}")
    print(f"pipeline alone: {r['pipeline_images_per_s']} images/s ({r['pipeline_epoch_s']} s per epoch)")
    print(f"peak memory while streaming: RSS {r['peak_rss_mb']} MB (includes memmap page cache), "
          f"anonymous {r['peak_anon_mb']} MB (before: RSS {r['rss_before_mb']}, anonymous {r['anon_before_mb']})")
    if "model" in r:
        print(f"{r['model']} forward+backward: model alone {r['model_only_images_per_s']} images/s, "
              f"pipeline + model {r['pipeline_plus_model_images_per_s']} images/s, ratio {r['pipeline_vs_model_ratio']}")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
