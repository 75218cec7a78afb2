"""pytest fixtures for the integration suite live in fixtures.py (shared with tests/security)."""
from fixtures import *  # noqa: F401,F403
from fixtures import pytest_configure  # noqa: F401
