"""The hub's HTTP API (FastAPI): thin routes over the governed layer.

The application itself is built by ``hub.app.create_app``.
"""
