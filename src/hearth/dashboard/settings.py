"""The dashboard's own settings: where the API is and which key to use (it never reads the database)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "http://127.0.0.1:8000"
DASHBOARD_KEY_FILE = "dashboard_key"  # as hearth.api.auth (not imported: the dashboard needs none of the API)


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEARTH_", env_file=".env", extra="ignore")

    api_url: str = Field(default=DEFAULT_API_URL, description="the Hearth API the dashboard talks to")
    dashboard_key_file: Path | None = Field(
        default=None, description="file holding the dashboard's key (`hearth serve --dashboard` sets it)"
    )
    api_key: str | None = Field(default=None, description="a key to use instead (a dashboard started by hand)")
    data_dir: Path = Field(default=Path(".hearth"), description="where a local server keeps `dashboard_key`")
    dashboard_refresh_s: float = Field(default=5.0, ge=1, le=3600, description="auto-refresh period of live pages")
    dashboard_timeout_s: float = Field(default=15.0, gt=0, description="limit of one API call (deploys wait longer)")

    def resolved_key(self) -> str | None:
        """The key file Hearth gave (read at every use: it may appear after the dashboard starts), else
        HEARTH_API_KEY, else the dashboard key a local server keeps in its data dir. Never the admin's
        key file: the dashboard has no login, so by default it holds only its own, scoped key."""
        if self.dashboard_key_file is not None:
            return read_key(self.dashboard_key_file)
        if self.api_key:
            return self.api_key
        return read_key(self.data_dir / DASHBOARD_KEY_FILE)


def read_key(path: Path) -> str | None:
    try:
        return path.expanduser().read_text().strip() or None
    except OSError:
        return None
