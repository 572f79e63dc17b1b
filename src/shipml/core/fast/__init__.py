"""Fast predictors: a fitted sklearn Pipeline compiled to numpy, exact to the pipeline's own output.

``compile_pipeline`` raises ``Unsupported`` (with the reason) for anything it
cannot reproduce; the caller then uses the pipeline itself. Nothing here is
trusted until ``verify`` has compared it with the pipeline.
"""

from shipml.core.fast.compile import FastPredictor, compile_pipeline
from shipml.core.fast.preprocess import Unsupported
from shipml.core.fast.trees import TreeKernel
from shipml.core.fast.verify import Reference, Verdict, edge_case_rows, verified_backends, verify

__all__ = [
    "FastPredictor",
    "Reference",
    "TreeKernel",
    "Unsupported",
    "Verdict",
    "compile_pipeline",
    "edge_case_rows",
    "verified_backends",
    "verify",
]
