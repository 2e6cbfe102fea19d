"""studies/learning_curves.py: the pieces that decide its numbers (rebinning, FLOPs, the winner rule)."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "studies" / "learning_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_scale_with_widths_and_input(lc):
    from csst_sls_z.network.config import CONFIGS
    cfg = CONFIGS["cpu_ln"]
    base = lc.forward_flops(cfg)
    assert 60e6 < base < 80e6                                 # 69 MFLOP, as the issue measured
    small = lc.arm_config(cfg, lc.ARMS["small"], (395, 518))
    coarse = lc.arm_config(cfg, lc.ARMS["coarse"], (395, 518))
    assert coarse.input_length == 197 + 259
    assert 3.5 < base / lc.forward_flops(small) < 4.5
    assert 1.8 < base / lc.forward_flops(coarse) < 2.1
    hard = lc.arm_config(cfg, lc.ARMS["hard"], (395, 518))
    assert hard.extra["label_sigma_bins"] == 0.0 and cfg.extra == {}


def test_winner_is_the_lowest_eta_among_fast_enough_arms(lc):
    def arm(eta, sigma, rate):
        return {"history": [{"eta": eta, "sigma_nmad": sigma}], "backbone_inference_per_s": rate}
    res = {"arms": {"base": arm(0.40, 0.010, 1500.0), "wide": arm(0.30, 0.008, 400.0),
                    "small": arm(0.398, 0.009, 4000.0), "hard": arm(0.45, 0.005, 1500.0)}}
    e2e = lc.implied_e2e(res, 1000.0)
    assert e2e["base"] == pytest.approx(1000.0)
    assert e2e["wide"] < 1000.0 < e2e["small"]
    # wide is best but too slow; small and base are within 0.5 points: the lower sigma wins
    assert lc.winner(res, e2e) == "small"
    assert lc.winner(res, {}) is None
