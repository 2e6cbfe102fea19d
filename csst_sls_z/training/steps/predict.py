"""The network's predictions on a fixed realisation of a simulated set, cached in the work directory.

Shared by the calibrate step (validation set) and the evaluation (test set).
"""
from __future__ import annotations

import numpy as np

from .data import fixed

BATCH = 512


def predict_set(regen, name):
    """{"z_true", "z_cnn", "mean", "sigma", "aleatoric", "epistemic", "features", "snr_gi"} of set ``name``."""
    cache = regen.work / f"pred_{name}.npz"
    if cache.exists():
        with np.load(cache) as d:
            return {k: d[k] for k in d.files}
    sampler, cfg = regen.sampler()
    x, z = fixed(regen, name)
    pred = sampler.predict(x)
    feats = []
    import tensorflow as tf
    for s in range(0, x.shape[0], BATCH):
        feats.append(sampler.backbone(tf.convert_to_tensor(x[s:s + BATCH]), training=False)["features"].numpy())
    out = {"z_true": z, "z_cnn": pred.z_cnn, "mean": pred.mean, "sigma": pred.sigma,
           "aleatoric": pred.aleatoric, "epistemic": pred.epistemic, "features": np.concatenate(feats),
           "snr_gi": regen.data()[name].snr_gi}
    np.savez(cache, **out)
    return out
