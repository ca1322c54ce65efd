"""``iot-fed run``: the main job as supervised processes (see :mod:`iot_fed.runner.supervisor`)."""
