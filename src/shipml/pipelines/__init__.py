"""Use cases composing core and adapters, one per command: validate, train, promote and roll back, predict
offline, monitor (the drift job), experiments (`ab report`, `ab promote`), the canary controller, and the alerts
a monitoring run sends. Also the loading of a registered version for serving (``bundle``)."""
