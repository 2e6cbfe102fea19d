"""Train the CNN backbone on its configuration's objective (``network.objectives``).

Adam with a cosine learning-rate decay over a wall-clock budget (the default; other
schedules and AdamW are options of ``train_backbone``, compared in docs/training.md); the
weights with the best validation loss are kept (and checkpointed, so an interrupted run
resumes).

Where GPUs are present the step runs under ``tf.distribute.MirroredStrategy`` (one
replica per GPU, each batch split between them, gradients all-reduced); on a CPU-only
machine TensorFlow's default strategy runs the same code on one replica.
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

from ..network.loader import build_network
from ..network.objectives import per_example_loss, z_from_output
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


SCHEDULES = ("cosine", "warmup_cosine", "onecycle")
OPTIMIZERS = ("adam", "adamw")
WARMUP_FRACTION = 0.05          # warmup_cosine: linear warm-up over the first 5% of the budget
ONECYCLE_PEAK_FRACTION = 0.3    # onecycle: rises from lr/25 to lr over 30%, then cosine to ~0


def learning_rate(schedule: str, lr: float, frac: float) -> float:
    """The learning rate at fraction ``frac`` (0..1) of the budget."""
    frac = min(max(frac, 0.0), 1.0)
    cosine = lambda f: 0.5 * (1 + math.cos(math.pi * f))       # noqa: E731
    if schedule == "cosine":
        return lr * cosine(frac)
    if schedule == "warmup_cosine":
        if frac < WARMUP_FRACTION:
            return lr * (0.01 + 0.99 * frac / WARMUP_FRACTION)
        return lr * cosine((frac - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))
    if schedule == "onecycle":
        if frac < ONECYCLE_PEAK_FRACTION:
            return lr * (0.04 + 0.96 * frac / ONECYCLE_PEAK_FRACTION)
        return lr * (1e-4 + (1 - 1e-4) * cosine((frac - ONECYCLE_PEAK_FRACTION) / (1 - ONECYCLE_PEAK_FRACTION)))
    raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")


def make_optimizer(name: str, lr: float, weight_decay: float):
    if name == "adam":
        return tf.keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return tf.keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}")


def loss_fn(cfg, output, z):
    return tf.reduce_mean(per_example_loss(cfg, output, z))


def training_strategy():
    """MirroredStrategy over every visible GPU; TensorFlow's default strategy when there is none."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
        log.info("training on %d GPU replica(s) with MirroredStrategy", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def split_batch(strategy, x, z):
    """Hand each replica its contiguous share of a global batch (all of it on one replica)."""
    n_rep = strategy.num_replicas_in_sync
    bounds = np.linspace(0, x.shape[0], n_rep + 1).astype(int)

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        return tf.convert_to_tensor(x[bounds[i]:bounds[i + 1]]), tf.convert_to_tensor(z[bounds[i]:bounds[i + 1]])
    return strategy.experimental_distribute_values_from_function(value_fn)


def evaluate_backbone(model, cfg, x, z, batch=512):
    losses, zs = [], []
    for s in range(0, x.shape[0], batch):
        out = model(x[s:s + batch], training=False)["output"]
        losses.append(float(loss_fn(cfg, out, z[s:s + batch])) * out.shape[0])
        zs.append(z_from_output(cfg, out).numpy())
    zp = np.concatenate(zs)
    return sum(losses) / x.shape[0], zp


def make_train_step(model, opt, cfg, strategy):
    """The compiled training step: ``step(split_batch(strategy, x, z)) -> global mean loss``."""
    def replica_step(batch):
        x, z = batch
        with tf.GradientTape() as tape:
            out = model(x, training=True)["output"]
            # Averaged over the global batch, so all-reducing the replicas' gradients by sum is exact.
            loss = tf.nn.compute_average_loss(per_example_loss(cfg, out, z))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def step(batch):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(batch,)), axis=None)
    return step


def train_backbone(cfg, batches, x_val, z_val, budget_s: float, ckpt_dir: Path, batch_size: int = 256,
                   lr: float = 1e-3, eval_every_s: float = 120.0, progress: bool = True, strategy=None,
                   schedule: str = "cosine", optimizer: str = "adam", weight_decay: float = 1e-4, clock=None):
    """Returns (model, history). ``batches`` yields (x, z) numpy batches of ``batch_size``.

    ``strategy``: a ``tf.distribute`` strategy; by default ``training_strategy()``.
    ``schedule`` (``SCHEDULES``) and ``optimizer`` (``OPTIMIZERS``; ``weight_decay`` is AdamW's).
    ``clock``: what the budget and ``eval_every_s`` are measured in, a function returning seconds
    (default ``time.time``, wall time); ``time.process_time`` gives a budget of this process's
    CPU seconds, the same work for every run on a shared machine. Each history entry records
    ``elapsed_s`` on that clock and ``wall_s`` and ``cpu_s`` since the (first) start.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    clock = clock or time.time
    from tqdm import tqdm
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or training_strategy()
    with strategy.scope():
        model = build_network(cfg, head=False).backbone
        opt = make_optimizer(optimizer, lr, weight_decay)
        # Slots made now, under the strategy, not lazily inside the replicated step.
        opt.build(model.trainable_variables)
    # Bookkeeping lives outside the strategy: plain host variables, not mirrored ones.
    ckpt = tf.train.Checkpoint(model=model, opt=opt, elapsed=tf.Variable(0.0, dtype=tf.float64),
                               step=tf.Variable(0, dtype=tf.int64), wall=tf.Variable(0.0, dtype=tf.float64),
                               cpu=tf.Variable(0.0, dtype=tf.float64))
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir / "last"), max_to_keep=1)
    best_path = ckpt_dir / "best.weights.npz"
    hist_path = ckpt_dir / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.exists() else []
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        log.info("resumed backbone training at step %d, %.0f s", int(ckpt.step), float(ckpt.elapsed))

    step = make_train_step(model, opt, cfg, strategy)

    best = min((h["val_loss"] for h in history), default=np.inf)
    stream = _prefetch(batches)
    t_start = clock() - float(ckpt.elapsed)
    wall0, cpu0 = time.perf_counter() - float(ckpt.wall), time.process_time() - float(ckpt.cpu)
    last_eval = clock()
    bar = tqdm(total=int(budget_s), unit="s", desc=f"backbone[{cfg.objective}]", disable=not progress,
               initial=int(float(ckpt.elapsed)))
    while True:
        elapsed = clock() - t_start
        if elapsed >= budget_s:
            break
        opt.learning_rate.assign(learning_rate(schedule, lr, elapsed / budget_s))
        x, z = next(stream)
        loss = step(split_batch(strategy, x, z))
        ckpt.step.assign_add(1)
        bar.n = int(elapsed)
        bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        bar.update(0)
        if clock() - last_eval >= eval_every_s or clock() - t_start >= budget_s:
            val_loss, zp = evaluate_backbone(model, cfg, x_val, z_val)
            entry = {"elapsed_s": clock() - t_start, "wall_s": time.perf_counter() - wall0,
                     "cpu_s": time.process_time() - cpu0, "step": int(ckpt.step),
                     "samples": int(ckpt.step) * batch_size, "val_loss": val_loss,
                     "sigma_nmad": sigma_nmad(zp, z_val), "eta": outlier_fraction(zp, z_val)}
            history.append(entry)
            log.info("backbone %s: %s", cfg.objective, json.dumps(entry))
            if val_loss < best:
                best = val_loss
                np.savez(best_path, *[w.numpy() for w in model.weights])
            ckpt.elapsed.assign(clock() - t_start)
            ckpt.wall.assign(time.perf_counter() - wall0)
            ckpt.cpu.assign(time.process_time() - cpu0)
            manager.save()
            hist_path.write_text(json.dumps(history, indent=1))
            last_eval = clock()
    bar.close()
    val_loss, zp = evaluate_backbone(model, cfg, x_val, z_val)
    if val_loss < best or not best_path.exists():
        np.savez(best_path, *[w.numpy() for w in model.weights])
    with np.load(best_path) as arrs:
        for w, k in zip(model.weights, sorted(arrs.files, key=lambda s: int(s.split("_")[1]))):
            w.assign(arrs[k])
    return model, history
