"""The security suite uses the integration suite's fixtures and harness (a real corrald per module)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from fixtures import *  # noqa: E402,F401,F403
from fixtures import pytest_configure  # noqa: E402,F401
