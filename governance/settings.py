"""The hub's one settings object, read from ``HUB_`` environment variables.

>>> HubSettings(home=Path("/srv/hub")).synthetic_dir
PosixPath('/srv/hub/synthetic')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.secrets import Keys, resolve_keys
from governance.facade import Governance


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    home: Path = Field(
        default=Path("./var"),
        description="Data folder: populations, releases, keys, audit log (HUB_HOME).",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        """Resolved once, here: every path below it (Data Docs, releases, keys) is absolute.

        >>> HubSettings(home=Path("var")).home.is_absolute()
        True
        """
        return home.expanduser().resolve()

    pseudonym_key: SecretStr | None = Field(
        default=None, description="64 hex characters (HUB_PSEUDONYM_KEY); else $HUB_HOME/keys."
    )
    vault_key: SecretStr | None = Field(
        default=None, description="64 hex characters (HUB_VAULT_KEY); else $HUB_HOME/keys."
    )

    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 seed, 64 hex characters (HUB_AUDIT_SIGNING_KEY); else $HUB_HOME/keys.",
    )

    def governance(self, *, create_keys: bool = False, query_timeout_s: float = 30.0) -> Governance:
        """The governance layer of this hub home (audit signing key required)."""
        seed = self.audit_signing_key.get_secret_value() if self.audit_signing_key else None
        return Governance.open(
            self.home,
            signing_seed_hex=seed,
            create_keys=create_keys,
            query_timeout_s=query_timeout_s,
        )

    def keys(self, *, create: bool = False) -> Keys:
        """The pseudonym and vault keys; refuses missing, short or default ones."""
        return resolve_keys(
            self.home,
            pseudonym_hex=self.pseudonym_key.get_secret_value() if self.pseudonym_key else None,
            vault_hex=self.vault_key.get_secret_value() if self.vault_key else None,
            create=create,
        )

    @property
    def synthetic_dir(self) -> Path:
        return self.home / "synthetic"


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    """The settings of this process; tests clear the cache to override them."""
    return HubSettings()
