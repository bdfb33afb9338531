"""Fixtures for the Cloud Function's unit tests (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from segmentation import logs
from segmentation.model import SegmentationModel, load_model
from segmentation.settings import Settings

from tests.fakes.fixtures import (
    tiny_int8_model_dir,
    tiny_lopsided_model_dir,
    tiny_model_copy,
    tiny_model_dir,
)
from tests.fakes.notifications import OUTPUT_BUCKET
from tests.fakes.storage import FakeObjectStore

__all__ = ["tiny_int8_model_dir", "tiny_lopsided_model_dir", "tiny_model_copy", "tiny_model_dir"]


@pytest.fixture(autouse=True)
def _json_logs() -> None:
    logs.configure("DEBUG")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> SegmentationModel:
    return load_model(str(tiny_model_dir), store=None, cache_dir="/nonexistent", num_threads=1)


@pytest.fixture
def store() -> FakeObjectStore:
    return FakeObjectStore()


@pytest.fixture
def settings(tiny_model_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        output_bucket=OUTPUT_BUCKET,
        model_uri=str(tiny_model_dir),
        max_image_bytes=1_000_000,
        max_image_pixels=4_000_000,
        num_threads=1,
        model_cache_dir=str(tmp_path / "model-cache"),
    )
