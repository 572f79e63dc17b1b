"""The outside world, behind typed calls: data files (``files``), the MLflow registry (``registry/``), the
prediction store on SQLite or Postgres (``store/``), the webhook notifier (``notify``) and the native tree kernel
(``native``)."""
