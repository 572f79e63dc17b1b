"""ModelBundle: a registered version made ready to serve (pipeline, schema, profile, predictor, metadata)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shipml.adapters.mlflow_registry import FAST_PREDICTOR_FILE, LoadedModel, MlflowRegistry, ModelRef, VersionInfo
from shipml.adapters.native import load_kernel
from shipml.core.fast.model import FastPredictor, unpack
from shipml.core.fast.preprocess import Unsupported
from shipml.core.fast.trees import TreeKernel
from shipml.core.fast.verify import TOLERANCE, verified_backends, verify
from shipml.core.predictor import PipelinePredictor, Predictor
from shipml.core.profile import ReferenceProfile
from shipml.core.records import Value
from shipml.core.schema import FeatureSchema
from shipml.errors import ModelLoadError


@dataclass(frozen=True)
class ModelBundle:
    """Everything the server needs of one version; immutable once loaded."""

    info: VersionInfo
    schema: FeatureSchema
    profile: ReferenceProfile | None
    predictor: Predictor
    loaded: LoadedModel
    example: tuple[dict[str, Value], ...]
    evaluation: dict[str, Any]

    @property
    def classes(self) -> tuple[Any, ...]:
        return getattr(self.predictor, "classes", ())

    @property
    def pipeline(self) -> Any:
        """The sklearn pipeline, unpickled on first use."""
        return self.loaded.pipeline


def load_bundle(registry: MlflowRegistry, ref: ModelRef, cache_dir: Path, fast_path: bool = True) -> ModelBundle:
    """Download (integrity-checked) and describe a version; the pipeline is unpickled only if it serves."""
    loaded = registry.load(ref, cache_dir)
    files = loaded.local_dir / "shipml"
    what = f"{loaded.info.name}/{loaded.info.version}"
    try:
        schema = FeatureSchema.from_dict(json.loads((files / "schema.json").read_text()), where=f"{what} schema")
        profile_file = files / "profile.json"
        profile = ReferenceProfile.from_dict(json.loads(profile_file.read_text())) if profile_file.exists() else None
        example_file = files / "input_example.json"
        example = tuple(json.loads(example_file.read_text())) if example_file.exists() else ()
        evaluation_file = files / "evaluation.json"
        evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.exists() else {}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{what}: unreadable shipml metadata: {exc}") from None
    tag = loaded.info.tags.get("shipml.fast_path", "") if fast_path else "not verified: turned off"
    predictor = _predictor(loaded, schema, tag, example)
    return ModelBundle(loaded.info, schema, profile, predictor, loaded, example, evaluation)


def _predictor(
    loaded: LoadedModel, schema: FeatureSchema, tag: str, example: tuple[dict[str, Value], ...]
) -> Predictor:
    """The fast path when registration verified it (and it still agrees on the example), else the pipeline.

    Registration compared the packed predictor with the pipeline on the holdout and the edge cases, for
    each backend the tag lists; here it must reproduce the pipeline's outputs on the input example (stored
    with it) before it serves. The native kernel is preferred when this machine has it.
    """
    backends = verified_backends(tag)
    if backends and example:
        kernel = load_kernel()[0] if "native" in backends else None
        candidates: list[TreeKernel | None] = [kernel] if kernel is not None else []
        if "numpy" in backends:
            candidates.append(None)
        packed = loaded.model_file(FAST_PREDICTOR_FILE)
        exact = tag.startswith("verified: exact")
        if packed is not None:
            fast = _unpacked(packed.read_bytes(), example, candidates, exact)
        else:  # registered before packed predictors: compile it from the pipeline
            fast = _compiled(loaded.pipeline, schema, example, candidates)
        if fast is not None:
            return fast
    return PipelinePredictor(loaded.pipeline, schema)


def _unpacked(
    data: bytes, example: tuple[dict[str, Value], ...], candidates: list[TreeKernel | None], exact: bool
) -> FastPredictor | None:
    try:
        fast, extra = unpack(data)
    except (ValueError, KeyError):
        return None
    expected = extra.get("example_output")
    if expected is None:
        return None
    for candidate in candidates:
        chosen = fast.with_kernel(candidate)
        got = chosen.predict(example)
        out = got.proba if got.proba is not None else got.values
        if out is None or out.shape != expected.shape:
            continue
        if np.array_equal(out, expected) or (not exact and float(np.max(np.abs(out - expected))) <= TOLERANCE):
            return chosen
    return None


def _compiled(
    pipeline: Any, schema: FeatureSchema, example: tuple[dict[str, Value], ...], candidates: list[TreeKernel | None]
) -> FastPredictor | None:
    from shipml.core.fast.compile import compile_pipeline  # imports sklearn, as the pipeline already did

    for candidate in candidates:
        try:
            fast = compile_pipeline(pipeline, schema, candidate)
        except Unsupported:
            return None
        if verify(fast, pipeline, schema, example).verified:
            return fast
    return None


def warm(bundle: ModelBundle) -> None:
    """Run the input example through the predictor once, so the first request is not the slow one."""
    if not bundle.example:
        raise ModelLoadError(f"{bundle.info.name}/{bundle.info.version}: no input example to warm up on")
    try:
        bundle.predictor.predict(bundle.example)
    except Exception as exc:
        raise ModelLoadError(f"{bundle.info.name}/{bundle.info.version}: warm-up failed: {exc}") from None
