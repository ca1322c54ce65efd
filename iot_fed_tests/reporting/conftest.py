"""A fresh PostgreSQL database per test (on the project's server) for the reporting schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from iot_fed.services.postgres import database_uri


@pytest.fixture
def pg_uri(postgres: str) -> Iterator[str]:
    """The URI of a new, empty database, dropped after the test."""
    name = f"t_reporting_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_uri(postgres, name)
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def pg(pg_uri: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_uri) as conn:
        yield conn
