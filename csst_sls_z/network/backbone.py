"""The 1D ResNet backbone of Zhou et al. 2024 and its two output heads.

Stem Conv1D(stem, k) + BN + ReLU + max-pool; 8 residual blocks (two Conv1D(k) with BN and
ReLU; a 1x1 convolution on the skip when the block downsamples or changes width),
downsampling at every second block; global average pooling; dropout. The features
(the pooled vector) feed either a softmax over redshift bins (``zbins``) or the paper's
Dense(1) regression (``logcosh``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .config import NetworkConfig


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
    """Model: (N, L, 2) -> {'features': (N, F), 'output': (N, n_bins) logits or (N, 1)}."""
    inp = keras.Input((cfg.input_length, 2), name="spectrum")
    x = keras.layers.Conv1D(cfg.stem_filters, cfg.kernel, padding="same", use_bias=False, name="stem_conv")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling1D(2, name="stem_pool")(x)
    for i, width in enumerate(cfg.widths):
        x = _block(x, width, cfg.kernel, downsample=(i % 2 == 1), name=f"block{i}")
    feats = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    drop = keras.layers.Dropout(cfg.dropout, name="dropout")(feats)
    if cfg.objective == "zbins":
        out = keras.layers.Dense(cfg.n_bins, name="zbins_logits")(drop)
    elif cfg.objective == "logcosh":
        out = keras.layers.Dense(1, name="z_regression")(drop)
    else:
        raise ValueError(f"unknown objective {cfg.objective!r}")
    return keras.Model(inp, {"features": feats, "output": out}, name=f"backbone_{cfg.name}")


def bin_coordinates(cfg: NetworkConfig) -> np.ndarray:
    """Bin centres in the binning variable (z, or ln(1 + z))."""
    return cfg.bin_range[0] + cfg.bin_width * (np.arange(cfg.n_bins) + 0.5)


def bin_centres(cfg: NetworkConfig) -> np.ndarray:
    """Bin centres in z."""
    x = bin_coordinates(cfg)
    return np.expm1(x) if cfg.bin_space == "ln1pz" else x


def _to_bin_space(cfg: NetworkConfig, z):
    z = tf.cast(z, tf.float32)
    return tf.math.log1p(z) if cfg.bin_space == "ln1pz" else z


def z_from_output(cfg: NetworkConfig, output, half_window: int = 3):
    """Z_CNN from the backbone output, by the objective recorded in the reference set.

    zbins: the mode, refined by the probability-weighted mean of the bins within
    ``half_window`` of it; logcosh: the regression output itself.
    """
    output = tf.convert_to_tensor(output)
    if cfg.objective == "logcosh":
        return output[:, 0]
    prob = tf.nn.softmax(output, axis=-1)
    mode = tf.argmax(prob, axis=-1, output_type=tf.int32)
    offsets = tf.range(-half_window, half_window + 1)
    idx = tf.clip_by_value(mode[:, None] + offsets[None, :], 0, cfg.n_bins - 1)
    p = tf.gather(prob, idx, batch_dims=1)
    centres = tf.constant(bin_centres(cfg), dtype=prob.dtype)
    zc = tf.gather(centres, idx)
    return tf.reduce_sum(p * zc, axis=-1) / tf.maximum(tf.reduce_sum(p, axis=-1), 1e-12)


def smoothed_labels(cfg: NetworkConfig, z, sigma_bins: float = 1.0):
    """One-hot bin labels smoothed by a Gaussian ``sigma_bins`` wide (training target)."""
    centres = tf.constant(bin_coordinates(cfg), dtype=tf.float32)
    d = (_to_bin_space(cfg, z)[:, None] - centres[None, :]) / (sigma_bins * cfg.bin_width)
    w = tf.exp(-0.5 * d * d)
    return w / tf.reduce_sum(w, axis=-1, keepdims=True)
