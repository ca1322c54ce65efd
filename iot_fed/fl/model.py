"""The anomaly model in JAX: a feedforward autoencoder over window features.

The original FLEAD system trains a small feedforward network on each mote and averages
the weights. We keep that network family, a configurable MLP (:class:`ModelSpec`:
hidden sizes, activation), over the standardised window features of
:mod:`iot_fed.fl.window_features`:

* inputs (:data:`~iot_fed.fl.window_features.N_FEATURES`): every channel's dynamics
  features (``diff``, ``dev``, ``spread``, ``run``, ``trend``), then the conditioning
  inputs: the four channel levels, the gap before the reading and the time of day (each
  channel's ``shift`` and ``bend`` are neither inputs nor outputs: they are scored
  directly, :mod:`iot_fed.fl.detector`);
* outputs (:data:`~iot_fed.fl.window_features.N_CHANNEL_FEATURES`): the dynamics
  features again, i.e. ``n_inputs -> hidden... -> n_outputs`` learns what is normal for a
  mote's dynamics given its levels and the time of day;
* training loss (:func:`reconstruction_error`): mean squared reconstruction error over
  the outputs, in standardised units.

Scoring and thresholds are not here: :mod:`iot_fed.fl.detector` scales each residual by
its held-out normal spread, takes the max over channels and calibrates per-device
thresholds on held-out readings. Why a reconstruction MLP rather than a classifier:
labels are rare or absent in the stream, the model is tiny (averaging over thousands of
motes stays cheap), it trains with plain mini-batch SGD/Adam, and its forward pass runs
row-wise in Spark with :mod:`iot_fed.fl.forward` (numpy only). The outputs are also
inputs, so the settings' hidden sizes (``IOT_FED_MODEL_HIDDEN``, default ``32,4,32``) are a
narrow bottleneck: the net cannot learn the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from iot_fed.fl.spec import ModelSpec, Params

_ACT: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


def init_params(spec: ModelSpec, seed: int | jax.Array = 0) -> Params:
    """He/Glorot-uniform weights (He for relu-like activations), zero biases; float32."""
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    sizes = spec.sizes
    gain = 1.0 if spec.activation == "tanh" else 2.0
    params: Params = {}
    for i, (name, k) in enumerate(
        zip(spec.layer_names(), jax.random.split(key, spec.n_layers), strict=True)
    ):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        g = gain if i < spec.n_layers - 1 else 1.0
        limit = jnp.sqrt(3.0 * g / fan_in)
        params[name] = {
            "w": jax.random.uniform(k, (fan_in, fan_out), jnp.float32, -limit, limit),
            "b": jnp.zeros((fan_out,), jnp.float32),
        }
    return params


def forward(params: Params, x: jax.Array, activation: str) -> jax.Array:
    """Reconstruction ``(..., n_outputs)`` of standardised inputs ``(..., n_inputs)``."""
    act = _ACT[activation]
    names = [f"layer_{i}" for i in range(len(params))]
    h = x
    for name in names[:-1]:
        h = act(h @ params[name]["w"] + params[name]["b"])
    last = params[names[-1]]
    return h @ last["w"] + last["b"]


def reconstruction_error(params: Params, x: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    """Per-sample anomaly score: mean squared error over the output channels, shape ``(...,)``."""
    return jnp.mean(jnp.square(forward(params, x, activation) - y), axis=-1)


def masked_mean_loss(
    params: Params, x: jax.Array, y: jax.Array, mask: jax.Array, activation: str
) -> jax.Array:
    """Mean score over the rows where ``mask`` is 1 (0 when no row is valid)."""
    err = reconstruction_error(params, x, y, activation)
    m = mask.astype(err.dtype)
    return jnp.sum(err * m) / jnp.maximum(jnp.sum(m), 1.0)
