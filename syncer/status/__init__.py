"""What ``syncer status`` (and ``syncer ui``) show: how fresh each scope is, and when each
subscription expires.

:mod:`~syncer.status.collect` reads the database into plain data (freshness and health per scope,
a summary per declaration); :mod:`~syncer.status.render` turns that data into text for a terminal
or JSON for monitoring. Tests check the data; the CLI prints it.
"""

from syncer.status.collect import (
    DeclarationSummary,
    ScopeStatus,
    Status,
    SubscriptionStatus,
    collect,
    needing_attention,
    stale,
)
from syncer.status.render import human, render, render_scopes, render_summary, to_json

__all__ = [
    "DeclarationSummary",
    "ScopeStatus",
    "Status",
    "SubscriptionStatus",
    "collect",
    "human",
    "needing_attention",
    "render",
    "render_scopes",
    "render_summary",
    "stale",
    "to_json",
]
