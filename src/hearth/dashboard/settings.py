"""The dashboard's own settings: where the API is and which key to use (it never reads the database)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "http://127.0.0.1:8000"


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_", env_file=".env", extra="ignore")

    api_url: str = Field(default=DEFAULT_API_URL, description="the Hearth API the dashboard talks to")
    api_key: str | None = Field(default=None, description="the key it sends; default: <data dir>/api_key")
    data_dir: Path = Field(default=Path(".hearth"), description="where a local server saved its generated key")
    dashboard_refresh_s: float = Field(default=5.0, ge=1, le=3600, description="auto-refresh period of live pages")
    dashboard_timeout_s: float = Field(default=15.0, gt=0, description="limit of one API call (deploys wait longer)")

    def resolved_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        try:
            return (self.data_dir.expanduser() / "api_key").read_text().strip() or None
        except OSError:
            return None
