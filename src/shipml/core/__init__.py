"""Pure logic: no I/O, no framework, no configuration. The schema and validation rules, records, model building
and the fast predictors (``fast/``), metrics and reference profiles, drift statistics, realised and estimated
performance, the prediction's vocabulary, routing of variants, experiment statistics and the canary's state
machine."""
