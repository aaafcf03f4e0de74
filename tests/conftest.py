"""Shared test set-up: offline, repo root importable, paths to the locally built models."""
import sys

import pytest

from common import ROOT, offline_defaults
from common.models import EMBEDDED, LLAMA31, TINYLLAMA, local_model

offline_defaults()
sys.path.insert(0, str(ROOT))


def _model(name):
    path = local_model(name)
    if not (path / "config.json").exists():
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (make test does it)")
    return path


@pytest.fixture(scope="session")
def smollm2():
    return _model(EMBEDDED)


@pytest.fixture(scope="session")
def tinyllama():
    return _model(TINYLLAMA)


@pytest.fixture(scope="session")
def llama31():
    return _model(LLAMA31)
