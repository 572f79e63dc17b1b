"""Use cases composing core and adapters, one per command: validate, train, promote and roll back, predict
offline, monitor (the drift job) and the alerts it sends, experiments (`ab report`, `ab promote`, the guardrails
taken from monitoring, the report over time), the canary controller. Also what they share: the workspace every
job opens (store, registry, cache) and the loading of a registered version for serving (``bundle``)."""
