"""Training budgets in steps for the tests: a clock that advances by a fixed amount per reading.

The training loops (``training.train_backbone``, ``training.train_head``) stop on a budget of
seconds read from ``time.time()``. On a loaded machine a few seconds may be one step, or none
after the tracing; with :func:`install` each reading of the clock advances ``dt`` seconds, so a
budget of B seconds is a fixed number of loop iterations (about B / (3 dt)) on any machine, and
the package itself is unchanged. Everything but ``time()`` is the real ``time`` module.

In a test: ``install(0.05)`` (or ``install(0.05, monkeypatch)`` to undo it after the test). For a
script in a subprocess: ``python tests/step_clock.py DT SCRIPT ARGS...`` installs the clock, then
runs SCRIPT as ``__main__``.
"""
from __future__ import annotations

import importlib
import runpy
import sys
import time as _time
from pathlib import Path

TRAINING_MODULES = ("csst_sls_z.training.train_backbone", "csst_sls_z.training.train_head")


class StepClock:
    """A stand-in for a training loop's ``time`` module: every ``time()`` call advances ``dt``."""

    def __init__(self, dt: float):
        self.dt, self.now = float(dt), 0.0

    def time(self) -> float:
        self.now += self.dt
        return self.now

    def __getattr__(self, name):
        return getattr(_time, name)


def install(dt: float, monkeypatch=None) -> StepClock:
    """Give the training loops one StepClock; with ``monkeypatch``, only for the current test."""
    clock = StepClock(dt)
    for name in TRAINING_MODULES:
        module = importlib.import_module(name)
        if monkeypatch is not None:
            monkeypatch.setattr(module, "time", clock)
        else:
            module.time = clock
    return clock


if __name__ == "__main__":
    dt, script, *args = sys.argv[1:]
    install(float(dt))
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)      # as `python SCRIPT` would have it
    runpy.run_path(script, run_name="__main__")
