"""Bit-identity check for refactors: run a fixed sample of ten runs and print each run's code digest.

    python scripts/check_identical.py --out before.json     # on the old code
    python scripts/check_identical.py --compare before.json # on the new code: exit 1 on any difference

The sample (``scripts/identity_suite.yaml``) covers the shallow methods, the four deep methods on
feature vectors and RDCMH on raw pixels, all on CPU with one thread so that the digests are
deterministic. Runs are keyed by method label, dataset, bits, mask rate and seed (not by run id, which
changes when a parameter is renamed); the digest is sha256 over both modalities' codes, in that order.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SUITE = Path(__file__).resolve().parent / "identity_suite.yaml"
# What the methods produced: the four code matrices (stored packed along rows, +1 -> bit 1) and the
# query representations of methods that rank by their own distance. Other arrays in the file are not
# method output.
CODE_ARRAYS = ["db_image", "db_text", "query_image", "query_text"]
REPR_ARRAYS = ["query_image_repr", "query_text_repr"]


def digests(results: Path) -> dict[str, str]:
    out = {}
    for path in sorted((results / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            raise SystemExit(f"run {path.name} did not finish: {rec.get('error')}")
        spec = rec["spec"]
        key = f"{spec['label']}|{spec['dataset_label']}|{spec['n_bits']}|{spec['mask_rate']}|{spec['seed']}"
        stored = np.load(results / rec["codes"])
        h = hashlib.sha256()
        for name in CODE_ARRAYS + REPR_ARRAYS:
            if name not in stored.files:
                continue
            arr = stored[name]
            if name in CODE_ARRAYS:  # digest the {-1,+1} codes, not a storage layout
                arr = np.unpackbits(arr, axis=1, count=int(stored["n_bits"])).astype(np.int8) * 2 - 1
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        out[key] = h.hexdigest()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the digests to this JSON file")
    ap.add_argument("--compare", type=Path, help="compare with digests written earlier")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(SUITE), "--results-dir", f"{tmp}/r",
               "--device", "cpu", "--threads", "1", "--no-report", "--quiet", "--no-progress"]
        subprocess.run(cmd, check=True)
        got = digests(Path(tmp) / "r")
    for key, value in got.items():
        print(f"{value[:16]}  {key}")
    if args.out:
        args.out.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if args.compare:
        want = json.loads(args.compare.read_text())
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        for key in diff:
            print(f"DIFFERENT: {key}: {want.get(key, '-')[:16]} -> {got.get(key, '-')[:16]}")
        print(f"{len(got) - len(diff)} of {len(set(want) | set(got))} runs identical")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
