"""Sticky traffic splitting: a routing key always lands on the same variant, in every worker, replica and restart.

A key's bucket is ``blake2b(salt + b"\\0" + key, digest_size=8)`` read as a little-endian integer, modulo
``BUCKETS`` (10,000). Python's ``hash()`` is never used: it is randomised per process, so the same customer would
meet a different model in each worker. The construction is part of the contract: changing it (or ``BUCKETS``, or
the salt) moves about every key to a new bucket, so a test pins known buckets.

Variants own contiguous bucket ranges in the order they are configured: variant ``i`` owns
``[floor(cum[i-1] * B), floor(cum[i] * B))`` where ``cum`` are the running sums of the weights. So:

- changing the weight of the LAST variant (taking it from, or giving it to, the one before it) moves only the keys
  in the band between the old and the new boundary, between those two variants, and no other key;
- changing a MIDDLE weight shifts every boundary after it: each boundary that moves hands the keys of the band
  between its old and new position to the neighbouring variant on that side, so keys move between every pair of
  neighbours whose shared boundary moved (``[0.5, 0.3, 0.2] -> [0.4, 0.4, 0.2]`` moves only ``[4000, 5000)``
  from the first variant to the second; ``[0.5, 0.3, 0.2] -> [0.4, 0.3, 0.3]`` moves ``[4000, 5000)`` to the
  second and ``[7000, 8000)`` from the second to the third). Grow a canary by taking weight from its neighbour.

10,000 buckets rather than 2**16: a weight given to 0.01 % (0.1, 0.05, 0.0001) is an exact number of buckets, so
the served split is exactly the configured one. The modulo bias of a 64-bit hash over 10,000 is below 1e-15.

Shadow sampling hashes the key in its own domain (``salt + "\\0shadow:" + name + "\\0" + key``), so whether a key
is shadowed is independent of the variant it is routed to, and of the other shadows.

A canary (``Split.with_canary``) takes its share from the champion (the first variant) only: a key the split gives
the champion goes to the canary when its bucket in the canary's own hash domain (the canary's salt) is below the
share, so a canary beside an A/B test moves no key between A and B, and as the share rises the canary only gains
keys. Each experiment and each canary has its own salt (``derived_salt``: a digest of what identifies it, the same
in every process), so whether a customer is in one test says nothing about whether it is in the next: with one salt
for all, the same top buckets would get every new model.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from shipml.errors import ConfigError

BUCKETS = 10_000
"""Buckets a key hashes into; part of the assignment contract, never a tunable."""

WEIGHT_SUM_TOLERANCE = 1e-9
"""Weights must sum to 1 within this; a cumulative weight this close to a bucket boundary counts as on it."""

_BOUNDARY_SLACK = WEIGHT_SUM_TOLERANCE * BUCKETS  # 0.7 + 0.1 == 0.7999999999999999 must still end at bucket 8000
_DIGEST_SIZE = 8
_TWO_64 = 1 << 64


def _utf8(text: str) -> bytes:
    # surrogatepass: a JSON id may carry a lone surrogate ("\ud800"); it is still a key, never an encoding error
    return text.encode("utf-8", "surrogatepass")


def _num(value: float) -> str:
    """A number as a message shows it: 0 rather than 0.0, 0.3 rather than 0.30000000000000004."""
    return f"{value:.12g}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which variant answers a request, from which bucket, and whether the bucket came from the key (sticky) or
    from a random draw (``keyed=False``: the request had no routing key, and the answer says so)."""

    variant: str
    bucket: int
    keyed: bool


def derived_salt(*parts: str) -> str:
    """A salt derived from what identifies an experiment or a canary (``"canary", model, version``): 16 hex
    digits of blake2b over the parts, so every worker and replica derives the same one, with no randomness, and
    two experiments get independent assignments."""
    hasher = hashlib.blake2b(b"shipml-salt", digest_size=_DIGEST_SIZE)
    for part in parts:
        hasher.update(b"\0" + _utf8(part))
    return hasher.hexdigest()


def routing_fingerprint(salt: str, variants: Sequence[tuple[str, float, str]]) -> str:
    """What decides a key's variant in one process, as 16 hex digits: the salt and each variant's name, weight and
    model reference. Two processes with the same fingerprint send every key to the same variant; replicas of one
    service compare theirs (``shipml_routing_mismatch``). The salt enters only through the hash."""
    hasher = hashlib.blake2b(b"shipml-routing", digest_size=8)
    hasher.update(_utf8(salt))
    for name, weight, model in variants:  # in order: the split gives each its buckets in this order
        hasher.update(b"\0" + _utf8(f"{name}={weight!r}@{model}"))
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class _Canary:
    """A canary's layer over a split: ``name`` takes the keys of ``champion`` whose bucket in the canary's own
    hash domain (``prefix``, fed with its salt) is below ``below``."""

    name: str
    champion: str
    below: int
    salt: str
    prefix: hashlib.blake2b


class Split:
    """Variants and their weights over ``BUCKETS`` contiguous bucket ranges, with the salt that seeds the hash.

    Built once per deployment and read by every request; the hasher state holding the salt is fed once here
    and copied per key (the fastest of the measured ways: a fresh hasher over salt + key, a keyed blake2b copied,
    or this prefix-fed copy, which gives the same digest as the fresh hasher).
    """

    __slots__ = ("_canary", "_owners", "_prefix", "bounds", "names", "salt", "weights")

    def __init__(self, variants: Sequence[tuple[str, float]], salt: str, *, where: str = "serve.variants") -> None:
        """``variants`` as ``(name, weight)`` in the order of their bucket ranges; ``where`` is the config key path
        the one-line errors name (``serve.variants[1].weight: must be > 0, got 0``)."""
        problems = _variant_problems(variants, where)
        if "\0" in salt:
            problems.append("serve.salt: must not contain the NUL character (it separates the salt from the key)")
        if problems:
            raise ConfigError(problems)
        self.names: tuple[str, ...] = tuple(name for name, _ in variants)
        self.weights: tuple[float, ...] = tuple(float(weight) for _, weight in variants)
        self.salt = salt
        self.bounds: tuple[int, ...] = _upper_bounds(self.weights)
        empty = [i for i, (low, high) in enumerate(zip((0, *self.bounds), self.bounds, strict=False)) if low == high]
        if empty:
            raise ConfigError(
                [
                    f"{where}[{i}].weight: {_num(self.weights[i])} gets no bucket (one is {_num(1 / BUCKETS)} of the "
                    "traffic), so the variant would never be served"
                    for i in empty
                ]
            )
        self._prefix = hashlib.blake2b(_utf8(salt) + b"\0", digest_size=_DIGEST_SIZE)
        self._owners = self.names  # the variant owning each bucket range (``names`` also lists a canary)
        self._canary: _Canary | None = None

    def with_canary(self, name: str, share: float, salt: str) -> Split:
        """This split with a canary ``name`` served ``share`` (in (0, 1]) of the champion's (the first variant's)
        traffic; its ``names`` and ``weights`` list the canary last and the champion with what it keeps (left out
        at a share of 1). The other variants keep their keys and weights, and a key in the canary at one share is
        in it at every higher one (with the same ``salt``)."""
        problem = _fraction_problem(share)
        if problem is not None or share == 0.0:
            raise ConfigError([f"canary {name!r}: share {problem or 'must be > 0, got 0'}"])
        if name in self.names:
            raise ConfigError([f"canary {name!r}: the split has a variant of that name already"])
        if "\0" in salt:
            raise ConfigError([f"canary {name!r}: the salt must not contain the NUL character"])
        below = math.floor(share * BUCKETS + _BOUNDARY_SLACK)
        if below == 0:
            raise ConfigError([f"canary {name!r}: share {_num(share)} gets no bucket (one is {_num(1 / BUCKETS)})"])
        champion, rest = self.weights[0], below / BUCKETS
        served = [(self.names[0], champion * (1.0 - rest))] if below < BUCKETS else []
        served += [*zip(self.names[1:], self.weights[1:], strict=True), (name, champion * rest)]
        split = Split.__new__(Split)
        split.names = tuple(n for n, _ in served)
        split.weights = tuple(w for _, w in served)
        split.salt, split.bounds, split._prefix, split._owners = self.salt, self.bounds, self._prefix, self._owners
        prefix = hashlib.blake2b(_utf8(salt) + b"\0canary\0", digest_size=_DIGEST_SIZE)
        split._canary = _Canary(name, self.names[0], below, salt, prefix)
        return split

    def bucket(self, key: str) -> int:
        """The key's bucket in ``[0, BUCKETS)``: the same in every process, for the same salt."""
        hasher = self._prefix.copy()
        hasher.update(_utf8(key))
        return int.from_bytes(hasher.digest(), "little") % BUCKETS

    def canary_bucket(self, key: str) -> int | None:
        """The key's bucket in the canary's hash domain (None without a canary)."""
        if self._canary is None:
            return None
        hasher = self._canary.prefix.copy()
        hasher.update(_utf8(key))
        return int.from_bytes(hasher.digest(), "little") % BUCKETS

    def variant_of_bucket(self, bucket: int) -> str:
        """The variant that owns a bucket (before a canary takes its share of the champion's)."""
        return self._owners[bisect.bisect_right(self.bounds, bucket)]

    def variant(self, key: str) -> str:
        """The variant a routing key is served by."""
        owner = self._owners[bisect.bisect_right(self.bounds, self.bucket(key))]
        canary = self._canary
        if canary is not None and owner == canary.champion and (self.canary_bucket(key) or 0) < canary.below:
            return canary.name
        return owner

    def assign(self, key: str | None, rng: random.Random) -> Assignment:
        """Route one request: by its key when it has one (sticky), else by a uniform random bucket from ``rng``
        (and, in the champion's range beside a canary, a second draw for the canary's domain).

        An empty string is a key like any other; only ``None`` means "no key"."""
        canary = self._canary
        if key is None:
            bucket = rng.randrange(BUCKETS)
            owner = self._owners[bisect.bisect_right(self.bounds, bucket)]
            if canary is not None and owner == canary.champion and rng.randrange(BUCKETS) < canary.below:
                owner = canary.name
            return Assignment(owner, bucket, False)
        bucket = self.bucket(key)
        owner = self._owners[bisect.bisect_right(self.bounds, bucket)]
        if canary is not None and owner == canary.champion and (self.canary_bucket(key) or 0) < canary.below:
            owner = canary.name
        return Assignment(owner, bucket, True)

    def range_of(self, name: str) -> range:
        """The buckets a variant owns before a canary takes its share (a ``KeyError`` for a name not owning a
        range: not in the split, or the canary)."""
        if name not in self._owners:
            raise KeyError(name)
        i = self._owners.index(name)
        return range(self.bounds[i - 1] if i else 0, self.bounds[i])

    def _identity(self) -> tuple[object, ...]:
        canary = self._canary
        layer = None if canary is None else (canary.name, canary.below, canary.salt)
        return (self._owners, self.bounds, self.salt, layer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={_num(w)}" for n, w in zip(self.names, self.weights, strict=True))
        return f"Split({parts}, salt={self.salt!r})"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _variant_problems(variants: Sequence[tuple[str, float]], where: str) -> list[str]:
    """Every problem of a variant list, one line each, located by index."""
    if not variants:
        return [f"{where}: must list at least one variant, got none"]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, (name, weight) in enumerate(variants):
        if not isinstance(name, str) or not name:
            problems.append(f"{where}[{i}].name: must be a non-empty string, got {name!r}")
        elif name in seen:
            problems.append(f"{where}[{i}].name: duplicate variant name {name!r} (also {where}[{seen[name]}])")
        else:
            seen[name] = i
        if not _is_number(weight):
            problems.append(f"{where}[{i}].weight: must be a number, got {weight!r}")
        elif not weight > 0:  # also catches NaN
            problems.append(f"{where}[{i}].weight: must be > 0, got {_num(weight)}")
    weights = [float(w) for _, w in variants if _is_number(w)]
    if len(weights) == len(variants) and all(math.isfinite(w) for w in weights):
        total = math.fsum(weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            parts = [f"{name}={_num(w)}" for (name, _), w in zip(variants, weights, strict=True)]
            terms = f" ({' + '.join(parts)})" if len(parts) > 1 else ""
            problems.append(
                f"{where}: weights must sum to 1 (within {WEIGHT_SUM_TOLERANCE:g}), got {_num(total)}{terms}"
            )
    return problems


def _upper_bounds(weights: Sequence[float]) -> tuple[int, ...]:
    """The exclusive upper bucket of each variant: ``floor(cum_i * BUCKETS)``, the last one exactly ``BUCKETS``."""
    bounds = [math.floor(math.fsum(weights[: i + 1]) * BUCKETS + _BOUNDARY_SLACK) for i in range(len(weights) - 1)]
    return (*bounds, BUCKETS)


def _fraction_problem(fraction: object) -> str | None:
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return f"must be a number, got {fraction!r}"
    if not 0.0 <= fraction <= 1.0:  # NaN fails too
        return f"must be in [0, 1], got {_num(fraction)}"
    return None


@dataclass(frozen=True, slots=True)
class Shadow:
    """A shadow variant: scores ``fraction`` of the requests off the response path, never answering anyone."""

    name: str
    fraction: float

    def __post_init__(self) -> None:
        problem = _fraction_problem(self.fraction)
        if problem is not None:
            raise ConfigError([f"shadow {self.name!r}: fraction {problem}"])


def shadows_from(entries: Sequence[tuple[str, float]], *, where: str = "serve.shadow") -> tuple[Shadow, ...]:
    """Shadows from ``(name, fraction)`` pairs, with one-line errors located by index (``serve.shadow[0].fraction:
    must be in [0, 1], got 1.5``). No shadows is fine."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, (name, fraction) in enumerate(entries):
        if not isinstance(name, str) or not name:
            problems.append(f"{where}[{i}].name: must be a non-empty string, got {name!r}")
        elif name in seen:
            problems.append(f"{where}[{i}].name: duplicate shadow name {name!r} (also {where}[{seen[name]}])")
        else:
            seen[name] = i
        problem = _fraction_problem(fraction)
        if problem is not None:
            problems.append(f"{where}[{i}].fraction: {problem}")
    if problems:
        raise ConfigError(problems)
    return tuple(Shadow(name, float(fraction)) for name, fraction in entries)


def shadow_sampled(key: str | None, shadow: Shadow, salt: str, rng: random.Random) -> bool:
    """Whether a request is also scored by ``shadow``: decided by the key when there is one (the same key is
    always in or always out, whatever the worker), by ``rng`` otherwise; in either case with probability
    ``shadow.fraction``. The key is hashed in the shadow's own domain, independent of its routing bucket."""
    if key is None:
        return rng.random() < shadow.fraction
    digest = hashlib.blake2b(
        _utf8(salt) + b"\0shadow:" + _utf8(shadow.name) + b"\0" + _utf8(key), digest_size=_DIGEST_SIZE
    ).digest()
    # compare the full 64 bits with the fraction: exact at 0 (never) and 1 (2**64 exceeds every digest)
    return int.from_bytes(digest, "little") < int(shadow.fraction * _TWO_64)
