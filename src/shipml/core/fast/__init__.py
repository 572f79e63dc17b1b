"""Fast predictors: a fitted sklearn Pipeline compiled to numpy, exact to the pipeline's own output.

``compile.compile_pipeline`` (the only part that imports sklearn) raises
``Unsupported`` (with the reason) for anything it cannot reproduce; the caller
then uses the pipeline itself. ``model`` holds the runtime (``FastPredictor``,
``pack``/``unpack``), ``packed`` the checks that ``unpack`` runs on a packed predictor
before building anything from it, ``verify`` the comparison (and the ``Verdict`` registered
with a version as ``shipml/fast_path.json``): nothing is trusted until
``verify`` has compared it with the pipeline. Import the sub-modules directly,
so that serving a packed predictor does not import sklearn.
"""
