"""The hub's one settings object, read from ``HUB_`` environment variables.

>>> HubSettings(home=Path("/srv/hub")).synthetic_dir
PosixPath('/srv/hub/synthetic')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HubSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    home: Path = Field(
        default=Path("./var"),
        description="Data folder: populations, releases, keys, audit log (HUB_HOME).",
    )

    @property
    def synthetic_dir(self) -> Path:
        return self.home / "synthetic"


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    """The settings of this process; tests clear the cache to override them."""
    return HubSettings()
