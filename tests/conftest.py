"""Fixtures shared by every test package: headless Chromium for what people look at."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session", autouse=True)
def shoal_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests never read or write the user's ~/.shoal: the CLI's credentials file
    (``$SHOAL_HOME/credentials``, one entry per control plane a test starts) lives here."""
    home = tmp_path_factory.mktemp("shoal-home")
    os.environ["SHOAL_HOME"] = str(home)
    return home


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find_chromium()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                       check=False, capture_output=True, timeout=600)
        path = _find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium, as root)")
    return path


@dataclass
class Browser:
    binary: str
    profile: Path

    def _args(self) -> list[str]:
        return [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", "--virtual-time-budget=5000"]

    def dom(self, url: str) -> str:
        out = subprocess.run([*self._args(), "--dump-dom", url], capture_output=True,
                             timeout=90, check=True)
        return out.stdout.decode()

    def screenshot(self, url: str, path: Path, size: str = "1400,900") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*self._args(), f"--screenshot={path}", f"--window-size={size}", url],
                       capture_output=True, timeout=90, check=True)
        assert path.exists(), f"no screenshot at {path}"
        return path


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Browser:
    return Browser(chromium, tmp_path / "chromium-profile")


