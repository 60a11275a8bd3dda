"""Peak resident memory of a block of work (a run's fit, encode and evaluation)."""
from __future__ import annotations

import sys

__all__ = ["PeakMemory"]


class PeakMemory:
    """Peak resident memory of this process during a block.

    On Linux the kernel's high-water mark is reset first (``/proc/self/clear_refs``), so the figure is
    the block's own peak; elsewhere it is the process's lifetime peak (``scope`` says which). The peak
    includes what the process held when the block began (interpreter, libraries, the cached
    dataset): ``start_mb`` is that level, so ``peak_mb - start_mb`` is what the run added.
    """

    def __enter__(self):
        self.start_mb = _current_rss_mb()
        self.scope = "process"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.scope = "run"
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.peak_mb = _peak_rss_mb(self.scope)
        return False


def _current_rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def _peak_rss_mb(scope: str) -> float:
    if scope == "run":
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
