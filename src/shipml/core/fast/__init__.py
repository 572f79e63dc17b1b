"""Fast predictors: a fitted sklearn Pipeline compiled to numpy, exact to the pipeline's own output.

``compile.compile_pipeline`` (the only part that imports sklearn) raises
``Unsupported`` (with the reason) for anything it cannot reproduce; the caller
then uses the pipeline itself. ``model`` holds the runtime (``FastPredictor``,
``pack``/``unpack``), ``verify`` the comparison: nothing is trusted until
``verify`` has compared it with the pipeline. Import the sub-modules directly,
so that serving a packed predictor does not import sklearn.
"""
