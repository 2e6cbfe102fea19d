"""Performance benchmarks of csst_sls_z: speed and memory only, one suite, one runner.

    python -m benchmarks --list                  # what each benchmark measures, and its sizes
    python -m benchmarks NAME... [--quick] [--out FILE]
    python -m benchmarks                         # all of them, full size: docs/performance_results.md

* ``suite.py``: the registry (each benchmark a function ``f(ws, **size)`` with a ``full`` and
  a ``tiny`` size) and the runner; ``report.py``: the results page;
* ``workspace.py``: what they share: the work directory, simulated products, DUMMY reference
  sets, the fixed product made from the golden test input;
* ``bench_*.py``: the measurements. Several also run alone with more options than the suite
  gives them (``python benchmarks/bench_head.py --help``); ``redrock_peer.py`` is the
  template-fitting peer, run in its own interpreter; ``rss_sampler.py`` samples the peak
  memory inside the measured child processes.

What the network, its calibration and the refinement achieve (accuracy, coverage, families)
is measured by the studies in ``studies/``, not here. The package ``csst_sls_z`` never imports
from here.
"""
