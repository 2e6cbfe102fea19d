"""The network: a 1D ResNet backbone, a Bayesian head of MNFDense layers, and the sampler.

Importing this package imports TensorFlow; the stage imports it only when it needs it.
"""
