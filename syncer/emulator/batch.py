"""POST /v1.0/$batch (notes §8). Filled in below the skeleton."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("batch", __name__, url_prefix="/v1.0")
