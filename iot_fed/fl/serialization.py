"""Model blobs for MongoDB: params + spec + normalisation + threshold in one ``bytes``.

Numpy-only. Format: ``b"IOTFEDM1"`` + SHA-256 of the rest (so any flipped or missing byte
is caught) + an uncompressed ``.npz`` (zip) holding every leaf as
``params/<layer>/<w|b>``, optional ``norm/mean`` and ``norm/std``, and ``__meta__``: UTF-8
JSON with the format tag, model spec, each array's shape and dtype, threshold, version,
free-form metadata and a SHA-256 over all arrays (name, dtype, shape, bytes). Loading
re-checks all of it and raises :class:`ModelBlobError` with a clear message on a
corrupted blob or one that does not match the expected spec.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iot_fed.fl.normalization import Normalizer
from iot_fed.fl.spec import ModelSpec, Params

FORMAT = "iot_fed.model"
FORMAT_VERSION = 2
"""2: window-feature autoencoder with residual scales and per-device thresholds."""
_META = "__meta__"
_MAGIC = b"IOTFEDM1"
_DIGEST = 32


class ModelBlobError(ValueError):
    """A model blob is corrupted, truncated, or does not match the expected spec."""


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class ModelBundle:
    """Everything needed to score readings: spec, params, normalisation, thresholds.

    ``threshold`` is the global (fallback) threshold; ``device_thresholds`` maps a mote id
    to its own calibrated threshold; ``residual_scale`` ``(n_residuals,)`` standardises the
    reconstruction residuals (see :mod:`iot_fed.fl.detector`)."""

    spec: ModelSpec
    params: Params
    norm: Normalizer | None = None
    threshold: float | None = None
    version: int | str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    residual_scale: np.ndarray | None = None
    device_thresholds: dict[int, float] = field(default_factory=dict)
    device_norms: dict[int, Normalizer] = field(default_factory=dict)
    """Each device's own feature normaliser (from its sufficient statistics); ``norm``
    is the fleet's, the fallback for a device without one."""
    known_devices: frozenset[int] | None = None
    """For a global version whose per-device params are stored apart: the devices it has
    params for (any other is scored *learning*, ``learning:no_device_params``). None: the
    bundle carries every device's params it has."""

    def norm_for(self, moteid: int) -> Normalizer:
        n = self.device_norms.get(int(moteid), self.norm)
        if n is None:
            raise ModelBlobError("bundle has no normaliser")
        return n

    def threshold_for(self, moteid: int) -> tuple[float, bool]:
        """``(threshold, is_fallback)``: the device's own, else the global one."""
        t = self.device_thresholds.get(int(moteid))
        if t is not None:
            return float(t), False
        if self.threshold is None:
            raise ModelBlobError("bundle has no global threshold to fall back on")
        return float(self.threshold), True

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        shapes = self.spec.param_shapes()
        for layer, leaves in shapes.items():
            for leaf, shape in leaves.items():
                try:
                    a = np.asarray(self.params[layer][leaf], np.float32)
                except KeyError:
                    raise ModelBlobError(f"params lack {layer}/{leaf}") from None
                if a.shape != shape:
                    raise ModelBlobError(f"{layer}/{leaf} has shape {a.shape}, spec says {shape}")
                arrays[f"params/{layer}/{leaf}"] = a
        if self.norm is not None:
            arrays["norm/mean"] = self.norm.mean.astype(np.float64)
            arrays["norm/std"] = self.norm.std.astype(np.float64)
        if self.residual_scale is not None:
            rs = np.asarray(self.residual_scale, np.float64)
            if rs.shape != (self.spec.n_residuals,):
                raise ModelBlobError(f"residual_scale must have shape ({self.spec.n_residuals},)")
            arrays["residual_scale"] = rs
        if self.device_thresholds:
            ids = sorted(int(k) for k in self.device_thresholds)
            arrays["thr/devices"] = np.asarray(ids, np.int64)
            arrays["thr/values"] = np.asarray(
                [float(self.device_thresholds[i]) for i in ids], np.float64
            )
        if self.known_devices is not None:
            arrays["known/devices"] = np.asarray(sorted(self.known_devices), np.int64)
        if self.device_norms:
            ids = sorted(int(k) for k in self.device_norms)
            arrays["dnorm/devices"] = np.asarray(ids, np.int64)
            arrays["dnorm/mean"] = np.stack([self.device_norms[i].mean for i in ids])
            arrays["dnorm/std"] = np.stack([self.device_norms[i].std for i in ids])
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "arrays": {
                k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()
            },
            "threshold": None if self.threshold is None else float(self.threshold),
            "version": self.version,
            "meta": self.meta,
            "sha256": _checksum(arrays),
        }
        try:
            text = json.dumps(header, sort_keys=True, default=_json_default)
        except TypeError as exc:
            raise ModelBlobError(f"bundle version/meta must be JSON-serialisable: {exc}") from None
        meta = np.frombuffer(text.encode(), np.uint8)
        body = _npz_bytes({**arrays, _META: meta})
        return _MAGIC + hashlib.sha256(body).digest() + body

    @classmethod
    def from_bytes(cls, blob: bytes, expected_spec: ModelSpec | None = None) -> ModelBundle:
        """Load and verify a blob; raise :class:`ModelBlobError` on any problem."""
        header, arrays = _read(blob)
        try:
            spec = ModelSpec.from_dict(header["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelBlobError(f"model blob has an invalid spec: {exc}") from None
        if expected_spec is not None and spec != expected_spec:
            raise ModelBlobError(f"model spec mismatch: blob has {spec}, expected {expected_spec}")
        params: Params = {}
        for layer, leaves in spec.param_shapes().items():
            for leaf, shape in leaves.items():
                name = f"params/{layer}/{leaf}"
                a = arrays.get(name)
                if a is None:
                    raise ModelBlobError(f"model blob lacks {name}")
                if a.shape != shape or a.dtype != np.float32:
                    raise ModelBlobError(
                        f"{name}: blob has {a.dtype}{a.shape}, spec needs float32{shape}"
                    )
                if not np.all(np.isfinite(a)):
                    raise ModelBlobError(f"{name} contains non-finite values")
                params.setdefault(layer, {})[leaf] = a
        extra = set(arrays) - {f"params/{k}/{m}" for k, v in params.items() for m in v}
        extra -= {"norm/mean", "norm/std", "residual_scale", "thr/devices", "thr/values"}
        extra -= {"dnorm/devices", "dnorm/mean", "dnorm/std", "known/devices"}
        if extra:
            raise ModelBlobError(f"model blob has unexpected arrays {sorted(extra)}")
        norm = None
        if "norm/mean" in arrays or "norm/std" in arrays:
            mean, std = arrays.get("norm/mean"), arrays.get("norm/std")
            if (
                mean is None
                or std is None
                or mean.shape != (spec.n_features,)
                or std.shape != (spec.n_features,)
            ):
                raise ModelBlobError(
                    f"normalisation stats must both have shape ({spec.n_features},)"
                )
            try:
                norm = Normalizer(mean, std)
            except ValueError as exc:
                raise ModelBlobError(f"invalid normalisation stats: {exc}") from None
        rs = arrays.get("residual_scale")
        if rs is not None and (
            rs.shape != (spec.n_residuals,) or not np.all(np.isfinite(rs)) or np.any(rs <= 0)
        ):
            raise ModelBlobError(f"residual_scale must be ({spec.n_residuals},) finite and > 0")
        ids, vals = arrays.get("thr/devices"), arrays.get("thr/values")
        if (ids is None) != (vals is None) or (ids is not None and ids.shape != vals.shape):
            raise ModelBlobError("per-device thresholds: devices and values do not match")
        dev_thr = {} if ids is None else {int(i): float(v) for i, v in zip(ids, vals, strict=True)}
        dn_ids, dn_mean, dn_std = (arrays.get(f"dnorm/{k}") for k in ("devices", "mean", "std"))
        dev_norms: dict[int, Normalizer] = {}
        if dn_ids is not None:
            want = (dn_ids.shape[0], spec.n_features)
            if dn_mean is None or dn_std is None or dn_mean.shape != want or dn_std.shape != want:
                raise ModelBlobError(f"per-device normalisers must have shape {want}")
            try:
                dev_norms = {
                    int(i): Normalizer(m, sd)
                    for i, m, sd in zip(dn_ids, dn_mean, dn_std, strict=True)
                }
            except ValueError as exc:
                raise ModelBlobError(f"invalid per-device normaliser: {exc}") from None
        thr = header.get("threshold")
        known = arrays.get("known/devices")
        return cls(
            spec,
            params,
            norm,
            None if thr is None else float(thr),
            header.get("version"),
            dict(header.get("meta") or {}),
            rs,
            dev_thr,
            dev_norms,
            None if known is None else frozenset(int(i) for i in known),
        )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as a version 1.0 ``.npy`` file, as ``np.save`` writes a C-order array."""
    a = np.asarray(a)  # tobytes() is C order whatever the layout
    head = f"{{'descr': {a.dtype.str!r}, 'fortran_order': False, 'shape': {a.shape!r}, }}"
    pad = 64 - (10 + len(head) + 1) % 64  # numpy aligns the data to 64 bytes
    head_bytes = (head + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head_bytes)) + head_bytes + a.tobytes()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` (a zip of ``name.npy`` members, read by ``np.load``) written
    in one pass: ``np.savez`` costs about 0.15 ms an array in ``zipfile``, the most of a
    shard run's saves of 1,000 models of 17 arrays each."""
    local, central = bytearray(), bytearray()
    for name, a in arrays.items():
        fname, data = f"{name}.npy".encode(), _npy_bytes(a)
        crc, size, offset = zlib.crc32(data), len(data), len(local)
        # stored member, no extra field; 1980-01-01 00:00 (the blob's checksum covers it)
        fixed = struct.pack("<HHHHHIIIH", 20, 0, 0, 0, 0x21, crc, size, size, len(fname))
        local += b"PK\x03\x04" + fixed + b"\x00\x00" + fname + data
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fixed
            + struct.pack("<HHHHII", 0, 0, 0, 0, 0, offset)
            + fname
        )
    end = struct.pack("<HHHHIIH", 0, 0, len(arrays), len(arrays), len(central), len(local), 0)
    return bytes(local + central + b"PK\x05\x06" + end)


_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z]\d+)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}"
)


def _npz_arrays(body: bytes) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz``, read straight from the buffer (``np.load``
    costs about 0.3 ms an array: a round reading 100,000 local models spent most of its
    time there); a member whose ``.npy`` header is not the plain C-order form np.savez
    writes is read by numpy's own reader."""
    arrays: dict[str, np.ndarray] = {}
    view = memoryview(body)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            start = info.header_offset
            if info.compress_type != zipfile.ZIP_STORED or body[start : start + 4] != b"PK\x03\x04":
                raise ValueError(f"{info.filename}: not a stored zip member")
            name_len, extra_len = struct.unpack_from("<HH", body, start + 26)
            data = start + 30 + name_len + extra_len
            member = view[data : data + info.file_size]
            arrays[name] = _npy_array(bytes(member[:10]), member, zf, info)
    return arrays


def _npy_array(
    lead: bytes, member: memoryview, zf: zipfile.ZipFile, info: zipfile.ZipInfo
) -> np.ndarray:
    if lead[:8] == b"\x93NUMPY\x01\x00":
        head_len = struct.unpack_from("<H", lead, 8)[0]
        m = _NPY_HEADER.match(bytes(member[10 : 10 + head_len]))
        if m is not None:
            dtype = np.dtype(m.group(1).decode())
            shape = tuple(int(d) for d in m.group(2).split(b",") if d.strip())
            count = int(np.prod(shape, dtype=np.int64))
            flat = np.frombuffer(member, dtype, count=count, offset=10 + head_len)
            return flat.reshape(shape).copy()
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read(blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    blob = bytes(blob)
    if not blob.startswith(_MAGIC):
        raise ModelBlobError("not an iot_fed model blob (bad magic bytes)")
    digest, body = blob[len(_MAGIC) : len(_MAGIC) + _DIGEST], blob[len(_MAGIC) + _DIGEST :]
    if hashlib.sha256(body).digest() != digest:
        raise ModelBlobError("model blob checksum mismatch (corrupted or truncated)")
    try:
        arrays = _npz_arrays(body)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise ModelBlobError(f"corrupted model blob: {type(exc).__name__}: {exc}") from None
    meta = arrays.pop(_META, None)
    if meta is None:
        raise ModelBlobError("model blob has no metadata (not an iot_fed model blob)")
    try:
        header = json.loads(meta.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelBlobError(f"model blob metadata is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelBlobError("not an iot_fed model blob (format tag missing)")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelBlobError(
            f"incompatible model blob format version {header.get('format_version')} "
            f"(this code reads {FORMAT_VERSION}: the window detector); retrain the model"
        )
    declared = header.get("arrays", {})
    for name, a in arrays.items():
        d = declared.get(name)
        if d is None or list(a.shape) != d.get("shape") or a.dtype.str != d.get("dtype"):
            raise ModelBlobError(f"array {name} ({a.dtype}{a.shape}) does not match the header")
    if set(declared) != set(arrays):
        raise ModelBlobError(f"model blob is missing arrays {sorted(set(declared) - set(arrays))}")
    if _checksum(arrays) != header.get("sha256"):
        raise ModelBlobError("model blob checksum mismatch (corrupted)")
    return header, arrays


def params_to_bytes(params: Params, spec: ModelSpec) -> bytes:
    """Params alone (no normalisation/threshold) as a verified blob."""
    return ModelBundle(spec, params).to_bytes()


def params_from_bytes(
    blob: bytes, expected_spec: ModelSpec | None = None
) -> tuple[ModelSpec, Params]:
    b = ModelBundle.from_bytes(blob, expected_spec)
    return b.spec, b.params
