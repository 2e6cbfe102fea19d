"""Backbone configurations, the Z_CNN rule, and weight files that refuse wrong shapes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from csst_sls_z.network.config import CONFIGS


def test_backbone_shapes_and_parameter_counts():
    from csst_sls_z.network.backbone import build_backbone
    cfg = replace(CONFIGS["cpu"], input_length=913)
    model = build_backbone(cfg)
    out = model(np.zeros((3, 913, 2), np.float32))
    assert out["features"].shape == (3, 128) and out["output"].shape == (3, 400)
    assert 0.5e6 < model.count_params() < 0.7e6                         # ~0.63M as measured in training.md
    paper = build_backbone(replace(CONFIGS["paper"], input_length=913, objective="logcosh"))
    assert paper.output["output"].shape[-1] == 1
    assert 8.5e6 < paper.count_params() < 9.6e6                          # ~9.1-9.3M


def test_z_from_output_uses_the_recorded_objective():
    import tensorflow as tf
    from csst_sls_z.network.objectives import bin_centres, smoothed_labels, z_from_output
    cfg = CONFIGS["cpu"]
    z = np.array([0.1234, 0.8, 1.55], np.float32)
    logits = tf.math.log(smoothed_labels(cfg, z) + 1e-12)
    np.testing.assert_allclose(z_from_output(cfg, logits).numpy(), z, atol=cfg.bin_width / 4)
    reg = replace(cfg, objective="logcosh")
    np.testing.assert_allclose(z_from_output(reg, z[:, None]).numpy(), z)
    assert bin_centres(cfg)[0] == pytest.approx(0.002)


def test_label_width_comes_from_the_configuration_and_zero_is_one_hot():
    from csst_sls_z.network.objectives import bin_coordinates, label_sigma_bins, smoothed_labels
    cfg = CONFIGS["cpu_ln"]
    z = np.array([0.0, 0.5, 1.2, 1.6], np.float32)
    soft = smoothed_labels(cfg, z).numpy()
    hard_cfg = replace(cfg, extra={"label_sigma_bins": 0.0})
    assert label_sigma_bins(cfg) == 1.0 and label_sigma_bins(hard_cfg) == 0.0
    hard = smoothed_labels(hard_cfg, z).numpy()
    assert np.all(hard.sum(axis=1) == 1.0) and np.all((hard == 0) | (hard == 1))
    centres = bin_coordinates(cfg)
    # the hot bin is the one holding ln(1 + z) (the last for z_max), the soft labels' mode
    hot = hard.argmax(axis=1)
    assert np.all(np.abs(centres[hot] - np.log1p(z)) <= cfg.bin_width / 2 + 1e-6)
    assert np.array_equal(hot, soft.argmax(axis=1))
    assert np.all(soft.max(axis=1) < 0.75)                     # smoothed: spread over several bins
    wide = smoothed_labels(replace(cfg, extra={"label_sigma_bins": 3.0}), z).numpy()
    assert np.all(wide.max(axis=1) < soft.max(axis=1))


def test_weights_round_trip_and_shape_mismatch(tmp_path):
    from csst_sls_z.network.backbone import build_backbone
    from csst_sls_z.network.weights import load_weights, read_config, save_weights
    from csst_sls_z.reffiles.header import ReferenceFileError
    cfg = replace(CONFIGS["smoke"], input_length=100)
    a = build_backbone(cfg)
    save_weights(a, tmp_path / "b.fits", "backbone", cfg, "DUMMY", "test weights")
    assert read_config(tmp_path / "b.fits", "backbone") == cfg
    b = build_backbone(cfg)
    load_weights(b, tmp_path / "b.fits", "backbone")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    other_kernel = build_backbone(replace(cfg, kernel=5))
    with pytest.raises(ReferenceFileError, match=r"has shape \(7, .*needs \(5, "):
        load_weights(other_kernel, tmp_path / "b.fits", "backbone")
    wider = build_backbone(replace(cfg, widths=(8, 8, 8, 8, 16, 16, 32, 32)))
    with pytest.raises(ReferenceFileError, match="holds 112 weight arrays"):
        load_weights(wider, tmp_path / "b.fits", "backbone")


def test_a_new_objective_is_one_registry_entry(monkeypatch):
    """Builder, loss and Z_CNN all follow the registry; an unknown name is refused."""
    import keras
    import tensorflow as tf
    from csst_sls_z.network import objectives
    from csst_sls_z.network.backbone import build_backbone
    entry = objectives.Objective("l2", output_layer=lambda cfg: keras.layers.Dense(1, name="z_l2"),
                                 loss=lambda cfg, out, z: tf.square(out[:, 0] - z),
                                 z_from_output=lambda cfg, out: out[:, 0] + 0.0, binned=False)
    monkeypatch.setitem(objectives.OBJECTIVES, "l2", entry)
    cfg = replace(CONFIGS["smoke"], input_length=64, objective="l2")
    model = build_backbone(cfg)
    out = model(np.zeros((2, 64, 2), np.float32))["output"]
    assert out.shape == (2, 1)
    z = tf.constant([0.5, 1.0])
    np.testing.assert_allclose(objectives.per_example_loss(cfg, out, z).numpy(), (out[:, 0] - z).numpy() ** 2)
    np.testing.assert_allclose(objectives.z_from_output(cfg, out).numpy(), out[:, 0].numpy())
    with pytest.raises(ValueError, match="unknown objective 'nope'"):
        build_backbone(replace(cfg, objective="nope"))


def test_one_builder_checks_the_head_against_the_backbone(tmp_path):
    from csst_sls_z.network.loader import build_network
    from csst_sls_z.network.weights import save_weights
    from csst_sls_z.reffiles.header import ReferenceFileError
    cfg = replace(CONFIGS["smoke"], input_length=64)
    backbone, head, _ = build_network(cfg)
    save_weights(backbone, tmp_path / "b.fits", "backbone", cfg, "DUMMY", "test backbone")
    save_weights(head, tmp_path / "h.fits", "bnnhead", cfg, "DUMMY", "test head")
    net = build_network(backbone_file=tmp_path / "b.fits", head_file=tmp_path / "h.fits")
    assert net.cfg == cfg
    for a, b in zip(head.weights, net.head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    only = build_network(backbone_file=tmp_path / "b.fits", head=False)
    assert only.head is None and only.backbone.count_params() == backbone.count_params()
    other = replace(cfg, head_units=(8, 4))
    save_weights(build_network(other, backbone=False).head, tmp_path / "h2.fits", "bnnhead", other, "DUMMY", "x")
    with pytest.raises(ReferenceFileError, match="trained for another backbone"):
        build_network(backbone_file=tmp_path / "b.fits", head_file=tmp_path / "h2.fits")


def test_head_output_map_comes_from_the_configuration():
    import tensorflow as tf
    from csst_sls_z.network.loader import build_network
    cfg = replace(CONFIGS["smoke"], input_length=64)
    assert (cfg.head_mu_scale, cfg.head_sigma_offset) == (0.05, -4.6)
    head = build_network(replace(cfg, head_sigma_offset=0.0), backbone=False).head
    mu, sigma = head(tf.zeros((3, 16)), tf.constant([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(mu.numpy(), [0.1, 0.2, 0.3])             # zero output layer: mu = Z_CNN
    np.testing.assert_allclose(sigma.numpy(), 1e-4 + np.log(2.0), rtol=1e-6)
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith("head_") or k == "head_units"}
    assert type(cfg).from_dict(old) == cfg                              # files without them: today's values


def _backbone_with_trained_statistics(cfg, seed=0):
    """A fresh backbone whose BatchNorm statistics and affine terms are far from the identity,
    so that folding them into the convolutions is really exercised."""
    from csst_sls_z.network.loader import build_network
    net = build_network(cfg, head=False)
    rng = np.random.default_rng(seed)
    for layer in net.backbone.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.5, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))
    return net


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_frozen_backbone_is_the_keras_backbone(name):
    """BatchNorm folded into the convolutions (issue 17) gives the Keras model's features and
    output to float rounding; bfloat16 is close but not equal (it changes the numbers)."""
    import tensorflow as tf
    from csst_sls_z.network.backbone import FrozenBackbone
    cfg = replace(CONFIGS[name], input_length=301)
    net = _backbone_with_trained_statistics(cfg)
    x = tf.constant(np.random.default_rng(1).normal(size=(5, cfg.input_length, 2)).astype(np.float32))
    want = net.backbone(x, training=False)
    feats, out = FrozenBackbone(net.backbone, cfg)(x)
    scale = float(tf.reduce_max(tf.abs(want["features"])))
    assert scale > 0.1
    np.testing.assert_allclose(feats.numpy(), want["features"].numpy(), rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(out.numpy(), want["output"].numpy(), rtol=0,
                               atol=2e-5 * float(tf.reduce_max(tf.abs(want["output"]))))
    feats16, out16 = FrozenBackbone(net.backbone, cfg, "bfloat16")(x)
    assert feats16.dtype == tf.float32 and out16.dtype == tf.float32
    err = float(tf.reduce_max(tf.abs(feats16 - want["features"])))
    assert 1e-5 * scale < err < 0.1 * scale


def test_frozen_backbone_refuses_an_unknown_precision():
    from csst_sls_z.network.backbone import FrozenBackbone
    net = _backbone_with_trained_statistics(CONFIGS["smoke"])
    with pytest.raises(ValueError, match="precision must be one of"):
        FrozenBackbone(net.backbone, CONFIGS["smoke"], "float16")
