"""A packed fast predictor comes from the artifact store: ``unpack`` refuses anything unsafe to walk,
with where, what was expected and what was found, before any tree is built or the native kernel sees it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.core.fast.compile import compile_pipeline
from shipml.core.fast.model import FastPredictor, unpack
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame

Arrays = dict[str, np.ndarray]


def fitted_pipeline(estimator: str, params: dict[str, Any], task: str = "binary") -> tuple[Any, FeatureSchema]:
    df = generate_churn(400, seed=3)
    target = "churn" if task == "binary" else "total_charges"
    df = df.dropna(subset=[target])
    drop = ["total_charges"] if task == "binary" else ["churn"]
    schema = FeatureSchema.infer(df.drop(columns=drop), target, task, ("customer_id",))  # type: ignore[arg-type]
    pipeline = build_pipeline(schema, make_estimator(estimator, params, task, 0))  # type: ignore[arg-type]
    pipeline.fit(feature_frame(df, schema), df[target])
    return pipeline, schema


TREE = fitted_pipeline("sklearn.tree.DecisionTreeClassifier", {"max_depth": 3})
FOREST = fitted_pipeline("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 3, "max_depth": 4})
BOOSTED = fitted_pipeline("sklearn.ensemble.GradientBoostingRegressor", {"n_estimators": 3}, "regression")
LINEAR = fitted_pipeline("sklearn.linear_model.LogisticRegression", {"max_iter": 300})
ROWS = rows_from_frame(feature_frame(generate_churn(20, seed=4), TREE[1]), TREE[1])


def packed(model: tuple[Any, FeatureSchema] = TREE) -> bytes:
    return compile_pipeline(*model).pack({"example_output": np.zeros((2, 2))})


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


def damaged(change: Callable[[Arrays, dict[str, Any]], None], model: tuple[Any, FeatureSchema] = TREE) -> bytes:
    arrays, header = arrays_of(packed(model))
    arrays = {k: v.copy() for k, v in arrays.items()}
    change(arrays, header)
    return repacked(arrays, header)


def first_split(arrays: Arrays, prefix: str = "t") -> int:
    return int(np.flatnonzero(arrays[f"{prefix}.children_left"] != -1)[0])


def set_at(name: str, node: Callable[[Arrays], int], value: int) -> Callable[[Arrays, dict[str, Any]], None]:
    def change(arrays: Arrays, header: dict[str, Any]) -> None:
        arrays[name][node(arrays)] = value

    return change


def second_split(arrays: Arrays) -> int:
    """A split node that has a parent (the root's left child, a split in a depth-3 tree)."""
    child = int(arrays["t.children_left"][0])
    assert arrays["t.children_left"][child] != -1
    return child


# The damaged packs of the brief (and a few more), each with the message that names the problem.
DAMAGED: dict[str, tuple[bytes, str]] = {
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
        damaged(lambda a, h: a["t.children_right"].__setitem__(0, int(a["t.sizes"][0])), FOREST),
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
        damaged(lambda a, h: a.__setitem__("t.sizes", np.array([0, *a["t.sizes"][1:]])), FOREST),
        r"t\.sizes\[0\]: expected a node count in \[1, 1099511627776\], got 0",
    ),
    "sizes that do not add up": (
        damaged(lambda a, h: a.__setitem__("t.sizes", a["t.sizes"] + 1), FOREST),
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
        damaged(lambda a, h: a.__setitem__("b0.mean", a["b0.mean"][:-1]), LINEAR),
        r"b0\.mean shape: expected \(\d+\), got \(\d+,\)",
    ),
    "coefficients of another width": (
        damaged(lambda a, h: a.__setitem__("coef", a["coef"][:-1]), LINEAR),
        r"coef shape: expected \(\d+, any\), got \(\d+, 1\)",
    ),
    "a boosting stage walking off its row": (
        damaged(set_at("s0.feature", lambda a: first_split(a, "s0"), 10_000), BOOSTED),
        r"s0\.feature\[0\] \(tree 0, node 0 of \d+\): expected a model input column in \[0, \d+\), got 10000",
    ),
    "a boosting start of another length": (
        damaged(lambda a, h: a.__setitem__("start", np.zeros(3)), BOOSTED),
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


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_pack_is_refused_naming_the_problem(case: str) -> None:
    data, message = DAMAGED[case]
    with pytest.raises(ValueError, match="packed fast predictor: " + message):
        unpack(data)


@pytest.mark.parametrize("model", [TREE, FOREST, BOOSTED, LINEAR], ids=["tree", "forest", "boosting", "linear"])
def test_an_intact_pack_is_accepted_and_predicts(model: tuple[Any, FeatureSchema]) -> None:
    fast, extra = unpack(packed(model))
    assert isinstance(fast, FastPredictor)
    assert extra["example_output"].shape == (2, 2)
    rows = rows_from_frame(feature_frame(generate_churn(5, seed=9), model[1]), model[1])
    assert fast.predict(rows) is not None


def test_a_header_that_is_not_an_object_is_refused() -> None:
    arrays, _ = arrays_of(packed())
    with pytest.raises(ValueError, match=r"packed fast predictor: header: expected a JSON object, got list"):
        unpack(repacked(arrays, [1, 2]))  # type: ignore[arg-type]


# Run in a child process: were a bad index to reach the native kernel, the child would die of SIGSEGV
# and the test would fail, instead of taking pytest down with it.
NATIVE_SCRIPT = """
import json, sys
from pathlib import Path
from shipml.adapters.native import load_kernel
from shipml.config import NativeSettings
from shipml.core.fast.model import unpack

kernel, why = load_kernel(NativeSettings())
if kernel is None:
    print("no kernel:", why)
    sys.exit(3)
rows = json.loads(Path(sys.argv[1]).read_text())
for path in sys.argv[2:]:
    try:
        fast, _ = unpack(Path(path).read_bytes(), kernel)
    except ValueError as exc:
        print("refused:", exc)
        continue
    fast.predict(rows)  # reached only if unpack let it through
    print("accepted:", path)
"""


def test_the_native_kernel_never_walks_a_damaged_pack(tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(ROWS))
    names = ["feature index 2**40", "negative child", "child pointing to itself", "truncated children"]
    paths = []
    for i, name in enumerate(names):
        path = tmp_path / f"bad{i}.npz"
        path.write_bytes(DAMAGED[name][0])
        paths.append(str(path))
    good = tmp_path / "good.npz"
    good.write_bytes(packed())
    done = subprocess.run(
        [sys.executable, "-c", NATIVE_SCRIPT, str(rows), *paths, str(good)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert len(lines) == len(names) + 1
    assert all(line.startswith("refused: packed fast predictor: t.") for line in lines[:-1]), lines
    assert lines[-1] == f"accepted: {good}"
