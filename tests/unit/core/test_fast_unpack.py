"""A packed fast predictor comes from the artifact store: ``unpack`` refuses anything unsafe to walk,
with where, what was expected and what was found, before any tree is built or the native kernel sees it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shipml.core.fast.model import FastPredictor, unpack
from shipml.core.predictor import PipelinePredictor
from tests.support.fitted import Fitted, boosted, example_rows, forest, linear, tree
from tests.support.packs import DAMAGED, arrays_of, packed, repacked


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_pack_is_refused_naming_the_problem(case: str) -> None:
    make, message = DAMAGED[case]
    data = make()
    with pytest.raises(ValueError, match="packed fast predictor: " + message):
        unpack(data)


@pytest.mark.parametrize("model", [tree, forest, boosted, linear], ids=["tree", "forest", "boosting", "linear"])
def test_an_intact_pack_is_accepted_and_predicts_the_pipelines_numbers(model: Callable[[], Fitted]) -> None:
    pipeline, schema = model()
    fast, extra = unpack(packed((pipeline, schema)))
    assert isinstance(fast, FastPredictor)
    assert extra["example_output"].shape == (2, 2)
    rows = [{k: v for k, v in r.items() if k in schema.names} for r in example_rows(5, 9)]
    got, want = fast.predict(rows), PipelinePredictor(pipeline, schema).predict(rows)
    if want.proba is not None:
        assert got.proba is not None
        np.testing.assert_array_equal(got.proba, want.proba)
    else:
        np.testing.assert_array_equal(got.values, want.values)


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
    rows.write_text(json.dumps(example_rows(20, 4)))
    names = ["feature index 2**40", "negative child", "child pointing to itself", "truncated children"]
    paths = []
    for i, name in enumerate(names):
        path = tmp_path / f"bad{i}.npz"
        path.write_bytes(DAMAGED[name][0]())
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
