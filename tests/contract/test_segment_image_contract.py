"""Contract: `segment_image` served by functions-framework, as Cloud Functions serves it.

Posts the golden deliveries (Eventarc structured and binary CloudEvents, a raw Pub/Sub push
body) through `functions_framework.create_app(...).test_client()` and checks the HTTP status
Pub/Sub acts on (2xx: ack; anything else: redeliver) and what ends up in the output bucket.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import functions_framework
import numpy as np
import pytest
from PIL import Image
from segmentation.errors import SettingsError, StorageUnavailableError

from tests.fakes.images import decode_mask, halves_png
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET, PUBSUB_TYPE, push_path
from tests.fakes.storage import FakeObjectStore

REPO = Path(__file__).resolve().parents[2]
SOURCE = str(REPO / "functions" / "main.py")
FIXTURES = REPO / "tests" / "fixtures" / "events"
NAME = "uploads/2026/cat photo ü.png"
GENERATION = 1763731200123456
MASK = f"masks/{NAME}.png"
TOPIC_SOURCE = "//pubsub.googleapis.com/projects/demo-project/topics/seg-uploads"

# functions-framework 3.10.2 calls datetime.utcnow() while converting every push body.
pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def _environment(monkeypatch: pytest.MonkeyPatch, model_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPUT_BUCKET", OUTPUT_BUCKET)
    monkeypatch.setenv("MODEL_URI", str(model_dir))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    # create_app records these in os.environ; let monkeypatch restore them afterwards.
    monkeypatch.setenv("FUNCTION_TARGET", "segment_image")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "cloudevent")


def _create_app() -> Any:
    return functions_framework.create_app(
        target="segment_image", source=SOURCE, signature_type="cloudevent"
    )


@pytest.fixture
def function(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[SimpleNamespace]:
    _environment(monkeypatch, tiny_model_dir, tmp_path)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    app = _create_app()
    module = sys.modules["main"]
    store = FakeObjectStore()
    monkeypatch.setattr(module, "STORE", store)
    seen: list[Any] = []
    handle = module.handle_cloud_event

    def spy(cloud_event: Any, **kwargs: Any) -> Any:
        seen.append(cloud_event)
        return handle(cloud_event, **kwargs)

    monkeypatch.setattr(module, "handle_cloud_event", spy)
    yield SimpleNamespace(client=app.test_client(), module=module, store=store, events=seen)
    sys.modules.pop("main", None)
    Image.MAX_IMAGE_PIXELS = pillow_limit


def _upload(store: FakeObjectStore, data: bytes | None = None) -> None:
    store.put(
        INPUT_BUCKET, NAME, data if data is not None else halves_png(64, 48), generation=GENERATION
    )


def _summaries(capsys: Any) -> list[dict[str, Any]]:
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    return [line for line in lines if "outcome" in line]


def _assert_mask(store: FakeObjectStore) -> None:
    stored = store.get(OUTPUT_BUCKET, MASK)
    assert stored is not None, store.names(OUTPUT_BUCKET)
    mask = decode_mask(stored.data)
    assert mask.mode == "P" and mask.size == (64, 48)
    values = np.asarray(mask)
    assert (values[:, :31] == 0).all() and (values[:, 33:] == 1).all()
    assert stored.info.metadata["source-generation"] == str(GENERATION)


def test_eventarc_structured_cloudevent(function: SimpleNamespace, capsys: Any) -> None:
    _upload(function.store)
    response = function.client.post(
        "/",
        data=json.dumps(_fixture("eventarc_structured.json")),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    _assert_mask(function.store)
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "mask_written" and summary["message_id"] == "11029301235345091"


def test_eventarc_binary_cloudevent(function: SimpleNamespace) -> None:
    _upload(function.store)
    golden = _fixture("eventarc_binary.json")
    response = function.client.post("/", json=golden["body"], headers=golden["headers"])
    assert response.status_code == 200, response.get_data(as_text=True)
    _assert_mask(function.store)


def test_pubsub_push_body_is_converted_by_functions_framework(
    function: SimpleNamespace, capsys: Any
) -> None:
    _upload(function.store)
    body = _fixture("pubsub_push.json")
    response = function.client.post(push_path(), json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    _assert_mask(function.store)
    [event] = function.events
    assert event["type"] == PUBSUB_TYPE
    assert event["source"] == TOPIC_SOURCE  # derived from the push URL path
    assert event["id"] == body["message"]["messageId"]
    assert _summaries(capsys)[0]["message_id"] == body["message"]["messageId"]


def test_push_to_a_path_without_the_topic_still_works(function: SimpleNamespace) -> None:
    _upload(function.store)
    response = function.client.post("/", json=_fixture("pubsub_push.json"))
    assert response.status_code == 200
    assert function.events[0]["source"] == "//pubsub.googleapis.com/"
    _assert_mask(function.store)


def test_duplicate_delivery_is_acked_without_a_second_write(function: SimpleNamespace) -> None:
    _upload(function.store)
    body = _fixture("pubsub_push.json")
    assert function.client.post(push_path(), json=body).status_code == 200
    assert function.client.post(push_path(), json=body).status_code == 200
    assert [op for op, _, _ in function.store.mutations] == ["write"]


def test_other_event_types_are_acked_and_ignored(function: SimpleNamespace, capsys: Any) -> None:
    _upload(function.store)
    response = function.client.post(push_path(), json=_fixture("pubsub_push_object_delete.json"))
    assert response.status_code == 200
    assert function.store.names(OUTPUT_BUCKET) == []
    assert _summaries(capsys)[0]["outcome"] == "ignored"


def test_malformed_message_is_acked_and_logged_as_error(
    function: SimpleNamespace, capsys: Any
) -> None:
    body = _fixture("pubsub_push.json")
    body["message"]["data"] = base64.b64encode(b"{not json").decode()
    response = function.client.post(push_path(), json=body)
    assert response.status_code == 200
    [summary] = _summaries(capsys)
    assert summary["severity"] == "ERROR" and summary["outcome"] == "malformed_event"
    assert summary["message_id"] == body["message"]["messageId"]


def test_not_an_image_is_acked_with_an_error_record(function: SimpleNamespace) -> None:
    _upload(function.store, b"<html>nope</html>")
    response = function.client.post(push_path(), json=_fixture("pubsub_push.json"))
    assert response.status_code == 200
    record = json.loads(function.store.get(OUTPUT_BUCKET, f"errors/{NAME}.json").data)
    assert record["error"]["reason"] == "not_an_image"


def test_transient_failure_returns_an_error_status_for_redelivery(
    function: SimpleNamespace, capsys: Any
) -> None:
    _upload(function.store)
    function.store.fail_next("read", StorageUnavailableError("503"))
    response = function.client.post(push_path(), json=_fixture("pubsub_push.json"))
    assert response.status_code == 500
    assert _summaries(capsys)[0]["outcome"] == "transient_error"
    retry = function.client.post(push_path(), json=_fixture("pubsub_push.json"))
    assert retry.status_code == 200
    _assert_mask(function.store)


def test_model_failing_its_sha256_check_returns_an_error_status(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    (tampered / "manifest.json").write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    _environment(monkeypatch, tampered, tmp_path)
    try:
        client = _create_app().test_client()
        store = FakeObjectStore()
        monkeypatch.setattr(sys.modules["main"], "STORE", store)
        _upload(store)
        response = client.post(push_path(), json=_fixture("pubsub_push.json"))
    finally:
        sys.modules.pop("main", None)
    assert response.status_code == 500
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "configuration_error" and summary["reason"] == "model_integrity"
    assert store.mutations == []


def test_push_body_without_data_is_processed_not_refused(
    function: SimpleNamespace, capsys: Any
) -> None:
    """A notification with payloadFormat=NONE has no message data; functions-framework alone
    answers 400 (redelivered until dead-lettered). The entry point's 400 handler segments it."""
    _upload(function.store)
    body = _fixture("pubsub_push.json")
    del body["message"]["data"]
    body["message"]["attributes"]["payloadFormat"] = "NONE"
    response = function.client.post(push_path(), json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    _assert_mask(function.store)
    [event] = function.events
    assert event["source"] == TOPIC_SOURCE and event["id"] == body["message"]["messageId"]
    assert _summaries(capsys)[0]["outcome"] == "mask_written"


def test_push_body_without_data_or_attributes_is_acked_as_malformed(
    function: SimpleNamespace, capsys: Any
) -> None:
    body = {"message": {"messageId": "42", "publishTime": "2026-11-21T13:20:01Z"}}
    response = function.client.post(push_path(), json=body)
    assert response.status_code == 200
    [summary] = _summaries(capsys)
    assert summary["severity"] == "ERROR" and summary["outcome"] == "malformed_event"
    assert summary["message_id"] == "42"


def test_push_body_without_data_and_a_transient_failure_is_redelivered(
    function: SimpleNamespace,
) -> None:
    _upload(function.store)
    function.store.fail_next("read", StorageUnavailableError("503"))
    body = _fixture("pubsub_push.json")
    del body["message"]["data"]
    body["message"]["attributes"]["payloadFormat"] = "NONE"
    assert function.client.post(push_path(), json=body).status_code == 500
    assert function.client.post(push_path(), json=body).status_code == 200
    _assert_mask(function.store)


def test_request_that_is_neither_cloudevent_nor_push_is_rejected(function: SimpleNamespace) -> None:
    for body in ({"hello": "world"}, {"message": {"data": "e30="}}, {"message": "x"}):
        response = function.client.post("/", json=body)
        assert response.status_code == 400, body
    assert function.events == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OUTPUT_BUCKET", None), ("MODEL_URI", None), ("NUM_THREADS", "0"), ("LOG_LEVEL", "LOUD")],
)
def test_bad_settings_fail_at_cold_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tmp_path: Path,
    variable: str,
    value: str | None,
) -> None:
    _environment(monkeypatch, tiny_model_dir, tmp_path)
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    try:
        with pytest.raises(SettingsError, match=f"^{variable}: ") as info:
            _create_app()
    finally:
        sys.modules.pop("main", None)
    assert info.value.variable == variable
