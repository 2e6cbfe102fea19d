"""Step ``head``: freeze the backbone and train the MNF head on its features.

The features (and Z_CNN) of up to ``n_head_features`` training objects are computed once
for one fixed noise draw and reused; the first ``FEATURE_SAMPLE`` of them are kept for the
out-of-distribution statistic of the thresholds.
"""
from __future__ import annotations

import numpy as np

FEATURE_SAMPLE = 20000      # training feature vectors kept for the out-of-distribution statistic
FEATURE_CHUNK = 10000       # objects per noise draw and forward pass


def run(regen):
    from ...network.weights import save_weights
    from ..train_head import train_head
    backbone, cfg = regen.load_backbone()
    train = regen.data()["train"]
    n = min(regen.rc.n_head_features, len(train))
    feats, zc, zt = frozen_features(regen, backbone, cfg, n)
    head = train_head(cfg, feats, zc, zt, regen.rc.head_budget_s, seed=regen.seeds["head"], progress=regen.progress)
    save_weights(head, regen.work / "bnnhead.fits", "bnnhead", cfg, "SIMULATION",
                 "MNF Bayesian head on the frozen backbone", overwrite=True,
                 history=[f"regenerate --config {regen.name}: {n} feature vectors, "
                          f"budget {regen.rc.head_budget_s:.0f} s"])
    np.save(regen.work / "train_features_sample.npy", feats[:FEATURE_SAMPLE])


def frozen_features(regen, backbone, cfg, n):
    """Backbone features of the first n training objects for one fixed set of noise draws.

    Computed once and reused by the head; deterministic from the "features" seed, so the
    thresholds' feature sample can be rebuilt when the network was adopted.
    """
    from ..train_head import extract_features
    maker = regen.batch_maker("train", regen.seeds["features"])
    feats, zc, zt = [], [], []
    for start in range(0, n, FEATURE_CHUNK):
        idx = np.arange(start, min(n, start + FEATURE_CHUNK))
        x, z = maker.batch(idx)
        f, c = extract_features(backbone, cfg, x)
        feats.append(f), zc.append(c), zt.append(z)
    return np.concatenate(feats), np.concatenate(zc), np.concatenate(zt).astype(np.float32)


def train_feature_sample(regen):
    """The training feature sample the head step kept (rebuilt the same way when it is missing)."""
    path = regen.work / "train_features_sample.npy"
    if not path.exists():
        backbone, cfg = regen.load_backbone()
        # The first FEATURE_SAMPLE of the features the head step computed (same chunks, same draws).
        n = min(FEATURE_SAMPLE, regen.rc.n_head_features, len(regen.data()["train"]))
        feats, _, _ = frozen_features(regen, backbone, cfg, n)
        np.save(path, feats)
    return np.load(path)
