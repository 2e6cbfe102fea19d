"""Build the frozen network from a reference set (imports TensorFlow)."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def load_sampler(refset, n_samples: int, seed: int, batch: int = 256):
    import tensorflow as tf
    from ..reffile import ReferenceFileError
    from .backbone import build_backbone
    from .head import BNNHead
    from .sampler import Sampler
    from .weights import load_weights, read_config
    cfg = read_config(refset.path("backbone"), "backbone")
    head_cfg = read_config(refset.path("bnnhead"), "bnnhead")
    if head_cfg.head_units != cfg.head_units or head_cfg.widths != cfg.widths:
        raise ReferenceFileError(
            f"bnnhead file {refset.path('bnnhead')} was trained for another backbone ({head_cfg.name}, not {cfg.name})")
    backbone = build_backbone(cfg)
    load_weights(backbone, refset.path("backbone"), "backbone")
    head = BNNHead(cfg)
    head(tf.zeros((2, backbone.output["features"].shape[-1])), tf.zeros((2,)))
    load_weights(head, refset.path("bnnhead"), "bnnhead")
    log.info("network %s (objective %s) loaded: backbone %d, head %d parameters", cfg.name, cfg.objective,
             backbone.count_params(), head.count_params())
    return Sampler(backbone, head, cfg, n_samples=n_samples, seed=seed, batch=batch), cfg
