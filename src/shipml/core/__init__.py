"""Pure logic: no I/O, no framework, no configuration. The schema and validation rules, records, model building
and the fast predictors (``fast/``), metrics and reference profiles; monitoring's binning of values on a profile,
drift statistics, the domain classifier and realised and estimated performance, with the reports they make;
the prediction's vocabulary and the routing of variants; experiment statistics and their reports; the canary's
state machine; windows of time."""
