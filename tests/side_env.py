"""The side environments some tests run another program in (scripts/ci/*_env.sh build them)."""

import os

import pytest


def required_env(name: str, script: str) -> str:
    """The value of ``name``, exported by ``scripts/ci/<script>``. Unset: skip here, fail in CI, where
    .ci/run builds every side environment, so a missing one is a broken setup, not a reason to skip."""
    value = os.environ.get(name)
    if value:
        return value
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not set: .ci/run exports it from scripts/ci/{script}")
    pytest.skip(f"{name} is not set (run: eval \"$(bash scripts/ci/{script})\")")
