"""Train the Bayesian MNF head on frozen backbone features (NLL + KL / N)."""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import tensorflow as tf

from ..network.loader import build_network
from ..network.objectives import z_from_output

log = logging.getLogger(__name__)


def extract_features(backbone, cfg, x, batch=512):
    feats, zc = [], []
    f = tf.function(lambda xb: backbone(xb, training=False), reduce_retracing=True)
    for s in range(0, x.shape[0], batch):
        out = f(tf.convert_to_tensor(x[s:s + batch]))
        feats.append(out["features"].numpy())
        zc.append(z_from_output(cfg, out["output"]).numpy())
    return np.concatenate(feats), np.concatenate(zc)


def train_head(cfg, feats, z_cnn, z_true, budget_s: float, seed: int = 0, batch_size: int = 512,
               lr: float = 1e-3, progress: bool = True):
    from tqdm import tqdm
    tf.random.set_seed(seed)
    head = build_network(cfg, backbone=False).head
    n = feats.shape[0]
    opt = tf.keras.optimizers.Adam(learning_rate=lr)

    @tf.function(reduce_retracing=True)
    def step(f, zc, zt):
        with tf.GradientTape() as tape:
            mu, sigma = head(f, zc, training=True)
            nll = tf.reduce_mean(tf.math.log(sigma) + 0.5 * tf.square((zt - mu) / sigma))
            loss = nll + head.kl_divergence() / n
        grads = tape.gradient(loss, head.trainable_variables)
        opt.apply_gradients(zip(grads, head.trainable_variables))
        return nll

    rng = np.random.default_rng(seed)
    t0 = time.time()
    bar = tqdm(total=int(budget_s), unit="s", desc="bnn head", disable=not progress)
    while time.time() - t0 < budget_s:
        frac = (time.time() - t0) / budget_s
        opt.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        idx = rng.integers(0, n, batch_size)
        nll = step(tf.convert_to_tensor(feats[idx]), tf.convert_to_tensor(z_cnn[idx]),
                   tf.convert_to_tensor(z_true[idx]))
        bar.n = int(time.time() - t0)
        bar.set_postfix(nll=f"{float(nll):.3f}", refresh=False)
        bar.update(0)
    bar.close()
    return head
