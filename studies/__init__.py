"""Science studies of csst_sls_z: what the network, its calibration and the refinement achieve.

Each study is a script run from the repository root (``python studies/NAME.py --help``) that
writes its tables (and figures) under ``docs/``; its docstring holds the command behind the
numbers the docs quote. Speed and memory are measured by the benchmark suite
(``python -m benchmarks``), not here; the figures of docs/simulation.md are drawn by the
scripts in ``docs/figures/``. The package ``csst_sls_z`` never imports from here.
"""
