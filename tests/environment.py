"""The MPC_TEST_* variables `.ci/setup` writes to env.sh: what the real-part tests run against."""

from __future__ import annotations

import os

import pytest


def required_env(name: str) -> str:
    """The variable's value; skip without it, but fail under CI, where set-up sets it."""
    value = os.environ.get(name)
    if not value:
        message = f"{name} is not set: run the suite with `bash .ci/test`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return value
