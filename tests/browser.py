"""A real headless browser for the gallery's tests: Debian's chromium, driven by Playwright.

Playwright's own browser download is not used: the tests drive the distribution's
``chromium`` package through ``executable_path``, which CI and a laptop install the
same way. ``python -m tests.browser`` installs it where it can (root or passwordless
sudo with apt-get) and says how otherwise; dev.py and CI call :func:`ensure_chromium`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Quiet, offline, deterministic: no sandbox (containers), no GPU, no background fetches.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "install Debian's chromium package: sudo apt-get install -y chromium (or run python -m tests.browser)"


def chromium_path() -> Path | None:
    """The chromium binary the tests use ($CHROMIUM, default /usr/bin/chromium), if it is there."""
    return CHROMIUM if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK) else None


def _apt_get() -> list[str] | None:
    apt = shutil.which("apt-get")
    if apt is None:
        return None
    if os.geteuid() == 0:
        return [apt]
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [sudo, "-n", apt]
    return None


def ensure_chromium(install: bool = True) -> Path | None:
    """The chromium binary; installed with apt-get first when missing and ``install`` and allowed. None if absent."""
    found = chromium_path()
    if found is not None or not install:
        return found
    apt = _apt_get()
    if apt is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*apt, "update", "-q"], check=False, env=env)
    subprocess.run([*apt, "install", "-y", "-q", "--no-install-recommends", "chromium"], check=False, env=env)
    return chromium_path()


if __name__ == "__main__":
    path = ensure_chromium()
    print(path if path else f"chromium is missing: {INSTALL_HINT}")
    sys.exit(0 if path else 1)
