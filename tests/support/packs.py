"""Packed fast predictors for the tests of ``unpack`` and of loading: intact ones, and a catalogue of damaged
ones, each with the message that must name its problem."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from shipml.core.fast.compile import compile_pipeline
from tests.support.fitted import Fitted, boosted, forest, linear, tree

Arrays = dict[str, np.ndarray]
Change = Callable[[Arrays, dict[str, Any]], None]


def packed(model: Fitted | None = None) -> bytes:
    """The packed form of ``model`` (the small tree by default), with a dummy example output."""
    return compile_pipeline(*(model or tree())).pack({"example_output": np.zeros((2, 2))})


def arrays_of(data: bytes) -> tuple[Arrays, dict[str, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(arrays["header"].tobytes().decode())


def repacked(arrays: Arrays, header: dict[str, Any] | None = None) -> bytes:
    out = dict(arrays)
    if header is not None:
        out["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **out)  # type: ignore[arg-type]
    return buffer.getvalue()


def damaged(change: Change, model: Callable[[], Fitted] = tree) -> Callable[[], bytes]:
    """A maker of ``model``'s pack with ``change`` applied (made when called: nothing is fitted at import)."""

    def make() -> bytes:
        arrays, header = arrays_of(packed(model()))
        arrays = {k: v.copy() for k, v in arrays.items()}
        change(arrays, header)
        return repacked(arrays, header)

    return make


def first_split(arrays: Arrays, prefix: str = "t") -> int:
    return int(np.flatnonzero(arrays[f"{prefix}.children_left"] != -1)[0])


def set_at(name: str, node: Callable[[Arrays], int], value: int) -> Change:
    def change(arrays: Arrays, header: dict[str, Any]) -> None:
        arrays[name][node(arrays)] = value

    return change


def second_split(arrays: Arrays) -> int:
    """A split node that has a parent (the root's left child, a split in a depth-3 tree)."""
    child = int(arrays["t.children_left"][0])
    assert arrays["t.children_left"][child] != -1
    return child


# The damaged packs of the brief (and a few more): a maker of each, with the message that names the problem.
DAMAGED: dict[str, tuple[Callable[[], bytes], str]] = {
    "feature index 2**40": (
        damaged(set_at("t.feature", first_split, 2**40)),
        r"t\.feature\[0\] \(tree 0, node 0 of \d+\): expected a model input column in \[0, \d+\), "
        r"got 1099511627776",
    ),
    "negative feature index": (
        damaged(set_at("t.feature", first_split, -3)),
        r"t\.feature\[0\] .*: expected a model input column in \[0, \d+\), got -3",
    ),
    "negative child": (
        damaged(set_at("t.children_left", first_split, -5)),
        r"t\.children_left\[0\] \(tree 0, node 0 of \d+\): expected -1 or a node of the same tree after "
        r"this one \(1\.\.\d+\), got -5",
    ),
    "child pointing to itself": (
        damaged(set_at("t.children_right", second_split, 1)),
        r"t\.children_right\[1\] \(tree 0, node 1 of \d+\): expected -1 or a node of the same tree after "
        r"this one \(2\.\.\d+\), got 1",
    ),
    "child pointing to its parent": (
        damaged(set_at("t.children_left", second_split, 0)),
        r"t\.children_left\[1\] \(tree 0, node 1 of \d+\): expected .* after this one \(2\.\.\d+\), got 0",
    ),
    "child beyond its tree": (
        damaged(lambda a, h: a["t.children_right"].__setitem__(0, int(a["t.sizes"][0])), forest),
        r"t\.children_right\[0\] \(tree 0, node 0 of (\d+)\): expected .* \(1\.\.\d+\), got \1",
    ),
    "a leaf with one child": (
        damaged(set_at("t.children_right", lambda a: int(np.flatnonzero(a["t.children_left"] == -1)[0]), 0)),
        r"t\.children_right\[\d+\] .*: expected -1 exactly when children_left is -1, got 0",
    ),
    "truncated thresholds": (
        damaged(lambda a, h: a.__setitem__("t.threshold", a["t.threshold"][:-1])),
        r"t\.threshold shape: expected \((\d+)\), got \(\d+,\)",
    ),
    "truncated children": (
        damaged(lambda a, h: a.__setitem__("t.children_left", a["t.children_left"][:-2])),
        r"t\.children_left shape: expected \(\d+\), got \(\d+,\)",
    ),
    "values of another width": (
        damaged(lambda a, h: a.__setitem__("t.value", a["t.value"][:, :1])),
        r"t\.value shape: expected \(\d+, 2\), got \(\d+, 1\)",
    ),
    "a tree without nodes": (
        damaged(lambda a, h: a.__setitem__("t.sizes", np.array([0, *a["t.sizes"][1:]])), forest),
        r"t\.sizes\[0\]: expected a node count in \[1, 1099511627776\], got 0",
    ),
    "sizes that do not add up": (
        damaged(lambda a, h: a.__setitem__("t.sizes", a["t.sizes"] + 1), forest),
        r"t\.children_left shape: expected \(\d+\), got \(\d+,\)",
    ),
    "node ids as unsigned 64-bit": (
        damaged(lambda a, h: a.__setitem__("t.feature", a["t.feature"].astype(np.uint64))),
        r"t\.feature dtype: expected integers \(int64 or narrower\), got uint64",
    ),
    "thresholds as strings": (
        damaged(lambda a, h: a.__setitem__("t.threshold", a["t.threshold"].astype(str))),
        r"t\.threshold dtype: expected floats \(float64 or narrower\), got <U\d+",
    ),
    "a count given as a string": (
        damaged(lambda a, h: h["spec"].__setitem__("n_outputs", "2")),
        r"header\.spec\.n_outputs: expected int, got str '2'",
    ),
    "classes that do not match the outputs": (
        damaged(lambda a, h: h.__setitem__("classes", ["no", "yes", "maybe"])),
        r"header\.spec\.n_outputs: expected 3 \(one per class, 1 for a regression\), got 2",
    ),
    "a class that is not a value": (
        damaged(lambda a, h: h["classes"].__setitem__(0, ["no"])),
        r"header\.classes\[0\]: expected a string, number or boolean, got list",
    ),
    "categories of another shape": (
        damaged(lambda a, h: next(b for b in h["blocks"] if b["type"] == "categorical")["categories"].pop()),
        r"header\.blocks\[\d\]\.categories: expected one list per column \(\d+\), got \d+",
    ),
    "a scaler of another width": (
        damaged(lambda a, h: a.__setitem__("b0.mean", a["b0.mean"][:-1]), linear),
        r"b0\.mean shape: expected \(\d+\), got \(\d+,\)",
    ),
    "coefficients of another width": (
        damaged(lambda a, h: a.__setitem__("coef", a["coef"][:-1]), linear),
        r"coef shape: expected \(\d+, any\), got \(\d+, 1\)",
    ),
    "a boosting stage walking off its row": (
        damaged(set_at("s0.feature", lambda a: first_split(a, "s0"), 10_000), boosted),
        r"s0\.feature\[0\] \(tree 0, node 0 of \d+\): expected a model input column in \[0, \d+\), got 10000",
    ),
    "a boosting start of another length": (
        damaged(lambda a, h: a.__setitem__("start", np.zeros(3)), boosted),
        r"start shape: expected \(1\), got \(3,\)",
    ),
    "an array the header does not describe": (
        damaged(lambda a, h: a.__setitem__("t.extra_nodes", np.zeros(3))),
        r"arrays: expected only the arrays the header describes, got t\.extra_nodes",
    ),
    "an unknown model kind": (
        damaged(lambda a, h: h["spec"].__setitem__("kind", "Pickle")),
        r"header\.spec\.kind: expected TreeMean, Boosting or Linear, got 'Pickle'",
    ),
}
