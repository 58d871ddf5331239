"""Who may do what: the role × action table, the only place roles are checked.

Every governed action names itself here; ``require`` refuses a principal whose role is
not listed for the action, or (for actions marked ``accredited``) whose accreditation
has lapsed. Project membership and grants are checked by ``projects.authorize``; this
table only answers "may someone in this role do this at all?".

>>> may("researcher", "query.run")
True
>>> may("modeller", "query.run")
False
>>> sorted(ACTIONS["output.review"].roles)
['steward']
>>> ACTIONS["reidentify"].accredited
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from governance.errors import AccessDenied

if TYPE_CHECKING:
    from governance.access.people import User


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    why: str  # the refusal's reason, in words, naming who may
    accredited: bool = True  # a lapsed accreditation refuses too


def _rule(roles: str, why: str, *, accredited: bool = True) -> Rule:
    return Rule(frozenset(roles.split()), why, accredited)


ACTIONS: Final[dict[str, Rule]] = {
    # researchers
    "project.request": _rule("researcher", "only researchers request projects"),
    "query.run": _rule("researcher", "only researchers run queries"),
    "output.view_own": _rule(
        "researcher modeller", "outputs are seen by their project's members and stewards"
    ),
    "synthetic.request": _rule(
        "researcher modeller", "only a project's researchers and modellers request synthetic data"
    ),
    # stewards
    "project.decide": _rule("steward", "only stewards decide on projects"),
    "project.view_any": _rule("steward admin", "only stewards and admins see every project"),
    "output.list": _rule("steward", "only stewards review outputs"),
    "output.review": _rule("steward", "only stewards review outputs"),
    "model.audit": _rule("steward", "only stewards audit models"),
    "audit.read": _rule("steward", "only stewards read the audit log"),
    "quality.read": _rule("steward admin", "quality reports are for stewards and admins"),
    "datasets.all": _rule("steward", "only stewards see every table without a project"),
    "dashboard": _rule("steward", "the steward dashboard is for accredited data stewards"),
    # modellers
    "model.train": _rule("modeller", "only modellers train models"),
    "model.submit": _rule("modeller", "only modellers submit models for release"),
    # data controllers: each organisation decides on its own data, project by project
    "source.decide": _rule(
        "controller", "only the organisation's data controller decides on the use of its data"
    ),
    "source.view": _rule(
        "controller steward admin", "data controllers, stewards and admins see source decisions"
    ),
    # admins
    "reidentify": _rule("admin", "only accredited admins may re-identify"),
}


def may(role: str, action: str) -> bool:
    """Whether someone in ``role`` may do ``action`` at all (accreditation aside)."""
    return role in ACTIONS[action].roles


def require(user: User, action: str) -> None:
    """Refuse (``AccessDenied``) unless ``user``'s role may do ``action`` now."""
    rule = ACTIONS[action]
    if user.role not in rule.roles:
        raise AccessDenied(rule.why)
    if rule.accredited and not user.accredited():
        raise AccessDenied("your accreditation has lapsed")
