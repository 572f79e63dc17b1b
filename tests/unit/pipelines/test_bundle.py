"""Which predictor a loaded version serves: the fast one only when its registered verdict says verified
and its packed form is intact and reproduces the example; anything else is the pipeline, with the reason,
never a failed load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.adapters.registry import FAST_PREDICTOR_FILE, ModelRef
from shipml.core.fast.compile import compile_pipeline
from shipml.core.fast.model import FastPredictor
from shipml.core.fast.verify import VERDICT_ARTIFACT, Verdict
from shipml.core.predictor import PipelinePredictor
from shipml.pipelines import bundle as bundle_module
from shipml.pipelines.bundle import load_bundle
from tests.support.fitted import example_rows, forest
from tests.support.packs import DAMAGED
from tests.support.registry import FakeRegistry

VERIFIED = Verdict(True, "exact", 80, 0.0, backends=("numpy", "native"))
LEGACY_TAG = "verified: exact on 80 rows (max |diff| 0.0e+00); backends: numpy, native"


def version_dir(
    tmp_path: Path, *, pack: bytes | None = None, verdict: Verdict | str | None = VERIFIED, example: Any = None
) -> Path:
    """A version's files: schema, input example, verdict, and the packed predictor (a good one by default)."""
    pipeline, schema = forest()
    rows = example_rows(20, 4)[:5] if example is None else example
    (tmp_path / "shipml").mkdir(parents=True)
    (tmp_path / "model").mkdir()
    (tmp_path / "shipml" / "schema.json").write_text(schema.to_json())
    (tmp_path / "shipml" / "input_example.json").write_text(json.dumps(rows))
    if verdict is not None:
        text = verdict if isinstance(verdict, str) else verdict.to_json()
        (tmp_path / VERDICT_ARTIFACT).write_text(text)
    if pack is None:
        expected = PipelinePredictor(pipeline, schema).predict(rows).proba
        assert expected is not None
        pack = compile_pipeline(pipeline, schema).pack({"example_output": expected})
    (tmp_path / "model" / FAST_PREDICTOR_FILE).write_bytes(pack)
    return tmp_path


def loaded(local_dir: Path, tags: dict[str, str] | None = None) -> bundle_module.ModelBundle:
    return load_bundle(FakeRegistry(local_dir, tags or {}), ModelRef("churn", "3"), local_dir)  # type: ignore[arg-type]


def test_a_verified_intact_pack_serves(tmp_path: Path) -> None:
    b = loaded(version_dir(tmp_path))
    assert isinstance(b.predictor, FastPredictor)
    assert b.fast_path == VERIFIED
    assert b.predictor_reason == "fast predictor verified at registration (exact), numpy backend"


@pytest.mark.parametrize("case", ["feature index 2**40", "negative child", "child pointing to itself"])
def test_a_damaged_pack_falls_back_to_the_pipeline_with_the_reason(tmp_path: Path, case: str) -> None:
    b = loaded(version_dir(tmp_path, pack=DAMAGED[case][0]()))
    assert isinstance(b.predictor, PipelinePredictor)
    assert b.predictor_reason.startswith("packed fast predictor refused: ValueError: packed fast predictor: t.")
    assert b.predictor.predict(example_rows(20, 4)[:3]).proba is not None  # and the pipeline serves


def test_any_failure_while_checking_the_pack_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, kernel: object = None) -> Any:
        raise IndexError("index 1099511627776 is out of bounds for axis 0 with size 10")

    monkeypatch.setattr(bundle_module, "unpack", broken)
    b = loaded(version_dir(tmp_path))
    assert isinstance(b.predictor, PipelinePredictor)
    assert b.predictor_reason == (
        "packed fast predictor refused: IndexError: index 1099511627776 is out of bounds for axis 0 with size 10"
    )


def test_a_pack_that_does_not_reproduce_the_example_falls_back(tmp_path: Path) -> None:
    wrong = compile_pipeline(*forest()).pack({"example_output": np.full((5, 2), 0.5)})
    b = loaded(version_dir(tmp_path, pack=wrong))
    assert isinstance(b.predictor, PipelinePredictor)
    assert b.predictor_reason == "packed fast predictor does not reproduce the example outputs: numpy: outputs differ"


def test_the_verdict_file_decides_not_the_tag(tmp_path: Path) -> None:
    refused = Verdict(False, "not verified", 80, 0.3, "max |diff| 3.000e-01 exceeds 1e-12")
    b = loaded(version_dir(tmp_path, verdict=refused), tags={"shipml.fast_path": LEGACY_TAG})
    assert isinstance(b.predictor, PipelinePredictor)
    assert b.predictor_reason == "fast path not verified: max |diff| 3.000e-01 exceeds 1e-12"


def test_an_unreadable_verdict_file_means_the_pipeline(tmp_path: Path) -> None:
    b = loaded(version_dir(tmp_path, verdict='{"format": "shipml.fast_path/1", "verified": "yes"}'))
    assert isinstance(b.predictor, PipelinePredictor)
    assert b.predictor_reason == (
        "fast path not verified: unreadable verdict: churn/3 shipml/fast_path.json: verified:"
        " expected true or false, got 'yes'"
    )


def test_versions_registered_before_the_verdict_file_use_their_tag(tmp_path: Path) -> None:
    b = loaded(version_dir(tmp_path, verdict=None), tags={"shipml.fast_path": LEGACY_TAG})
    assert isinstance(b.predictor, FastPredictor)
    no_verdict = loaded(version_dir(tmp_path / "v2", verdict=None))
    assert isinstance(no_verdict.predictor, PipelinePredictor)
    assert no_verdict.predictor_reason == "fast path not verified: no shipml/fast_path.json registered"


# The native case runs in a child process, so that a bad index reaching the kernel would fail this test
# (the child dies of SIGSEGV) rather than kill pytest.
NATIVE_SCRIPT = """
import sys
from pathlib import Path
from shipml.adapters.registry import ModelRef
from shipml.adapters.native import KernelLoader
from shipml.config import NativeSettings
from shipml.pipelines.bundle import load_bundle
from tests.support.registry import FakeRegistry

kernels = KernelLoader(NativeSettings())
if kernels.kernel is None:
    print("no kernel:", kernels.load()[1])
    sys.exit(3)
for path in sys.argv[1:]:
    b = load_bundle(FakeRegistry(Path(path), {}), ModelRef("churn", "3"), Path(path), kernels=kernels)
    print("->", b.predictor.name, getattr(b.predictor, "backend", "-"), b.predictor_reason)
"""


def test_with_the_native_kernel_a_damaged_pack_falls_back_and_a_good_one_uses_it(tmp_path: Path) -> None:
    bad = version_dir(tmp_path / "bad", pack=DAMAGED["feature index 2**40"][0]())
    good = version_dir(tmp_path / "good")
    done = subprocess.run(
        [sys.executable, "-c", NATIVE_SCRIPT, str(bad), str(good)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[3],
    )
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    assert [line for line in done.stdout.splitlines() if line.startswith("-> ")] == [
        "-> pipeline - packed fast predictor refused: ValueError: packed fast predictor: t.feature[0] (tree 0, node 0"
        " of 15): expected a model input column in [0, 17), got 1099511627776",
        "-> fast native fast predictor verified at registration (exact), native backend",
    ]
