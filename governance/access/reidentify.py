"""Re-identification: one person's identifiers from the vault, for an accredited admin.

The only way back from a pseudonym to a person. The request is audited *before*
anything is decrypted (allowed or denied, with the reason given); if the audit log
cannot be written, nothing is decrypted. The vault key never enters the governance
store, and the decrypted record goes only to the caller.
"""

from __future__ import annotations

from typing import Any, Final

from connectors import releases
from connectors.vault import reidentify as decrypt
from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, InvalidRequest
from governance.facade import Governance

MIN_REASON: Final = 8  # characters: a recall reference, not "x"


def reidentify(
    gov: Governance,
    principal: Principal,
    person_id: int,
    *,
    reason: str,
    vault_key: bytes,
    release_id: str | None = None,
    operator: str | None = None,
) -> dict[str, Any]:
    """Decrypt ``person_id``'s identifiers; refused unless ``principal`` may re-identify."""
    if len(reason.strip()) < MIN_REASON:
        raise InvalidRequest("--reason must say why re-identification is needed")
    release = releases.get_release(gov.home, release_id)
    try:
        roles.require(principal.user, "reidentify")
        denial = None
    except AccessDenied as exc:
        denial = exc
    gov.audit.record(
        AuditEvent.by(
            principal,
            "reidentify",
            decision="denied" if denial else "allowed",
            target=str(person_id),
            release=release.id,
            reason=str(denial) if denial else reason.strip(),
            details={"operator": operator} if operator else {},
        )
    )
    if denial is not None:
        raise denial
    vault_file = releases.vault_dir(gov.home) / release.manifest["vault"]["file"]
    return decrypt(vault_key, vault_file, person_id)
