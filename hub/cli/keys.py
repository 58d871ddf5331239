"""Acting as a hub user from the command line takes that user's API key.

The key comes from ``$HUB_API_KEY`` or a file (``--key-file``), never from an argument
(arguments show in ``ps`` and shell history). ``--as USER`` names who the operator means
to act as; the key must be that user's, so the CLI cannot act as anyone without their
key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from governance.access.people import Principal
from governance.errors import AccessDenied, InvalidRequest
from governance.facade import Governance

KeyFile = Annotated[
    Path | None,
    typer.Option("--key-file", help="A file holding your API key (default: $HUB_API_KEY)."),
]


def read_key(key_file: Path | None) -> str:
    """The caller's API key, from ``--key-file`` or ``$HUB_API_KEY``."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise InvalidRequest(f"cannot read {key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get("HUB_API_KEY", "").strip()
    if not key:
        raise InvalidRequest("give your API key in $HUB_API_KEY or with --key-file")
    return key


def acting_as(gov: Governance, as_user: str | None, key_file: Path | None) -> Principal:
    """The authenticated principal; refused unless the key belongs to ``as_user``."""
    principal = gov.people.authenticate(read_key(key_file))
    if as_user is not None and principal.user.user_id != as_user:
        raise AccessDenied(f"the API key given is not {as_user}'s: act as a user with their key")
    return principal
