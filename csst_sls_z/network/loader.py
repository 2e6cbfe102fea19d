"""The one place the network is built: fresh, or from its reference files (imports TensorFlow).

``build_network`` is used by the stage (through ``load_sampler``), the regeneration (its
backbone and head steps, the calibration and the evaluation), the DUMMY set and both
training loops, so every path builds the same architecture and runs the same checks.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)


class Network(NamedTuple):
    backbone: object           # keras.Model, or None when not asked for
    head: object               # network.head.BNNHead, or None when not asked for
    cfg: object                # network.config.NetworkConfig (the backbone's)


def build_network(cfg=None, backbone_file=None, head_file=None, *, backbone: bool = True,
                  head: bool = True) -> Network:
    """The backbone and the MNF head, built with their weights made.

    cfg: the configuration of a fresh, untrained network; with ``backbone_file`` it is
    read from that file instead (and must not be given). With files, their weights are
    loaded, refusing any count or shape mismatch; a head file must have been trained for
    the backbone's architecture. ``backbone`` / ``head`` = False leaves that part out
    (``None`` in the result).
    """
    import tensorflow as tf
    from ..reffiles.header import ReferenceFileError
    from .backbone import build_backbone
    from .head import BNNHead
    from .weights import load_weights, read_config
    if backbone_file is not None:
        if cfg is not None:
            raise ValueError("give a configuration or a backbone file, not both")
        cfg = read_config(backbone_file, "backbone")
    if cfg is None:
        raise ValueError("build_network needs a configuration or a backbone file")
    head_cfg = cfg
    if head and head_file is not None:
        head_cfg = read_config(head_file, "bnnhead")
        if head_cfg.head_units != cfg.head_units or head_cfg.widths != cfg.widths:
            raise ReferenceFileError(
                f"bnnhead file {head_file} was trained for another backbone ({head_cfg.name}, not {cfg.name})")
    model = None
    if backbone:
        model = build_backbone(cfg)
        if backbone_file is not None:
            load_weights(model, backbone_file, "backbone")
    bnn = None
    if head:
        bnn = BNNHead(head_cfg)
        n_features = cfg.widths[-1]            # the pooled width of the last residual block
        bnn(tf.zeros((2, n_features)), tf.zeros((2,)))
        if head_file is not None:
            load_weights(bnn, head_file, "bnnhead")
    return Network(model, bnn, cfg)


def load_sampler(refset, n_samples: int, seed: int, batch: int = 256, per_object_noise: bool = False,
                 precision: str = "float32"):
    """The stage's sampler on a reference set's backbone and head: (Sampler, cfg)."""
    return sampler_from_files(refset.path("backbone"), refset.path("bnnhead"), n_samples, seed, batch,
                              per_object_noise, precision)


def sampler_from_files(backbone_file: Path, head_file: Path, n_samples: int, seed: int, batch: int = 256,
                       per_object_noise: bool = False, precision: str = "float32"):
    """(Sampler, cfg) on a backbone file and a head file (a set's, or the regeneration's work files);
    ``precision``: the backbone's arithmetic (``datamodel.BACKBONE_PRECISIONS``)."""
    from .sampler import Sampler
    net = build_network(backbone_file=backbone_file, head_file=head_file)
    log.info("network %s (objective %s) loaded: backbone %d, head %d parameters", net.cfg.name, net.cfg.objective,
             net.backbone.count_params(), net.head.count_params())
    return Sampler(net.backbone, net.head, net.cfg, n_samples=n_samples, seed=seed, batch=batch,
                   per_object_noise=per_object_noise, precision=precision), net.cfg
