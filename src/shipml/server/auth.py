"""API keys: stored as sha256 hashes, compared in constant time, each with roles."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from shipml.config import AuthSettings, KeyRole
from shipml.server.ratelimit import BucketTable, TokenBucket

KEY_PREFIX = "sk_shipml_"


@dataclass(frozen=True)
class Principal:
    """Who a request is: the key's name (never the key) and its roles."""

    name: str
    roles: frozenset[str]


ANONYMOUS_ADMIN = Principal("auth-disabled", frozenset({"predict", "admin"}))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its hash (the hash goes in the config, the key to the client)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


class Authenticator:
    """Resolves the key of a request to a Principal, and keeps each key's and each client's rate limits."""

    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.enabled
        self._keys = [(bytes.fromhex(k.sha256), Principal(k.name, frozenset(k.roles))) for k in settings.keys]
        self._limits = {
            k.name: TokenBucket(k.rate_limit.requests_per_s, k.rate_limit.burst)
            for k in settings.keys
            if k.rate_limit is not None
        }
        self._failures = BucketTable(settings.failure_limit)

    def over_limit(self, principal: Principal) -> float:
        """0 if ``principal`` may make a request now (and it is counted), else the seconds to wait."""
        bucket = self._limits.get(principal.name)
        return 0.0 if bucket is None else bucket.take()

    def failed(self, client: str | None) -> float:
        """Count a failed authentication of ``client``: 0 while under its limit, else the seconds to wait."""
        return self._failures.take(client or "unknown")

    def identify(self, presented: str | None) -> Principal | None:
        """The principal for ``presented`` or None; every stored hash is compared, in constant time."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, principal in self._keys:
            if hmac.compare_digest(stored, digest) and found is None:
                found = principal
        return found


def key_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if api_key:
        return api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def allows(principal: Principal, role: KeyRole) -> bool:
    return role in principal.roles
