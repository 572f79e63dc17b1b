"""Pure logic: no I/O, no framework. Schema, validation rules, model building, metrics, profiles."""
