"""The network: a 1D ResNet backbone, a Bayesian head of MNFDense layers, and the sampler.

Importing this package imports TensorFlow (without its native start-up log, see
``csst_sls_z.tfenv``); the stage imports it only when it needs it.
"""
from ..tfenv import import_tensorflow

import_tensorflow()
