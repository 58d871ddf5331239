"""The access policy by organisation type: the one place that says what each kind of
organisation may do with the hub, and on what terms.

A project takes the policy of its requester's organisation type, fixed when it is
requested. The table below is the whole policy; every rule is enforced from here:

=====================  ============================================  =========  =====
organisation type      access kinds by default                        reviewers  terms
=====================  ============================================  =========  =====
nhs_trust              dummy, dp, exact, feasibility, synthetic, train   1       no
university             dummy, dp, exact, feasibility, synthetic, train   1       no
other                  dummy, dp, exact, feasibility, synthetic, train   1       no
life_science_company   dummy, dp, exact, feasibility, synthetic          2       yes
=====================  ============================================  =========  =====

A **commercial** project (a life-science company's) also:

* states its public benefit and a data access agreement (DAA) reference with an expiry
  date when it is requested; both are shown on the public register, and every use of
  the project is refused after the agreement expires (``check_use``);
* needs two distinct stewards to approve each exact output (``reviewers``), whatever
  the approving steward chose;
* keeps its members inside the requesting company (``check_members``), and a company's
  users hold only researcher or modeller roles (``check_role``): they see their own
  projects and no one else's.

>>> policy_for("life_science_company").commercial, sorted(policy_for("university").access)[:3]
(True, ['dp', 'dummy', 'exact'])
>>> "train" in policy_for("life_science_company").access
False
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from governance.errors import AccessDenied, InvalidRequest

if TYPE_CHECKING:
    from governance.access.people import User
    from governance.access.projects import Project

AccessKind = Literal["dummy", "dp", "exact", "feasibility", "synthetic", "train"]
ACCESS_KINDS: Final[frozenset[str]] = frozenset(
    ("dummy", "dp", "exact", "feasibility", "synthetic", "train")
)
# the words a refusal uses for each kind of access
KIND_WORDS: Final = {
    "dummy": "queries on the dummy release",
    "dp": "DP queries",
    "exact": "exact outputs",
    "feasibility": "feasibility counts",
    "synthetic": "DP synthetic data",
    "train": "model training",
}
MIN_PUBLIC_BENEFIT: Final = 40  # characters: a sentence, not a word
_DAA_REFERENCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.-]{2,63}")


@dataclass(frozen=True)
class AccessPolicy:
    organisation_type: str
    access: frozenset[str]  # what a project of this type may do by default
    commercial: bool = False  # a flag stewards see wherever the project appears
    exact_reviewers: int = 1  # at least this many distinct stewards approve an output
    terms_required: bool = False  # public benefit and a dated data access agreement
    closed_membership: bool = False  # members only from the requester's organisation
    staff_roles: bool = True  # users may be stewards or admins


_ACADEMIC: Final = frozenset(ACCESS_KINDS)
POLICIES: Final[dict[str, AccessPolicy]] = {
    "nhs_trust": AccessPolicy("nhs_trust", _ACADEMIC),
    "university": AccessPolicy("university", _ACADEMIC),
    "other": AccessPolicy("other", _ACADEMIC),
    "life_science_company": AccessPolicy(
        "life_science_company",
        frozenset(("dummy", "dp", "exact", "feasibility", "synthetic")),
        commercial=True,
        exact_reviewers=2,
        terms_required=True,
        closed_membership=True,
        staff_roles=False,
    ),
}


@dataclass(frozen=True)
class Terms:
    """What a commercial project states when it is requested (None fields otherwise)."""

    organisation_type: str
    public_benefit: str | None = None
    daa_reference: str | None = None
    daa_expires: dt.date | None = None

    @property
    def commercial(self) -> bool:
        return policy_for(self.organisation_type).commercial


def policy_for(organisation_type: str | None) -> AccessPolicy:
    """The policy of an organisation type (an unknown or missing one gets ``other``'s).

    >>> policy_for(None).organisation_type
    'other'
    """
    return POLICIES.get(organisation_type or "other", POLICIES["other"])


def check_role(*, role: str, organisation_type: str) -> None:
    """Refuse a user whose organisation may not hold ``role`` (a company's steward).

    >>> check_role(role="researcher", organisation_type="life_science_company")
    >>> check_role(role="steward", organisation_type="life_science_company")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    governance.errors.InvalidRequest: a life_science_company's users may be researchers ...
    """
    if role in ("steward", "admin") and not policy_for(organisation_type).staff_roles:
        raise InvalidRequest(
            f"a {organisation_type}'s users may be researchers or modellers only "
            "(stewards and admins see every project)"
        )


def terms_for_request(
    requester: User,
    *,
    public_benefit: str | None,
    daa_reference: str | None,
    daa_expires: dt.date | str | None,
    today: dt.date | None = None,
) -> Terms:
    """The checked terms of a new project by ``requester`` (refusing missing ones)."""
    today = today or dt.date.today()
    org_type = requester.organisation_type
    policy = policy_for(org_type)
    benefit = (public_benefit or "").strip() or None
    reference = (daa_reference or "").strip() or None
    expires = _date(daa_expires) if daa_expires not in (None, "") else None
    if not policy.terms_required:
        if reference and not expires:
            raise InvalidRequest("a data access agreement reference needs its expiry date")
        return Terms(org_type, benefit, reference, expires)
    missing = [
        name
        for name, value in (
            ("public_benefit", benefit),
            ("daa_reference", reference),
            ("daa_expires", expires),
        )
        if value is None
    ]
    if missing:
        raise InvalidRequest(
            f"a commercial project must state {', '.join(missing)} "
            "(its public benefit and its data access agreement with an expiry date)"
        )
    assert benefit is not None and reference is not None and expires is not None
    if len(benefit) < MIN_PUBLIC_BENEFIT:
        raise InvalidRequest(
            f"state the public benefit in at least {MIN_PUBLIC_BENEFIT} characters"
        )
    if not _DAA_REFERENCE.fullmatch(reference):
        raise InvalidRequest(
            "daa_reference: 3-64 letters, digits, '/', '_', '.' or '-', starting with a "
            "letter or digit"
        )
    if expires <= today:
        raise InvalidRequest(f"the data access agreement expired on {expires.isoformat()}")
    return Terms(org_type, benefit, reference, expires)


def _date(value: dt.date | str | None) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidRequest("daa_expires must be a date, YYYY-MM-DD") from None


def check_members(requester: User, members: list[User]) -> None:
    """A closed-membership project's members all belong to the requester's organisation."""
    if not policy_for(requester.organisation_type).closed_membership:
        return
    outside = sorted(m.user_id for m in members if m.organisation != requester.organisation)
    if outside:
        raise InvalidRequest(
            f"members of a {requester.organisation_type}'s project must belong to "
            f"{requester.organisation}: {', '.join(outside)} do not"
        )


def reviewers(organisation_type: str | None, chosen: int) -> int:
    """The stewards each exact output of a project needs: the steward's choice, at least
    the policy's minimum.

    >>> reviewers("life_science_company", 1), reviewers("university", 1)
    (2, 1)
    """
    return max(chosen, policy_for(organisation_type).exact_reviewers)


def check_use(project: Project, kind: str | None, *, today: dt.date | None = None) -> None:
    """Refuse (``AccessDenied``) a use of ``project`` its policy does not allow now:
    a kind of access outside the policy, or any use after the agreement expired."""
    today = today or dt.date.today()
    policy = policy_for(project.organisation_type)
    if project.daa_expires is not None and project.daa_expires < today:
        raise AccessDenied(
            f"the data access agreement {project.daa_reference} of project "
            f"{project.project_id} expired on {project.daa_expires.isoformat()}"
        )
    if kind is not None and kind not in policy.access:
        raise AccessDenied(
            f"{KIND_WORDS.get(kind, kind)} are not part of the access a "
            f"{policy.organisation_type}'s project gets"
        )


def register_fields(project: Project) -> dict[str, Any]:
    """What the public register shows of a project's policy and terms."""
    policy = policy_for(project.organisation_type)
    return {
        "organisation_type": policy.organisation_type,
        "commercial": policy.commercial,
        "access": sorted(policy.access),
        "public_benefit": project.public_benefit,
        "data_access_agreement": project.daa_reference,
        "agreement_expires": project.daa_expires.isoformat() if project.daa_expires else None,
        "exact_output_reviewers": project.output_reviewers,
    }


def describe() -> dict[str, dict[str, Any]]:
    """The whole policy, for the public register's page and ``GET /v1/public/policy``."""
    return {
        name: {
            "access": sorted(p.access),
            "commercial": p.commercial,
            "exact_output_reviewers": p.exact_reviewers,
            "terms_required": p.terms_required,
            "members_from_own_organisation_only": p.closed_membership,
        }
        for name, p in POLICIES.items()
    }
