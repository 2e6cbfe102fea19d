"""Backbone training under tf.distribute: one replica on CPU, MirroredStrategy where there are several.

The multi-replica case runs in a fresh process with the CPU split into two logical devices
(which must happen before TensorFlow starts), so MirroredStrategy is exercised for real
without a GPU: each replica gets half of every batch and the gradients are all-reduced.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    import keras
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from csst_sls_z.network.backbone import build_backbone
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.training.train_backbone import make_train_step, split_batch, train_backbone
    import step_clock
    step_clock.install(1.0)       # the budget below is 4 steps, not 20 seconds: the same under load
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    cfg = replace(CONFIGS["smoke"], input_length=64, dropout=0.0)
    rng = np.random.default_rng(0)

    def make(n):   # a toy: the flux level encodes z
        z = rng.uniform(0.0, 1.6, n).astype(np.float32)
        x = np.ones((n, 64, 2), np.float32)
        x[..., 0] = 2.0 * z[:, None] + 0.05 * rng.standard_normal((n, 64))
        return x, z

    # A step on a batch whose halves are identical: each replica's BatchNorm statistics
    # are then those of the whole batch, so two replicas must reproduce one replica exactly.
    half_x, half_z = make(16)
    x, z = np.concatenate([half_x, half_x]), np.concatenate([half_z, half_z])
    weights, losses = {}, {}
    for name, strategy in (("one", tf.distribute.get_strategy()), ("two", mirrored)):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = build_backbone(cfg)
            # Plain SGD, so the check sees the aggregated gradient itself: Adam's normalised steps
            # turn float rounding of near-zero gradients into full-size sign flips.
            opt = keras.optimizers.SGD(0.05)
            opt.build(model.trainable_variables)
        start = [w.numpy() for w in model.trainable_variables]
        step = make_train_step(model, opt, cfg, strategy)
        losses[name] = [float(step(split_batch(strategy, x, z)))]
        weights[name] = [w.numpy() - w0 for w, w0 in zip(model.trainable_variables, start)]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights["one"], weights["two"]))
    moved = max(float(np.max(np.abs(a))) for a in weights["one"])

    parts = mirrored.experimental_local_results(split_batch(mirrored, *make(64)))

    def stream():
        while True:
            yield make(64)
    x_val, z_val = make(128)
    model, history = train_backbone(cfg, stream(), x_val, z_val, budget_s=20, ckpt_dir=sys.argv[1],
                                    batch_size=64, eval_every_s=2, progress=False, strategy=mirrored)
    kernel = model.get_layer("stem_conv").kernel
    replicas = [v.numpy() for v in mirrored.experimental_local_results(kernel)]
    print("RESULT" + json.dumps({"replicas": mirrored.num_replicas_in_sync,
                                 "split": [int(p[0].shape[0]) for p in parts],
                                 "max_weight_diff": diff, "max_weight": moved, "losses": losses,
                                 "in_sync": bool(np.array_equal(replicas[0], replicas[-1])),
                                 "history": history}))
""")


@pytest.mark.slow
def test_mirrored_strategy_is_exact_and_trains(tmp_path):
    tests = os.path.dirname(os.path.abspath(__file__))          # for step_clock
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    assert res["replicas"] == 2
    assert res["split"] == [32, 32]                          # each replica gets its half of the batch
    # Two replicas with all-reduced gradients = one replica on the whole batch, step for step.
    np.testing.assert_allclose(res["losses"]["two"], res["losses"]["one"], rtol=1e-5)
    assert res["max_weight"] > 1e-3                           # the weights moved ...
    assert res["max_weight_diff"] < 1e-3 * res["max_weight"]  # ... by the same amount on both
    assert res["in_sync"]                                     # mirrored weights stay identical
    assert len(res["history"]) >= 2 and all(np.isfinite(h["val_loss"]) for h in res["history"])
    assert (tmp_path / "ckpt" / "best.weights.npz").exists()


def test_cpu_only_uses_one_replica():
    import tensorflow as tf
    from csst_sls_z.training.train_backbone import split_batch, training_strategy
    if tf.config.list_logical_devices("GPU"):
        assert isinstance(training_strategy(), tf.distribute.MirroredStrategy)
        return
    strategy = training_strategy()
    assert strategy.num_replicas_in_sync == 1
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    z = np.array([0.1, 0.2, 0.3], np.float32)
    xs, zs = split_batch(strategy, x, z)
    np.testing.assert_array_equal(xs.numpy(), x)         # the whole batch on the one replica
    np.testing.assert_array_equal(zs.numpy(), z)


def test_schedules_start_peak_and_end_where_they_say():
    from csst_sls_z.training.train_backbone import SCHEDULES, learning_rate
    lr = 2e-3
    assert learning_rate("cosine", lr, 0.0) == pytest.approx(lr)
    assert learning_rate("cosine", lr, 0.5) == pytest.approx(lr / 2)
    assert learning_rate("warmup_cosine", lr, 0.0) == pytest.approx(0.01 * lr)
    assert learning_rate("warmup_cosine", lr, 0.05) == pytest.approx(lr)
    assert learning_rate("onecycle", lr, 0.0) == pytest.approx(0.04 * lr)
    assert learning_rate("onecycle", lr, 0.3) == pytest.approx(lr)
    for name in SCHEDULES:
        rates = [learning_rate(name, lr, f) for f in np.linspace(0, 1, 201)]
        assert max(rates) == pytest.approx(lr, rel=1e-3) and rates[-1] < 1e-3 * lr
        peak = int(np.argmax(rates))
        assert np.all(np.diff(rates[peak:]) <= 1e-15)          # never rises again after the peak
    with pytest.raises(ValueError, match="schedule must be one of"):
        learning_rate("linear", lr, 0.5)


def test_cpu_clock_budget_adamw_and_wall_time_in_history(tmp_path):
    """A budget on the process's CPU clock; AdamW decays weights; each entry records wall and CPU time."""
    import time
    from dataclasses import replace
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.training.train_backbone import make_optimizer, train_backbone
    cfg = replace(CONFIGS["smoke"], input_length=64, dropout=0.0)
    rng = np.random.default_rng(0)

    def make(n):
        z = rng.uniform(0.0, 1.6, n).astype(np.float32)
        x = np.ones((n, 64, 2), np.float32)
        x[..., 0] = 2.0 * z[:, None] + 0.05 * rng.standard_normal((n, 64))
        return x, z

    def stream():
        while True:
            yield make(32)
    readings = []

    def clock():                       # a clock of steps: each reading advances one "second"
        readings.append(None)
        return float(len(readings))
    x_val, z_val = make(64)
    _, history = train_backbone(cfg, stream(), x_val, z_val, budget_s=30, ckpt_dir=tmp_path, batch_size=32,
                                eval_every_s=12, progress=False, schedule="onecycle", optimizer="adamw",
                                clock=clock)
    assert len(history) >= 2 and history[-1]["elapsed_s"] >= 30 - 3
    assert all(h["wall_s"] > 0 and h["cpu_s"] > 0 for h in history)
    assert history[-1]["wall_s"] >= history[0]["wall_s"]
    opt = make_optimizer("adamw", 1e-3, 1e-4)
    assert opt.weight_decay == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("sgd", 1e-3, 0.0)
