"""ModelBundle: a registered version made ready to serve (pipeline, schema, profile, predictor, metadata)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipml.adapters.mlflow_registry import MlflowRegistry, ModelRef, VersionInfo
from shipml.adapters.native import load_kernel
from shipml.core.fast import TreeKernel, Unsupported, compile_pipeline, verified_backends, verify
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
    pipeline: Any
    example: tuple[dict[str, Value], ...]
    evaluation: dict[str, Any]

    @property
    def classes(self) -> tuple[Any, ...]:
        return getattr(self.predictor, "classes", ())


def load_bundle(registry: MlflowRegistry, ref: ModelRef, cache_dir: Path) -> ModelBundle:
    """Download (integrity-checked), unpickle and describe a version."""
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
    predictor = _predictor(loaded.pipeline, schema, loaded.info.tags.get("shipml.fast_path", ""), example)
    return ModelBundle(loaded.info, schema, profile, predictor, loaded.pipeline, example, evaluation)


def _predictor(pipeline: Any, schema: FeatureSchema, tag: str, example: tuple[dict[str, Value], ...]) -> Predictor:
    """The fast path when registration verified it (and it still agrees on the example), else the pipeline.

    Of the backends the tag vouches for, the native kernel is preferred when this machine has it.
    """
    backends = verified_backends(tag)
    if not backends or not example:
        return PipelinePredictor(pipeline, schema)
    kernel = load_kernel()[0] if "native" in backends else None
    candidates: list[TreeKernel | None] = [kernel] if kernel is not None else []
    if "numpy" in backends:
        candidates.append(None)
    for candidate in candidates:
        # registration compared it on the holdout and the edge cases; here a quick check on the example suffices
        try:
            fast = compile_pipeline(pipeline, schema, candidate)
        except Unsupported:
            return PipelinePredictor(pipeline, schema)
        if verify(fast, pipeline, schema, example).verified:
            return fast
    return PipelinePredictor(pipeline, schema)


def warm(bundle: ModelBundle) -> None:
    """Run the input example through the predictor once, so the first request is not the slow one."""
    if not bundle.example:
        raise ModelLoadError(f"{bundle.info.name}/{bundle.info.version}: no input example to warm up on")
    try:
        bundle.predictor.predict(bundle.example)
    except Exception as exc:
        raise ModelLoadError(f"{bundle.info.name}/{bundle.info.version}: warm-up failed: {exc}") from None
