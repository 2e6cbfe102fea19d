"""The network's predictions on a fixed realisation of a simulated set, cached in the work directory.

Shared by the calibrate step (validation set) and the evaluation (test set). ``output`` is the
backbone's output (``zbins``: the logits p(z) is made from); a cache written before it
was kept gets it added on first use.
"""
from __future__ import annotations

import numpy as np

from .data import fixed

BATCH = 512


def _backbone_pass(sampler, x):
    """(features, output) of the backbone on every row of x, in batches."""
    import tensorflow as tf
    feats, outputs = [], []
    for s in range(0, x.shape[0], BATCH):
        out = sampler.backbone(tf.convert_to_tensor(x[s:s + BATCH]), training=False)
        feats.append(out["features"].numpy())
        outputs.append(out["output"].numpy())
    return np.concatenate(feats), np.concatenate(outputs)


def predict_set(regen, name):
    """{"z_true", "z_cnn", "mean", "sigma", "aleatoric", "epistemic", "features", "output", "snr_gi"}
    of set ``name``."""
    cache = regen.work / f"pred_{name}.npz"
    if cache.exists():
        with np.load(cache) as d:
            out = {k: d[k] for k in d.files}
        if "output" in out:
            return out
        sampler, _ = regen.sampler()
        x, _ = fixed(regen, name)
        out["output"] = _backbone_pass(sampler, x)[1]
        np.savez(cache, **out)
        return out
    sampler, cfg = regen.sampler()
    x, z = fixed(regen, name)
    pred = sampler.predict(x)
    feats, outputs = _backbone_pass(sampler, x)
    out = {"z_true": z, "z_cnn": pred.z_cnn, "mean": pred.mean, "sigma": pred.sigma,
           "aleatoric": pred.aleatoric, "epistemic": pred.epistemic, "features": feats, "output": outputs,
           "snr_gi": regen.data()[name].snr_gi}
    np.savez(cache, **out)
    return out
