"""Verification: a fast predictor is used only if it gives the pipeline's own answers.

``exact`` means bit-identical outputs. ``within 1e-12`` means identical labels
and outputs that differ by at most 1e-12, where a different summation order
(matrix products of another shape) can move the last bits. Anything else is
not verified, with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from shipml.core.predictor import Outputs, PipelinePredictor
from shipml.core.records import Value
from shipml.core.schema import FeatureSchema

TOLERANCE = 1e-12
# Rows also compared one at a time: small batches take the lock-step path, big ones another.
SINGLE_ROW_CHECKS = 100
VERDICT_FORMAT = "shipml.fast_path/1"
VERDICT_ARTIFACT = "shipml/fast_path.json"  # the run artifact that carries the verdict to the server
Mode = Literal["exact", "within 1e-12", "not verified"]
MODES: tuple[Mode, ...] = ("exact", "within 1e-12", "not verified")


@dataclass(frozen=True)
class Verdict:
    """Whether a fast predictor may serve, as registered with the version (``shipml/fast_path.json``);
    ``tag()`` is the same for people (the ``shipml.fast_path`` tag, ``GET /model``)."""

    verified: bool
    mode: Mode
    rows: int  # rows compared with the pipeline
    max_abs_diff: float  # nan when nothing could be compared
    reason: str = ""  # why not, when not verified
    backends: tuple[str, ...] = ("numpy",)  # the implementations that gave these answers

    def to_json(self) -> str:
        diff = self.max_abs_diff if math.isfinite(self.max_abs_diff) else None  # JSON has no nan/inf
        return json.dumps(
            {
                "format": VERDICT_FORMAT, "verified": self.verified, "mode": self.mode, "rows": self.rows,
                "max_abs_diff": diff, "reason": self.reason, "backends": list(self.backends),
            },
            indent=2,
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "shipml/fast_path.json") -> Verdict:
        """The verdict in ``text``; ValueError naming the field, what was expected and what was found."""
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{where}: expected JSON, got {exc}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != VERDICT_FORMAT:
            raise ValueError(f"{where}: format: expected {VERDICT_FORMAT!r}, got {d.get('format')!r}")

        def field(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"{where}: {key}: expected {expected}, got {d.get(key)!r:.80}")

        verified, mode, rows, diff = d.get("verified"), d.get("mode"), d.get("rows"), d.get("max_abs_diff")
        reason, backends = d.get("reason"), d.get("backends")
        field("verified", isinstance(verified, bool), "true or false")
        field("mode", mode in MODES and (mode != "not verified") == verified, f"one of {MODES} matching verified")
        field("rows", isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0, "a row count")
        numeric = isinstance(diff, int | float) and not isinstance(diff, bool)
        field("max_abs_diff", diff is None or (numeric and diff >= 0), "null or a number >= 0")
        field("reason", isinstance(reason, str), "a string")
        field("backends", isinstance(backends, list) and all(isinstance(b, str) for b in backends), "a list of names")
        return cls(
            verified=cast(bool, verified), mode=cast(Mode, mode), rows=cast(int, rows),
            max_abs_diff=float("nan") if diff is None else float(cast(float, diff)),
            reason=cast(str, reason), backends=tuple(cast(list[str], backends)),
        )  # fmt: skip

    @classmethod
    def from_legacy_tag(cls, tag: str) -> Verdict:
        """The verdict of a version registered before ``shipml/fast_path.json`` existed, read back from its
        ``shipml.fast_path`` tag (the rows and the difference are not needed to serve, so not parsed)."""
        if not tag.startswith("verified"):
            return cls(False, "not verified", 0, float("nan"), tag.removeprefix("not verified: ") or "no verdict")
        mode: Mode = "exact" if tag.startswith("verified: exact") else "within 1e-12"
        _, found, listed = tag.partition("backends:")
        backends = tuple(b.strip() for b in listed.split(",") if b.strip()) if found else ("numpy",)
        return cls(True, mode, 0, float("nan"), backends=backends)

    def tag(self) -> str:
        """The value of the registry tag ``shipml.fast_path``."""
        if self.verified:
            return (
                f"verified: {self.mode} on {self.rows} rows (max |diff| {self.max_abs_diff:.1e});"
                f" backends: {', '.join(self.backends)}"
            )
        return f"not verified: {self.reason}"


class Reference:
    """The pipeline's own answers on some rows, computed once for every candidate compared with it."""

    def __init__(self, pipeline: Any, schema: FeatureSchema, rows: Sequence[Mapping[str, Value]]) -> None:
        self.rows = rows
        predictor = PipelinePredictor(pipeline, schema)
        self.batch = predictor.predict(rows)
        self.singles = [predictor.predict([r]) for r in rows[:SINGLE_ROW_CHECKS]]


def verify(
    fast: Any,
    pipeline: Any,
    schema: FeatureSchema,
    rows: Sequence[Mapping[str, Value]],
    reference: Reference | None = None,
) -> Verdict:
    """Compare ``fast`` with the pipeline on ``rows``, as a batch and one row at a time on a sample."""
    ref = reference if reference is not None else Reference(pipeline, schema, rows)
    rows = ref.rows
    backends = (getattr(fast, "backend", "numpy"),)
    try:
        got = fast.predict(rows)
        singles = [fast.predict([r]) for r in rows[:SINGLE_ROW_CHECKS]]
    except Exception as exc:  # noqa: BLE001 - whatever the candidate raises, it is simply not verified
        return Verdict(
            False, "not verified", len(rows), float("nan"), f"fast predictor failed: {type(exc).__name__}: {exc}"
        )
    want = ref.batch
    worst = _max_diff(got, want)
    for single, wanted in zip(singles, ref.singles, strict=True):
        worst = max(worst, _max_diff(single, wanted))
    if not np.isfinite(worst):
        return Verdict(False, "not verified", len(rows), worst, "outputs differ in shape or are not finite")
    if want.proba is not None and got.proba is not None and got.labels() != want.labels():
        return Verdict(False, "not verified", len(rows), worst, "predicted classes differ")
    if worst == 0.0:
        return Verdict(True, "exact", len(rows), worst, backends=backends)
    if worst <= TOLERANCE:
        return Verdict(True, "within 1e-12", len(rows), worst, backends=backends)
    return Verdict(False, "not verified", len(rows), worst, f"max |diff| {worst:.3e} exceeds {TOLERANCE:g}")


def _max_diff(a: Outputs, b: Outputs) -> float:
    x = a.proba if a.proba is not None else a.values
    y = b.proba if b.proba is not None else b.values
    if x is None or y is None or x.shape != y.shape:
        return float("inf")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("inf") if not np.array_equal(x, y, equal_nan=True) else 0.0
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def edge_case_rows(
    schema: FeatureSchema, base: Sequence[Mapping[str, Value]], thresholds: dict[str, list[float]]
) -> list[dict[str, Value]]:
    """Rows that probe the corners: unknown categories, missing values, range ends, extremes, split points."""
    if not base:
        return []
    template = dict(base[0])
    out: list[dict[str, Value]] = []
    for f in schema.features:
        variants: list[Value] = []
        if f.kind == "categorical":
            variants += ["__never_seen__", ""]
            variants += list(f.categories or ())
        else:
            variants += [0.0, -0.0, 1e12, -1e12, 1e-300]
            variants += [v for v in (f.min, f.max) if v is not None]
            variants += thresholds.get(f.name, [])[:50]
            if f.kind == "integer":
                variants = [float(np.round(v)) if isinstance(v, float) and abs(v) < 1e15 else v for v in variants]
        variants.append(None)  # missing: the imputer's value
        for v in variants:
            row = dict(template)
            row[f.name] = v
            out.append(row)
    return out


def split_points(pipeline: Any, fast: Any, per_feature: int = 50) -> dict[str, list[float]]:
    """Raw feature values that land on tree split thresholds (scaling undone), to probe ``<=`` at the edge."""
    from shipml.core.fast.preprocess import NumericBlock

    spec = fast.spec
    trees = list(getattr(spec, "trees", [])) + [t for stage in getattr(spec, "stages", []) for t in stage]
    out: dict[str, list[float]] = {}
    offset = 0
    for block in fast.preprocess.blocks:
        if isinstance(block, NumericBlock):
            for j, name in enumerate(block.columns):
                found: set[float] = set()
                for tree in trees:
                    mask = (tree.feature == offset + j) & (tree.children_left != -1)
                    found.update(float(t) for t in tree.threshold[mask][:per_feature])
                    if len(found) >= per_feature:
                        break
                mean = block.mean[j] if block.mean is not None else 0.0
                scale = block.scale[j] if block.scale is not None else 1.0
                out[name] = sorted(float(t * scale + mean) for t in found)[:per_feature]
            offset += len(block.columns)
        else:
            offset += block.width
    return out
