"""Checks of a packed fast predictor (``model.pack``'s ``.npz``) before anything is built from it.

A packed predictor comes from the artifact store, so it is input, not code: the numpy walk indexes
with its node and feature ids and the native kernel dereferences them unchecked. ``check_packed``
refuses anything the walk could not follow safely (a feature beyond the preprocessed row, a child
outside its tree or not after its parent, so no cycle and no wrap-around, arrays of the wrong
dtype or shape, classes that do not match the model) with a ``ValueError`` saying where, what was
expected and what was found. It runs once, at ``unpack``; nothing is checked per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

FORMAT = "shipml.fast/1"
LINKS = ("identity", "binary", "softmax")
TREE_PARTS = ("children_left", "children_right", "feature", "threshold")
# Node ids are int64 in the walk; bigger counts than this cannot be real trees and would overflow sums.
MAX_NODES = 2**40


def fail(where: str, expected: str, got: object) -> NoReturn:
    raise ValueError(f"packed fast predictor: {where}: expected {expected}, got {got}")


def check_packed(header: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless ``header`` and ``arrays`` describe a predictor that is safe to walk."""
    if not isinstance(header, dict):
        fail("header", "a JSON object", type(header).__name__)
    if header.get("format") != FORMAT:
        fail("header.format", repr(FORMAT), repr(header.get("format")))
    _typed(header, "kind", str, "header")
    classes = _typed(header, "classes", list, "header")
    for i, c in enumerate(classes):
        _scalar(c, f"header.classes[{i}]")
    blocks = _typed(header, "blocks", list, "header")
    if not blocks:
        fail("header.blocks", "at least one preprocessing block", "none")
    expected_arrays = {"header"}
    width = 0
    for i, block in enumerate(blocks):
        width += _check_block(block, i, arrays, expected_arrays)
    if width < 1:
        fail("header.blocks", "at least one model input column", width)
    spec = _typed(header, "spec", dict, "header")
    kind = _typed(spec, "kind", str, "header.spec")
    check = _SPEC_CHECKS.get(kind)
    if check is None:
        fail("header.spec.kind", "TreeMean, Boosting or Linear", repr(kind))
    check(spec, classes, width, arrays, expected_arrays)
    unexpected = sorted(k for k in arrays if k not in expected_arrays and not k.startswith("extra."))
    if unexpected:
        fail("arrays", "only the arrays the header describes", ", ".join(unexpected))


def _typed(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        fail(f"{where}.{key}", kind.__name__, "nothing")
    value = obj[key]
    # bool is an int in Python; a count or a flag given as the other is a damaged header
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        fail(f"{where}.{key}", kind.__name__, f"{type(value).__name__} {value!r:.80}")
    return value


def _scalar(value: Any, where: str) -> None:
    if not isinstance(value, str | int | float | bool):
        fail(where, "a string, number or boolean", type(value).__name__)


def _array(
    arrays: Mapping[str, np.ndarray],
    name: str,
    kinds: str,
    shape: tuple[int | None, ...] | None,
    expected: set[str],
) -> np.ndarray:
    """The array ``name``, of a dtype kind in ``kinds`` ("i": integers that fit int64, "f": floats up to
    float64) and of ``shape`` (None on an axis: any length; ``shape`` None: checked by the caller)."""
    expected.add(name)
    if name not in arrays:
        fail(name, "an array", "nothing")
    a = arrays[name]
    if kinds == "i":
        ok = a.dtype.kind in "iu" and np.can_cast(a.dtype, np.int64, "safe")
        want = "integers (int64 or narrower)"
    else:
        ok = a.dtype.kind == "f" and np.can_cast(a.dtype, np.float64, "safe")
        want = "floats (float64 or narrower)"
    if not ok:
        fail(f"{name} dtype", want, a.dtype)
    if shape is not None and (
        a.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, a.shape, strict=True))
    ):
        fail(f"{name} shape", "(" + ", ".join("any" if n is None else str(n) for n in shape) + ")", a.shape)
    return a


def _check_block(block: Any, i: int, arrays: Mapping[str, np.ndarray], expected: set[str]) -> int:
    """The block's output width, after checking its header entry and arrays."""
    where = f"header.blocks[{i}]"
    if not isinstance(block, dict):
        fail(where, "a JSON object", type(block).__name__)
    columns = _typed(block, "columns", list, where)
    for j, c in enumerate(columns):
        if not isinstance(c, str):
            fail(f"{where}.columns[{j}]", "a column name", type(c).__name__)
    kind = _typed(block, "type", str, where)
    if kind == "numeric":
        for part in ("fill", "mean", "scale"):
            if f"b{i}.{part}" in arrays:
                _array(arrays, f"b{i}.{part}", "f", (len(columns),), expected)
        return len(columns)
    if kind != "categorical":
        fail(f"{where}.type", "numeric or categorical", repr(kind))
    return _check_categorical_block(block, columns, where)


def _check_categorical_block(block: dict[str, Any], columns: list[Any], where: str) -> int:
    """A one-hot block's output width (one column per category of each input column), after its checks."""
    fill = block.get("fill")
    if fill is not None:
        if not isinstance(fill, list) or len(fill) != len(columns):
            fail(f"{where}.fill", f"null or a list of {len(columns)} values", f"{fill!r:.80}")
        for j, f in enumerate(fill):
            if f is not None:
                _scalar(f, f"{where}.fill[{j}]")
    categories = _typed(block, "categories", list, where)
    if len(categories) != len(columns):
        fail(f"{where}.categories", f"one list per column ({len(columns)})", len(categories))
    width = 0
    for j, cats in enumerate(categories):
        if not isinstance(cats, list):
            fail(f"{where}.categories[{j}]", "a list", type(cats).__name__)
        for k, c in enumerate(cats):
            _scalar(c, f"{where}.categories[{j}][{k}]")
        width += len(cats)
    return width


def _classes_for(link: str, classes: list[Any], outputs: int, where: str) -> None:
    """The classes the link's outputs stand for: none for identity, two for binary, ``outputs`` for softmax."""
    if link == "identity" and classes:
        fail("header.classes", f"none for a regression ({where})", len(classes))
    if link == "binary" and len(classes) != 2:
        fail("header.classes", f"2 for a binary link ({where})", len(classes))
    if link == "softmax" and (len(classes) < 3 or len(classes) != outputs):
        fail("header.classes", f"{outputs} (>= 3) for a softmax link ({where})", len(classes))


def _check_tree_mean(
    spec: dict[str, Any], classes: list[Any], width: int, arrays: Mapping[str, np.ndarray], expected: set[str]
) -> None:
    n_outputs = _typed(spec, "n_outputs", int, "header.spec")
    regression = _typed(spec, "regression", bool, "header.spec")
    divisor = spec.get("divisor")
    if isinstance(divisor, bool) or not isinstance(divisor, int | float) or not 0 < divisor < float("inf"):
        fail("header.spec.divisor", "a positive number", repr(divisor))
    wanted = 1 if regression else len(classes)
    if regression and classes:
        fail("header.classes", "none for a regression", len(classes))
    if not regression and len(classes) < 2:
        fail("header.classes", "at least 2 for a classifier", len(classes))
    if n_outputs != wanted:
        fail("header.spec.n_outputs", f"{wanted} (one per class, 1 for a regression)", n_outputs)
    check_trees(arrays, "t", width, n_outputs, expected)


def _check_boosting(
    spec: dict[str, Any], classes: list[Any], width: int, arrays: Mapping[str, np.ndarray], expected: set[str]
) -> None:
    stages = _typed(spec, "stages", int, "header.spec")
    link = _typed(spec, "link", str, "header.spec")
    _typed(spec, "round32", bool, "header.spec")
    rate = spec.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        fail("header.spec.rate", "null or a number", repr(rate))
    if link not in LINKS:
        fail("header.spec.link", " or ".join(LINKS), repr(link))
    if stages < 1 or (link != "softmax" and stages != 1):
        fail("header.spec.stages", "1, or one per class with a softmax link", stages)
    _classes_for(link, classes, stages, "boosting")
    _array(arrays, "start", "f", (stages,), expected)
    for k in range(stages):
        check_trees(arrays, f"s{k}", width, 1, expected)


def _check_linear(
    spec: dict[str, Any], classes: list[Any], width: int, arrays: Mapping[str, np.ndarray], expected: set[str]
) -> None:
    link = _typed(spec, "link", str, "header.spec")
    if link not in LINKS:
        fail("header.spec.link", " or ".join(LINKS), repr(link))
    if link == "identity":
        _array(arrays, "coef", "f", (width,), expected)
        intercept = _array(arrays, "intercept", "f", None, expected)
        if intercept.shape not in ((), (1,)):
            fail("intercept shape", "() or (1,)", intercept.shape)
        _classes_for(link, classes, 1, "linear")
        return
    coef = _array(arrays, "coef", "f", (width, None), expected)
    outputs = coef.shape[1]
    if (link == "binary" and outputs != 1) or (link == "softmax" and outputs < 3):
        fail("coef shape", f"({width}, 1) for a binary link, ({width}, classes) for softmax", coef.shape)
    _array(arrays, "intercept", "f", (outputs,), expected)
    _classes_for(link, classes, outputs, "linear")


def check_trees(arrays: Mapping[str, np.ndarray], prefix: str, width: int, n_values: int, expected: set[str]) -> None:
    """The trees under ``prefix``: each has >= 1 node; a node is a leaf (both children -1) or a split on a
    feature in ``[0, width)`` whose children are nodes of the same tree numbered after it (as sklearn
    numbers them), so every walk stays inside its tree and ends at a leaf."""
    sizes = _array(arrays, f"{prefix}.sizes", "i", (None,), expected).astype(np.int64)
    if len(sizes) == 0:
        fail(f"{prefix}.sizes", "at least one tree", "none")
    if np.any(sizes < 1) or np.any(sizes > MAX_NODES):
        t = int(np.flatnonzero((sizes < 1) | (sizes > MAX_NODES))[0])
        fail(f"{prefix}.sizes[{t}]", f"a node count in [1, {MAX_NODES}]", int(sizes[t]))
    total = sum(sizes.tolist())  # Python ints: a sum that overflowed int64 could match a short array
    left = _array(arrays, f"{prefix}.children_left", "i", (total,), expected).astype(np.int64)
    right = _array(arrays, f"{prefix}.children_right", "i", (total,), expected).astype(np.int64)
    feature = _array(arrays, f"{prefix}.feature", "i", (total,), expected).astype(np.int64)
    _array(arrays, f"{prefix}.threshold", "f", (total,), expected)
    _array(arrays, f"{prefix}.value", "f", (total, n_values), expected)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    local = np.arange(total, dtype=np.int64) - np.repeat(starts, sizes)
    size_of = np.repeat(sizes, sizes)
    leaf = left == -1

    def where(name: str, bad: np.ndarray) -> str:
        i = int(np.flatnonzero(bad)[0])
        t = int(np.searchsorted(ends, i, side="right"))
        return f"{prefix}.{name}[{i}] (tree {t}, node {int(local[i])} of {int(sizes[t])})"

    half_leaf = leaf != (right == -1)
    if half_leaf.any():
        i = int(np.flatnonzero(half_leaf)[0])
        fail(where("children_right", half_leaf), "-1 exactly when children_left is -1", int(right[i]))
    split = ~leaf
    for name, child in (("children_left", left), ("children_right", right)):
        bad = split & ((child <= local) | (child >= size_of))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            span = f"{int(local[i]) + 1}..{int(size_of[i]) - 1}"
            fail(where(name, bad), f"-1 or a node of the same tree after this one ({span})", int(child[i]))
    bad = split & ((feature < 0) | (feature >= width))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(where("feature", bad), f"a model input column in [0, {width})", int(feature[i]))


_SPEC_CHECKS = {"TreeMean": _check_tree_mean, "Boosting": _check_boosting, "Linear": _check_linear}
