"""Backbone training objectives: one registry entry each.

An objective says how the backbone's pooled features become its output, how that output
is trained against the true redshift, and how Z_CNN is read back from it:

* ``output_layer(cfg)``: the last layer, a Keras layer applied to the (dropped-out) features;
* ``loss(cfg, output, z)``: the per-example training loss;
* ``z_from_output(cfg, output)``: Z_CNN;
* ``binned``: whether the output is over the configuration's redshift bins, which are
  equal in ``cfg.bin_space`` (``"z"`` or ``"ln1pz"``, see ``config.NetworkConfig``).

A new objective is one more entry in ``OBJECTIVES``: the backbone builder, the training
loss, the sampler's Z_CNN and the regeneration all look it up here by the name the
backbone file records (``OBJECTIV``, and ``objective`` in its CONFIG table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from .config import NetworkConfig

ZBINS_HALF_WINDOW = 3          # zbins: Z_CNN refines the mode by the mean of 3 bins each side
ZBINS_LABEL_SIGMA_BINS = 1.0   # zbins: one-hot labels smoothed by a Gaussian one bin wide
# A configuration may set its own width in ``cfg.extra["label_sigma_bins"]``; 0 is a hard
# (one-hot) target. Network files record ``extra``, so the width travels with the weights.


@dataclass(frozen=True)
class Objective:
    name: str
    output_layer: Callable     # cfg -> keras layer on the features
    loss: Callable             # (cfg, output, z) -> (N,) per-example loss
    z_from_output: Callable    # (cfg, output) -> (N,) Z_CNN
    binned: bool               # output over the cfg's bins (in cfg.bin_space)
    describe: str = ""


# ----------------------------------------------------------------------------- bins
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


def label_sigma_bins(cfg: NetworkConfig) -> float:
    """The width of the training labels' Gaussian in bins (0: one-hot)."""
    return float(cfg.extra.get("label_sigma_bins", ZBINS_LABEL_SIGMA_BINS))


def smoothed_labels(cfg: NetworkConfig, z, sigma_bins: float | None = None):
    """One-hot bin labels smoothed by a Gaussian ``sigma_bins`` wide (training target).

    ``sigma_bins`` defaults to the configuration's (``label_sigma_bins``); 0 gives the one-hot
    label of the bin that holds z.
    """
    sigma_bins = label_sigma_bins(cfg) if sigma_bins is None else float(sigma_bins)
    if sigma_bins <= 0:
        idx = tf.cast(tf.floor((_to_bin_space(cfg, z) - cfg.bin_range[0]) / cfg.bin_width), tf.int32)
        return tf.one_hot(tf.clip_by_value(idx, 0, cfg.n_bins - 1), cfg.n_bins, dtype=tf.float32)
    centres = tf.constant(bin_coordinates(cfg), dtype=tf.float32)
    d = (_to_bin_space(cfg, z)[:, None] - centres[None, :]) / (sigma_bins * cfg.bin_width)
    w = tf.exp(-0.5 * d * d)
    return w / tf.reduce_sum(w, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- zbins
def _zbins_z(cfg: NetworkConfig, output, half_window: int = ZBINS_HALF_WINDOW):
    """The mode, refined by the probability-weighted mean of the bins within ``half_window`` of it."""
    output = tf.convert_to_tensor(output)
    prob = tf.nn.softmax(output, axis=-1)
    mode = tf.argmax(prob, axis=-1, output_type=tf.int32)
    offsets = tf.range(-half_window, half_window + 1)
    idx = tf.clip_by_value(mode[:, None] + offsets[None, :], 0, cfg.n_bins - 1)
    p = tf.gather(prob, idx, batch_dims=1)
    centres = tf.constant(bin_centres(cfg), dtype=prob.dtype)
    zc = tf.gather(centres, idx)
    return tf.reduce_sum(p * zc, axis=-1) / tf.maximum(tf.reduce_sum(p, axis=-1), 1e-12)


def _zbins_loss(cfg: NetworkConfig, output, z):
    return tf.nn.softmax_cross_entropy_with_logits(labels=smoothed_labels(cfg, z), logits=output)


# ----------------------------------------------------------------------------- logcosh
def _logcosh_loss(cfg: NetworkConfig, output, z):
    d = output[:, 0] - tf.cast(z, tf.float32)
    # log(cosh(d)) written stably.
    return d + tf.nn.softplus(-2.0 * d) - math.log(2.0)


def _logcosh_z(cfg: NetworkConfig, output):
    return tf.convert_to_tensor(output)[:, 0]


OBJECTIVES = {
    "zbins": Objective(
        "zbins", output_layer=lambda cfg: keras.layers.Dense(cfg.n_bins, name="zbins_logits"),
        loss=_zbins_loss, z_from_output=_zbins_z, binned=True,
        describe="softmax over the redshift bins, cross-entropy against labels smoothed by a Gaussian "
                 "(one bin wide unless the configuration says otherwise)"),
    "logcosh": Objective(
        "logcosh", output_layer=lambda cfg: keras.layers.Dense(1, name="z_regression"),
        loss=_logcosh_loss, z_from_output=_logcosh_z, binned=False,
        describe="the paper's Dense(1) regression with the log-cosh loss"),
}


def objective_of(cfg: NetworkConfig) -> Objective:
    """The registry entry of the objective ``cfg`` records."""
    try:
        return OBJECTIVES[cfg.objective]
    except KeyError:
        raise ValueError(f"unknown objective {cfg.objective!r} (known: {', '.join(OBJECTIVES)})") from None


def z_from_output(cfg: NetworkConfig, output):
    """Z_CNN from the backbone output, by the objective recorded in the reference set."""
    return objective_of(cfg).z_from_output(cfg, output)


def per_example_loss(cfg: NetworkConfig, output, z):
    """The training loss of the objective ``cfg`` records, one value per example."""
    return objective_of(cfg).loss(cfg, output, z)
