"""FeatureWindow: the predictions of one model over a time range, as numpy columns (what monitoring reads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from shipml.adapters.store.batches import DecodedBatch
from shipml.adapters.store.catalog import SchemaSlots


@dataclass(frozen=True)
class FeatureWindow:
    """Rows ordered by (ts, id). ``features`` maps each feature name (exact, as in its schema) to one value
    per row: float64 with NaN for a numeric feature, an object array of str with None for a categorical.
    A row whose schema lacks the feature has NaN / None. A name that is numeric in one schema of the
    window and categorical in another gives an object array holding floats and strs as stored
    (``kinds`` says "mixed"); read one version at a time to avoid that."""

    ts: npt.NDArray[np.float64]
    ids: npt.NDArray[np.object_]
    version: npt.NDArray[np.object_]
    variant: npt.NDArray[np.object_]
    label: npt.NDArray[np.object_]  # the predicted class as text; None for regression
    score: npt.NDArray[np.float64]  # see tables.predictions.score; NaN when absent
    features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # "numeric", "categorical" or "mixed"
    schemas: tuple[str, ...] = ()  # schema_sha256 of the rows, distinct, in order of appearance

    def __len__(self) -> int:
        return len(self.ts)


_HEAD = 7  # ts, id, version, variant, label, score, schema_sha256 (see Predictions.read_window)


def build_window(
    rows: Sequence[Sequence[Any]], slot_columns: Sequence[str], catalog: dict[str, SchemaSlots], with_json: bool
) -> FeatureWindow:
    """Assemble a window from the rows ``read_window`` fetched: the head columns, then ``slot_columns``, then
    the ``features`` JSON when ``with_json``. Slotted features come from their typed columns (one numpy
    copy per slot); features without a slot, and rows of a schema missing from ``catalog`` (such as rows
    written before the catalog existed), come from the JSON."""
    n = len(rows)
    columns: list[tuple[Any, ...]] = (
        list(zip(*rows, strict=True)) if rows else [()] * (_HEAD + len(slot_columns) + with_json)
    )
    order = list(dict.fromkeys(columns[6]))
    sources, kinds, json_rows = _where_features_are(columns[6], order, catalog)
    decoded = _decoded(columns, order, catalog, json_rows, kinds) if with_json else {}
    features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {}
    kind_of: dict[str, str] = {}
    for name, found in kinds.items():
        kind_of[name] = found.pop() if len(found) == 1 else "mixed"
        features[name] = np.full(n, np.nan) if kind_of[name] == "numeric" else np.full(n, None, dtype=object)
    _fill(features, columns, slot_columns, order, sources, decoded, json_rows)
    return FeatureWindow(
        ts=np.array(columns[0], dtype=np.float64),
        ids=np.array(columns[1], dtype=object),
        version=np.array(columns[2], dtype=object),
        variant=np.array(columns[3], dtype=object),
        label=np.array(columns[4], dtype=object),
        score=np.array(columns[5], dtype=np.float64),
        features=features,
        kinds=kind_of,
        schemas=tuple(order),
    )


def _where_features_are(
    shas: Sequence[str], order: list[str], catalog: dict[str, SchemaSlots]
) -> tuple[dict[str, list[tuple[str, str | None]]], dict[str, set[str]], dict[str, list[int]]]:
    """Per feature, where it is kept: (schema, slot column, or None for the JSON) and its slot kinds; and
    the rows of schemas the catalog does not know, read from their JSON only."""
    sources: dict[str, list[tuple[str, str | None]]] = {}
    kinds: dict[str, set[str]] = {}
    json_rows: dict[str, list[int]] = {}
    for sha in order:
        layout = catalog.get(sha)
        if layout is None:
            json_rows[sha] = [i for i, s in enumerate(shas) if s == sha]
            continue
        for f in layout.features:
            sources.setdefault(f.name, []).append((sha, f.slot))
            kinds.setdefault(f.name, set()).add(f.slot_kind)
    return sources, kinds, json_rows


def _decoded(
    columns: list[tuple[Any, ...]],
    order: list[str],
    catalog: dict[str, SchemaSlots],
    json_rows: dict[str, list[int]],
    kinds: dict[str, set[str]],
) -> dict[int, dict[str, Any]]:
    """The JSON records of the rows that need them (unknown schemas, features past the slots); the kinds of
    the features found only there are added to ``kinds``."""
    shas, blobs = columns[6], columns[-1]
    wanted = {i for rows_of in json_rows.values() for i in rows_of}
    for sha in order:
        layout = catalog.get(sha)
        if layout is not None and layout.unslotted:
            wanted.update(i for i, s in enumerate(shas) if s == sha)
    decoded = {i: orjson.loads(blobs[i]) for i in sorted(wanted)}
    for rows_of in json_rows.values():
        for i in rows_of:
            for name, value in decoded[i].items():
                kinds.setdefault(name, set()).add("categorical" if isinstance(value, str) else "numeric")
    return decoded


def _fill(
    features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]],
    columns: list[tuple[Any, ...]],
    slot_columns: Sequence[str],
    order: list[str],
    sources: dict[str, list[tuple[str, str | None]]],
    decoded: dict[int, dict[str, Any]],
    json_rows: dict[str, list[int]],
) -> None:
    """Each feature's values: from its typed slot column (one numpy copy per schema), else from the JSON."""
    slot_arrays: dict[str, npt.NDArray[Any]] = {}
    for k, column in enumerate(slot_columns, _HEAD):
        dtype = np.float64 if column.startswith("n") else object
        slot_arrays[column] = np.array(columns[k], dtype=dtype)
    shas = np.array(columns[6], dtype=object)
    masks = {sha: shas == sha for sha in order}
    for name, found_in in sources.items():
        target = features[name]
        for sha, slot in found_in:
            if slot is not None:
                target[masks[sha]] = slot_arrays[slot][masks[sha]]
                continue
            for j in np.flatnonzero(masks[sha]).tolist():
                value = decoded[j].get(name)
                if value is not None:
                    target[j] = value
    _fill_unknown_schemas(features, decoded, json_rows)


def _fill_unknown_schemas(
    features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]],
    decoded: dict[int, dict[str, Any]],
    json_rows: dict[str, list[int]],
) -> None:
    """Rows of schemas the catalog does not know: every value from their JSON record."""
    for rows_of in json_rows.values():
        for i in rows_of:
            for name, value in decoded[i].items():
                if value is not None:
                    features[name][i] = value


def batch_window(found: Sequence[tuple[float, str, str, str, DecodedBatch]]) -> FeatureWindow:
    """The records of batches read from ``prediction_batches``: (ts, version, variant, schema, payload) each."""
    parts = []
    for ts, version, variant, sha, decoded in found:
        n = len(decoded.ids)
        features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {**decoded.numeric}
        features.update(decoded.categorical)
        kinds = {name: "numeric" for name in decoded.numeric} | {name: "categorical" for name in decoded.categorical}
        parts.append(
            FeatureWindow(
                ts=np.full(n, ts, dtype=np.float64),
                ids=np.array(decoded.ids, dtype=object),
                version=np.full(n, version, dtype=object),
                variant=np.full(n, variant, dtype=object),
                label=decoded.labels,
                score=decoded.score,
                features=features,
                kinds=kinds,
                schemas=(sha,),
            )
        )
    return concat(parts)


def concat(parts: Sequence[FeatureWindow]) -> FeatureWindow:
    """One window of several, ordered by (ts, id). A feature absent from a part is NaN / None there; a name
    numeric in one part and categorical in another is "mixed" (an object array, values as stored)."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if not parts:
        return build_window([], [], {}, with_json=False)
    if len(parts) == 1:
        return parts[0]
    kinds: dict[str, str] = {}
    for p in parts:
        for name, kind in p.kinds.items():
            kinds[name] = kind if kinds.get(name, kind) == kind else "mixed"
    features: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]] = {}
    for name, kind in kinds.items():
        columns = []
        for p in parts:
            column = p.features.get(name)
            if column is None:
                column = np.full(len(p), np.nan) if kind == "numeric" else np.full(len(p), None, dtype=object)
            columns.append(column if kind == "numeric" else column.astype(object))
        features[name] = np.concatenate(columns)
    ts = np.concatenate([p.ts for p in parts])
    ids = np.concatenate([p.ids for p in parts])
    order = np.lexsort((ids.astype(str), ts))
    schemas = tuple(dict.fromkeys(s for p in parts for s in p.schemas))
    return FeatureWindow(
        ts=ts[order],
        ids=ids[order],
        version=np.concatenate([p.version for p in parts])[order],
        variant=np.concatenate([p.variant for p in parts])[order],
        label=np.concatenate([p.label for p in parts])[order],
        score=np.concatenate([p.score for p in parts])[order],
        features={name: column[order] for name, column in features.items()},
        kinds=kinds,
        schemas=schemas,
    )


@dataclass(frozen=True)
class Outcomes:
    """Answered predictions without their features (``Predictions.read_outcomes``): what a join with the feedback
    needs, one entry per prediction: its id, time, predicted label (text; None for a regressor), score
    (``core.prediction.score_of``) and routing key (None where the request had none)."""

    ids: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    score: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def units(self) -> tuple[int, int]:
        """(units, rows with a key): the distinct routing keys plus the rows without one (each its own unit)."""
        keyed = np.array([k is not None for k in self.keys.tolist()], dtype=bool)
        distinct = len(set(self.keys[keyed].tolist()))
        return distinct + int((~keyed).sum()), int(keyed.sum())
