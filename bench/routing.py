"""The cost routing adds to a request, per call, in this process: ``Split.assign``, ``Split.variant`` and the
bucket as shipml computes it (a copy of a hasher primed with the salt), beside the two other blake2b
constructions that were measured and not kept (a fresh hasher per key, a keyed hasher's copy).

``python bench/routing.py``: best of 5 over 20,000 keys each; printed, never asserted (a shared machine's
timing is not a result). `make bench` prints the routing goal from bench/serve.py; this is the comparison
behind the choice of construction.
"""

from __future__ import annotations

import hashlib
import random
import timeit
from collections.abc import Callable

from shipml.core.routing import BUCKETS, Split

SALT = "churn-exp-1"


def main() -> None:
    rng = random.Random(11)  # noqa: S311 - test keys and unkeyed routing, nothing secret
    keys = [f"cust-{rng.getrandbits(64):016x}" for _ in range(20_000)]
    split = Split([("champion", 0.5), ("challenger", 0.3), ("candidate", 0.2)], SALT)
    prefix = SALT.encode() + b"\0"
    keyed = hashlib.blake2b(digest_size=8, key=SALT.encode())

    def fresh(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(prefix + key.encode(), digest_size=8).digest(), "little") % BUCKETS

    def keyed_copy(key: str) -> int:
        hasher = keyed.copy()
        hasher.update(key.encode())
        return int.from_bytes(hasher.digest(), "little") % BUCKETS

    def per_call_us(fn: Callable[[str], object]) -> float:
        best = min(timeit.repeat(lambda: [fn(k) for k in keys], number=1, repeat=5))
        return best / len(keys) * 1e6

    draws = random.Random(0)  # noqa: S311 - the draw for keyless requests, unused by keyed ones
    figures = {
        "assign_us": per_call_us(lambda k: split.assign(k, draws)),
        "variant_us": per_call_us(split.variant),
        "bucket_prefix_copy_us": per_call_us(split.bucket),
        "bucket_fresh_hasher_us": per_call_us(fresh),
        "bucket_keyed_copy_us": per_call_us(keyed_copy),
    }
    print("routing cost per call: " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
