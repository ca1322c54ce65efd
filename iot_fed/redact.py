"""Endpoints safe to print: a URI's ``user:password@`` becomes ``***@``."""

from __future__ import annotations


def redact(endpoint: str) -> str:
    """``endpoint`` with any credentials before its host replaced by ``***``."""
    scheme, sep, rest = endpoint.partition("://")
    netloc, slash, path = rest.partition("/")
    if not sep or "@" not in netloc:
        return endpoint
    return f"{scheme}://***@{netloc.rpartition('@')[2]}{slash}{path}"
