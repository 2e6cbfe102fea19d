"""The 1D ResNet backbone of Zhou et al. 2024 and its objective's output layer.

Stem Conv1D(stem, k) + BN + ReLU + max-pool; 8 residual blocks (two Conv1D(k) with BN and
ReLU; a 1x1 convolution on the skip when the block downsamples or changes width),
downsampling at every second block; global average pooling; dropout. The features
(the pooled vector) feed the output layer of the configuration's training objective
(``objectives.OBJECTIVES``: a softmax over redshift bins, ``zbins``, or the paper's
Dense(1) regression, ``logcosh``).
"""
from __future__ import annotations

import keras

from .config import NetworkConfig
from .objectives import objective_of


def _block(x, width, kernel, downsample, name):
    stride = 2 if downsample else 1
    y = keras.layers.Conv1D(width, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_c1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_r1")(y)
    y = keras.layers.Conv1D(width, kernel, padding="same", use_bias=False, name=f"{name}_c2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    skip = x
    if downsample or x.shape[-1] != width:
        skip = keras.layers.Conv1D(width, 1, strides=stride, use_bias=False, name=f"{name}_skip")(x)
        skip = keras.layers.BatchNormalization(name=f"{name}_bns")(skip)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, skip]))


def build_backbone(cfg: NetworkConfig) -> keras.Model:
    """Model: (N, L, 2) -> {'features': (N, F), 'output': the objective's output}.

    An untrained architecture; ``loader.build_network`` builds it with its head and loads weights.
    """
    inp = keras.Input((cfg.input_length, 2), name="spectrum")
    x = keras.layers.Conv1D(cfg.stem_filters, cfg.kernel, padding="same", use_bias=False, name="stem_conv")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling1D(2, name="stem_pool")(x)
    for i, width in enumerate(cfg.widths):
        x = _block(x, width, cfg.kernel, downsample=(i % 2 == 1), name=f"block{i}")
    feats = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    drop = keras.layers.Dropout(cfg.dropout, name="dropout")(feats)
    out = objective_of(cfg).output_layer(cfg)(drop)
    return keras.Model(inp, {"features": feats, "output": out}, name=f"backbone_{cfg.name}")
