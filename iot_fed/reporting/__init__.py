"""The PostgreSQL reporting store (schema ``reporting``) kept current from MongoDB.

:mod:`~iot_fed.reporting.schema` holds the DDL and the dashboard views,
:mod:`~iot_fed.reporting.refresh` the incremental, idempotent copy. No Dagster here.
"""
