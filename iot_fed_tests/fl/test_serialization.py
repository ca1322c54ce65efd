import hashlib
import io
import zipfile

import numpy as np
import pytest

from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.serialization import (
    _MAGIC,
    ModelBlobError,
    ModelBundle,
    params_from_bytes,
    params_to_bytes,
)
from iot_fed.fl.spec import ModelSpec

SPEC = ModelSpec(hidden=(8, 4), activation="tanh", n_inputs=6, n_outputs=4)


def _params(spec=SPEC, seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: {m: rng.normal(size=s).astype(np.float32) for m, s in leaves.items()}
        for k, leaves in spec.param_shapes().items()
    }


def _bundle():
    n = SPEC.n_features  # the inputs, then the directly scored features
    norm = Normalizer(np.arange(float(n)), np.linspace(0.5, 2.0, n))
    return ModelBundle(
        SPEC,
        _params(),
        norm,
        threshold=1.25,
        version=7,
        meta={"devices": np.int64(54), "strategy": "fedavg"},
    )


def test_bundle_round_trip():
    b = _bundle()
    blob = b.to_bytes()
    assert isinstance(blob, bytes) and len(blob) < 10_000
    back = ModelBundle.from_bytes(blob, expected_spec=SPEC)
    assert back.spec == SPEC and back.threshold == 1.25 and back.version == 7
    assert back.meta == {"devices": 54, "strategy": "fedavg"}
    np.testing.assert_array_equal(back.norm.mean, b.norm.mean)
    np.testing.assert_array_equal(back.norm.std, b.norm.std)
    for k in b.params:
        for m in b.params[k]:
            np.testing.assert_array_equal(back.params[k][m], b.params[k][m])
            assert back.params[k][m].dtype == np.float32


def test_the_blob_body_is_an_npz_numpy_and_zipfile_read():
    """The one-pass writer's body is a plain uncompressed ``.npz``: inspectable with
    ``np.load``, members byte for byte what ``np.save`` writes."""
    b = _bundle()
    body = b.to_bytes()[len(_MAGIC) + 32 :]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        w = zf.read("params/layer_1/w.npy")
    ref = io.BytesIO()
    np.save(ref, b.params["layer_1"]["w"])
    assert w == ref.getvalue()
    with np.load(io.BytesIO(body)) as z:
        np.testing.assert_array_equal(z["norm/std"], b.norm.std)
        np.testing.assert_array_equal(z["params/layer_2/b"], b.params["layer_2"]["b"])


def test_params_only_round_trip():
    spec, params = params_from_bytes(params_to_bytes(_params(), SPEC))
    assert spec == SPEC
    np.testing.assert_array_equal(params["layer_2"]["w"], _params()["layer_2"]["w"])
    assert ModelBundle.from_bytes(params_to_bytes(_params(), SPEC)).norm is None


def test_mismatched_spec_is_rejected():
    blob = _bundle().to_bytes()
    with pytest.raises(ModelBlobError, match="spec mismatch"):
        ModelBundle.from_bytes(
            blob, expected_spec=ModelSpec(hidden=(32, 16), n_inputs=6, n_outputs=4)
        )
    with pytest.raises(ModelBlobError, match="shape"):
        ModelBundle(
            ModelSpec(hidden=(8, 5), activation="tanh", n_inputs=6, n_outputs=4), _params()
        ).to_bytes()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_byte_is_detected(where):
    blob = bytearray(_bundle().to_bytes())
    i = int(len(blob) * where)
    blob[i] ^= 0xFF
    with pytest.raises(ModelBlobError):
        ModelBundle.from_bytes(bytes(blob))


def test_truncated_and_garbage_blobs_are_rejected():
    blob = _bundle().to_bytes()
    for bad in (blob[: len(blob) // 2], b"", b"not a model", b"PK\x03\x04" + b"\x00" * 50):
        with pytest.raises(ModelBlobError):
            ModelBundle.from_bytes(bad)


def test_tampered_array_fails_the_inner_checksum():
    # re-wrapped with a valid outer digest: only the per-array checksum can catch it
    blob = _bundle().to_bytes()
    head = len(_MAGIC)
    with np.load(io.BytesIO(blob[head + 32 :])) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params/layer_0/w"] = arrays["params/layer_0/w"] + 1
    out = io.BytesIO()
    np.savez(out, **arrays)
    body = out.getvalue()
    with pytest.raises(ModelBlobError, match="checksum"):
        ModelBundle.from_bytes(_MAGIC + hashlib.sha256(body).digest() + body)
