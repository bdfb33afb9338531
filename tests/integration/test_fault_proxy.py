"""The fault-injecting proxy (segment/fault_proxy.py) in front of a real storage emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry

from segment import clients
from segment.emulators import ManagedProcess, gcs_emulator
from segment.fault_proxy import FaultProxy

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
