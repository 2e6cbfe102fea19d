"""The 1D ResNet backbone of Zhou et al. 2024 and its objective's output layer.

Stem Conv1D(stem, k) + BN + ReLU + max-pool; 8 residual blocks (two Conv1D(k) with BN and
ReLU; a 1x1 convolution on the skip when the block downsamples or changes width),
downsampling at every second block; global average pooling; dropout. The features
(the pooled vector) feed the output layer of the configuration's training objective
(``objectives.OBJECTIVES``: a softmax over redshift bins, ``zbins``, or the paper's
Dense(1) regression, ``logcosh``).

``FrozenBackbone`` is the same network for inference only: each BatchNorm folded into the
convolution before it (a kernel and a bias), so a layer is one convolution with bias and
ReLU that oneDNN runs fused, with no separate normalisation pass (measured in
docs/performance.md). It lives beside ``build_backbone`` because it walks the same
layer names: a change to the architecture changes both, and
``tests/test_network.py::test_frozen_backbone_is_the_keras_backbone`` compares them.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..datamodel import BACKBONE_PRECISIONS
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



def _folded(conv, bn, dtype):
    """(kernel, bias) of Conv1D(no bias) followed by inference BatchNorm, as one convolution."""
    gamma, beta, mean, var = (np.asarray(t.numpy(), np.float64) for t in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    scale = gamma / np.sqrt(var + bn.epsilon)
    kernel = np.asarray(conv.kernel.numpy(), np.float64) * scale          # (k, c_in, c_out) * (c_out,)
    return (tf.constant(kernel.astype(np.float32), dtype=dtype),
            tf.constant((beta - mean * scale).astype(np.float32), dtype=dtype))


class FrozenBackbone:
    """``build_backbone``'s network for inference: (N, L, 2) float32 -> (features, output),
    both float32, the numbers of ``model(x, training=False)`` up to float rounding.

    The weights are read once, when it is made (later changes to ``model`` are not seen).
    ``precision``: "float32" (the default; agrees with the Keras model to about 1e-6) or
    "bfloat16", where the convolutions run in bfloat16 (about twice as fast on CPUs with
    AVX512-BF16) and the features are pooled and the output layer applied in float32; it
    changes the numbers (docs/performance.md, "bfloat16 backbone").
    """

    def __init__(self, model: keras.Model, cfg: NetworkConfig, precision: str = "float32"):
        if precision not in BACKBONE_PRECISIONS:
            raise ValueError(f"precision must be one of {BACKBONE_PRECISIONS}, not {precision!r}")
        self.cfg = cfg
        self.precision = precision
        self.dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
        layer = {lyr.name: lyr for lyr in model.layers}
        self.stem = _folded(layer["stem_conv"], layer["stem_bn"], self.dtype)
        self.blocks = []
        for i in range(len(cfg.widths)):
            name = f"block{i}"
            skip = (_folded(layer[f"{name}_skip"], layer[f"{name}_bns"], self.dtype)
                    if f"{name}_skip" in layer else None)
            self.blocks.append((_folded(layer[f"{name}_c1"], layer[f"{name}_bn1"], self.dtype),
                                _folded(layer[f"{name}_c2"], layer[f"{name}_bn2"], self.dtype),
                                skip, 2 if i % 2 == 1 else 1))
        self.output_layer = model.layers[-1]          # the objective's layer (dropout is off in inference)

    @staticmethod
    def _conv(x, kernel_bias, stride=1, relu=True):
        y = tf.nn.bias_add(tf.nn.conv1d(x, kernel_bias[0], stride, "SAME"), kernel_bias[1])
        return tf.nn.relu(y) if relu else y

    def __call__(self, x):
        y = self._conv(tf.cast(x, self.dtype), self.stem)
        y = tf.nn.max_pool1d(y, 2, 2, "VALID")
        for c1, c2, skip, stride in self.blocks:
            h = self._conv(self._conv(y, c1, stride), c2, relu=False)
            y = tf.nn.relu(h + (self._conv(y, skip, stride, relu=False) if skip is not None else y))
        features = tf.reduce_mean(tf.cast(y, tf.float32), axis=1)
        return features, self.output_layer(features)
