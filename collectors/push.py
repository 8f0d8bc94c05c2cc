"""Signatures of pushed records, checked before a pushed record is mapped.

A merchant's callback receiver logs each push as received (`param` and `sign` form fields, and the
callback URL's own query parameters); the collector verifies each record before trusting it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from collectors.errors import SchemaError


def verify_kuaidi100(source: str, key: str, record: Any, salt: str) -> dict:
    """Kuaidi100 subscription push (reference §8.1): sign = upper(MD5(param + salt)), `param` a JSON
    string; returns the record with `param` decoded. SchemaError naming the field otherwise."""
    if not isinstance(record, dict):
        raise SchemaError(source, key, "$", f"expected an object, got {type(record).__name__}")
    param, signature = record.get("param"), record.get("sign")
    if not isinstance(param, str) or not param:
        raise SchemaError(source, key, "param", "push without its param (a JSON string)")
    if not isinstance(signature, str) or not signature:
        raise SchemaError(source, key, "sign", "unsigned push, but a salt is configured")
    expected = hashlib.md5((param + salt).encode("utf-8")).hexdigest().upper()
    if not hmac.compare_digest(signature.upper().encode(), expected.encode()):
        raise SchemaError(
            source, key, "sign", "signature mismatch: not from Kuaidi100, or signed with another salt"
        )
    try:
        decoded = json.loads(param)
    except ValueError as exc:
        raise SchemaError(source, key, "param", f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    return {**record, "param": decoded}


VERIFIERS = {"kuaidi100": verify_kuaidi100}
