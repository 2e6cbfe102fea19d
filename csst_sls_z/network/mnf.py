"""Multiplicative Normalizing Flow (MNF) dense layer.

Implements the Bayesian fully-connected layer of

    C. Louizos & M. Welling (2017), "Multiplicative Normalizing Flows for
    Variational Bayesian Neural Networks", ICML, PMLR 70:2218-2227,
    arXiv:1703.01961.

Method
------
The weight posterior is a Gaussian whose means are scaled, per input unit, by a
latent multiplicative variable ``z`` (shape ``(in,)``)::

    q(W | z) = prod_ij N(W_ij; z_i * mu_ij, sigma_ij^2)

``z`` itself gets a flexible distribution: ``z0 ~ N(mu_z, sigma_z^2)`` is pushed
through ``n_flows_q`` masked RealNVP coupling layers (the paper's eq. 6)::

    m = mask * z
    h = tanh(m @ U + a)
    g = sigmoid(h @ W_g + b_g)           # gate
    s = h @ W_s + b_s                    # shift
    z' = m + (1 - mask) * (g * z + (1 - g) * s)
    log|det dz'/dz| = sum((1 - mask) * log g)

Marginalising ``z`` gives a non-Gaussian, correlated posterior over ``W``.
Because ``q(W) = int q(W|z) q(z) dz`` is intractable, the KL term uses the
paper's auxiliary lower bound (eq. 11-15) with a reverse model ``r(z_T | W)``::

    -KL(q(W) || p(W)) >= E_q[ -KL(q(W|z_T) || p(W)) + log r(z_T|W) - log q(z_T) ]

where ``p(W) = N(0, prior_var)`` and ``r(z_T | W)`` is a Gaussian on ``z_Tb``,
the image of ``z_T`` under a second (``n_flows_r``-layer) coupling flow, with
(eq. 9-10)::

    a = tanh(c^T W)                         # (units,)
    mean_r = b1 * mean_j(a_j)               # (in,)
    log var_r = b2 * mean_j(a_j)            # (in,)

``c^T W`` is sampled with the local reparameterisation trick from ``q(W|z_T)``.
``log q(z_T) = log q0(z0) - sum_k log|det|_k`` and we use the analytic
expectation of ``log q0`` (the negative Gaussian entropy) for lower variance.

Forward pass (local reparameterisation, eq. 4-5)::

    mean = (x * z_T) @ mu
    var  = (x^2) @ sigma^2
    out  = mean + sqrt(var + sigma_b^2) * eps_out + mu_b

The bias is a fully factorised Gaussian N(mu_b, sigma_b^2) (no z scaling,
since z multiplies the inputs) with the same prior N(0, prior_var); its
closed-form KL is added to the bound, as in the reference implementation.

Reproducible sampling
---------------------
``call(x, eps_z=None, eps_out=None)`` accepts the standard-normal draws
explicitly, so callers can drive the layer with ``tf.random.stateless_normal``.
For input of rank >= 3, ``(..., N, in)``, one ``z`` sample per leading index is
shared by the ``N`` rows: ``eps_z`` has shape ``(..., 1, in)``.  For rank-2 input
``(N, in)`` ``eps_z`` has shape ``(N, in)`` (one ``z`` per row) or ``(1, in)``
(one shared ``z``).  ``eps_out`` always has the output shape ``(..., units)``.
Missing noise is drawn with ``tf.random.normal``; there is no ``training``
switch, the layer is always stochastic.  See :meth:`MNFDense.noise_shapes`.

The KL bound is *not* registered through ``add_loss``; callers add
``layer.kl_divergence()`` (summed over layers, divided by the dataset size) to
the loss themselves.

TensorFlow Probability
----------------------
Each coupling is a ``tfb.Bijector`` (:class:`MaskedGatedCoupling`, forward,
inverse and both log-determinants) and each flow a ``tfb.Chain`` of them
(:meth:`MNFDense.flow`); the Gaussian KL terms, the entropy of ``q0`` and
``log r`` come from ``tfd.Normal``.  The bijectors own no variables, so the
layer's weights, their names and order (what the weight files hold) are those
of the hand-written layer this replaced, and the sampled outputs are
bit-identical to it (docs/performance.md, "MNF head: TensorFlow Probability",
has the comparison and why tfp stays).
"""

from __future__ import annotations

import logging
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

with warnings.catch_warnings():  # tfp 0.25 checks versions with distutils' LooseVersion
    warnings.filterwarnings("ignore", "distutils Version classes are deprecated", DeprecationWarning)
    import tensorflow_probability as tfp

tfb = tfp.bijectors
tfd = tfp.distributions

logger = logging.getLogger(__name__)

__all__ = ["MNFDense", "MaskedGatedCoupling"]


def _coupling_mask(dim: int, flow_index: int, offset: int = 0) -> np.ndarray:
    """Alternating 0/1 mask over ``dim`` units, flipped from one flow to the next.

    Alternating (rather than random Bernoulli) masks make the layer
    reproducible and serialisable without storing the masks, and guarantee that
    every unit is transformed by every other coupling layer.
    """
    return ((np.arange(dim) + flow_index + offset) % 2).astype(np.float32)


def _last_axis_matmul(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """``x @ w`` contracting the last axis of ``x`` (any rank) with ``w``'s first."""
    return tf.tensordot(x, w, axes=[[x.shape.rank - 1], [0]])


class MaskedGatedCoupling(tfb.Bijector):
    """One masked RealNVP coupling with a sigmoid gate (MNF paper eq. 6), as a TFP bijector.

    The units where ``mask == 1`` pass unchanged and condition the affine map of the
    others: ``z' = keep + (1 - mask) * (g * z + (1 - g) * s)`` with
    ``h = tanh(keep @ u + a)``, ``g = sigmoid(h @ w_g + b_g)``, ``s = h @ w_s + b_s``.
    That is a RealNVP step with scale ``g`` and shift ``(1 - g) s`` on an alternating
    (not contiguous) split; ``tests/test_mnf.py`` checks it against ``tfb.RealNVP``
    between two ``tfb.Permute``.  The bijector holds no variables: ``params`` are the
    owning layer's, so the layer's weight list (and the shipped weight files) are
    unchanged.
    """

    def __init__(self, params: dict, mask: np.ndarray, name: str = "masked_gated_coupling"):
        parameters = dict(locals())
        self._params = params
        self._mask = np.asarray(mask, dtype=np.float32)
        super().__init__(forward_min_event_ndims=1, validate_args=False,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype=None, num_classes=None):
        return {}

    def _conditioner(self, keep):
        p = self._params
        h = tf.tanh(_last_axis_matmul(keep, p["u"]) + p["a"])
        shift = _last_axis_matmul(h, p["w_s"]) + p["b_s"]
        gate_logit = _last_axis_matmul(h, p["w_g"]) + p["b_g"]
        return shift, gate_logit

    def _forward(self, x):
        mask = tf.constant(self._mask, dtype=x.dtype)
        keep = mask * x
        shift, gate_logit = self._conditioner(keep)
        gate = tf.sigmoid(gate_logit)
        return keep + (1.0 - mask) * (gate * x + (1.0 - gate) * shift)

    def _inverse(self, y):
        mask = tf.constant(self._mask, dtype=y.dtype)
        keep = mask * y                      # the kept units are the same in x and y
        shift, gate_logit = self._conditioner(keep)
        gate = tf.sigmoid(gate_logit)
        return keep + (1.0 - mask) * (y - (1.0 - gate) * shift) / gate

    def _forward_log_det_jacobian(self, x):
        mask = tf.constant(self._mask, dtype=x.dtype)
        _, gate_logit = self._conditioner(mask * x)
        # log_sigmoid is stable for large |logit|.
        return tf.reduce_sum((1.0 - mask) * tf.math.log_sigmoid(gate_logit), axis=-1)

    def _inverse_log_det_jacobian(self, y):
        # The conditioner reads only the kept units, which y shares with x.
        return -self._forward_log_det_jacobian(y)


@keras.saving.register_keras_serializable(package="csst_sls_z")
class MNFDense(keras.layers.Layer):
    """Bayesian dense layer with a multiplicative-normalizing-flow posterior.

    Args:
        units: number of output units.
        n_flows_q: number of masked RealNVP coupling layers in q(z).
        n_flows_r: number of coupling layers in the auxiliary r(z_T | W) flow.
        flow_hidden: width of the tanh hidden layer of each coupling layer.
        prior_var: variance of the zero-mean Gaussian weight prior p(W).
        max_std: upper clip on the weight posterior standard deviations sigma_ij
            (as in the reference implementation; avoids exploding noise).
        logvar_init: initial mean of log sigma_ij^2 and log sigma_z^2; very
            negative so the layer starts as a near-deterministic dense layer.
        z_mean_init: initial mean mu_z of z0 (1 => z ~ 1 at the start).
        gate_bias_init: initial bias of the coupling gates; sigmoid(3) ~ 0.95
            keeps the flows close to the identity at initialisation.
        use_bias: whether to add a Gaussian bias N(mu_b, sigma_b^2) (its KL to
            N(0, prior_var) is part of :meth:`kl_divergence`).
        **kwargs: passed to ``keras.layers.Layer``.

    Call args:
        x: inputs ``(N, in)`` or ``(..., N, in)``.
        eps_z: standard-normal noise for z0, see :meth:`noise_shapes`.
        eps_out: standard-normal noise of shape ``(..., units)`` for the local
            reparameterisation of the pre-activations.
    """

    def __init__(
        self,
        units: int,
        n_flows_q: int = 2,
        n_flows_r: int = 2,
        flow_hidden: int = 50,
        prior_var: float = 1.0,
        max_std: float = 1.0,
        logvar_init: float = -9.0,
        z_mean_init: float = 1.0,
        gate_bias_init: float = 3.0,
        use_bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}")
        if n_flows_q < 0 or n_flows_r < 0:
            raise ValueError("n_flows_q and n_flows_r must be >= 0")
        if prior_var <= 0 or max_std <= 0:
            raise ValueError("prior_var and max_std must be positive")
        self.units = int(units)
        self.n_flows_q = int(n_flows_q)
        self.n_flows_r = int(n_flows_r)
        self.flow_hidden = int(flow_hidden)
        self.prior_var = float(prior_var)
        self.max_std = float(max_std)
        self.logvar_init = float(logvar_init)
        self.z_mean_init = float(z_mean_init)
        self.gate_bias_init = float(gate_bias_init)
        self.use_bias = bool(use_bias)
        self.input_dim: int | None = None

    # ------------------------------------------------------------------ build
    def build(self, input_shape) -> None:
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError("MNFDense needs a known last input dimension")
        in_dim = int(in_dim)
        self.input_dim = in_dim
        units = self.units

        self.kernel_mu = self.add_weight(
            name="kernel_mu", shape=(in_dim, units),
            initializer=keras.initializers.GlorotNormal(),
        )
        self.kernel_logvar = self.add_weight(
            name="kernel_logvar", shape=(in_dim, units),
            initializer=keras.initializers.RandomNormal(self.logvar_init, 0.01),
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(units,), initializer="zeros")
            self.bias_logvar = self.add_weight(
                name="bias_logvar", shape=(units,),
                initializer=keras.initializers.RandomNormal(self.logvar_init, 0.01),
            )
        else:
            self.bias = self.bias_logvar = None
        # q(z0) = N(mu_z, sigma_z^2)
        self.z_mu = self.add_weight(
            name="z_mu", shape=(in_dim,),
            initializer=keras.initializers.RandomNormal(self.z_mean_init, 0.01),
        )
        self.z_logvar = self.add_weight(
            name="z_logvar", shape=(in_dim,),
            initializer=keras.initializers.RandomNormal(self.logvar_init, 0.01),
        )
        # r(z_T | W) parameters c, b1, b2 (paper eq. 9-10).
        # A fresh initializer per weight: Keras reuses the seed of an unseeded
        # initializer instance, so sharing one would give identical values.
        def vec_init():
            return keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(in_dim))

        self.r_c = self.add_weight(name="r_c", shape=(in_dim,), initializer=vec_init())
        self.r_b1 = self.add_weight(name="r_b1", shape=(in_dim,), initializer=vec_init())
        self.r_b2 = self.add_weight(name="r_b2", shape=(in_dim,), initializer=vec_init())

        self.q_flows = [self._make_coupling(f"q_flow{k}", in_dim) for k in range(self.n_flows_q)]
        self.r_flows = [self._make_coupling(f"r_flow{k}", in_dim) for k in range(self.n_flows_r)]
        # Masks are constants (not variables); the r flow starts with the
        # opposite parity so its first layer transforms the units q's last left.
        self._q_masks = [_coupling_mask(in_dim, k) for k in range(self.n_flows_q)]
        self._r_masks = [_coupling_mask(in_dim, k, offset=1) for k in range(self.n_flows_r)]
        # The flows as TFP bijectors over the variables above (tfb.Chain applies its
        # list last to first, hence the reversal).
        self._flows = {
            which: tfb.Chain([MaskedGatedCoupling(p, m, name=f"{which}_flow{k}")
                              for k, (p, m) in enumerate(zip(flows, masks))][::-1],
                             name=f"{which}_flow")
            for which, flows, masks in (("q", self.q_flows, self._q_masks),
                                        ("r", self.r_flows, self._r_masks))}
        logger.debug("built %s: in=%d units=%d flows q=%d r=%d", self.name, in_dim,
                     units, self.n_flows_q, self.n_flows_r)
        super().build(input_shape)

    def _make_coupling(self, prefix: str, dim: int) -> dict:
        h = self.flow_hidden
        # Small output weights: the shift/gate start almost constant, so each
        # coupling starts close to z' = g z + (1 - g) * 1, i.e. ~identity near z=1.
        def small():  # fresh instance per weight (see build)
            return keras.initializers.RandomNormal(stddev=0.01)

        return {
            "u": self.add_weight(name=f"{prefix}_u", shape=(dim, h),
                                 initializer=keras.initializers.GlorotNormal()),
            "a": self.add_weight(name=f"{prefix}_a", shape=(h,), initializer="zeros"),
            "w_s": self.add_weight(name=f"{prefix}_w_shift", shape=(h, dim), initializer=small()),
            "b_s": self.add_weight(name=f"{prefix}_b_shift", shape=(dim,),
                                   initializer=keras.initializers.Constant(self.z_mean_init)),
            "w_g": self.add_weight(name=f"{prefix}_w_gate", shape=(h, dim), initializer=small()),
            "b_g": self.add_weight(name=f"{prefix}_b_gate", shape=(dim,),
                                   initializer=keras.initializers.Constant(self.gate_bias_init)),
        }

    # ------------------------------------------------------------------ flows
    def flow(self, which: str = "q") -> tfb.Bijector:
        """The q or r flow as a ``tfb.Chain`` of :class:`MaskedGatedCoupling` bijectors."""
        if which not in ("q", "r"):
            raise ValueError(f"which must be 'q' or 'r', got {which!r}")
        if not self.built:
            raise RuntimeError("MNFDense.flow() called before the layer was built")
        return self._flows[which]

    def flow_forward(self, z: tf.Tensor, which: str = "q"):
        """Push ``z`` (shape ``(..., in)``) through the q or r flow.

        Returns ``(z_out, logdet)`` with ``logdet`` of shape ``z.shape[:-1]``,
        the log |det d z_out / d z|.
        """
        flow = self.flow(which)
        z = tf.convert_to_tensor(z, dtype=self.variable_dtype)
        # zeros_like keeps the batch shape when the flow is empty (n_flows = 0).
        logdet = tf.zeros_like(z[..., 0]) + flow.forward_log_det_jacobian(z, event_ndims=1)
        return flow.forward(z), logdet

    def sample_z(self, eps_z: tf.Tensor):
        """Map standard-normal ``eps_z`` (shape ``(..., in)``) to ``z_T``.

        Returns ``(z_T, logdet_q)``: ``z0 = mu_z + sigma_z * eps_z`` pushed
        through the q flow, and the flow's summed log-determinant.
        """
        return self.flow_forward(self._z0(eps_z), "q")

    def _z0(self, eps_z):
        eps_z = tf.convert_to_tensor(eps_z, dtype=self.variable_dtype)
        return self.z_mu + tf.exp(0.5 * self.z_logvar) * eps_z

    def _clipped_var(self, logvar: tf.Tensor):
        # Clipping sigma at max_std (in log space) keeps the noise bounded.
        logvar = tf.minimum(logvar, 2.0 * math.log(self.max_std))
        return tf.exp(logvar), logvar

    def _kernel_var(self):
        return self._clipped_var(self.kernel_logvar)

    # ------------------------------------------------------------------ noise
    def noise_shapes(self, input_shape):
        """Shapes of ``(eps_z, eps_out)`` for an input of ``input_shape``.

        Rank 2 ``(N, in)`` -> ``((N, in), (N, units))`` (one z per row; a
        ``(1, in)`` eps_z is also accepted and shares z across rows).
        Rank >= 3 ``(..., N, in)`` -> ``((..., 1, in), (..., N, units))``.
        """
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"MNFDense needs rank >= 2 input, got shape {shape}")
        in_dim = shape[-1]
        out_shape = shape[:-1] + (self.units,)
        z_shape = shape if len(shape) == 2 else shape[:-2] + (1, in_dim)
        return z_shape, out_shape

    # ------------------------------------------------------------------ call
    def call(self, x, eps_z=None, eps_out=None):
        x = tf.convert_to_tensor(x)
        x = tf.cast(x, self.compute_dtype)
        rank = x.shape.rank
        if rank is None or rank < 2:
            raise ValueError("MNFDense expects inputs of known rank >= 2")
        if eps_z is None:
            shape = tf.shape(x)
            z_shape = shape if rank == 2 else tf.concat(
                [shape[:-2], [1], shape[-1:]], axis=0)
            eps_z = tf.random.normal(z_shape, dtype=x.dtype)
        z = self.flow("q").forward(self._z0(eps_z))  # the log-det is not needed here

        var_w, _ = self._kernel_var()
        mean = _last_axis_matmul(x * z, self.kernel_mu)
        var = _last_axis_matmul(tf.square(x), var_w)
        if self.bias is not None:
            var = var + self._clipped_var(self.bias_logvar)[0]
        if eps_out is None:
            eps_out = tf.random.normal(tf.shape(mean), dtype=mean.dtype)
        else:
            eps_out = tf.cast(eps_out, mean.dtype)
        # The tiny floor keeps d sqrt/d var finite when a row of x is all zero
        # (e.g. after a ReLU), which would otherwise give inf * 0 = NaN.
        out = mean + tf.sqrt(var + 1e-12) * eps_out
        if self.bias is not None:
            out = out + self.bias
        return out

    def shared_std(self, x):
        """``sqrt(x^2 @ sigma^2 + sigma_b^2 + 1e-12)`` for ``x`` (N, in): the standard deviation of
        the output (local reparameterisation), which does not depend on ``z``."""
        x = tf.cast(tf.convert_to_tensor(x), self.compute_dtype)
        var_w, _ = self._kernel_var()
        var = _last_axis_matmul(tf.square(x), var_w)               # (N, units)
        if self.bias is not None:
            var = var + self._clipped_var(self.bias_logvar)[0]
        return tf.sqrt(var + 1e-12)

    def call_shared(self, x, eps_z, eps_out, std=None):
        """The layer on one input shared by S samples: the inference fast path.

        ``x`` (N, in), ``eps_z`` (S, 1, in), ``eps_out`` (S, N, units) -> (S, N, units):
        the same numbers as ``call(broadcast_to(x, (S, N, in)), eps_z, eps_out)`` (up to
        the matmul's float rounding), at less cost:

        * the output variance ``x^2 @ sigma^2`` does not depend on the sampled ``z``, so
          it is computed once per row, (N, in) @ (in, units), not S times
          (:meth:`shared_std`; pass it as ``std`` to reuse it across calls);
        * each sample's ``z`` is folded into the inputs, ``(x * z_s)``, so the mean of
          all S samples is one (S*N, in) @ (in, units) matmul, and ``x`` is never tiled.

        The noise layout is that of :meth:`call` for a (S, N, in) input, so the same
        draws give the same samples.
        """
        x = tf.cast(tf.convert_to_tensor(x), self.compute_dtype)
        if x.shape.rank != 2:
            raise ValueError("MNFDense.call_shared expects inputs (N, in)")
        if std is None:
            std = self.shared_std(x)
        z = self.flow("q").forward(self._z0(eps_z))               # (S, 1, in)
        mean = _last_axis_matmul(x[None] * z, self.kernel_mu)      # (S, N, units)
        out = mean + std[None] * tf.cast(eps_out, mean.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    # ------------------------------------------------------------------ KL
    @staticmethod
    def _normal(loc, logvar) -> tfd.Normal:
        return tfd.Normal(loc=loc, scale=tf.exp(0.5 * logvar))

    def weight_kl(self, z) -> tf.Tensor:
        """KL(q(W|z) || p(W)) [+ KL(q(b) || p(b))], closed form from ``tfd.kl_divergence``.

        ``z``: a flowed multiplicative sample ``z_T`` of shape ``(in,)``.
        """
        prior = tfd.Normal(loc=0.0, scale=math.sqrt(self.prior_var))
        _, logvar_w = self._kernel_var()
        q_w = self._normal(z[:, None] * self.kernel_mu, logvar_w)
        kl = tf.reduce_sum(tfd.kl_divergence(q_w, prior))
        if self.bias is not None:
            _, logvar_b = self._clipped_var(self.bias_logvar)
            kl += tf.reduce_sum(tfd.kl_divergence(self._normal(self.bias, logvar_b), prior))
        return kl

    def kl_divergence(self, eps_z=None, eps_a=None) -> tf.Tensor:
        """One-sample Monte Carlo estimate of the KL upper bound (paper eq. 15).

        KL ~= KL(q(W|z_T) || p(W)) + log q(z_T) - log r(z_T | W)
              [+ KL(q(b) || p(b)) for the Gaussian bias].

        Args:
            eps_z: optional standard-normal draw for z0, shape ``(in,)`` or ``(1, in)``.
            eps_a: optional standard-normal draw for ``c^T W``, shape ``(units,)``.

        Returns:
            scalar float32 tensor, differentiable w.r.t. all trainable variables.
        """
        if not self.built:
            raise RuntimeError("MNFDense.kl_divergence() called before the layer was built")
        in_dim, units = self.input_dim, self.units
        dtype = self.variable_dtype
        if eps_z is None:
            eps_z = tf.random.normal((in_dim,), dtype=dtype)
        eps_z = tf.reshape(tf.convert_to_tensor(eps_z, dtype=dtype), (in_dim,))
        z, logdet_q = self.sample_z(eps_z)  # z: (in,), logdet_q: ()

        var_w, _ = self._kernel_var()
        mean_w = z[:, None] * self.kernel_mu  # (in, units)
        kl_w = self.weight_kl(z)

        # log q(z_T) = E[log q0(z0)] - log|det|; the expectation (negative
        # entropy of the diagonal Gaussian) has lower variance than a sample.
        log_q = -tf.reduce_sum(self._normal(self.z_mu, self.z_logvar).entropy()) - logdet_q

        # r(z_T | W): c^T W sampled by local reparameterisation from q(W|z_T).
        if eps_a is None:
            eps_a = tf.random.normal((units,), dtype=dtype)
        eps_a = tf.reshape(tf.convert_to_tensor(eps_a, dtype=dtype), (units,))
        a_mean = tf.linalg.matvec(mean_w, self.r_c, transpose_a=True)  # (units,)
        a_var = tf.linalg.matvec(var_w, tf.square(self.r_c), transpose_a=True)
        a = tf.tanh(a_mean + tf.sqrt(a_var + 1e-12) * eps_a)
        a_bar = tf.reduce_mean(a)
        mean_r = self.r_b1 * a_bar
        logvar_r = self.r_b2 * a_bar
        z_b, logdet_r = self.flow_forward(z, "r")
        log_r = logdet_r + tf.reduce_sum(self._normal(mean_r, logvar_r).log_prob(z_b))

        return kl_w + log_q - log_r

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            n_flows_q=self.n_flows_q,
            n_flows_r=self.n_flows_r,
            flow_hidden=self.flow_hidden,
            prior_var=self.prior_var,
            max_std=self.max_std,
            logvar_init=self.logvar_init,
            z_mean_init=self.z_mean_init,
            gate_bias_init=self.gate_bias_init,
            use_bias=self.use_bias,
        )
        return config
