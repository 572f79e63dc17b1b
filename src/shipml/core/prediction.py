"""The vocabulary of a prediction, shared by every layer: the record a protocol decoded, who answered it
(``Served``: model, version, variant, role), how it ended (``Status``) and what the model said.

The predictor's output becomes a ``Prediction`` once, in the prediction service; everything else derives from
it by one rule each, written here: the HTTP answer (``answer``), the stored outputs (``outputs``), the log's
score (``score_of``), a binary classifier's positive-class probability (``positive_probability``, and
``positive_from_score`` for the stored score) and what the drift histograms bin (``binned``).

The names of the champion's variant and of a canary's candidate are defined here once: the router, the
experiments and the canary controller all speak of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

from shipml.core.records import FieldError

DEFAULT_VARIANT = "main"  # the champion's variant name when `serve.variants` does not name it
CANARY_VARIANT = "canary"  # reserved: the candidate of a canary (never a `serve.variants` or `serve.shadow` name)


class Status(StrEnum):
    """How a record's prediction ended (the ``status`` of its log row and of the predictions counter)."""

    OK = "ok"  # answered
    INVALID = "invalid"  # refused by validation (a 422 for the record)
    OUTPUT_INVALID = "output_invalid"  # the model answered NaN or an infinity (a 502)
    ERROR = "error"  # the model call raised or timed out (a 5xx)


class Role(StrEnum):
    """Whether a variant's answers reach the client (primary) or are only logged (shadow)."""

    PRIMARY = "primary"
    SHADOW = "shadow"


class Durability(StrEnum):
    """When an answer is sent: after its log row is committed (commit), or at once (async)."""

    COMMIT = "commit"
    ASYNC = "async"


class Routed(StrEnum):
    """How a record found its variant in an experiment: by its routing key (sticky), or by a random draw."""

    KEY = "key"
    RANDOM = "random"


class Record(NamedTuple):
    """One record as a protocol decoded it: its features (a mapping of feature values when well-formed; the
    validator names what is wrong otherwise) and its routing key (the record's ``id`` or ``X-Routing-Key``)."""

    features: Any
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """Who answers: a model version serving as a variant in a role. ``schema_sha256``: the schema its answered
    rows are logged under (the store's typed slots; "" for none); ``classes``: a classifier's classes as text,
    in the order of its probabilities."""

    model: str
    version: str
    variant: str = DEFAULT_VARIANT
    role: Role = Role.PRIMARY
    schema_sha256: str = ""
    classes: tuple[str, ...] = ()


@dataclass(slots=True)
class Prediction:
    """One record's outcome, whatever its status: the one value the answer, the log row, the metrics and the
    drift histograms are derived from.

    ``index``: the record's position in its request. ``features``: the values the validator accepted (the
    record as received when it was refused). ``label`` and ``proba`` (in ``served.classes`` order) for a
    classifier, ``value`` for a regressor, when ``status`` is ok. ``errors``: why the record was refused
    (invalid, output_invalid); ``failure``: "timeout" or "model_error" (status error). ``routed``: how the
    record was routed in an experiment (None without one).

    Not frozen: a frozen dataclass's ``__init__`` costs three times as much, and a 10,000-row batch makes
    10,000 of these; nothing changes one after it is made.
    """

    id: str
    ts: float
    served: Served
    index: int
    features: Any
    key: str | None
    latency_ms: float
    status: Status = Status.OK
    label: Any = None
    proba: Sequence[float] | None = None
    value: float | None = None
    errors: tuple[FieldError, ...] = ()
    failure: str | None = None
    routed: Routed | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def probabilities(self) -> dict[str, float] | None:
        """The class probabilities by class name (None for a regressor or a record without an answer)."""
        if self.proba is None:
            return None
        return dict(zip(self.served.classes, self.proba, strict=True))

    @property
    def score(self) -> float | None:
        """The log's ``score`` (``score_of``)."""
        if self.value is not None:
            return self.value
        return None if self.proba is None else score_of(self.proba)

    def positive_probability(self, positive: str | None) -> float | None:
        """A binary classifier's probability of its ``positive`` class."""
        if self.proba is None:
            return None
        return self.proba[positive_column(self.served.classes, positive)]

    def binned(self, prediction: str, positive: str | None) -> Any:
        """What the drift histograms count of this prediction: its ``value`` (a regressor), its label as text
        (``prediction`` "label", a multiclass classifier) or its positive class's probability ("positive")."""
        if prediction == "value":
            return self.value
        if prediction == "label":
            return None if self.label is None else str(self.label)
        return self.positive_probability(positive)

    def answer(self, *, single: bool = False) -> dict[str, Any]:
        """The record's answer in shipml's protocol: an entry of a batch's ``predictions`` (its ``index``, and
        who answered when an experiment routed it), or with ``single`` the whole answer of ``/predict`` (with
        the ``model`` that answered). A refused record's entry is its error."""
        if self.status is not Status.OK:
            code = "model_output_invalid" if self.status is Status.OUTPUT_INVALID else "validation_error"
            return {"index": self.index, "error": {"code": code, "details": [e.to_dict() for e in self.errors]}}
        out: dict[str, Any] = {"prediction_id": self.id} if single else {"index": self.index, "prediction_id": self.id}
        if self.proba is not None:
            out["predicted_class"] = self.label
            out["probabilities"] = self.probabilities
        else:
            out["value"] = self.value
        s = self.served
        if single:
            out["model"] = {"name": s.model, "version": s.version, "variant": s.variant}
            if self.routed is not None:
                out["routed_by"] = str(self.routed)
        elif self.routed is not None:
            out.update(variant=s.variant, version=s.version, routed_by=str(self.routed))
        return out

    def outputs(self) -> dict[str, Any]:
        """What the log keeps of the outcome (the ``outputs`` JSON of its row)."""
        if self.status is Status.OK:
            if self.proba is not None:
                return {"predicted_class": self.label, "probabilities": self.probabilities}
            return {"value": self.value}
        if self.status is Status.ERROR:
            return {"error": self.failure}
        return {"errors": [e.to_dict() for e in self.errors]}


@dataclass(slots=True)
class PredictionBatch:
    """The answered predictions of one clean batch of one variant, as columns: what ``/predict/batch`` answers,
    the log keeps (one row of ``prediction_batches``) and the drift histograms count, with no ``Prediction``
    made per record. Record ``k`` of the batch: id ``ids[k]``, position ``positions[k]`` in its request,
    features ``columns[name][k]`` (float64 with NaN for missing, or text with None), routing key ``keys[k]``
    (``keys`` None: no record has one). A classifier's ``labels`` and ``proba`` (``served.classes`` order), or
    a regressor's ``values``; every output is finite (a batch with a NaN or an infinity is answered a record at
    a time)."""

    ids: list[str]
    ts: float
    served: Served
    positions: Sequence[int]
    columns: Mapping[str, np.ndarray]
    keys: list[str | None] | None
    latency_ms: float
    labels: list[Any] | None = None
    proba: np.ndarray | None = None
    values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def binned(self, prediction: str, positive: str | None) -> Any:
        """``Prediction.binned`` of every record, as one column."""
        if prediction == "value":
            return self.values
        if prediction == "label":
            return None if self.labels is None else [str(label) for label in self.labels]
        if self.proba is None:
            return None
        return self.proba[:, positive_column(self.served.classes, positive)]

    def predictions(self) -> list[Prediction]:
        """One ``Prediction`` per record (the validator's normal form of its values: floats, text, None): for a
        store that cannot keep the batch as columns."""
        names = list(self.columns)
        columns = [c.tolist() for c in self.columns.values()]
        features = [{n: (None if v != v else v) for n, v in zip(names, row, strict=True)}
                    for row in zip(*columns, strict=True)]  # fmt: skip
        keys = self.keys if self.keys is not None else [None] * len(self.ids)
        s, ts, lat = self.served, self.ts, self.latency_ms
        at = zip(self.ids, self.positions, features, keys, strict=True)
        if self.proba is not None:
            assert self.labels is not None  # noqa: S101 - a classifier's
            return [Prediction(pid, ts, s, i, f, k, lat, Status.OK, label, p)
                    for (pid, i, f, k), label, p in zip(at, self.labels, self.proba.tolist(), strict=True)]  # fmt: skip
        assert self.values is not None  # noqa: S101 - a regressor's
        return [Prediction(pid, ts, s, i, f, k, lat, Status.OK, value=v)
                for (pid, i, f, k), v in zip(at, self.values.tolist(), strict=True)]  # fmt: skip


class Truth(NamedTuple):
    """The ground truth recorded for a prediction (``/feedback``): a label for a classifier, a value for a
    regressor."""

    label: str | None
    value: float | None

    def holds(self, regression: bool) -> bool:
        """Whether this is ground truth for the task: a label for a classifier, a finite value for a regressor (a
        NaN or an infinity stored before /feedback refused them is no truth)."""
        if regression:
            return self.value is not None and math.isfinite(self.value)
        return self.label is not None


def score_of(proba: Sequence[float]) -> float:
    """The log's ``score`` of a classifier's probabilities: the second class's probability for a binary one
    (scikit-learn's positive class), the highest for a multiclass one. A regressor's score is its value."""
    return proba[1] if len(proba) == 2 else max(proba)


def positive_column(classes: Sequence[str], positive: str | None) -> int:
    """The column of a binary classifier's probabilities that belongs to ``positive``: its position among
    ``classes`` when it is one of them, else the second (scikit-learn's positive class)."""
    if positive is not None:
        for i, c in enumerate(classes):
            if c == positive:
                return i
    return 1


def positive_from_score(score: np.ndarray, classes: Sequence[str], positive: str | None) -> np.ndarray:
    """The positive class's probability from stored binary scores (``score_of``: the second class's)."""
    return 1.0 - score if positive_column(classes, positive) == 0 else score
