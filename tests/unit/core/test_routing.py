"""Sticky routing: the same key meets the same variant everywhere, weights are contiguous bucket ranges, the split
is the configured one, and bad variant lists are refused with one-line errors."""

# ruff: noqa: S311
# (seeded random.Random draws test keys and unkeyed routing; nothing here is a secret)

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys

import pytest
from scipy.stats import chisquare

from shipml.core.routing import BUCKETS, Assignment, Shadow, Split, derived_salt, shadow_sampled, shadows_from
from shipml.errors import ConfigError

SALT = "churn-exp-1"


def _keys(n: int, seed: int) -> list[str]:
    """Customer-like routing keys, the same on every run."""
    rng = random.Random(seed)
    return [f"cust-{rng.getrandbits(64):016x}" for _ in range(n)]


@pytest.fixture(scope="module")
def keys() -> list[str]:
    return _keys(100_000, seed=11)


def test_the_bucket_is_blake2b_of_salt_nul_key_and_pinned() -> None:
    """The construction is the contract: a change would move about every customer to another variant on upgrade."""
    split = Split([("champion", 0.9), ("challenger", 0.1)], SALT)
    for key in [*_keys(200, seed=1), "", "ü-ñ", "\ud800 lone surrogate"]:
        raw = hashlib.blake2b(SALT.encode() + b"\0" + key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        assert split.bucket(key) == int.from_bytes(raw, "little") % BUCKETS
    pinned = {"customer-1": 1995, "customer-19": 9419, "42": 4132, "": 2232}
    assert {k: split.bucket(k) for k in pinned} == pinned
    assert split.variant("customer-1") == "champion" and split.variant("customer-19") == "challenger"


_CHILD = """
import json, sys
from shipml.core.routing import Split
split = Split([("champion", 0.5), ("challenger", 0.3), ("candidate", 0.2)], sys.argv[1])
keys = [f"customer-{i}" for i in range(10_000)]
print(json.dumps({"hash": hash("customer-0"), "variants": [split.variant(k) for k in keys]}))
"""


def test_a_key_lands_on_the_same_variant_in_every_process() -> None:
    """Workers and replicas are separate processes with their own PYTHONHASHSEED; the assignment must not care."""
    split = Split([("champion", 0.5), ("challenger", 0.3), ("candidate", 0.2)], SALT)
    here = [split.variant(f"customer-{i}") for i in range(10_000)]
    children = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, SALT], env=env, capture_output=True, text=True, check=True, timeout=60
        )
        children.append(json.loads(out.stdout))
    assert children[0]["hash"] != children[1]["hash"]  # the processes really hash strings differently
    assert children[0]["variants"] == here
    assert children[1]["variants"] == here
    assert {"champion", "challenger", "candidate"} == set(here)


def _moves(old: Split, new: Split, keys: list[str]) -> dict[tuple[str, str], set[str]]:
    """Keys whose variant changed, grouped by (from, to)."""
    moved: dict[tuple[str, str], set[str]] = {}
    for key in keys:
        a, b = old.variant(key), new.variant(key)
        if a != b:
            moved.setdefault((a, b), set()).add(key)
    return moved


def test_raising_the_last_weight_moves_only_the_keys_of_that_band(keys: list[str]) -> None:
    old = Split([("champion", 0.9), ("challenger", 0.1)], SALT)
    new = Split([("champion", 0.8), ("challenger", 0.2)], SALT)
    assert old.range_of("challenger") == range(9000, 10_000) and new.range_of("challenger") == range(8000, 10_000)
    moved = _moves(old, new, keys)
    band = {k for k in keys if 8000 <= old.bucket(k) < 9000}
    assert moved == {("champion", "challenger"): band}  # nobody leaves the challenger, nobody else moves
    assert 0.095 < len(band) / len(keys) < 0.105


def test_with_three_variants_the_last_weight_takes_keys_only_from_its_neighbour(keys: list[str]) -> None:
    old = Split([("a", 0.5), ("b", 0.4), ("c", 0.1)], SALT)
    new = Split([("a", 0.5), ("b", 0.3), ("c", 0.2)], SALT)
    assert _moves(old, new, keys) == {("b", "c"): {k for k in keys if 8000 <= old.bucket(k) < 9000}}


def test_a_middle_weight_change_moves_the_bands_of_every_boundary_it_shifts(keys: list[str]) -> None:
    """As the module documents: each moved boundary hands its band to the neighbour on that side."""
    old = Split([("a", 0.5), ("b", 0.3), ("c", 0.2)], SALT)
    only_first = Split([("a", 0.4), ("b", 0.4), ("c", 0.2)], SALT)
    assert _moves(old, only_first, keys) == {("a", "b"): {k for k in keys if 4000 <= old.bucket(k) < 5000}}
    both = Split([("a", 0.4), ("b", 0.3), ("c", 0.3)], SALT)
    assert _moves(old, both, keys) == {
        ("a", "b"): {k for k in keys if 4000 <= old.bucket(k) < 5000},
        ("b", "c"): {k for k in keys if 7000 <= old.bucket(k) < 8000},
    }


def test_weights_that_float_arithmetic_rounds_down_still_end_on_their_bucket() -> None:
    """0.7 + 0.1 is 0.7999999999999999 in floats; the boundary must still be bucket 8000, not 7999."""
    split = Split([("a", 0.7), ("b", 0.1), ("c", 0.2)], SALT)
    assert split.bounds == (7000, 8000, 10_000)
    assert [len(split.range_of(n)) for n in split.names] == [7000, 1000, 2000]
    assert Split([("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)], SALT).bounds == (3333, 6666, 10_000)


def test_the_served_split_fits_the_configured_one(keys: list[str]) -> None:
    weights = {"champion": 0.5, "challenger": 0.3, "candidate": 0.2}
    split = Split(list(weights.items()), SALT)
    counts = dict.fromkeys(weights, 0)
    for key in keys:
        counts[split.variant(key)] += 1
    observed = [counts[n] for n in weights]
    expected = [w * len(keys) for w in weights.values()]
    assert chisquare(observed, expected).pvalue >= 0.001
    # the test has power: the same counts reject a split one point away
    assert chisquare(observed, [w * len(keys) for w in (0.49, 0.31, 0.2)]).pvalue < 0.001


def test_another_salt_reshuffles_about_half_the_keys_of_a_50_50_split(keys: list[str]) -> None:
    one = Split([("a", 0.5), ("b", 0.5)], "exp-1")
    two = Split([("a", 0.5), ("b", 0.5)], "exp-2")
    sample = keys[:20_000]
    moved = sum(one.variant(k) != two.variant(k) for k in sample)
    assert 0.47 < moved / len(sample) < 0.53
    assert one != two and one == Split([("a", 0.5), ("b", 0.5)], "exp-1")


def test_a_keyed_assignment_is_sticky_and_says_so() -> None:
    split = Split([("champion", 0.9), ("challenger", 0.1)], SALT)
    rng = random.Random(5)
    state = rng.getstate()
    first = split.assign("customer-19", rng)
    assert first == Assignment("challenger", 9419, keyed=True)
    assert all(split.assign("customer-19", random.Random(seed)) == first for seed in range(20))
    assert rng.getstate() == state  # a keyed request draws no randomness
    assert split.assign("", rng).keyed  # an empty id is still a key; only None is "no key"


def test_an_unkeyed_assignment_is_random_over_the_split_and_says_keyed_false() -> None:
    split = Split([("champion", 0.9), ("challenger", 0.1)], SALT)
    rng = random.Random(3)
    drawn = [split.assign(None, rng) for _ in range(20_000)]
    assert not any(a.keyed for a in drawn)
    assert all(a.variant == split.variant_of_bucket(a.bucket) for a in drawn)
    share = sum(a.variant == "challenger" for a in drawn) / len(drawn)
    assert 0.09 < share < 0.11
    assert len({a.bucket for a in drawn}) > 8000  # spread over the buckets, not one repeated draw
    again = random.Random(3)
    assert [split.assign(None, again) for _ in range(100)] == drawn[:100]  # reproducible under a seed


@pytest.mark.parametrize(
    ("variants", "lines"),
    [
        ([], ["serve.variants: must list at least one variant, got none"]),
        (
            [("champion", 1.0), ("challenger", 0)],
            ["serve.variants[1].weight: must be > 0, got 0"],
        ),
        (
            [("champion", 1.1), ("challenger", -0.1)],
            ["serve.variants[1].weight: must be > 0, got -0.1"],
        ),
        (
            [("champion", 0.8), ("challenger", 0.1)],
            ["serve.variants: weights must sum to 1 (within 1e-09), got 0.9 (champion=0.8 + challenger=0.1)"],
        ),
        ([("champion", 0.99999999)], ["serve.variants: weights must sum to 1 (within 1e-09), got 0.99999999"]),
        (
            [("champion", 0.5), ("challenger", 0.25), ("champion", 0.25)],
            ["serve.variants[2].name: duplicate variant name 'champion' (also serve.variants[0])"],
        ),
        ([("", 1.0)], ["serve.variants[0].name: must be a non-empty string, got ''"]),
        ([("champion", float("nan"))], ["serve.variants[0].weight: must be > 0, got nan"]),
        ([("champion", "0.5"), ("challenger", 0.5)], ["serve.variants[0].weight: must be a number, got '0.5'"]),
        (
            [("champion", 0.5), ("challenger", 0.00005), ("candidate", 0.49995)],
            [
                "serve.variants[1].weight: 5e-05 gets no bucket (one is 0.0001 of the traffic), so the variant would "
                "never be served"
            ],
        ),
    ],
)
def test_bad_variant_lists_are_refused_with_one_line_each(variants: list[tuple[str, float]], lines: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Split(variants, SALT)
    assert caught.value.lines() == lines


def test_every_problem_of_a_variant_list_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Split([("a", 0), ("a", 0.5)], "bad\0salt")
    assert caught.value.lines() == [
        "serve.variants[0].weight: must be > 0, got 0",
        "serve.variants[1].name: duplicate variant name 'a' (also serve.variants[0])",
        "serve.variants: weights must sum to 1 (within 1e-09), got 0.5 (a=0 + a=0.5)",
        "serve.salt: must not contain the NUL character (it separates the salt from the key)",
    ]


def test_the_location_prefix_is_the_callers() -> None:
    with pytest.raises(ConfigError, match=r"^experiments\[0\]\.weight: must be > 0, got 0$"):
        Split([("a", 0), ("b", 1.0)], SALT, where="experiments")


def test_shadow_sampling_is_sticky_per_key_near_its_fraction_and_independent_of_routing(keys: list[str]) -> None:
    split = Split([("champion", 0.9), ("challenger", 0.1)], SALT)
    shadow = Shadow("candidate", 0.25)
    rng = random.Random(8)
    sampled = {k for k in keys if shadow_sampled(k, shadow, SALT, rng)}
    assert 0.24 < len(sampled) / len(keys) < 0.26
    again = random.Random(99)
    assert all(shadow_sampled(k, shadow, SALT, again) == (k in sampled) for k in keys[:2000])
    # its own hash domain: the challenger's keys (the top buckets) are shadowed as often as anyone's
    challenger = [k for k in keys if split.variant(k) == "challenger"]
    assert 0.23 < sum(k in sampled for k in challenger) / len(challenger) < 0.27
    # and another shadow's draw is independent of this one's
    other = {k for k in keys if shadow_sampled(k, Shadow("other", 0.25), SALT, rng)}
    assert 0.055 < len(sampled & other) / len(keys) < 0.07


def test_shadow_sampling_without_a_key_is_random_and_the_ends_are_exact(keys: list[str]) -> None:
    rng = random.Random(4)
    draws = [shadow_sampled(None, Shadow("candidate", 0.25), SALT, rng) for _ in range(20_000)]
    assert 0.235 < sum(draws) / len(draws) < 0.265
    for key in [*keys[:2000], None]:
        assert not shadow_sampled(key, Shadow("never", 0.0), SALT, rng)
        assert shadow_sampled(key, Shadow("always", 1.0), SALT, rng)


def test_bad_shadows_are_refused_with_one_line_each() -> None:
    assert shadows_from([]) == ()
    assert shadows_from([("candidate", 0.25), ("full", 1)]) == (Shadow("candidate", 0.25), Shadow("full", 1.0))
    with pytest.raises(ConfigError) as caught:
        shadows_from([("candidate", 1.5), ("candidate", 0.2), ("", -0.1), ("x", float("nan"))])
    assert caught.value.lines() == [
        "serve.shadow[0].fraction: must be in [0, 1], got 1.5",
        "serve.shadow[1].name: duplicate shadow name 'candidate' (also serve.shadow[0])",
        "serve.shadow[2].name: must be a non-empty string, got ''",
        "serve.shadow[2].fraction: must be in [0, 1], got -0.1",
        "serve.shadow[3].fraction: must be in [0, 1], got nan",
    ]
    with pytest.raises(ConfigError, match=r"^shadow 'candidate': fraction must be in \[0, 1\], got 2$"):
        Shadow("candidate", 2)


def test_a_canary_takes_its_share_from_the_champion_only_and_never_moves_a_key_between_other_variants(
    keys: list[str],
) -> None:
    """S12: beside a 50/50 A/B the canary's steps moved 4-33 % of A's keys to B; now no key of B ever moves, a key
    of A goes only to the canary, and a key in the canary at one step is in it at every later one."""
    ab = Split([("a", 0.5), ("b", 0.5)], SALT)
    before = {k: ab.variant(k) for k in keys}
    canary_keys: set[str] = set()
    for share in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        split = ab.with_canary("canary", share, "canary-salt")
        now = {k: split.variant(k) for k in keys}
        assert all(now[k] == "b" for k in keys if before[k] == "b")
        assert all(now[k] in ("a", "canary") for k in keys if before[k] == "a")
        in_canary = {k for k in keys if now[k] == "canary"}
        assert canary_keys <= in_canary  # monotone as the share rises
        canary_keys = in_canary
        assert len(in_canary) / len(keys) == pytest.approx(0.5 * share, abs=0.006)
        weights = dict(zip(split.names, split.weights, strict=True))
        assert weights["b"] == 0.5 and weights["canary"] == pytest.approx(0.5 * share)
        assert ("a" in weights) == (share < 1.0)
        assert split == ab.with_canary("canary", share, "canary-salt") and split != ab


def test_a_canary_beside_one_model_gets_its_share_and_keyless_requests_follow_it() -> None:
    split = Split([("main", 1.0)], SALT).with_canary("canary", 0.2, "s")
    rng = random.Random(5)
    drawn = [split.assign(None, rng) for _ in range(20_000)]
    assert sum(a.variant == "canary" for a in drawn) / len(drawn) == pytest.approx(0.2, abs=0.015)
    assert not any(a.keyed for a in drawn)
    assert split.assign("customer-1", rng) == split.assign("customer-1", random.Random(9))


@pytest.mark.parametrize(("share", "salt", "message"), [(0.0, "s", "must be > 0"), (1.5, "s", "in [0, 1]"),
                                                         (0.00001, "s", "gets no bucket"), (0.1, "a\0b", "NUL")])  # fmt: skip
def test_bad_canaries_are_refused(share: float, salt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Split([("main", 1.0)], SALT).with_canary("canary", share, salt)


def test_derived_salts_are_stable_and_differ_per_experiment() -> None:
    """S9: one salt for every experiment put the same customers in each; a salt derived from what identifies the
    experiment is the same in every process and another for another experiment."""
    assert derived_salt("canary", "churn", "7") == derived_salt("canary", "churn", "7")
    assert derived_salt("canary", "churn", "7") == "cccc252d0c682c11"  # pinned: a change reshuffles canaries
    assert derived_salt("canary", "churn", "7") != derived_salt("canary", "churn", "8")
    assert derived_salt("a", "bc") != derived_salt("ab", "c")
