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

    def noise(self, n_samples: int, n_objects: int, seed, per_object: bool = True):
        """Standard-normal draws for every MNF layer, from a stateless seed (reproducible).

        z is shared by all objects of one sample. The output noise (local
        reparameterisation) is drawn per object, (S, N, units), when ``per_object``;
        otherwise one draw per sample serves every object of the batch, (S, 1, units),
        broadcast by the layers. Each object's S samples have the same distribution either
        way (each pre-activation is mean + std * N(0, 1) given z); only the Monte-Carlo
        errors of objects in one batch become correlated, and the draws cost N times less
        (docs/performance.md, "Shared output noise").
        """
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        eps = []
        for i, layer in enumerate(self.mnf):
            eps_z = tf.random.stateless_normal((n_samples, 1, layer.input_dim), seed=seed + [0, 2 * i])
            eps_o = tf.random.stateless_normal((n_samples, n_objects if per_object else 1, layer.units),
                                               seed=seed + [0, 2 * i + 1])
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

    def sample_moments(self, features, z_cnn, eps, block: int | None = None):
        """The S-sample moments for features shared by every sample (inference only).

        ``features`` (N, F) and ``z_cnn`` (N,) are one backbone pass; ``eps`` is
        :meth:`noise` for S samples and N objects. Returns (mean of mu, mean of sigma^2,
        variance of mu), each (N,): the numbers of ``call`` on the features tiled S times
        with the same noise, up to float rounding, but the first MNF layer computes its
        output variance once per object and folds z into its inputs
        (:meth:`MNFDense.call_shared`), and nothing is tiled. ``block``: run the samples
        ``block`` at a time (a loop; S must be a multiple), which keeps the per-block
        tensors small; the moments are taken over all S samples at the end, as without it.
        """
        n_samples = eps[0][0].shape[0]
        std0 = self.mnf[0].shared_std(features)
        if not block or block >= n_samples or n_samples % block:
            mu, sigma = self._samples(features, z_cnn, eps, std0)
        else:
            nb = n_samples // block
            split = [tuple(tf.reshape(e, (nb, block) + tuple(e.shape[1:])) for e in pair) for pair in eps]
            mu, sigma = tf.map_fn(lambda e: self._samples(features, z_cnn, e, std0), split,
                                  fn_output_signature=(features.dtype, features.dtype))
            mu = tf.reshape(mu, (n_samples, -1))
            sigma = tf.reshape(sigma, (n_samples, -1))
        mean = tf.reduce_mean(mu, axis=0)
        return mean, tf.reduce_mean(sigma * sigma, axis=0), tf.reduce_mean(tf.square(mu - mean[None]), axis=0)

    def _samples(self, features, z_cnn, eps, std0):
        """(mu, sigma), each (S, N), of the S samples in ``eps`` on shared features."""
        h = None
        for i, layer in enumerate(self.mnf):
            ez, eo = eps[i]
            h = layer.call_shared(features, ez, eo, std0) if i == 0 else layer(h, eps_z=ez, eps_out=eo)
            shape = tf.shape(h)
            h = tf.reshape(self.bn[i](tf.reshape(h, (-1, layer.units)), training=False), shape)
            h = self.act(h)
        raw = self.out_layer(h)
        mu = z_cnn[None] + self.cfg.head_mu_scale * raw[..., 0]
        sigma = 1e-4 + tf.nn.softplus(raw[..., 1] + self.cfg.head_sigma_offset)
        return mu, sigma

    def kl_divergence(self):
        return tf.add_n([layer.kl_divergence() for layer in self.mnf])
