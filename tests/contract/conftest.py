"""Fixtures for the function's contract tests (functions-framework test client, no servers)."""

from __future__ import annotations

from tests.fakes.fixtures import tiny_model_dir

__all__ = ["tiny_model_dir"]
