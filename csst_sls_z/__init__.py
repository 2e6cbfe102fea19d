"""csst_sls_z: galaxy redshifts with calibrated uncertainties from CSST slitless spectra.

Implements Zhou et al. 2024 (ApJ 977, 69): a 1D ResNet backbone with a Bayesian head of
Multiplicative-Normalizing-Flow layers, Beta-calibrated, run as a CSST pipeline stage.
TensorFlow is imported lazily: importing this package, ``--help`` and the simulator
never load it.
"""
__version__ = "0.1.0"
