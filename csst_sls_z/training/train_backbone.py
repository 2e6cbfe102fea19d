"""Train the CNN backbone: softmax over redshift bins (default) or the paper's log-cosh.

Adam with a cosine learning-rate decay over a wall-clock budget; the weights with the
best validation loss are kept (and checkpointed, so an interrupted run resumes).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import queue
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..network.backbone import build_backbone, smoothed_labels, z_from_output
from .metrics import outlier_fraction, sigma_nmad

log = logging.getLogger(__name__)


def _prefetch(gen, depth=3):
    """Make batches in a background thread (numpy releases the GIL) while TF trains."""
    q = queue.Queue(maxsize=depth)

    def work():
        for item in gen:
            q.put(item)
    threading.Thread(target=work, daemon=True).start()
    while True:
        yield q.get()


def loss_fn(cfg, output, z):
    if cfg.objective == "zbins":
        labels = smoothed_labels(cfg, z)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=output))
    d = output[:, 0] - tf.cast(z, tf.float32)
    # log(cosh(d)) written stably.
    return tf.reduce_mean(d + tf.nn.softplus(-2.0 * d) - math.log(2.0))


def evaluate_backbone(model, cfg, x, z, batch=512):
    losses, zs = [], []
    for s in range(0, x.shape[0], batch):
        out = model(x[s:s + batch], training=False)["output"]
        losses.append(float(loss_fn(cfg, out, z[s:s + batch])) * out.shape[0])
        zs.append(z_from_output(cfg, out).numpy())
    zp = np.concatenate(zs)
    return sum(losses) / x.shape[0], zp


def train_backbone(cfg, batches, x_val, z_val, budget_s: float, ckpt_dir: Path, batch_size: int = 256,
                   lr: float = 1e-3, eval_every_s: float = 120.0, progress: bool = True):
    """Returns (model, history). ``batches`` yields (x, z) numpy batches."""
    from tqdm import tqdm
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model = build_backbone(cfg)
    opt = tf.keras.optimizers.Adam(learning_rate=lr)
    ckpt = tf.train.Checkpoint(model=model, opt=opt, elapsed=tf.Variable(0.0, dtype=tf.float64),
                               step=tf.Variable(0, dtype=tf.int64))
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir / "last"), max_to_keep=1)
    best_path = ckpt_dir / "best.weights.npz"
    hist_path = ckpt_dir / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.exists() else []
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        log.info("resumed backbone training at step %d, %.0f s", int(ckpt.step), float(ckpt.elapsed))

    @tf.function(reduce_retracing=True)
    def step(x, z):
        with tf.GradientTape() as tape:
            out = model(x, training=True)["output"]
            loss = loss_fn(cfg, out, z)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    best = min((h["val_loss"] for h in history), default=np.inf)
    stream = _prefetch(batches)
    t_start = time.time() - float(ckpt.elapsed)
    last_eval = time.time()
    bar = tqdm(total=int(budget_s), unit="s", desc=f"backbone[{cfg.objective}]", disable=not progress,
               initial=int(float(ckpt.elapsed)))
    while True:
        elapsed = time.time() - t_start
        if elapsed >= budget_s:
            break
        opt.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget_s))))
        x, z = next(stream)
        loss = step(tf.convert_to_tensor(x), tf.convert_to_tensor(z))
        ckpt.step.assign_add(1)
        bar.n = int(elapsed)
        bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        bar.update(0)
        if time.time() - last_eval >= eval_every_s or time.time() - t_start >= budget_s:
            val_loss, zp = evaluate_backbone(model, cfg, x_val, z_val)
            entry = {"elapsed_s": time.time() - t_start, "step": int(ckpt.step),
                     "samples": int(ckpt.step) * batch_size, "val_loss": val_loss,
                     "sigma_nmad": sigma_nmad(zp, z_val), "eta": outlier_fraction(zp, z_val)}
            history.append(entry)
            log.info("backbone %s: %s", cfg.objective, json.dumps(entry))
            if val_loss < best:
                best = val_loss
                np.savez(best_path, *[w.numpy() for w in model.weights])
            ckpt.elapsed.assign(time.time() - t_start)
            manager.save()
            hist_path.write_text(json.dumps(history, indent=1))
            last_eval = time.time()
    bar.close()
    val_loss, zp = evaluate_backbone(model, cfg, x_val, z_val)
    if val_loss < best or not best_path.exists():
        np.savez(best_path, *[w.numpy() for w in model.weights])
    with np.load(best_path) as arrs:
        for w, k in zip(model.weights, sorted(arrs.files, key=lambda s: int(s.split("_")[1]))):
            w.assign(arrs[k])
    return model, history
