"""Fixtures for the local-stack integration tests: one real stack (Pub/Sub emulator, GCS
emulator, the function under functions-framework) per test module, and helpers to drive it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from segment import clients, function_logs, resources
from segment.stack import LocalStack, StackNames, StackOptions
from tests.conftest import DEFAULT_MODEL_DIR

# Small backoff so that redeliveries (and dead-lettering after 5 attempts) take seconds.
FAST_POLICY = resources.DeliveryPolicy(min_backoff_s=0.2, max_backoff_s=1.0)


def _has_model(path: Path) -> bool:
    return (path / "model.tflite").is_file() and (path / "manifest.json").is_file()


@pytest.fixture(scope="session")
def stack_model_dir(request: pytest.FixtureRequest) -> Path:
    """The model the stack serves: $SEGMENT_TEST_MODEL_URI, else the committed models/default,
    else one built by model_build for this session (`tflite_model_dir`, about two minutes)."""
    override = os.environ.get("SEGMENT_TEST_MODEL_URI")
    if override:
        return Path(override)
    if _has_model(DEFAULT_MODEL_DIR):
        return DEFAULT_MODEL_DIR
    return request.getfixturevalue("tflite_model_dir")


@dataclass
class StackDriver:
    """A running LocalStack plus its clients and helpers for tests."""

    stack: LocalStack
    storage: Any
    publisher: Any
    subscriber: Any

    @property
    def input_bucket(self) -> Any:
        return self.storage.bucket(self.stack.names.input_bucket)

    @property
    def output_bucket(self) -> Any:
        return self.storage.bucket(self.stack.names.output_bucket)

    def upload(self, name: str, data: bytes, content_type: str = "image/png") -> Any:
        blob = self.input_bucket.blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return blob

    def summaries(self, log_path: Path | None = None) -> list[dict[str, Any]]:
        return function_logs.summaries(log_path or self.stack.function_log)


def wait_until[T](
    probe: Callable[[], T | None], *, timeout: float = 60.0, what: str = "condition"
) -> T:
    """Polls `probe` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def start_driver(
    log_dir: Path, model_dir: Path, names: StackNames
) -> tuple[LocalStack, StackDriver]:
    stack = LocalStack(
        StackOptions(log_dir=log_dir, model_uri=str(model_dir), names=names, policy=FAST_POLICY)
    )
    stack.__enter__()
    endpoints = stack.endpoints
    driver = StackDriver(
        stack,
        clients.storage_client(endpoints),
        clients.publisher_client(endpoints),
        clients.subscriber_client(endpoints),
    )
    return stack, driver


@pytest.fixture(scope="module")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory, stack_model_dir: Path
) -> Iterator[StackDriver]:
    """One real local stack for the test module, stopped (process groups killed) after it."""
    stack, driver = start_driver(
        tmp_path_factory.mktemp("stack-logs"), stack_model_dir, StackNames()
    )
    try:
        yield driver
    finally:
        stack.stop()
