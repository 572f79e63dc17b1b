"""ModelBundle: a registered version made ready to serve (pipeline, schema, profile, predictor, metadata)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import FAST_PREDICTOR_FILE, LoadedModel, MlflowRegistry, ModelRef, VersionInfo
from shipml.core.fast.model import FastPredictor, unpack
from shipml.core.fast.preprocess import Unsupported
from shipml.core.fast.trees import TreeKernel
from shipml.core.fast.verify import TOLERANCE, VERDICT_ARTIFACT, Verdict, verify
from shipml.core.predictor import PipelinePredictor, Predictor
from shipml.core.profile import ReferenceProfile
from shipml.core.records import Value
from shipml.core.schema import FeatureSchema
from shipml.errors import ModelLoadError, WarmupError

TAG = "shipml.fast_path"

# Up to this many training rows are registered as shipml/reference_sample.json (pandas "split" JSON), for the
# monitoring job's multivariate check (a domain classifier needs rows; the profile keeps histograms only).
REFERENCE_SAMPLE_ROWS = 2_000
REFERENCE_SAMPLE_ARTIFACT = "shipml/reference_sample.json"


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
    fast_path: Verdict | None = None  # what registration found (None: not read, e.g. a test's bundle)
    predictor_reason: str = ""  # why ``predictor`` serves (why not the fast one, when it is the pipeline)

    @property
    def classes(self) -> tuple[Any, ...]:
        return getattr(self.predictor, "classes", ())

    @property
    def pipeline(self) -> Any:
        """The sklearn pipeline, unpickled on first use."""
        return self.loaded.pipeline


def load_bundle(
    registry: MlflowRegistry,
    ref: ModelRef,
    cache_dir: Path,
    fast_path: bool = True,
    kernels: KernelLoader | None = None,
) -> ModelBundle:
    """Download (integrity-checked) and describe a version; the pipeline is unpickled only if it serves.

    ``kernels`` offers the native kernel (built or loaded once by its holder, from ``native`` settings);
    None: the numpy backend only.
    """
    return bundle_from_loaded(registry.load(ref, cache_dir), fast_path, kernels)


def bundle_from_loaded(loaded: LoadedModel, fast_path: bool = True, kernels: KernelLoader | None = None) -> ModelBundle:
    """The bundle of a verified local copy (``load_bundle``'s, or the copy a Spark executor was sent)."""
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
    if fast_path:
        verdict = registered_verdict(loaded, what)
    else:
        verdict = Verdict(False, "not verified", 0, float("nan"), "turned off (serve.fast_path: false)")
    # the reason travels with the bundle: the server logs it with the load and `GET /model` can show it
    predictor, reason = _predictor(loaded, schema, verdict, example, kernels)
    return ModelBundle(loaded.info, schema, profile, predictor, loaded, example, evaluation, verdict, reason)


def registered_verdict(loaded: LoadedModel, what: str) -> Verdict:
    """The fast-path verdict registered with the version: ``shipml/fast_path.json``, or for versions
    registered before that file existed, their ``shipml.fast_path`` tag. Unreadable: not verified."""
    file = loaded.local_dir / VERDICT_ARTIFACT
    if file.is_file():
        try:
            return Verdict.from_json(file.read_bytes(), where=f"{what} {VERDICT_ARTIFACT}")
        except (OSError, ValueError) as exc:
            return Verdict(False, "not verified", 0, float("nan"), f"unreadable verdict: {exc}")
    tag = loaded.info.tags.get(TAG)
    if tag:
        return Verdict.from_legacy_tag(tag)
    return Verdict(False, "not verified", 0, float("nan"), f"no {VERDICT_ARTIFACT} registered")


def _predictor(
    loaded: LoadedModel,
    schema: FeatureSchema,
    verdict: Verdict,
    example: tuple[dict[str, Value], ...],
    kernels: KernelLoader | None,
) -> tuple[Predictor, str]:
    """The fast path when registration verified it (and it still agrees on the example), else the pipeline,
    with the reason.

    Registration compared the packed predictor with the pipeline on the holdout and the edge cases, for
    each backend the verdict lists; here it must reproduce the pipeline's outputs on the input example
    (stored with it) before it serves. The native kernel is preferred when this machine has it.
    """
    if not verdict.verified:
        return PipelinePredictor(loaded.pipeline, schema), f"fast path not verified: {verdict.reason}"
    if not example:
        return PipelinePredictor(loaded.pipeline, schema), "no input example to check the fast predictor on"
    candidates: list[TreeKernel | None] = []
    kernel = kernels.kernel if kernels is not None and "native" in verdict.backends else None
    if kernel is not None:
        candidates.append(kernel)
    if "numpy" in verdict.backends:
        candidates.append(None)
    if not candidates:
        reason = f"none of the verified backends ({', '.join(verdict.backends)}) is available here"
        return PipelinePredictor(loaded.pipeline, schema), reason
    packed = loaded.model_file(FAST_PREDICTOR_FILE)
    if packed is not None:
        fast, why = _unpacked(packed.read_bytes(), schema, example, candidates, verdict.mode == "exact")
    else:  # registered before packed predictors: compile it from the pipeline
        fast, why = _compiled(loaded.pipeline, schema, example, candidates)
    if fast is None:
        return PipelinePredictor(loaded.pipeline, schema), why
    return fast, f"fast predictor verified at registration ({verdict.mode}), {fast.backend} backend"


def _unpacked(
    data: bytes,
    schema: FeatureSchema,
    example: tuple[dict[str, Value], ...],
    candidates: list[TreeKernel | None],
    exact: bool,
) -> tuple[FastPredictor | None, str]:
    """The packed predictor with the first backend that reproduces the registered example outputs, or
    None and why. The file comes from the artifact store: ``unpack`` refuses anything unsafe to walk,
    and whatever else goes wrong here, of whatever type, means the pipeline serves; never a failed load."""
    try:
        return _checked_unpack(data, schema, example, candidates, exact)
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure falls back to the pipeline
        return None, f"packed fast predictor refused: {type(exc).__name__}: {exc}"


def _checked_unpack(
    data: bytes,
    schema: FeatureSchema,
    example: tuple[dict[str, Value], ...],
    candidates: list[TreeKernel | None],
    exact: bool,
) -> tuple[FastPredictor | None, str]:
    fast, extra = unpack(data)
    missing = sorted(set(fast.preprocess.columns) - set(schema.names))
    if missing:
        return None, f"packed fast predictor refused: it reads columns the schema lacks: {', '.join(missing)}"
    expected = extra.get("example_output")
    if expected is None or expected.dtype.kind != "f":
        return None, "packed fast predictor refused: no example outputs to check it on"
    failures = []
    for candidate in candidates:
        chosen = fast.with_kernel(candidate)
        got = chosen.predict(example)
        out = got.proba if got.proba is not None else got.values
        if out is None or out.shape != expected.shape:
            failures.append(f"{chosen.backend}: outputs of shape {None if out is None else out.shape}")
            continue
        if np.array_equal(out, expected) or (not exact and float(np.max(np.abs(out - expected))) <= TOLERANCE):
            return chosen, ""
        failures.append(f"{chosen.backend}: outputs differ")
    return None, "packed fast predictor does not reproduce the example outputs: " + "; ".join(failures)


def _compiled(
    pipeline: Any, schema: FeatureSchema, example: tuple[dict[str, Value], ...], candidates: list[TreeKernel | None]
) -> tuple[FastPredictor | None, str]:
    from shipml.core.fast.compile import compile_pipeline  # imports sklearn, as the pipeline already did

    for candidate in candidates:
        try:
            fast = compile_pipeline(pipeline, schema, candidate)
        except Unsupported as exc:
            return None, f"no fast path: {exc}"
        if verify(fast, pipeline, schema, example).verified:
            return fast, ""
    return None, "the recompiled fast predictor does not reproduce the pipeline on the example"


def warm(bundle: ModelBundle) -> None:
    """Run the input example through the predictor once, so the first request is not the slow one."""
    if not bundle.example:
        raise ModelLoadError(f"{bundle.info.name}/{bundle.info.version}: no input example to warm up on")
    try:
        outputs = bundle.predictor.predict(bundle.example)
    except Exception as exc:  # noqa: BLE001 - any failure of the model's own code is a failed warm-up
        raise WarmupError(f"{bundle.info.name}/{bundle.info.version}: warm-up failed: {exc}") from None
    produced = outputs.proba if outputs.proba is not None else outputs.values
    if produced is None or not np.isfinite(produced).all():
        raise WarmupError(
            f"{bundle.info.name}/{bundle.info.version}: warm-up failed: the model's outputs on its input example "
            "are not all finite numbers"
        )
