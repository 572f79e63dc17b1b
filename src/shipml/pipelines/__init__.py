"""Use cases composing core and adapters: validate, train, promote, predict."""
