"""System tools that set-up installs from Debian (Go, Chromium): a test that needs one fails where set-up
would have installed it (CI, or root with apt-get after set-up ran) and skips elsewhere."""
import os
import shutil

import pytest

from common import CACHE

APT_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])


def setup_installs_tools():
    """True on CI and where `scripts/setup.sh` ran as root with apt-get (it then installs them)."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        return True
    return (CACHE / "setup.stamp").exists() and os.geteuid() == 0 and bool(shutil.which("apt-get", path=APT_PATH))


def require(command, package):
    """The path of `command`; fails (where set-up installs it) or skips when it is not on PATH."""
    path = shutil.which(command)
    if path:
        return path
    message = (f"`{command}` is not installed: run `bash scripts/setup.sh` as root, or "
               f"`apt-get install -y {package}` (see {CACHE / 'setup-apt.log'} if set-up tried)")
    if setup_installs_tools():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
