"""The anomaly model in JAX: a feedforward reconstruction network on per-reading features.

Choice (and why)
----------------
The original FLEAD system trains a small feedforward network on each mote and averages
the weights. We keep that network family — a configurable MLP (:class:`ModelSpec`:
hidden sizes, activation) — and make the anomaly signal explicit:

* inputs (6): standardised temperature, humidity, light, voltage + ``sin``/``cos`` of the
  time of day (the Intel Lab channels are strongly diurnal);
* outputs (4): the standardised sensor channels, i.e. an autoencoder-style MLP
  ``6 -> hidden... -> 4`` that learns the joint normal operating manifold of a mote
  (how temperature, humidity, light and voltage co-vary across the day);
* score: mean squared reconstruction error over the 4 channels in standardised units,
  so channels with different physical scales weigh equally and a score of ``1`` means
  "off by one global standard deviation" on average;
* thresholds: a quantile (``threshold_quantile``, default 0.99) of the scores on the
  device's own training window for each local model, and for the global model a
  sample-weighted combination of per-device quantiles (only scalars leave a device).

Why a reconstruction MLP rather than a classifier: labels are rare/absent in the stream,
the model is tiny (FedAvg over thousands of motes stays cheap), it trains with plain
mini-batch SGD/Adam and averages well, and the score is per-reading so it can be applied
row-wise in Spark with :mod:`iot_fed.fl.forward` (numpy only). Caveat: with wide hidden
layers the net *could* learn the identity; short local training (few epochs, warm start)
and the time-of-day inputs keep it on the normal manifold, and readings far outside the
training range (spikes, stuck/dying-battery values) reconstruct poorly. A bottleneck
(e.g. ``hidden=(32, 3, 32)``) is available through the spec when stronger regularisation
is wanted.
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
