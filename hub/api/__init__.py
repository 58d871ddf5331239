"""The hub's HTTP API (FastAPI): thin routes over the governed layer."""

from hub.api.app import create_app

__all__ = ["create_app"]
