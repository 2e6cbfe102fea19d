"""Peak resident memory of this process, anonymous and file-backed apart.

``VmHWM`` (the kernel's high-water mark) counts every resident page, including pages of
memory-mapped files, which are reclaimable page cache; /proc keeps no peak of the split,
so ``PeakRss`` samples ``RssAnon`` and ``RssFile`` every 20 ms in a daemon thread. Used by
the benchmarks' child processes (bench_core's stage snippet, bench_simulation).
"""
from __future__ import annotations

import threading
import time

KEYS = ("RssAnon", "RssFile")


def status_kib(key: str) -> int:
    """One ``/proc/self/status`` field in kB (e.g. ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.split(":")[0] == key:
                return int(line.split()[1])
    raise KeyError(f"no {key} in /proc/self/status")


class PeakRss:
    """Start sampling at construction; ``peak`` holds the largest kB seen per key since ``reset``."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak = dict.fromkeys(KEYS, 0)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            with open("/proc/self/status") as status:
                for line in status:
                    key = line.split(":")[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]))
            time.sleep(self.interval_s)

    def reset(self):
        self.peak.update(dict.fromkeys(KEYS, 0))
