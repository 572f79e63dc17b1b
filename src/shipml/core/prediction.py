"""The vocabulary of a prediction, shared by every layer: who answered (variant and role), how it ended
(status) and how durably it is logged.

The names of the champion's variant and of a canary's candidate are defined here once: the router, the
experiments and the canary controller all speak of them.
"""

from __future__ import annotations

from enum import StrEnum

DEFAULT_VARIANT = "main"  # the champion's variant name when `serve.variants` does not name it
CANARY_VARIANT = "canary"  # reserved: the candidate of a canary (never a `serve.variants` or `serve.shadow` name)


class Status(StrEnum):
    """How a record's prediction ended (the ``status`` of its log row and of the predictions counter)."""

    OK = "ok"  # answered
    INVALID = "invalid"  # refused by validation (a 422 for the record)
    OUTPUT_INVALID = "output_invalid"  # the model answered NaN or an infinity (a 502)
    ERROR = "error"  # the model call raised or timed out (a 5xx)


class Role(StrEnum):
    """Whether a variant's answers reach the client (primary) or are only logged (shadow)."""

    PRIMARY = "primary"
    SHADOW = "shadow"


class Durability(StrEnum):
    """When an answer is sent: after its log row is committed (commit), or at once (async)."""

    COMMIT = "commit"
    ASYNC = "async"
