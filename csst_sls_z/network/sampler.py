"""BNN inference: the backbone once per spectrum, the head S times on its features.

The backbone is frozen, so its features are computed once and only the small head is
sampled S times (default 200): a 200-sample BNN costs about as much as a few forward
passes. ``predict_naive`` runs S full forward passes with the same noise, for tests and
benchmarks: both give the same numbers up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .objectives import z_from_output


@dataclass
class Prediction:
    z_cnn: np.ndarray        # (N,) deterministic CNN estimate
    mean: np.ndarray         # (N,) mixture mean of mu
    aleatoric: np.ndarray    # (N,) mean of sigma^2
    epistemic: np.ndarray    # (N,) variance of mu
    features: np.ndarray | None = None

    @property
    def sigma(self):
        return np.sqrt(self.aleatoric + self.epistemic)


class Sampler:
    def __init__(self, backbone, head, cfg, n_samples: int = 200, seed: int = 0, batch: int = 256):
        self.backbone = backbone
        self.head = head
        self.cfg = cfg
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.batch = int(batch)
        self._fwd = tf.function(self._forward, reduce_retracing=True)
        self._head = tf.function(self._head_moments, reduce_retracing=True)

    def _forward(self, x):
        out = self.backbone(x, training=False)
        return out["features"], z_from_output(self.cfg, out["output"])

    def _head_moments(self, feats, z_cnn, seed):
        n = tf.shape(feats)[0]
        eps = self.head.noise(self.n_samples, n, seed)
        tiled = tf.broadcast_to(feats[None], (self.n_samples, n, feats.shape[-1]))
        mu, sigma = self.head(tiled, tf.broadcast_to(z_cnn[None], (self.n_samples, n)), eps=eps)
        mean = tf.reduce_mean(mu, axis=0)
        return mean, tf.reduce_mean(sigma * sigma, axis=0), tf.reduce_mean(tf.square(mu - mean[None]), axis=0)

    def _seed(self, chunk_index: int):
        return tf.constant([self.seed, int(chunk_index)], dtype=tf.int32)

    def predict(self, x: np.ndarray, chunk_index: int = 0, return_features: bool = False) -> Prediction:
        """x: (N, L, 2) float32. Noise is seeded by (seed, chunk_index, batch index)."""
        outs = {k: [] for k in ("z", "m", "a", "e", "f")}
        for b, start in enumerate(range(0, x.shape[0], self.batch)):
            xb = tf.convert_to_tensor(x[start:start + self.batch])
            feats, z_cnn = self._fwd(xb)
            m, a, e = self._head(feats, z_cnn, self._seed(chunk_index * 100003 + b))
            for k, v in zip(("z", "m", "a", "e", "f"), (z_cnn, m, a, e, feats)):
                outs[k].append(v.numpy())
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.float32)) for k, v in outs.items()}
        return Prediction(z_cnn=cat["z"], mean=cat["m"], aleatoric=cat["a"], epistemic=cat["e"],
                          features=cat["f"] if return_features else None)

    def predict_naive(self, x: np.ndarray, chunk_index: int = 0) -> Prediction:
        """S full forward passes (backbone + head), with exactly the noise ``predict`` uses."""
        means, alea, epis, zc = [], [], [], []
        for b, start in enumerate(range(0, x.shape[0], self.batch)):
            xb = tf.convert_to_tensor(x[start:start + self.batch])
            n = xb.shape[0]
            eps = self.head.noise(self.n_samples, n, self._seed(chunk_index * 100003 + b))
            mus, sig2 = [], []
            for s in range(self.n_samples):
                feats, z_cnn = self._fwd(xb)          # the whole network, every sample
                eps_s = [(ez[s:s + 1], eo[s:s + 1]) for ez, eo in eps]
                mu, sigma = self.head(feats[None], z_cnn[None], eps=eps_s)
                mus.append(mu[0])
                sig2.append(tf.square(sigma[0]))
            mus = tf.stack(mus)
            mean = tf.reduce_mean(mus, axis=0)
            means.append(mean.numpy())
            alea.append(tf.reduce_mean(tf.stack(sig2), axis=0).numpy())
            epis.append(tf.reduce_mean(tf.square(mus - mean[None]), axis=0).numpy())
            zc.append(z_cnn.numpy())
        return Prediction(z_cnn=np.concatenate(zc), mean=np.concatenate(means),
                          aleatoric=np.concatenate(alea), epistemic=np.concatenate(epis))
