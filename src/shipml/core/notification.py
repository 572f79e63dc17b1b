"""SentVerdict: what the webhook notifier remembers of a model, the last message it sent.

Kept in the prediction store (``store.notifications``), so that whichever worker or replica runs the monitoring job
(it follows a lease that moves) knows what was sent before: the recovery after an alarm goes out, and an alarm is
not repeated inside its cooldown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SentVerdict:
    """The last message sent for ``model``: its verdict, whether it reported a performance drop, and when each
    condition (a verdict, with ``+performance_drop`` when it reported one) was last sent."""

    model: str
    verdict: str
    dropped: bool
    sent_at: Mapping[str, float] = field(default_factory=dict)
