import jax.numpy as jnp
import numpy as np
import pytest

from iot_fed.fl.forward import forward_numpy, reconstruction_error_numpy
from iot_fed.fl.model import forward, init_params, masked_mean_loss, reconstruction_error
from iot_fed.fl.spec import ModelSpec
from iot_fed_tests.fl.helpers import TINY

X = np.array([[1.0, 2.0], [-1.0, 0.0]], np.float32)
Y = np.array([[1.0], [0.0]], np.float32)


def test_golden_forward_and_loss():
    # x1: pre = [5, 1] -> relu [5, 1] -> 2.5 - 1 + 0.25 = 1.75 ; err (1.75 - 1)^2 = 0.5625
    # x2: pre = [-1, 2] -> relu [0, 2] -> -2 + 0.25 = -1.75 ; err (-1.75 - 0)^2 = 3.0625
    out = forward(TINY, jnp.asarray(X), "relu")
    np.testing.assert_allclose(np.asarray(out), [[1.75], [-1.75]], rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(reconstruction_error(TINY, X, Y, "relu")), [0.5625, 3.0625], rtol=1e-6
    )
    assert float(masked_mean_loss(TINY, X, Y, jnp.array([1, 1]), "relu")) == pytest.approx(1.8125)
    assert float(masked_mean_loss(TINY, X, Y, jnp.array([1, 0]), "relu")) == pytest.approx(0.5625)
    assert float(masked_mean_loss(TINY, X, Y, jnp.array([0, 0]), "relu")) == 0.0
    np.testing.assert_allclose(forward_numpy(TINY, X, "relu"), [[1.75], [-1.75]], rtol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_numpy_forward_equals_jax_forward(activation):
    spec = ModelSpec(hidden=(16, 8), activation=activation, n_inputs=6, n_outputs=4)
    params = init_params(spec, 3)
    x = np.random.default_rng(0).normal(size=(257, 6)).astype(np.float32) * 3
    y = x[:, :4]
    np.testing.assert_allclose(
        forward_numpy(params, x, activation),
        np.asarray(forward(params, x, activation)),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        reconstruction_error_numpy(params, x, y, activation),
        np.asarray(reconstruction_error(params, x, y, activation)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_rows_numpy_score_does_not_depend_on_its_batch():
    """Stream scoring (a few rows) and batch scoring (a whole series) give the same bits."""
    spec = ModelSpec(hidden=(32, 16), activation="gelu", n_inputs=27, n_outputs=8)
    params = init_params(spec, 5)
    x = np.random.default_rng(1).normal(size=(500, 27)).astype(np.float32)
    y = x[:, :8]
    whole = reconstruction_error_numpy(params, x, y, "gelu")
    for size in (1, 7, 64):
        parts = [
            reconstruction_error_numpy(params, x[i : i + size], y[i : i + size], "gelu")
            for i in range(0, len(x), size)
        ]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_spec_shapes_and_dict_round_trip():
    spec = ModelSpec(hidden=[32, 16], activation="tanh", n_inputs=6, n_outputs=4)
    params = init_params(spec, 0)
    assert spec.hidden == (32, 16) and spec.sizes == (6, 32, 16, 4)
    assert {
        k: {m: v.shape for m, v in layer.items()} for k, layer in params.items()
    } == spec.param_shapes()
    assert spec.n_params() == 6 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4
    assert spec.flops_per_sample() == 2 * (6 * 32 + 32 * 16 + 16 * 4)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert all(v.dtype == jnp.float32 for layer in params.values() for v in layer.values())
    with pytest.raises(ValueError, match="activation"):
        ModelSpec(activation="swish")
