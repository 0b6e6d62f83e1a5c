"""Memory readings of the current process for the benchmarks: resident set size and its peak.

On Linux from /proc/self/status (VmRSS, VmHWM); the peak mark can be reset between runs in one
process (`reset_peak_rss`). Not ru_maxrss where avoidable: Linux carries a spawning parent's
peak over exec into the child.
"""

from __future__ import annotations

import resource
from pathlib import Path


def rss_bytes(key: str = "VmRSS:") -> int | None:
    """A /proc/self/status memory line (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith(key)), None)


def reset_peak_rss() -> str:
    """Reset the process's peak-RSS mark where Linux allows it; the method label of the peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "ru_maxrss: peak RSS of the process since it started (not reset per run)"
    return "VmHWM: peak RSS of the process during the run (reset before it)"


def peak_rss_bytes() -> int:
    """The process's peak resident set size (VmHWM, else ru_maxrss)."""
    peak = rss_bytes("VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
