"""The runtime side of a fast predictor: preprocessing blocks and a model spec, both plain arrays.

``compile.py`` builds these from a fitted sklearn Pipeline; ``pack``/``unpack``
turn them into bytes (an ``.npz``, no pickle) and back without importing
sklearn, so a server whose versions all have a verified packed predictor never
loads sklearn at all. Links reproduce sklearn's own: ``binary`` is
``[1 - expit(s), expit(s)]`` and ``softmax`` is ``sklearn.utils.extmath.softmax``
step by step. Nothing here is trusted until ``verify`` compared it with the pipeline.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from shipml.core.fast.packed import FORMAT, TREE_PARTS, check_packed
from shipml.core.fast.preprocess import CategoricalBlock, NumericBlock, Preprocess
from shipml.core.fast.trees import LockstepTrees, TreeArrays, TreeKernel
from shipml.core.predictor import Columns, Outputs
from shipml.core.records import Value

Model = Callable[[np.ndarray], np.ndarray]


def apply_link(link: str, scores: np.ndarray) -> np.ndarray:
    if link == "identity":
        return scores
    if link == "binary":
        p = expit(scores.reshape(-1))
        return np.stack([1 - p, p], axis=1)
    if link == "softmax":
        X = np.array(scores, dtype=np.float64, copy=True)
        X -= np.max(X, axis=1).reshape((-1, 1))
        np.exp(X, out=X)
        X /= np.sum(X, axis=1).reshape((-1, 1))
        return X
    raise ValueError(f"unknown link {link!r}")


@dataclass
class TreeMean:
    """Random forest / extra trees / one decision tree: the sum of the trees' values, divided by ``divisor``."""

    trees: list[Any]
    n_outputs: int
    divisor: float
    regression: bool

    def build(self, kernel: TreeKernel | None) -> Model:
        trees = LockstepTrees(self.trees, self.n_outputs, kernel)
        n, regression = self.divisor, self.regression
        if regression:
            return lambda X: trees.summed(X)[:, 0] / n
        return lambda X: trees.summed(X) / n


@dataclass
class Boosting:
    """Gradient boosting: per output k, ``start[k]`` plus ``rate`` times each stage's value, then the link.
    HistGradientBoosting is the same with the values added as they are and unrounded rows."""

    stages: list[list[Any]]  # stages[k]: the trees of output k, in boosting order
    start: np.ndarray
    rate: float | None  # None: the values are added as they are (HistGradientBoosting)
    link: str
    round32: bool = True  # rows rounded to float32 before the splits (sklearn's trees), or not (HistGB)

    def build(self, kernel: TreeKernel | None) -> Model:
        stages = [LockstepTrees(trees, 1, kernel, self.round32) for trees in self.stages]
        start, rate, link = self.start, self.rate, self.link

        def predict(X: np.ndarray) -> np.ndarray:
            columns = []
            for k, trees in enumerate(stages):
                first = np.full((X.shape[0], 1), start[k], dtype=np.float64)
                columns.append(trees.summed(X, scale=rate, start=first)[:, 0])
            raw = np.stack(columns, axis=1)
            if link == "identity":
                return raw[:, 0]
            return apply_link(link, raw)

        return predict


@dataclass
class Linear:
    """Linear and logistic models: ``X @ coef + intercept``, then the link."""

    coef: np.ndarray  # (n_features,) for one output, else (n_features, n_outputs)
    intercept: np.ndarray
    link: str

    def build(self, kernel: TreeKernel | None) -> Model:
        coef, intercept, link = self.coef, self.intercept, self.link
        if link == "identity":
            return lambda X: X @ coef + intercept
        return lambda X: apply_link(link, X @ coef + intercept)


Spec = TreeMean | Boosting | Linear


class FastPredictor:
    """Rows (dicts) or columns -> preprocessing in numpy -> the model. No DataFrame, no sklearn."""

    name = "fast"
    # A call for this many rows takes microseconds (native kernel or numpy lock-step walk): cheaper on
    # the event loop than a hop to a worker thread. Bigger calls go to a thread.
    inline_max_rows = 8
    # Grouping concurrent requests into one call does not pay for it: the wait costs more than the
    # call (measured by make bench), so serving batches it only when asked to (serve.batching.fast_path).
    batching_pays = False

    def __init__(
        self, preprocess: Preprocess, spec: Spec, classes: tuple[Any, ...], kind: str, kernel: TreeKernel | None = None
    ) -> None:
        self.preprocess = preprocess
        self.spec = spec
        self.classes = classes
        self.kind = kind
        self.classification = bool(classes)
        self.model = spec.build(kernel)
        self.backend = kernel.name if kernel is not None and not isinstance(spec, Linear) else "numpy"

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs:
        out = self.model(self.preprocess.transform(rows))
        if self.classification:
            return Outputs(self.classes, out, None)
        return Outputs((), None, out)

    def predict_columns(self, columns: Columns) -> Outputs:
        out = self.model(self.preprocess.transform_columns(columns))
        if self.classification:
            return Outputs(self.classes, out, None)
        return Outputs((), None, out)

    def with_kernel(self, kernel: TreeKernel | None) -> FastPredictor:
        return FastPredictor(self.preprocess, self.spec, self.classes, self.kind, kernel)

    def pack(self, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
        """An ``.npz`` of every array plus a JSON header; ``extra`` arrays travel along (``unpack`` returns them)."""
        arrays: dict[str, np.ndarray] = {}
        blocks: list[dict[str, Any]] = []
        for i, b in enumerate(self.preprocess.blocks):
            if isinstance(b, NumericBlock):
                for part in ("fill", "mean", "scale"):
                    value = getattr(b, part)
                    if value is not None:
                        arrays[f"b{i}.{part}"] = np.asarray(value, dtype=np.float64)
                blocks.append({"type": "numeric", "columns": b.columns})
            else:
                blocks.append({"type": "categorical", "columns": b.columns, "fill": b.fill, "categories": b.categories})
        spec: dict[str, Any] = {"kind": type(self.spec).__name__}
        if isinstance(self.spec, TreeMean):
            _pack_trees(arrays, "t", self.spec.trees)
            spec |= {"n_outputs": self.spec.n_outputs, "divisor": self.spec.divisor, "regression": self.spec.regression}
        elif isinstance(self.spec, Boosting):
            for k, trees in enumerate(self.spec.stages):
                _pack_trees(arrays, f"s{k}", trees)
            arrays["start"] = np.asarray(self.spec.start, dtype=np.float64)
            spec |= {
                "stages": len(self.spec.stages), "rate": self.spec.rate, "link": self.spec.link,
                "round32": self.spec.round32,
            }  # fmt: skip
        else:
            arrays["coef"] = np.asarray(self.spec.coef, dtype=np.float64)
            arrays["intercept"] = np.asarray(self.spec.intercept, dtype=np.float64)
            spec |= {"link": self.spec.link}
        for name, value in (extra or {}).items():
            arrays[f"extra.{name}"] = np.asarray(value)
        header = {"format": FORMAT, "kind": self.kind, "classes": list(self.classes), "blocks": blocks, "spec": spec}
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()


def unpack(data: bytes, kernel: TreeKernel | None = None) -> tuple[FastPredictor, dict[str, np.ndarray]]:
    """The predictor packed in ``data`` and its extra arrays. Raises ValueError on anything unexpected:
    every header field, dtype, shape, node id and feature index is checked (``packed.check_packed``)
    before a tree is built, so neither the numpy walk nor the native kernel ever sees a bad index."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        raw = arrays.pop("header")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"header: expected a 1-d uint8 array, got {raw.dtype} {raw.shape}")
        header = json.loads(raw.tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, RecursionError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a packed fast predictor: {exc}") from None
    check_packed(header, arrays)
    blocks: list[NumericBlock | CategoricalBlock] = []
    for i, b in enumerate(header["blocks"]):
        if b["type"] == "numeric":
            parts = [arrays.get(f"b{i}.{part}") for part in ("fill", "mean", "scale")]
            blocks.append(NumericBlock(b["columns"], *(None if p is None else p.astype(np.float64) for p in parts)))
        else:
            blocks.append(CategoricalBlock(b["columns"], b.get("fill"), b["categories"]))
    s = header["spec"]
    spec: Spec
    if s["kind"] == "TreeMean":
        spec = TreeMean(_unpack_trees(arrays, "t"), s["n_outputs"], float(s["divisor"]), s["regression"])
    elif s["kind"] == "Boosting":
        stages = [_unpack_trees(arrays, f"s{k}") for k in range(s["stages"])]
        rate = None if s["rate"] is None else float(s["rate"])
        spec = Boosting(stages, arrays["start"].astype(np.float64), rate, s["link"], s["round32"])
    else:
        spec = Linear(arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64), s["link"])
    extra = {k.removeprefix("extra."): v for k, v in arrays.items() if k.startswith("extra.")}
    predictor = FastPredictor(Preprocess(blocks), spec, tuple(header["classes"]), header["kind"], kernel)
    return predictor, extra


def _pack_trees(arrays: dict[str, np.ndarray], prefix: str, trees: Sequence[Any]) -> None:
    arrays[f"{prefix}.sizes"] = np.array([t.node_count for t in trees], dtype=np.int64)
    for part in TREE_PARTS:
        arrays[f"{prefix}.{part}"] = np.concatenate([np.asarray(getattr(t, part)) for t in trees])
    arrays[f"{prefix}.value"] = np.concatenate([np.asarray(t.value)[:, 0, :] for t in trees])


def _unpack_trees(arrays: Mapping[str, np.ndarray], prefix: str) -> list[TreeArrays]:
    sizes = arrays[f"{prefix}.sizes"]
    cuts = np.cumsum(sizes)[:-1]
    parts = {p: np.split(arrays[f"{prefix}.{p}"], cuts) for p in (*TREE_PARTS, "value")}
    return [
        TreeArrays(
            parts["children_left"][i].astype(np.int64),
            parts["children_right"][i].astype(np.int64),
            parts["feature"][i].astype(np.int64),
            parts["threshold"][i].astype(np.float64),
            np.ascontiguousarray(parts["value"][i], dtype=np.float64)[:, None, :],
        )
        for i in range(len(sizes))
    ]
