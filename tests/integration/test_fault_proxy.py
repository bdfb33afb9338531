"""The fault-injecting proxy (tests/fakes/fault_proxy.py) in front of a real storage emulator."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry

from segment import clients
from segment.emulators import ManagedProcess, gcs_emulator
from tests.fakes.fault_proxy import FaultProxy, ObjectWrite, _accepted_write

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    with gcs_emulator(Path(tmp_path_factory.mktemp("gcs-logs"))) as server:
        yield server


def _client(url: str):
    return clients.storage_client(clients.Endpoints(storage_emulator=url, project="p"))


def test_forwards_everything_when_the_failure_rate_is_zero(gcs: ManagedProcess) -> None:
    with FaultProxy(gcs.url) as proxy:
        storage = _client(proxy.url)
        bucket = storage.create_bucket("proxy-forward")
        blob = bucket.blob("dir/a.bin")
        blob.upload_from_string(b"\x00\x01payload" * 1000, content_type="application/x-test")
        blob.metadata = {"k": "v"}
        blob.patch()
        again = bucket.get_blob("dir/a.bin")
        assert again is not None
        assert again.download_as_bytes() == b"\x00\x01payload" * 1000
        assert again.metadata == {"k": "v"}
        assert [b.name for b in storage.list_blobs("proxy-forward")] == ["dir/a.bin"]
        again.delete()
        assert bucket.get_blob("dir/a.bin") is None
        assert proxy.forwarded >= 6 and proxy.failed == 0


def test_a_failing_request_is_answered_503_and_never_reaches_the_emulator(
    gcs: ManagedProcess,
) -> None:
    direct = _client(gcs.url)
    direct.create_bucket("proxy-fail")
    with FaultProxy(gcs.url, seed=1) as proxy:
        via_proxy = _client(proxy.url).bucket("proxy-fail")
        proxy.set_failure_rate(1.0)
        with pytest.raises(api_exceptions.ServiceUnavailable):
            via_proxy.blob("x").upload_from_string(b"data", retry=None)
        assert direct.bucket("proxy-fail").get_blob("x") is None  # nothing happened upstream
        assert proxy.failed >= 1 and proxy.forwarded == 0

        proxy.set_failure_rate(0.5)
        outcomes = []
        for index in range(40):
            try:
                via_proxy.blob(f"y{index}").upload_from_string(b"d", retry=None)
                outcomes.append(True)
            except api_exceptions.ServiceUnavailable:
                outcomes.append(False)
        assert 5 < outcomes.count(False) < 35  # a share fails, not all or none

        proxy.set_failure_rate(0.0)
        retrying = Retry(initial=0.01, maximum=0.05, timeout=10)
        via_proxy.blob("z").upload_from_string(b"ok", retry=retrying)
        assert direct.bucket("proxy-fail").get_blob("z").download_as_bytes() == b"ok"


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FaultProxy("ftp://127.0.0.1:1")
    proxy = FaultProxy("http://127.0.0.1:1")
    try:
        with pytest.raises(ValueError):
            proxy.set_failure_rate(1.5)
    finally:
        proxy.stop()


def test_an_outage_of_one_bucket_fails_only_its_requests(gcs: ManagedProcess) -> None:
    direct = _client(gcs.url)
    direct.create_bucket("proxy-down")
    direct.create_bucket("proxy-up")
    direct.bucket("proxy-down").blob("a b/m.bin").upload_from_string(b"down")
    with FaultProxy(gcs.url) as proxy:
        via_proxy = _client(proxy.url)
        proxy.set_failure_rate(1.0, bucket="proxy-down")
        assert proxy.failing_bucket == "proxy-down"
        down = via_proxy.bucket("proxy-down")
        for call in (
            lambda: down.get_blob("a b/m.bin", retry=None),  # metadata
            lambda: down.blob("a b/m.bin").download_as_bytes(retry=None),  # media download
            lambda: down.blob("new").upload_from_string(b"x", retry=None),  # upload
        ):
            with pytest.raises(api_exceptions.ServiceUnavailable):
                call()
        up = via_proxy.bucket("proxy-up")
        up.blob("m.bin").upload_from_string(b"up", retry=None)
        assert up.blob("m.bin").download_as_bytes(retry=None) == b"up"
        assert proxy.failed >= 3 and proxy.forwarded >= 2  # (the library may add lookups)

        proxy.set_failure_rate(0.0)  # the outage ends
        assert proxy.failing_bucket is None
        assert down.blob("a b/m.bin").download_as_bytes(retry=None) == b"down"


def test_a_method_filter_fails_only_those_requests(gcs: ManagedProcess) -> None:
    direct = _client(gcs.url)
    direct.create_bucket("proxy-deletes")
    bucket = direct.bucket("proxy-deletes")
    for name in ("a", "b"):
        bucket.blob(name).upload_from_string(b"x")
    with FaultProxy(gcs.url) as proxy:
        via_proxy = _client(proxy.url).bucket("proxy-deletes")
        proxy.set_failure_rate(1.0, methods=("delete",))
        assert via_proxy.blob("a").download_as_bytes(retry=None) == b"x"  # reads pass
        via_proxy.blob("c").upload_from_string(b"y", retry=None)  # writes pass
        with pytest.raises(api_exceptions.ServiceUnavailable):
            via_proxy.blob("a").delete(retry=None)
        assert proxy.failed == proxy.failed_deletes == 1
        proxy.set_failure_rate(0.0)
        via_proxy.blob("a").delete(retry=None)
        assert bucket.get_blob("a") is None and bucket.get_blob("b") is not None


def test_answers_502_when_the_upstream_is_down() -> None:
    with FaultProxy("http://127.0.0.1:1") as proxy:
        storage = _client(proxy.url)
        with pytest.raises(api_exceptions.BadGateway):
            storage.bucket("b").get_blob("x", retry=None)


def test_enforces_generation_preconditions_the_emulator_ignores(gcs: ManagedProcess) -> None:
    direct = _client(gcs.url)
    direct.create_bucket("proxy-cond")
    with FaultProxy(gcs.url, enforce_preconditions=True) as proxy:
        bucket = _client(proxy.url).bucket("proxy-cond")
        bucket.blob("dir/m.png").upload_from_string(b"first", if_generation_match=0)
        with pytest.raises(api_exceptions.PreconditionFailed):
            bucket.blob("dir/m.png").upload_from_string(b"second", if_generation_match=0)
        current = bucket.get_blob("dir/m.png")
        assert current is not None
        # (read the content directly: a download can reset the Blob's generation to None)
        assert direct.bucket("proxy-cond").blob("dir/m.png").download_as_bytes() == b"first"
        bucket.blob("dir/m.png").upload_from_string(
            b"third", if_generation_match=current.generation
        )
        latest = bucket.get_blob("dir/m.png")
        assert latest is not None and latest.generation != current.generation
        with pytest.raises(api_exceptions.PreconditionFailed):
            bucket.blob("dir/m.png").delete(if_generation_match=current.generation)
        bucket.blob("dir/m.png").delete(if_generation_match=latest.generation)
        assert bucket.get_blob("dir/m.png") is None
        assert proxy.precondition_failures == 2
    with FaultProxy(gcs.url) as plain:  # off by default: the emulator's own (lax) behaviour
        bucket = _client(plain.url).bucket("proxy-cond")
        bucket.blob("x").upload_from_string(b"1", if_generation_match=0)
        bucket.blob("x").upload_from_string(b"2", if_generation_match=0)
        assert plain.precondition_failures == 0


# --- write counting: every object write the upstream accepted, at the storage layer ---------


def test_records_every_accepted_write_once_with_its_metadata(gcs: ManagedProcess) -> None:
    direct = _client(gcs.url)
    direct.create_bucket("proxy-writes")
    direct.create_bucket("proxy-writes-other")
    with FaultProxy(gcs.url, seed=3, enforce_preconditions=True) as proxy:
        bucket = _client(proxy.url).bucket("proxy-writes")
        name = "masks/fotos/猫 im Garten.png.png"
        blob = bucket.blob(name)
        blob.metadata = {"source-generation": "17", "source-bucket": "in"}
        blob.upload_from_string(b"\x89PNG mask", content_type="image/png", if_generation_match=0)
        assert proxy.writes == [
            ObjectWrite(
                bucket="proxy-writes",
                name=name,
                generation=int(blob.generation),
                metadata={"source-generation": "17", "source-bucket": "in"},
                if_generation_match=0,
            )
        ]

        # Not writes: a request refused by the precondition (412), one failed by the proxy (503),
        # reads, lists, a metadata patch, a delete, and writes that bypass the proxy.
        with pytest.raises(api_exceptions.PreconditionFailed):
            bucket.blob(name).upload_from_string(b"again", if_generation_match=0)
        proxy.set_failure_rate(1.0)
        with pytest.raises(api_exceptions.ServiceUnavailable):
            bucket.blob("failed").upload_from_string(b"x", retry=None)
        proxy.set_failure_rate(0.0)
        current = bucket.get_blob(name)
        assert current is not None
        current.metadata = {"patched": "yes"}
        current.patch()
        list(_client(proxy.url).list_blobs("proxy-writes"))
        direct.bucket("proxy-writes").blob("direct").upload_from_string(b"not via the proxy")
        bucket.blob("direct").delete()
        assert len(proxy.writes) == 1

        # A resumable upload in three chunks is one write (the last chunk's 2xx), as are a copy,
        # a rewrite and a compose; a replacement is a second write with a new generation.
        big = bucket.blob("big.bin", chunk_size=256 * 1024)
        big.upload_from_file(io.BytesIO(b"y" * (600 * 1024)))  # no size: a resumable upload
        bucket.copy_blob(big, _client(proxy.url).bucket("proxy-writes-other"), "copied.bin")
        bucket.blob("rewritten.bin").rewrite(big)
        bucket.blob("composed.bin").compose([big, big])
        bucket.blob(name).upload_from_string(b"new", if_generation_match=current.generation)
        writes = proxy.writes
        assert [(w.bucket, w.name) for w in writes[1:]] == [
            ("proxy-writes", "big.bin"),
            ("proxy-writes-other", "copied.bin"),
            ("proxy-writes", "rewritten.bin"),
            ("proxy-writes", "composed.bin"),
            ("proxy-writes", name),
        ]
        assert writes[-1].if_generation_match == current.generation
        assert writes[-1].generation not in (0, writes[0].generation)
        assert [w.name for w in proxy.writes_to("proxy-writes", "masks/")] == [name, name]
        assert proxy.writes_to("proxy-writes-other") == [writes[2]]


def _multipart_upload(bucket: str, name: str, metadata: dict[str, str]) -> tuple[str, bytes, str]:
    boundary = "b0undary"
    resource = json.dumps({"name": name, "metadata": metadata})
    body = (
        f"--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n"
        f"--{boundary}\r\ncontent-type: image/png\r\n\r\nPNG\r\n--{boundary}--"
    ).encode()
    path = f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart&ifGenerationMatch=0"
    return path, body, f'multipart/related; boundary="{boundary}"'


def test_counts_a_write_whose_client_vanished_before_the_answer(gcs: ManagedProcess) -> None:
    """A function killed right after sending its upload logs nothing; the write still counts."""
    direct = _client(gcs.url)
    direct.create_bucket("proxy-vanish")
    with FaultProxy(gcs.url, enforce_preconditions=True) as proxy:
        path, body, content_type = _multipart_upload("proxy-vanish", "m.png", {"k": "v"})
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {proxy.url[7:]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
            raw.sendall(head + body)  # ... and gone without reading a byte of the answer
        deadline = time.monotonic() + 10
        while not proxy.writes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(w.name, w.metadata) for w in proxy.writes] == [("m.png", {"k": "v"})]
        assert direct.bucket("proxy-vanish").get_blob("m.png") is not None

        # The client's retry of the same conditional upload is refused, so it stays one write.
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        assert connection.getresponse().status == 412
        connection.close()
        assert len(proxy.writes) == 1


RESOURCE = {"kind": "storage#object", "bucket": "b", "name": "o", "generation": "7"}


@pytest.mark.parametrize(
    ("method", "target", "status", "payload", "expected"),
    [
        ("POST", "/upload/storage/v1/b/b/o?uploadType=multipart", 200, RESOURCE, ("o", 7)),
        ("PUT", "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=x", 200, RESOURCE,
         ("o", 7)),
        ("PUT", "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=x", 308, None, None),
        ("POST", "/upload/storage/v1/b/b/o?uploadType=resumable", 200, None, None),  # the start
        ("POST", "/upload/storage/v1/b/b/o?uploadType=multipart", 412, {"error": {}}, None),
        ("POST", "/upload/storage/v1/b/b/o?uploadType=multipart", 503, RESOURCE, None),
        ("POST", "/storage/v1/b/b/o/s/rewriteTo/b/b/o/o", 200,
         {"done": True, "resource": RESOURCE}, ("o", 7)),
        ("POST", "/storage/v1/b/b/o/s/rewriteTo/b/b/o/o", 200,
         {"done": False, "rewriteToken": "t"}, None),  # a rewrite still in progress
        ("POST", "/storage/v1/b/b/o/o/compose", 200, RESOURCE, ("o", 7)),
        ("PATCH", "/storage/v1/b/b/o/o", 200, RESOURCE, None),  # metadata only
        ("GET", "/storage/v1/b/b/o/o", 200, RESOURCE, None),
        ("POST", "/storage/v1/b/b/o", 200, RESOURCE, None),  # not an upload path
        ("POST", "/upload/storage/v1/b/b/o?uploadType=media", 200, "not json", None),
    ],
)  # fmt: skip
def test_which_answers_are_writes(method, target, status, payload, expected) -> None:
    data = b"" if payload is None else json.dumps(payload).encode()
    write = _accepted_write(method, target, status, data)
    assert (None if write is None else (write.name, write.generation)) == expected


def test_reads_a_gzipped_answer_and_the_precondition() -> None:
    data = gzip.compress(json.dumps({**RESOURCE, "metadata": {"a": 1}}).encode())
    target = "/upload/storage/v1/b/b/o?uploadType=multipart&ifGenerationMatch=0"
    write = _accepted_write("POST", target, 200, data, gzipped=True)
    assert write == ObjectWrite("b", "o", 7, {"a": "1"}, if_generation_match=0)
