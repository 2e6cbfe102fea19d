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
    from csst_sls_z.network.backbone import bin_centres, smoothed_labels, z_from_output
    cfg = CONFIGS["cpu"]
    z = np.array([0.1234, 0.8, 1.55], np.float32)
    logits = tf.math.log(smoothed_labels(cfg, z) + 1e-12)
    np.testing.assert_allclose(z_from_output(cfg, logits).numpy(), z, atol=cfg.bin_width / 4)
    reg = replace(cfg, objective="logcosh")
    np.testing.assert_allclose(z_from_output(reg, z[:, None]).numpy(), z)
    assert bin_centres(cfg)[0] == pytest.approx(0.002)


def test_weights_round_trip_and_shape_mismatch(tmp_path):
    from csst_sls_z.network.backbone import build_backbone
    from csst_sls_z.network.weights import load_weights, read_config, save_weights
    from csst_sls_z.reffile import ReferenceFileError
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
