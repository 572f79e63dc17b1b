"""Per-key rate limits and the throttle on failed authentication."""

from __future__ import annotations

from shipml.config import ApiKeySettings, AuthSettings, RateLimitSettings
from shipml.server.auth import Authenticator, hash_key
from shipml.server.ratelimit import BucketTable, TokenBucket, retry_after


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    t0 = bucket._at
    assert [bucket.take(t0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(t0) == 0.5  # one token comes back in half a second
    assert bucket.take(t0 + 0.5) == 0.0
    assert bucket.take(t0 + 10.0) == 0.0  # never more than the burst after a long pause
    assert [bucket.take(t0 + 10.0) for _ in range(3)][-1] > 0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after(0.01) == "1" and retry_after(1.0) == "1" and retry_after(1.2) == "2"


def test_the_client_table_stays_bounded() -> None:
    table = BucketTable(RateLimitSettings(requests_per_s=1.0, burst=1), max_clients=100)
    for i in range(1000):
        table.take(f"10.0.0.{i}")
    assert len(table._buckets) == 100


def test_a_key_over_its_limit_waits_and_other_keys_do_not() -> None:
    limited, free = "sk_shipml_limited", "sk_shipml_free"
    auth = Authenticator(
        AuthSettings(
            keys=[
                ApiKeySettings(
                    name="busy", sha256=hash_key(limited), rate_limit=RateLimitSettings(requests_per_s=1, burst=2)
                ),
                ApiKeySettings(name="calm", sha256=hash_key(free)),
            ]
        )
    )
    busy, calm = auth.identify(limited), auth.identify(free)
    assert busy is not None and calm is not None
    assert [auth.over_limit(busy) for _ in range(2)] == [0.0, 0.0]
    assert auth.over_limit(busy) > 0
    assert all(auth.over_limit(calm) == 0.0 for _ in range(1000))


def test_failed_authentications_are_throttled_per_client() -> None:
    auth = Authenticator(AuthSettings(failure_limit=RateLimitSettings(requests_per_s=0.1, burst=5)))
    assert [auth.failed("203.0.113.9") for _ in range(5)] == [0.0] * 5
    assert auth.failed("203.0.113.9") > 0
    assert auth.failed("198.51.100.7") == 0.0
