"""Federated learning core (pure JAX/optax + numpy; no Dagster).

Import the module you need (this package imports nothing eagerly, so numpy-only users
such as Spark executors never pull in JAX):

* :mod:`~iot_fed.fl.window_features` — per-reading window features (numpy)
* :mod:`~iot_fed.fl.spec` — :class:`ModelSpec`, params pytree layout (numpy)
* :mod:`~iot_fed.fl.normalization` — ``SufficientStats``, ``Normalizer`` (numpy)
* :mod:`~iot_fed.fl.forward` — the model's forward pass (numpy)
* :mod:`~iot_fed.fl.detector` — residual scores, threshold calibration (numpy)
* :mod:`~iot_fed.fl.tails` — fleet tail quantiles, pooled or robust (numpy)
* :mod:`~iot_fed.fl.stream_scoring` — ``score_device``: stream == batch scoring, anomalies
  kept out of the context (numpy)
* :mod:`~iot_fed.fl.rounds` — ``client_update`` / ``server_update``: the one round
* :mod:`~iot_fed.fl.model`, :mod:`~iot_fed.fl.training` — JAX forward pass, ``train_devices``
* :mod:`~iot_fed.fl.aggregation` — fedavg / median / trimmed mean / Krum, DP (numpy)
* :mod:`~iot_fed.fl.serialization` — checksummed ``ModelBundle`` blobs (numpy)
"""
