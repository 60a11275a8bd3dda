"""Where a run ran: package versions, git commit, platform, and the device a method used."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["environment", "device_info"]


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Versions and git commit (read from package metadata: importing torch just to ask is slow)."""
    packages = {}
    for pkg in ("numpy", "scipy", "pandas", "scikit-learn", "torch", "numba", "joblib", "cmh-bench"):
        try:
            packages[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            packages[pkg] = None
    repo = Path(__file__).resolve().parent.parent
    git = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            git["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10)
            git["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "git": git,
    }


def device_info(method, requested: str) -> dict:
    """Where the method ran: its own ``device`` (resolved) for torch methods, else the CPU."""
    info = {"requested": requested, "resolved": "cpu", "name": platform.processor() or platform.machine()}
    if "device" in type(method)._get_param_names():
        from methods.nets import resolve_device

        dev = resolve_device(getattr(method, "device", requested))
        info["resolved"] = str(dev)
        if dev.type == "cuda":
            import torch

            info["name"] = torch.cuda.get_device_name(dev)
    return info
