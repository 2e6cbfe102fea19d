"""The Bayesian head: MNFDense(256), BN, LeakyReLU, MNFDense(128), BN, LeakyReLU, Dense(2).

It reads the frozen backbone features and the CNN's own estimate Z_CNN, and predicts
mu = Z_CNN + mu_scale * raw_0 (so the head refines the CNN's estimate rather than
re-learning it) and sigma = 1e-4 + softplus(raw_1 + sigma_offset), with mu_scale and
sigma_offset from the network configuration (``head_mu_scale`` 0.05 and
``head_sigma_offset`` -4.6, recorded in the network files). The authors' code uses
softplus(0.01 raw), which starts at sigma ~ 0.7; the offset starts sigma near 0.01, the
scale of the errors, which the head reaches in far fewer steps on a CPU.
"""
from __future__ import annotations

import tensorflow as tf
import keras

from .config import NetworkConfig
from .mnf import MNFDense


class BNNHead(keras.Model):
    def __init__(self, cfg: NetworkConfig, **kwargs):
        super().__init__(name="bnn_head", **kwargs)
        self.cfg = cfg
        self.mnf = [MNFDense(u, n_flows_q=cfg.n_flows_q, n_flows_r=cfg.n_flows_r, flow_hidden=cfg.flow_hidden,
                             name=f"mnf{i}") for i, u in enumerate(cfg.head_units)]
        self.bn = [keras.layers.BatchNormalization(name=f"bn{i}") for i in range(len(cfg.head_units))]
        self.act = keras.layers.LeakyReLU(negative_slope=0.2)
        self.out_layer = keras.layers.Dense(2, name="mu_sigma", kernel_initializer="zeros")

    def noise(self, n_samples: int, n_objects: int, seed):
        """Standard-normal draws for every MNF layer, from a stateless seed (reproducible).

        z is shared by all objects of one sample; the output noise is per object.
        """
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        eps = []
        for i, layer in enumerate(self.mnf):
            eps_z = tf.random.stateless_normal((n_samples, 1, layer.input_dim), seed=seed + [0, 2 * i])
            eps_o = tf.random.stateless_normal((n_samples, n_objects, layer.units), seed=seed + [0, 2 * i + 1])
            eps.append((eps_z, eps_o))
        return eps

    def call(self, features, z_cnn, eps=None, training=False):
        h = features
        for i, layer in enumerate(self.mnf):
            ez, eo = eps[i] if eps is not None else (None, None)
            h = layer(h, eps_z=ez, eps_out=eo)
            # BatchNorm is built on (rows, units); fold any sample axis into the rows.
            shape = tf.shape(h)
            h = tf.reshape(self.bn[i](tf.reshape(h, (-1, layer.units)), training=training), shape)
            h = self.act(h)
        raw = self.out_layer(h)
        mu = z_cnn + self.cfg.head_mu_scale * raw[..., 0]
        sigma = 1e-4 + tf.nn.softplus(raw[..., 1] + self.cfg.head_sigma_offset)
        return mu, sigma

    def kl_divergence(self):
        return tf.add_n([layer.kl_divergence() for layer in self.mnf])
