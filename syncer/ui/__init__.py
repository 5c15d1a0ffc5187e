"""The status page (``syncer ui``): see :mod:`syncer.ui.app`."""

from syncer.ui.app import create_app

__all__ = ["create_app"]
