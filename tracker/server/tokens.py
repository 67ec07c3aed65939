"""API tokens of the team server: made by ``tracker token create``, checked per request.

A token's text is ``trk_<id>_<secret>``: ``id`` 12 hex digits (not secret: it names
the token in lists and messages), ``secret`` 32 random bytes, URL-safe base64. The
store keeps only the SHA-256 hex of the secret (``TokenRecord.secret_hash``), so
neither the store nor a copy of it can give a token away; the text is printed once, at
creation. A token belongs to one project and has a scope: "read", or "write" (which
reads its project too). It may expire, and may be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from ..core.errors import StoreError
from ..core.stores.base import Store, TokenRecord

SCOPES = ("read", "write")
_TOKEN = re.compile(r"^trk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    store: Store,
    project: str,
    scope: str,
    *,
    name: str | None = None,
    expires_in: float | None = None,
    now: float | None = None,
) -> tuple[str, TokenRecord]:
    """Make a token, store its record, and return (its text, shown once; the record)."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use read or write")
    if not project:
        raise ValueError("a token needs a project")
    now = time.time() if now is None else now
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        project=project,
        scope=scope,
        name=name,
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
        revoked_at=None,
        secret_hash=secret_hash(secret),
    )
    store.add_token(record)
    return f"trk_{token_id}_{secret}", record


class TokenRefused(Exception):
    """The token is missing, malformed, unknown, wrong, expired or revoked (HTTP 401).
    The message never holds the token's text."""


def verify_token(store: Store, text: str | None, now: float | None = None) -> TokenRecord:
    """The record of a valid token; ``TokenRefused`` saying why otherwise."""
    if not text:
        raise TokenRefused("no token: send Authorization: Bearer <token>")
    match = _TOKEN.match(text)
    if match is None:
        raise TokenRefused("the token is not a tracker token (trk_<id>_<secret>)")
    token_id, secret = match.groups()
    try:
        record = store.token(token_id)
    except StoreError:
        raise
    # Compared even for an unknown id, so that timing says nothing about which ids exist.
    expected = record.secret_hash if record is not None else "0" * 64
    if not hmac.compare_digest(secret_hash(secret), expected) or record is None:
        raise TokenRefused(f"token {token_id} is unknown or its secret is wrong")
    now = time.time() if now is None else now
    if record.revoked_at is not None:
        raise TokenRefused(f"token {token_id} was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise TokenRefused(f"token {token_id} expired")
    return record


def token_id_of(text: str) -> str | None:
    match = _TOKEN.match(text or "")
    return match.group(1) if match else None
