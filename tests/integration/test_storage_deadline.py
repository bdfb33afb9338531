"""Storage retries end by the request deadline: the real entry point (functions/main.py under
functions-framework, as Cloud Functions serves it), the real google-cloud-storage library, the
storage emulator, and the fault proxy (tests/fakes/fault_proxy.py) between them.

REQUEST_TIMEOUT_SECONDS is 10 here, so a request may call storage for 5 s (the margin is half
of so short a timeout). Without the deadline every call retried a 503 for the library's 120 s.
HTTP 500 is what Pub/Sub redelivers; 200 is an ack. The time limits asserted are generous (the
timeout plus 10 s): they tell "gave up by the deadline" from "retried for 120 s per call", and
say nothing about speed.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from PIL import Image
from segmentation.storage import mask_name

from segment import clients
from segment.emulators import ManagedProcess
from tests.fakes import notifications
from tests.fakes.fault_proxy import FaultProxy
from tests.fakes.fixtures import tiny_model_dir
from tests.fakes.images import halves_png
from tests.fakes.registry import publish_model

__all__ = ["tiny_model_dir"]

pytestmark = [
    pytest.mark.integration,
    # functions-framework 3.10.2 calls datetime.utcnow() while converting every push body.
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[2]
SOURCE = str(REPO / "functions" / "main.py")
PROJECT = "deadline-project"
TIMEOUT_S = 10  # REQUEST_TIMEOUT_SECONDS
SLACK_S = 10  # generous: a loaded machine, the library's last backoff
NAME = "uploads/deadline/cat.png"


@dataclass
class Function:
    """The function served by functions-framework, its storage behind `proxy`."""

    client: Any  # the Flask test client: post a push body, read the status Pub/Sub acts on
    proxy: FaultProxy
    storage: Any  # a client straight to the emulator (setup and checks, never failed)
    input_bucket: str
    output_bucket: str
    models_bucket: str
    generation: int
    size: int

    def deliver(self) -> tuple[int, float]:
        """Pushes the upload's notification once: (HTTP status, seconds it took)."""
        message = notifications.message(
            self.input_bucket, NAME, self.generation, size=self.size, message_id="4242"
        )
        started = time.monotonic()
        response = self.client.post(
            notifications.push_path(), json=notifications.push_body(message)
        )
        return response.status_code, time.monotonic() - started


@pytest.fixture
def function(
    gcs_server: ManagedProcess,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Function]:
    tag = uuid.uuid4().hex[:10]
    names = {kind: f"deadline-{kind}-{tag}" for kind in ("in", "out", "models")}
    storage = clients.storage_client(
        clients.Endpoints(storage_emulator=gcs_server.url, project=PROJECT)
    )
    for name in names.values():
        storage.create_bucket(name)
    publish_model(storage.bucket(names["models"]), tiny_model_dir)
    png = halves_png(64, 48)
    upload = storage.bucket(names["in"]).blob(NAME)
    upload.upload_from_string(png, content_type="image/png")
    with FaultProxy(gcs_server.url, enforce_preconditions=True) as proxy:
        for key, value in {
            "STORAGE_EMULATOR_HOST": proxy.url,  # the function's storage goes through the proxy
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "OUTPUT_BUCKET": names["out"],
            "INPUT_BUCKET": names["in"],
            "MODEL_URI": f"gs://{names['models']}/unet/latest",
            "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
            "REQUEST_TIMEOUT_SECONDS": str(TIMEOUT_S),
            "LOG_LEVEL": "INFO",
            # create_app records these in os.environ; let monkeypatch restore them afterwards.
            "FUNCTION_TARGET": "segment_image",
            "FUNCTION_SIGNATURE_TYPE": "cloudevent",
        }.items():
            monkeypatch.setenv(key, value)
        pillow_limit = Image.MAX_IMAGE_PIXELS
        app = functions_framework.create_app(
            target="segment_image", source=SOURCE, signature_type="cloudevent"
        )
        try:
            yield Function(
                client=app.test_client(),
                proxy=proxy,
                storage=storage,
                input_bucket=names["in"],
                output_bucket=names["out"],
                models_bucket=names["models"],
                generation=int(upload.generation),
                size=len(png),
            )
        finally:
            sys.modules.pop("main", None)
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _summaries(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    return [line for line in lines if "outcome" in line]


def _assert_mask(function: Function) -> None:
    mask = function.storage.bucket(function.output_bucket).get_blob(mask_name(NAME))
    assert mask is not None
    assert mask.metadata["source-generation"] == str(function.generation)
    assert mask.metadata["model-track"] == "stable"


@pytest.mark.timeout(90)  # the old code retried each call for 120 s: fail, don't hang
def test_a_storage_outage_gives_up_by_the_deadline_and_the_redelivery_succeeds(
    function: Function, capsys: pytest.CaptureFixture[str]
) -> None:
    function.proxy.set_failure_rate(1.0)  # every request answered 503
    status, seconds = function.deliver()
    assert status == 500  # redelivered, not acked
    assert seconds < TIMEOUT_S + SLACK_S
    assert function.proxy.failed >= 2  # the library did retry, within the deadline
    assert function.proxy.writes == []
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "transient_error"
    assert summary["reason"] in ("storage_unavailable", "request_deadline")

    function.proxy.set_failure_rate(0.0)  # the outage ends: the redelivery does the job
    status, _ = function.deliver()
    assert status == 200
    assert _summaries(capsys)[0]["outcome"] == "mask_written"
    _assert_mask(function)


@pytest.mark.timeout(90)
def test_a_model_bucket_outage_at_cold_start_loses_nothing(
    function: Function, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first request of an instance loads the model; the model bucket is down. The request
    fails transiently (not as a ModelError, a configuration error) within its deadline, and the
    same message, redelivered once the outage is over, writes the mask."""
    function.proxy.set_failure_rate(1.0, bucket=function.models_bucket)
    status, seconds = function.deliver()
    assert status == 500
    assert seconds < TIMEOUT_S + SLACK_S
    assert function.proxy.failed >= 2 and function.proxy.writes == []
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "transient_error"  # not configuration_error
    assert summary["reason"] in ("storage_unavailable", "request_deadline")
    assert summary["model_version"] is None  # nothing loaded

    status, _ = function.deliver()  # still down: redelivered again, never dead-lettered as bad
    assert status == 500

    function.proxy.set_failure_rate(0.0)
    status, _ = function.deliver()
    assert status == 200
    [summary] = _summaries(capsys)[-1:]
    assert summary["outcome"] == "mask_written" and summary["model_version"]
    _assert_mask(function)
    [write] = function.proxy.writes_to(function.output_bucket, "masks/")
    assert write.metadata["source-generation"] == str(function.generation)
