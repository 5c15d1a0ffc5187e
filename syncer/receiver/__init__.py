"""The push half: Graph's POST -> checks -> inbox row -> 202.

``receive`` is what a request does and ``app`` the Flask app around it; ``notifications`` (parsing), ``checks``
and ``rich`` the pure checks of a POST; ``groupcommit`` one inbox transaction for many requests; ``serve``
configuration and gunicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app_from_env() -> Flask:
    """``gunicorn 'syncer.receiver:create_app_from_env()'``: the app configured from ``SYNCER_*`` variables.

    The public WSGI target the README and ``syncer serve --help`` name; the building lives in
    :mod:`syncer.receiver.serve`."""
    from syncer.receiver.serve import ServeConfig, build_app

    return build_app(ServeConfig.from_env())
