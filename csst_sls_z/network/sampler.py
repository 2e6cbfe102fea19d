"""BNN inference: the backbone once per spectrum, the head S times on its features.

The backbone is frozen, so its features are computed once and only the small head is
sampled S times (default 200): a 200-sample BNN costs about as much as a few forward
passes. ``predict_naive`` runs S full forward passes with the same noise, for tests and
benchmarks: both give the same numbers up to float rounding.

The head has two paths, the same noise and the same numbers up to float rounding
(``benchmarks/bench_head.py`` measures both, docs/performance.md "Throughput"):

* ``"fused"`` (the default): the noise is drawn as before (``BNNHead.noise``, stateless,
  outside XLA, so the draws are bit for bit those of the reference path); the S samples
  then go through :meth:`BNNHead.sample_moments` (first-layer variance once per object,
  z folded into the inputs, nothing tiled) in one XLA-compiled function
  (``jit_compile=True``), which fuses the element-wise work of the S x N x units
  tensors. Every call has ``batch`` rows (a short last batch is padded, its noise with
  zeros, and cut again), so XLA compiles once per process, not once per batch length.
* ``"reference"``: the head called on the features tiled S times (the code before issue
  17), kept for comparison.

The output noise of the MNF layers is drawn once per sample and shared by the objects of a
batch (``per_object_noise=False``, the default): S x 384 normals per batch
instead of S x N x 384, which were most of the head's time. Each object's samples have the
same distribution either way (``BNNHead.noise``); ``per_object_noise=True`` reproduces the
catalogues made before (the golden test).
``head_block`` runs the samples in blocks inside XLA (measured: no gain; off by default).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .backbone import FrozenBackbone
from .objectives import z_from_output

log = logging.getLogger(__name__)

HEAD_PATHS = ("fused", "reference")


@dataclass
class Prediction:
    z_cnn: np.ndarray        # (N,) deterministic CNN estimate
    mean: np.ndarray         # (N,) mixture mean of mu
    aleatoric: np.ndarray    # (N,) mean of sigma^2
    epistemic: np.ndarray    # (N,) variance of mu
    features: np.ndarray | None = None
    output: np.ndarray | None = None   # (N, n_out) backbone output (zbins: logits), with return_output

    @property
    def sigma(self):
        return np.sqrt(self.aleatoric + self.epistemic)


class Sampler:
    def __init__(self, backbone, head, cfg, n_samples: int = 200, seed: int = 0, batch: int = 256,
                 head_path: str = "fused", jit_compile: bool = True, head_block: int | None = None,
                 per_object_noise: bool = False, precision: str = "float32"):
        if head_path not in HEAD_PATHS:
            raise ValueError(f"head_path must be one of {HEAD_PATHS}, not {head_path!r}")
        self.backbone = backbone
        self.head = head
        self.cfg = cfg
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.batch = int(batch)
        self.head_path = head_path
        self.jit_compile = bool(jit_compile)
        self.head_block = head_block          # fused path: samples per block (BNNHead.sample_moments)
        self.per_object_noise = bool(per_object_noise)
        # Inference runs the backbone with BatchNorm folded into its convolutions (backbone.py);
        # ``backbone`` stays the Keras model (its weights as trained, for anyone who reads them).
        self.frozen = FrozenBackbone(backbone, cfg, precision)
        self._fwd = tf.function(self._forward, reduce_retracing=True)
        self._fwd_out = tf.function(self._forward_output, reduce_retracing=True)    # traced on first use
        self._head = tf.function(self._head_moments, reduce_retracing=True)      # the reference path
        self._noise = tf.function(self._draw_noise, reduce_retracing=True)
        self._fused = tf.function(self._fused_moments, jit_compile=self.jit_compile)
        self._warmed = set()                  # start_warm_up's (input length, with output) done so far

    def _forward(self, x):
        features, output = self.frozen(x)
        return features, z_from_output(self.cfg, output)

    def _head_moments(self, feats, z_cnn, seed):
        n = tf.shape(feats)[0]
        eps = self.head.noise(self.n_samples, n, seed, self.per_object_noise)
        tiled = tf.broadcast_to(feats[None], (self.n_samples, n, feats.shape[-1]))
        mu, sigma = self.head(tiled, tf.broadcast_to(z_cnn[None], (self.n_samples, n)), eps=eps)
        mean = tf.reduce_mean(mu, axis=0)
        return mean, tf.reduce_mean(sigma * sigma, axis=0), tf.reduce_mean(tf.square(mu - mean[None]), axis=0)

    def _draw_noise(self, feats, seed):
        return self.head.noise(self.n_samples, tf.shape(feats)[0], seed, self.per_object_noise)

    def _fused_moments(self, feats, z_cnn, eps):
        return self.head.sample_moments(feats, z_cnn, eps, block=self.head_block)

    def head_moments(self, feats, z_cnn, seed):
        """(mean, aleatoric, epistemic) of the S head samples on one batch of features
        (at most ``batch`` rows), by ``head_path``; the noise is ``head.noise(S, N, seed, per_object_noise)``."""
        if self.head_path == "reference":
            return self._head(feats, z_cnn, seed)
        eps = self._noise(feats, seed)
        n = int(feats.shape[0])
        pad = self.batch - n
        if pad > 0:        # one shape for XLA: pad the rows (zero features, zero noise), cut them again
            feats = tf.pad(feats, [[0, pad], [0, 0]])
            z_cnn = tf.pad(z_cnn, [[0, pad]])
            if self.per_object_noise:
                eps = [(ez, tf.pad(eo, [[0, 0], [0, pad], [0, 0]])) for ez, eo in eps]
        try:
            out = self._fused(feats, z_cnn, eps)
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError, tf.errors.InternalError,
                tf.errors.NotFoundError) as exc:
            if not self.jit_compile:
                raise
            # XLA missing or refusing the graph on this platform: the same function, uncompiled.
            log.warning("XLA compilation of the BNN head failed (%s); running it without XLA",
                        str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
            self.jit_compile = False
            self._fused = tf.function(self._fused_moments)
            out = self._fused(feats, z_cnn, eps)
        return tuple(v[:n] for v in out) if pad > 0 else out

    def start_warm_up(self, input_length: int, return_output: bool = False):
        """Trace the backbone and compile the head (XLA) on a batch of zeros in a thread, so that
        this one-off cost overlaps what the caller does next (opening, hashing, reading and
        preprocessing the first chunk); :meth:`predict` waits for it. A failure here is only
        logged: the first real batch meets the same error and handles it as it would have.
        Once per sampler (and output layout): a later call, for the next file, does nothing."""
        key = (int(input_length), bool(return_output))
        if key in self._warmed:
            return
        self._warmed.add(key)

        def warm():
            try:
                x = tf.zeros((self.batch, int(input_length), 2), tf.float32)
                if return_output:
                    feats, z_cnn, _ = self._fwd_out(x)
                else:
                    feats, z_cnn = self._fwd(x)
                self.head_moments(feats, z_cnn, self._seed(0))[0].numpy()
            except Exception as exc:            # noqa: BLE001 - the real first batch reports it
                log.debug("warm-up of the network failed (%s); the first batch pays its cost", exc)
        # Not a daemon: when the caller stops before predict (an input refused at once), the
        # interpreter waits for it at exit. A daemon thread still inside TensorFlow when Python
        # finalises is killed mid-call, and the process aborts ("terminate called ...", exit 134)
        # instead of exiting with the caller's code.
        self._warm_thread = threading.Thread(target=warm, name="csst_sls_z-warm-up", daemon=False)
        self._warm_thread.start()

    def _wait_for_warm_up(self):
        thread = getattr(self, "_warm_thread", None)
        if thread is not None:
            thread.join()
            self._warm_thread = None

    def _seed(self, chunk_index: int):
        return tf.constant([self.seed, int(chunk_index)], dtype=tf.int32)

    def _forward_output(self, x):
        features, output = self.frozen(x)
        return features, z_from_output(self.cfg, output), output

    def predict(self, x: np.ndarray, chunk_index: int = 0, return_features: bool = False,
                return_output: bool = False) -> Prediction:
        """x: (N, L, 2) float32. Noise is seeded by (seed, chunk_index, batch index).
        ``return_output``: also the backbone output (zbins: the logits p(z) is made from)."""
        self._wait_for_warm_up()
        outs = {k: [] for k in ("z", "m", "a", "e", "f")}
        output = []
        for b, start in enumerate(range(0, x.shape[0], self.batch)):
            xb = tf.convert_to_tensor(x[start:start + self.batch])
            if return_output:
                feats, z_cnn, o = self._fwd_out(xb)
                output.append(o.numpy())
            else:
                feats, z_cnn = self._fwd(xb)
            m, a, e = self.head_moments(feats, z_cnn, self._seed(chunk_index * 100003 + b))
            for k, v in zip(("z", "m", "a", "e", "f"), (z_cnn, m, a, e, feats)):
                outs[k].append(v.numpy())
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.float32)) for k, v in outs.items()}
        return Prediction(z_cnn=cat["z"], mean=cat["m"], aleatoric=cat["a"], epistemic=cat["e"],
                          features=cat["f"] if return_features else None,
                          output=(np.concatenate(output) if output else None) if return_output else None)

    def predict_naive(self, x: np.ndarray, chunk_index: int = 0) -> Prediction:
        """S full forward passes (backbone + head), with exactly the noise ``predict`` uses."""
        means, alea, epis, zc = [], [], [], []
        for b, start in enumerate(range(0, x.shape[0], self.batch)):
            xb = tf.convert_to_tensor(x[start:start + self.batch])
            n = xb.shape[0]
            eps = self.head.noise(self.n_samples, n, self._seed(chunk_index * 100003 + b), self.per_object_noise)
            mus, sig2 = [], []
            for s in range(self.n_samples):
                feats, z_cnn = self._fwd(xb)          # the whole network, every sample
                eps_s = [(ez[s:s + 1], eo[s:s + 1]) for ez, eo in eps]
                mu, sigma = self.head(feats[None], z_cnn[None], eps=eps_s)
                mus.append(mu[0])
                sig2.append(tf.square(sigma[0]))
            mus = tf.stack(mus)
            mean = tf.reduce_mean(mus, axis=0)
            means.append(mean.numpy())
            alea.append(tf.reduce_mean(tf.stack(sig2), axis=0).numpy())
            epis.append(tf.reduce_mean(tf.square(mus - mean[None]), axis=0).numpy())
            zc.append(z_cnn.numpy())
        return Prediction(z_cnn=np.concatenate(zc), mean=np.concatenate(means),
                          aleatoric=np.concatenate(alea), epistemic=np.concatenate(epis))
