"""Tests for the Multiplicative Normalizing Flow dense layer (csst_sls_z.network.mnf)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from csst_sls_z.network.mnf import MNFDense  # noqa: E402


def _built_layer(in_dim=4, units=3, **kw):
    layer = MNFDense(units, flow_hidden=8, **kw)
    layer(tf.zeros((1, in_dim)))
    return layer


def _randomise_flows(layer, seed=0, scale=0.5):
    """Move the coupling layers well away from their near-identity init."""
    rng = np.random.default_rng(seed)
    for flows in (layer.q_flows, layer.r_flows):
        for params in flows:
            for var in params.values():
                var.assign(rng.normal(0.0, scale, var.shape).astype(np.float32))


def test_shapes_and_noise_determinism():
    layer = MNFDense(3, flow_hidden=8)
    x2 = tf.random.stateless_normal((5, 4), seed=[1, 2])
    x3 = tf.random.stateless_normal((2, 5, 4), seed=[3, 4])
    assert layer(x2).shape == (5, 3)
    assert layer(x3).shape == (2, 5, 3)
    assert layer.noise_shapes((5, 4)) == ((5, 4), (5, 3))
    assert layer.noise_shapes((2, 5, 4)) == ((2, 1, 4), (2, 5, 3))

    # Make the stochastic parts large enough that any noise shows up.
    layer.kernel_logvar.assign(tf.fill(layer.kernel_logvar.shape, -1.0))
    layer.z_logvar.assign(tf.fill(layer.z_logvar.shape, -1.0))

    for x in (x2, x3):
        z_shape, out_shape = layer.noise_shapes(x.shape)
        ez = tf.random.stateless_normal(z_shape, seed=[5, 6])
        eo = tf.random.stateless_normal(out_shape, seed=[7, 8])
        a = layer(x, eps_z=ez, eps_out=eo).numpy()
        b = layer(x, eps_z=ez, eps_out=eo).numpy()
        np.testing.assert_array_equal(a, b)
        c = layer(x).numpy()
        d = layer(x).numpy()
        assert np.abs(c - d).max() > 1e-3
        assert np.abs(a - c).max() > 1e-3
    # Rank-2 input with a single shared z row broadcasts.
    assert layer(x2, eps_z=tf.zeros((1, 4)), eps_out=tf.zeros((5, 3))).shape == (5, 3)


def test_rank3_shares_z_across_rows():
    layer = _built_layer()
    layer.z_logvar.assign(tf.fill(layer.z_logvar.shape, 0.0))
    x = tf.ones((2, 3, 4))  # identical rows
    ez = tf.random.stateless_normal((2, 1, 4), seed=[1, 1])
    out = layer(x, eps_z=ez, eps_out=tf.zeros((2, 3, 3))).numpy()
    # Same z within a sample -> identical rows; different z across samples.
    np.testing.assert_allclose(out[:, 0], out[:, 1], rtol=1e-6)
    assert np.abs(out[0, 0] - out[1, 0]).max() > 1e-3


def test_zero_output_noise_is_dense_map_with_flowed_z():
    layer = _built_layer()
    layer.bias.assign([0.1, -0.2, 0.3])
    layer.z_logvar.assign(tf.fill(layer.z_logvar.shape, -2.0))  # z visibly != 1
    x = tf.random.stateless_normal((2, 6, 4), seed=[9, 9])
    ez = tf.random.stateless_normal((2, 1, 4), seed=[10, 10])
    out = layer(x, eps_z=ez, eps_out=tf.zeros((2, 6, 3))).numpy()

    z, _ = layer.sample_z(ez)
    z = z.numpy()
    mu = layer.kernel_mu.numpy()
    b = layer.bias.numpy()
    expected = np.einsum("sni,ij->snj", x.numpy() * z, mu) + b
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # z is obtained through the flow, not just mu_z + sigma_z * eps.
    z0 = layer.z_mu.numpy() + np.exp(0.5 * layer.z_logvar.numpy()) * ez.numpy()
    assert np.abs(z - z0).max() > 1e-4
    # Initial state: z close to 1, i.e. a near-deterministic dense layer.
    z_init, _ = _built_layer().sample_z(tf.zeros((1, 4)))
    np.testing.assert_allclose(z_init.numpy(), 1.0, atol=0.1)


@pytest.mark.parametrize("which", ["q", "r"])
def test_flow_logdet_matches_numerical_jacobian(which):
    layer = _built_layer(in_dim=5, n_flows_q=3, n_flows_r=2)
    _randomise_flows(layer, seed=1)
    z = tf.constant(np.random.default_rng(2).normal(size=(1, 5)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z)
        z_out, logdet = layer.flow_forward(z, which)
    jac = tape.jacobian(z_out, z).numpy().reshape(5, 5)
    sign, logabs = np.linalg.slogdet(jac.astype(np.float64))
    assert sign != 0
    np.testing.assert_allclose(logdet.numpy()[0], logabs, rtol=1e-4, atol=1e-4)
    assert abs(logabs) > 0.1  # the flow is not trivially volume preserving
    # Batched call over leading axes gives one log-det per vector.
    _, ld = layer.flow_forward(tf.tile(z[None], [2, 3, 1]), which)
    assert ld.shape == (2, 3)
    np.testing.assert_allclose(ld.numpy(), logdet.numpy()[0], rtol=1e-5)


@pytest.mark.parametrize("which", ["q", "r"])
def test_flows_are_invertible_tfp_bijectors(which):
    tfb = pytest.importorskip("tensorflow_probability").bijectors
    layer = _built_layer(in_dim=5, n_flows_q=3, n_flows_r=2)
    _randomise_flows(layer, seed=3)
    flow = layer.flow(which)
    assert isinstance(flow, tfb.Bijector)
    z = tf.constant(np.random.default_rng(4).normal(size=(2, 3, 5)).astype(np.float32))
    y = flow.forward(z)
    assert np.abs(y.numpy() - z.numpy()).max() > 0.1  # not the identity
    np.testing.assert_allclose(flow.inverse(y).numpy(), z.numpy(), rtol=1e-4, atol=1e-5)
    fldj = flow.forward_log_det_jacobian(z, event_ndims=1).numpy()
    ildj = flow.inverse_log_det_jacobian(y, event_ndims=1).numpy()
    assert fldj.shape == (2, 3)
    np.testing.assert_allclose(ildj, -fldj, rtol=1e-5, atol=1e-5)
    # flow_forward is the bijector's forward pass and log-det.
    z_out, logdet = layer.flow_forward(z, which)
    np.testing.assert_array_equal(z_out.numpy(), y.numpy())
    np.testing.assert_allclose(logdet.numpy(), fldj, rtol=1e-6, atol=1e-6)


def test_coupling_is_realnvp_on_an_alternating_split():
    # A MaskedGatedCoupling is tfb.RealNVP with scale g and shift (1 - g) s, the units
    # permuted so that the kept (mask == 1) ones come first.
    tfb = pytest.importorskip("tensorflow_probability").bijectors
    layer = _built_layer(in_dim=5, n_flows_q=2)
    _randomise_flows(layer, seed=5)
    for k, (coupling, params, mask) in enumerate(
            zip(layer.flow("q").bijectors[::-1], layer.q_flows, layer._q_masks)):
        kept, free = np.flatnonzero(mask == 1), np.flatnonzero(mask == 0)
        p = {n: v.numpy() for n, v in params.items()}

        def bijector_fn(x0, output_units, p=p, kept=kept, free=free):
            h = tf.tanh(x0 @ p["u"][kept] + p["a"])
            gate = tf.sigmoid(h @ p["w_g"][:, free] + p["b_g"][free])
            shift = h @ p["w_s"][:, free] + p["b_s"][free]
            return tfb.Chain([tfb.Shift((1.0 - gate) * shift), tfb.Scale(gate)])

        perm = np.concatenate([kept, free])
        realnvp = tfb.Chain([tfb.Invert(tfb.Permute(perm)),
                             tfb.RealNVP(num_masked=len(kept), bijector_fn=bijector_fn),
                             tfb.Permute(perm)])
        z = tf.constant(np.random.default_rng(k).normal(size=(7, 5)).astype(np.float32))
        np.testing.assert_allclose(coupling.forward(z).numpy(), realnvp.forward(z).numpy(),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(coupling.forward_log_det_jacobian(z, 1).numpy(),
                                   realnvp.forward_log_det_jacobian(z, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_weight_kl_matches_monte_carlo():
    # KL(q(W|z) || p(W)) (+ bias), the closed form of tfd.kl_divergence, against the
    # Monte Carlo mean of log q(W|z) - log p(W) over draws of W and b.
    layer = _built_layer(prior_var=0.5)
    rng = np.random.default_rng(6)
    layer.kernel_mu.assign(rng.normal(0, 0.7, (4, 3)).astype(np.float32))
    layer.kernel_logvar.assign(rng.uniform(-2.5, -0.5, (4, 3)).astype(np.float32))
    layer.bias.assign([0.4, -0.3, 0.2])
    layer.bias_logvar.assign([-1.0, -2.0, -1.5])
    z = tf.constant([1.1, 0.8, 1.0, 1.3])
    mean = np.concatenate([(z.numpy()[:, None] * layer.kernel_mu.numpy()).ravel(), layer.bias.numpy()])
    std = np.exp(0.5 * np.concatenate([layer.kernel_logvar.numpy().ravel(), layer.bias_logvar.numpy()]))
    w = mean + std * rng.standard_normal((200_000, mean.size))

    def log_normal(x, m, s):
        return -0.5 * np.log(2 * np.pi * s ** 2) - 0.5 * ((x - m) / s) ** 2

    terms = (log_normal(w, mean, std) - log_normal(w, 0.0, np.sqrt(0.5))).sum(axis=1)
    mc, mc_err = terms.mean(), terms.std() / np.sqrt(len(terms))
    kl = float(layer.weight_kl(z))
    assert abs(kl - mc) < 4 * mc_err, (kl, mc, mc_err)
    assert mc_err < 0.01 * abs(mc)


def test_kl_divergence_finite_scalar_and_differentiable():
    layer = _built_layer()
    layer.bias.assign([0.1, -0.2, 0.3])  # d(mu_b^2)/d mu_b is 0 at the zero init
    with tf.GradientTape() as tape:
        kl = layer.kl_divergence()
    assert kl.shape == ()
    assert np.isfinite(kl.numpy())
    grads = tape.gradient(kl, layer.trainable_variables)
    names = [v.path for v in layer.trainable_variables]
    for name, g in zip(names, grads):
        assert g is not None, name
        assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy())), name
    # Every variable actually influences the bound (no silently-zero gradient).
    zero = [n for n, g in zip(names, grads) if not np.any(tf.convert_to_tensor(g).numpy())]
    assert not zero, zero
    # Fixed noise -> deterministic value.
    a = layer.kl_divergence(eps_z=tf.ones(4), eps_a=tf.ones(3))
    b = layer.kl_divergence(eps_z=tf.ones(4), eps_a=tf.ones(3))
    assert float(a) == float(b)


def test_kl_weight_term_matches_closed_form():
    # Only the Gaussian KL(q(W|z) || p(W)) (+ bias) depends on the prior
    # variance, so with fixed noise the change must match the closed form.
    l1 = _built_layer(prior_var=1.0)
    l2 = MNFDense.from_config({**l1.get_config(), "prior_var": 4.0})
    l2(tf.zeros((1, 4)))
    l2.set_weights(l1.get_weights())
    ez, ea = tf.zeros(4), tf.zeros(3)
    z, _ = l1.sample_z(ez)
    # Weights (means scaled by z) and the Gaussian bias share the prior.
    m2 = np.concatenate([np.square(z.numpy()[:, None] * l1.kernel_mu.numpy()).ravel(),
                         np.square(l1.bias.numpy())])
    v = np.exp(np.concatenate([l1.kernel_logvar.numpy().ravel(), l1.bias_logvar.numpy()]))

    def kl_w(pv):
        return 0.5 * np.sum(np.log(pv) - np.log(v) + (v + m2) / pv - 1)

    diff = float(l2.kl_divergence(ez, ea) - l1.kl_divergence(ez, ea))
    np.testing.assert_allclose(diff, kl_w(4.0) - kl_w(1.0), rtol=1e-3)


@pytest.mark.slow
def test_tiny_regression_fit():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 256
    x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    y = (2 * x[:, 0] + rng.normal(0, 0.1, n)).astype(np.float32)
    l1 = MNFDense(16, flow_hidden=16)
    l2 = MNFDense(2, flow_hidden=16)

    def forward(xb):
        out = l2(tf.nn.relu(l1(xb)))
        return out[..., 0], 1e-3 + tf.nn.softplus(out[..., 1])

    forward(tf.constant(x))  # build
    variables = l1.trainable_variables + l2.trainable_variables
    opt = keras.optimizers.Adam(1e-2)
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            mu, sig = forward(xt)
            nll = tf.reduce_mean(tf.math.log(sig) + 0.5 * tf.square((yt - mu) / sig))
            loss = nll + (l1.kl_divergence() + l2.kl_divergence()) / n
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    losses = [float(step()) for _ in range(400)]
    assert np.all(np.isfinite(losses))

    xs = np.linspace(-0.9, 0.9, 41, dtype=np.float32)[:, None]
    s = 50
    xs_rep = tf.tile(tf.constant(xs)[None], [s, 1, 1])  # (S, N, 1) rank-3 path
    mu, sig = forward(xs_rep)
    mc_mean = tf.reduce_mean(mu, axis=0).numpy()
    rmse = np.sqrt(np.mean((mc_mean - 2 * xs[:, 0]) ** 2))
    mean_sig = float(tf.reduce_mean(sig))
    assert rmse < 0.3, rmse
    assert 0.1 / 3 < mean_sig < 0.3, mean_sig


def test_get_config_roundtrip():
    layer = MNFDense(5, n_flows_q=1, n_flows_r=3, flow_hidden=7, prior_var=0.5,
                     max_std=0.3, name="mnf_test")
    layer(tf.zeros((2, 6)))
    cfg = layer.get_config()
    clone = MNFDense.from_config(cfg)
    clone(tf.zeros((2, 6)))
    assert clone.get_config() == cfg
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]
    assert len(clone.q_flows) == 1 and len(clone.r_flows) == 3
    # Also through keras' generic (de)serialisation.
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(again, MNFDense) and again.units == 5


def test_random_initial_values_are_distinct():
    # Guards against sharing one unseeded Keras initializer between weights,
    # which silently gives identical tensors (e.g. c == b1 == b2).
    layer = _built_layer(in_dim=6, units=4)
    random_vars = [v for v in layer.weights if np.std(v.numpy()) > 0]
    for i, a in enumerate(random_vars):
        for b in random_vars[i + 1:]:
            if a.shape == b.shape:
                assert not np.allclose(a.numpy() - a.numpy().mean(),
                                       b.numpy() - b.numpy().mean()), (a.path, b.path)
