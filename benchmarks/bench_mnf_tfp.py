"""Does the TFP form of the MNF head cost anything? Hand-written vs tfp, same process.

    python benchmarks/bench_mnf_tfp.py                      # about 2 minutes on 2 busy cores
    python benchmarks/bench_mnf_tfp.py --objects 4096      # one stage chunk per repeat

``MNFDense`` runs its coupling flows as ``tfp.bijectors`` (a ``tfb.Chain`` of
``MaskedGatedCoupling``) and takes its KL terms from ``tfp.distributions``. This script
keeps the hand-written layer it replaced (``HandWrittenMNF`` below: the coupling as a
plain function, the Gaussian KL and log-densities written out) and runs both on the same
weights (the shipped ``reference_files/csst_sls_z_0003/bnnhead.fits`` when present, else
the random init) and the same noise:

* **numbers**: the largest difference of the head's sampled (mu, sigma), of each layer's
  flowed ``z`` and log-det, and of each layer's KL bound. Zero means bit-identical.
* **head forward**: the stage's hot path, ``Sampler._head_moments`` under
  ``tf.function`` -- ``S`` samples of the head on a batch of 256 objects' features
  (``sampler.py``'s batch), ``objects / 256`` batches per repeat. The two variants
  alternate within each repeat, so load on a shared machine hits both alike; the
  ratio is tfp / hand-written of the medians, with the per-repeat range.
* **KL + gradient**: one ``head.kl_divergence()`` and its gradient under ``tf.function``
  (what each training step adds to the NLL), and one whole training step as
  ``training/train_head.py`` takes it (batch 512: forward, NLL + KL / N, gradient, Adam).
  Both in process CPU time, which a shared machine disturbs less than wall time.
* **import**: the extra seconds ``import tensorflow_probability`` costs a process that
  has already imported TensorFlow (tfp imports ``tf_keras`` too), in fresh interpreters.
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WEIGHTS = ROOT / "reference_files" / "csst_sls_z_0003" / "bnnhead.fits"
BATCH = 256          # network.sampler.Sampler's default batch


def _hand_written_class():
    """The pre-tfp ``MNFDense`` arithmetic, on the same variables (a subclass: same weights)."""
    import math

    import tensorflow as tf

    from csst_sls_z.network.mnf import MNFDense, _last_axis_matmul

    log_2pi = math.log(2.0 * math.pi)

    def coupling(z, params, mask):
        mask = tf.constant(mask, dtype=z.dtype)
        keep = mask * z
        h = tf.tanh(_last_axis_matmul(keep, params["u"]) + params["a"])
        shift = _last_axis_matmul(h, params["w_s"]) + params["b_s"]
        gate_logit = _last_axis_matmul(h, params["w_g"]) + params["b_g"]
        gate = tf.sigmoid(gate_logit)
        z_new = keep + (1.0 - mask) * (gate * z + (1.0 - gate) * shift)
        logdet = tf.reduce_sum((1.0 - mask) * tf.math.log_sigmoid(gate_logit), axis=-1)
        return z_new, logdet

    class HandWrittenMNF(MNFDense):
        def flow_forward(self, z, which="q"):
            flows, masks = (self.q_flows, self._q_masks) if which == "q" else (self.r_flows, self._r_masks)
            z = tf.convert_to_tensor(z, dtype=self.variable_dtype)
            logdet = tf.zeros_like(z[..., 0])
            for params, mask in zip(flows, masks):
                z, ld = coupling(z, params, mask)
                logdet = logdet + ld
            return z, logdet

        def call(self, x, eps_z=None, eps_out=None):
            x = tf.cast(tf.convert_to_tensor(x), self.compute_dtype)
            if eps_z is None:
                shape = tf.shape(x)
                z_shape = shape if x.shape.rank == 2 else tf.concat([shape[:-2], [1], shape[-1:]], axis=0)
                eps_z = tf.random.normal(z_shape, dtype=x.dtype)
            z, _ = self.sample_z(eps_z)
            var_w, _ = self._kernel_var()
            mean = _last_axis_matmul(x * z, self.kernel_mu)
            var = _last_axis_matmul(tf.square(x), var_w)
            if self.bias is not None:
                var = var + self._clipped_var(self.bias_logvar)[0]
            if eps_out is None:
                eps_out = tf.random.normal(tf.shape(mean), dtype=mean.dtype)
            out = mean + tf.sqrt(var + 1e-12) * tf.cast(eps_out, mean.dtype)
            if self.bias is not None:
                out = out + self.bias
            return out

        def weight_kl(self, z):
            var_w, logvar_w = self._kernel_var()
            mean_w = z[:, None] * self.kernel_mu
            pv = self.prior_var
            kl = 0.5 * tf.reduce_sum(math.log(pv) - logvar_w + (var_w + tf.square(mean_w)) / pv - 1.0)
            if self.bias is not None:
                var_b, logvar_b = self._clipped_var(self.bias_logvar)
                kl += 0.5 * tf.reduce_sum(math.log(pv) - logvar_b + (var_b + tf.square(self.bias)) / pv - 1.0)
            return kl

        def kl_divergence(self, eps_z=None, eps_a=None):
            dtype = self.variable_dtype
            if eps_z is None:
                eps_z = tf.random.normal((self.input_dim,), dtype=dtype)
            if eps_a is None:
                eps_a = tf.random.normal((self.units,), dtype=dtype)
            z, logdet_q = self.sample_z(tf.reshape(tf.cast(eps_z, dtype), (self.input_dim,)))
            var_w, _ = self._kernel_var()
            mean_w = z[:, None] * self.kernel_mu
            log_q = -0.5 * tf.reduce_sum(log_2pi + self.z_logvar + 1.0) - logdet_q
            eps_a = tf.reshape(tf.cast(eps_a, dtype), (self.units,))
            a_mean = tf.linalg.matvec(mean_w, self.r_c, transpose_a=True)
            a_var = tf.linalg.matvec(var_w, tf.square(self.r_c), transpose_a=True)
            a_bar = tf.reduce_mean(tf.tanh(a_mean + tf.sqrt(a_var + 1e-12) * eps_a))
            mean_r, logvar_r = self.r_b1 * a_bar, self.r_b2 * a_bar
            z_b, logdet_r = self.flow_forward(z, "r")
            log_r = logdet_r - 0.5 * tf.reduce_sum(
                log_2pi + logvar_r + tf.square(z_b - mean_r) * tf.exp(-logvar_r))
            return self.weight_kl(z) + log_q - log_r

    return HandWrittenMNF


def _heads(cfg):
    """Two BNN heads with the same weights: the shipped (tfp) layers and the hand-written ones."""
    import numpy as np
    import tensorflow as tf

    from csst_sls_z.network.head import BNNHead

    hand_cls = _hand_written_class()
    heads = []
    for variant in ("tfp", "hand"):
        head = BNNHead(cfg)
        if variant == "hand":
            for layer in head.mnf:
                layer.__class__ = hand_cls      # same variables, the old arithmetic
        head(tf.zeros((2, cfg.widths[-1])), tf.zeros((2,)),
             eps=[(tf.zeros((1, n)), tf.zeros((2, u)))
                  for n, u in zip((cfg.widths[-1],) + tuple(cfg.head_units[:-1]), cfg.head_units)])
        heads.append(head)
    source = "random init"
    if WEIGHTS.exists():
        from csst_sls_z.network.weights import load_weights
        for head in heads:
            load_weights(head, WEIGHTS, "bnnhead")
        source = str(WEIGHTS.relative_to(ROOT))
    else:
        heads[1].set_weights(heads[0].get_weights())
    assert [w.path for w in heads[0].weights] == [w.path for w in heads[1].weights]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(heads[0].weights, heads[1].weights))
    return heads, source


def _import_cost(repeats: int) -> list[float]:
    code = ("import time; import tensorflow, keras; t = time.perf_counter(); "
            "import tensorflow_probability as tfp; tfp.bijectors; tfp.distributions; "
            "print(time.perf_counter() - t)")
    out = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ})
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--objects", type=int, default=512, help="objects per repeat (batches of 256)")
    p.add_argument("--samples", type=int, default=200, help="head samples per object (the stage's S)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kl-calls", type=int, default=100,
                   help="KL + gradient calls per repeat (a quarter as many training steps)")
    p.add_argument("--import-repeats", type=int, default=2, help="fresh interpreters (0: skip)")
    args = p.parse_args(argv)

    from csst_sls_z.tfenv import import_tensorflow
    tf = import_tensorflow()
    import numpy as np

    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.network.sampler import Sampler

    cfg = CONFIGS["cpu"]
    if WEIGHTS.exists():
        from csst_sls_z.network.weights import read_config
        cfg = read_config(WEIGHTS, "bnnhead")
    (h_tfp, h_hand), source = _heads(cfg)
    n_feat = cfg.widths[-1]
    print(f"network {cfg.name}: head {cfg.head_units}, n_flows_q={cfg.n_flows_q}, "
          f"n_flows_r={cfg.n_flows_r}, flow_hidden={cfg.flow_hidden}; weights: {source}")
    print(f"tensorflow {tf.__version__}, tensorflow-probability "
          f"{__import__('tensorflow_probability').__version__}")

    # ---- numbers
    feats = tf.random.stateless_normal((BATCH, n_feat), seed=[1, 2])
    z_cnn = tf.random.stateless_uniform((BATCH,), seed=[3, 4], maxval=1.6)
    samplers = {name: Sampler(None, head, cfg, n_samples=args.samples, seed=0, batch=BATCH)
                for name, head in (("tfp", h_tfp), ("hand", h_hand))}
    seed = tf.constant([0, 7], tf.int32)
    eps = h_tfp.noise(args.samples, BATCH, seed)
    tiled = tf.broadcast_to(feats[None], (args.samples, BATCH, n_feat))
    zc = tf.broadcast_to(z_cnn[None], (args.samples, BATCH))
    out = {k: [t.numpy() for t in h(tiled, zc, eps=eps)] for k, h in (("tfp", h_tfp), ("hand", h_hand))}
    d_head = max(float(np.abs(a - b).max()) for a, b in zip(out["tfp"], out["hand"]))
    mom = {k: [t.numpy() for t in s._head(feats, z_cnn, seed)] for k, s in samplers.items()}
    d_mom = max(float(np.abs(a - b).max()) for a, b in zip(mom["tfp"], mom["hand"]))
    d_flow = d_kl = 0.0
    for lt, lh in zip(h_tfp.mnf, h_hand.mnf):
        ez = tf.random.stateless_normal((args.samples, 1, lt.input_dim), seed=[5, lt.units])
        for which in ("q", "r"):
            for a, b in zip(lt.flow_forward(ez, which), lh.flow_forward(ez, which)):
                d_flow = max(d_flow, float(np.abs(a.numpy() - b.numpy()).max()))
        for k in range(5):
            ea = tf.random.stateless_normal((lt.units,), seed=[6, k])
            kt, kh = float(lt.kl_divergence(ez[k, 0], ea)), float(lh.kl_divergence(ez[k, 0], ea))
            d_kl = max(d_kl, abs(kt - kh) / abs(kh))
    print("numbers, tfp vs hand-written, same weights and noise (0 = bit-identical):")
    print(f"  head (mu, sigma), S={args.samples} x {BATCH}: max |diff| {d_head:.3g}")
    print(f"  Sampler moments (mean, aleatoric, epistemic), tf.function: max |diff| {d_mom:.3g}")
    print(f"  flows q and r (z_out, log-det): max |diff| {d_flow:.3g}")
    print(f"  KL bound, 5 noise draws per layer: max relative diff {d_kl:.3g}")

    # ---- head forward (the stage's hot path)
    n_batches = max(1, args.objects // BATCH)
    batches = [(tf.random.stateless_normal((BATCH, n_feat), seed=[10, b]),
                tf.random.stateless_uniform((BATCH,), seed=[11, b], maxval=1.6)) for b in range(n_batches)]

    def run_head(sampler):
        t, c = time.perf_counter(), time.process_time()
        for b, (f, z) in enumerate(batches):
            r = sampler._head(f, z, sampler._seed(b))
        r[0].numpy()
        return time.perf_counter() - t, time.process_time() - c

    # The traced graphs: what each variant actually runs.
    specs = (tf.TensorSpec((BATCH, n_feat)), tf.TensorSpec((BATCH,)), tf.TensorSpec((2,), tf.int32))
    for name, s in samplers.items():
        graph = s._head.get_concrete_function(*specs).graph
        ops = collections.Counter(op.type for op in graph.get_operations())
        print(f"  traced head graph, {name:4s}: {sum(ops.values())} ops, {ops['MatMul']} MatMul, "
              f"{ops['Sigmoid']} Sigmoid, {ops['Tanh']} Tanh, {ops['Softplus']} Softplus, {ops['Sum']} Sum")
    for s in samplers.values():      # warm up
        run_head(s)
    times = {"tfp": [], "hand": []}
    for rep in range(args.repeats):
        order = ("hand", "tfp") if rep % 2 == 0 else ("tfp", "hand")
        for name in order:
            times[name].append(run_head(samplers[name]))
    print(f"head forward, {n_batches} x {BATCH} objects x S={args.samples}, {args.repeats} repeats "
          f"(s per repeat, median [min-max]):")
    for i, what in enumerate(("wall", "CPU")):
        t = {k: [v[i] for v in vs] for k, vs in times.items()}
        med = {k: statistics.median(v) for k, v in t.items()}
        ratios = [a / b for a, b in zip(t["tfp"], t["hand"])]
        print(f"  {what:4s}: hand {med['hand']:.3f} [{min(t['hand']):.3f}-{max(t['hand']):.3f}], "
              f"tfp {med['tfp']:.3f} [{min(t['tfp']):.3f}-{max(t['tfp']):.3f}]; ratio tfp / hand "
              f"{med['tfp'] / med['hand']:.3f} of medians, per repeat {min(ratios):.3f}-{max(ratios):.3f}")

    # ---- KL + gradient (training only)
    def kl_step_fn(head):
        variables = [v for layer in head.mnf for v in layer.trainable_variables]

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                kl = head.kl_divergence()
            return kl, tape.gradient(kl, variables)
        return step

    steps = {"tfp": kl_step_fn(h_tfp), "hand": kl_step_fn(h_hand)}
    for s in steps.values():
        s()
    kt = {"tfp": [], "hand": []}
    for rep in range(args.repeats):
        for name in (("hand", "tfp") if rep % 2 == 0 else ("tfp", "hand")):
            c = time.process_time()
            for _ in range(args.kl_calls):
                r = steps[name]()
            r[0].numpy()
            kt[name].append((time.process_time() - c) / args.kl_calls * 1e3)
    kmed = {k: statistics.median(v) for k, v in kt.items()}
    print(f"KL + gradient (both layers), CPU ms per call, median of {args.repeats}: hand {kmed['hand']:.2f}, "
          f"tfp {kmed['tfp']:.2f}, ratio {kmed['tfp'] / kmed['hand']:.3f}")

    # ---- one training step (train_head's: NLL + KL / N, Adam), batch 512
    def train_step_fn(head):
        import keras
        opt = keras.optimizers.Adam(1e-6)
        rng = np.random.default_rng(0)
        f = tf.constant(rng.normal(size=(512, n_feat)).astype(np.float32))
        zc = tf.constant(rng.uniform(0, 1.6, 512).astype(np.float32))
        zt = zc + 0.01

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                mu, sigma = head(f, zc, training=True)
                nll = tf.reduce_mean(tf.math.log(sigma) + 0.5 * tf.square((zt - mu) / sigma))
                loss = nll + head.kl_divergence() / 100_000
            grads = tape.gradient(loss, head.trainable_variables)
            opt.apply_gradients(zip(grads, head.trainable_variables))
            return nll
        return step

    train = {"tfp": train_step_fn(h_tfp), "hand": train_step_fn(h_hand)}
    for s in train.values():
        s()
    tt = {"tfp": [], "hand": []}
    for rep in range(args.repeats):
        for name in (("hand", "tfp") if rep % 2 == 0 else ("tfp", "hand")):
            c = time.process_time()
            for _ in range(args.kl_calls // 4):
                r = train[name]()
            r.numpy()
            tt[name].append((time.process_time() - c) / (args.kl_calls // 4) * 1e3)
    tmed = {k: statistics.median(v) for k, v in tt.items()}
    print(f"training step (batch 512, forward + NLL + KL, gradient, Adam), CPU ms per step, "
          f"median of {args.repeats}: hand {tmed['hand']:.2f}, tfp {tmed['tfp']:.2f}, "
          f"ratio {tmed['tfp'] / tmed['hand']:.3f}")

    if args.import_repeats:
        ic = _import_cost(args.import_repeats)
        print(f"import tensorflow_probability after tensorflow: {statistics.median(ic):.2f} s median "
              f"of {len(ic)} fresh interpreters [{min(ic):.2f}-{max(ic):.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
