"""``python -m hub.cli``: the same CLI as the ``hub`` command."""

from hub.cli import app

app()
