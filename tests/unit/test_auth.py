from __future__ import annotations

from shipml.config import AuthSettings, settings_from_mapping
from shipml.server.auth import Authenticator, hash_key, key_from_headers, new_key


def test_keys_are_matched_by_hash_with_their_roles() -> None:
    key, digest = new_key()
    admin_key, admin_digest = new_key()
    auth = Authenticator(
        AuthSettings(
            keys=[
                {"name": "app", "sha256": digest},
                {"name": "ops", "sha256": admin_digest, "roles": ["admin", "predict"]},
            ]
        )  # type: ignore[list-item]
    )
    assert digest == hash_key(key) and key not in digest
    app = auth.identify(key)
    assert app is not None and app.name == "app" and app.roles == {"predict"}
    ops = auth.identify(admin_key)
    assert ops is not None and ops.roles == {"admin", "predict"}
    assert auth.identify("wrong") is None and auth.identify(None) is None


def test_disabled_auth_must_be_explicit() -> None:
    assert AuthSettings().enabled is True
    assert Authenticator(AuthSettings(enabled=False)).identify(None) is not None


def test_headers() -> None:
    assert key_from_headers("Bearer abc", None) == "abc"
    assert key_from_headers("bearer  abc ", None) == "abc"
    assert key_from_headers(None, "xyz") == "xyz"
    assert key_from_headers("Basic abc", None) is None


def test_cors_wildcard_with_credentials_is_refused() -> None:
    import pytest

    from shipml.errors import ConfigError

    with pytest.raises(ConfigError, match="cors_origins: '\\*' cannot be combined with cors_allow_credentials"):
        settings_from_mapping({"serve": {"cors_origins": ["*"], "cors_allow_credentials": True}})
