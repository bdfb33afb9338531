"""A fault-injecting HTTP proxy for tests: put it in front of the storage emulator, give its URL
to one client (the function's STORAGE_EMULATOR_HOST), and switch a share of requests to 503.

    with FaultProxy("http://127.0.0.1:9023") as proxy:     # listens on 127.0.0.1:<free port>
        env["STORAGE_EMULATOR_HOST"] = proxy.url
        proxy.set_failure_rate(0.2)                         # 20% of requests answered 503
        ...
        proxy.set_failure_rate(1.0, bucket="models")        # an outage of one bucket only
        ...
        proxy.set_failure_rate(0.0)

A failed request is answered by the proxy itself and never reaches the upstream, so a 503 means
"nothing happened" (as a real transient GCS error before the request is applied). Every request
is forwarded on a fresh upstream connection; the client side keeps HTTP/1.1 keep-alive.

`enforce_preconditions=True` adds what gcp-storage-emulator lacks (docs/architecture.md, decision
6): an object write or delete with `ifGenerationMatch=G` is answered 412 unless the object's
generation is G (0: absent). Conditional requests are serialised (check, then forward, under one
lock), so for the clients behind this proxy the condition holds atomically, as on Cloud Storage.

Every object write the upstream accepted (a 2xx answer carrying the object resource, to an upload,
copy, rewrite or compose) is recorded in `proxy.writes` as an `ObjectWrite` (bucket, name, the new
generation, the custom metadata, the `ifGenerationMatch` asked for), in the order the upstream
answered. This counts writes at the storage layer: a write is recorded even when the client that
made it was killed before it read the answer or logged anything. Conditional writes are recorded
under the lock that serialises them, so their order is the order the upstream applied them in.

`proxy.set_delay(latency_s, bandwidth_bytes_per_s)` makes every forwarded request take at least
`latency_s + (request bytes + response bytes) / bandwidth` (the latency and the request bytes
before forwarding, the response bytes before answering): a storage round trip at a chosen
distance. Injected 503s are answered at once. Off (0) by default.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from segment.emulators import HOST

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
UPSTREAM_TIMEOUT_S = 60.0
# The bucket a JSON API request is about (metadata, media download or upload path).
BUCKET_PATH = re.compile(r"^(?:/download|/upload)?/storage/v1/b/(?P<bucket>[^/?]+)")
OBJECT_PATH = re.compile(r"^(?:/upload)?/storage/v1/b/(?P<bucket>[^/]+)/o(?:/(?P<name>.+))?$")
# Requests that create an object: uploads (simple, multipart, the last chunk of a resumable one),
# copy, rewrite and compose. Their 2xx answer carries the new object's resource.
WRITE_PATH = re.compile(
    r"^(?:/upload/storage/v1/b/[^/]+/o"
    r"|/storage/v1/b/[^/]+/o/.+/(?:copyTo|rewriteTo)/b/[^/]+/o/.+"
    r"|/storage/v1/b/[^/]+/o/.+/compose)$"
)


@dataclass(frozen=True)
class ObjectWrite:
    """One object write the upstream accepted (answered 2xx with the object's resource)."""

    bucket: str
    name: str
    generation: int  # the generation the write created
    metadata: dict[str, str] = field(default_factory=dict)  # the object's custom metadata
    if_generation_match: int | None = None  # the precondition it carried, if any


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client gone mid-request (e.g. a killed function) is not the proxy's problem


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 forwarding to `upstream` with a switchable 503 rate."""

    def __init__(
        self, upstream: str, *, seed: int | None = None, enforce_preconditions: bool = False
    ) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://HOST:PORT (got {upstream!r})")
        self.upstream_host: str = parts.hostname
        self.upstream_port: int = parts.port
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._failure_rate = 0.0
        self._failing_bucket: str | None = None
        self._failing_methods: frozenset[str] | None = None  # None: every method
        self.failed_deletes = 0  # of `failed`, the DELETE requests answered 503
        self.forwarded = 0
        self.failed = 0
        self.enforce_preconditions = enforce_preconditions
        self.precondition_failures = 0
        self.conditional_lock = threading.Lock()
        self._writes: list[ObjectWrite] = []
        self._latency_s = 0.0
        self._bandwidth: float | None = None  # bytes per second; None: unlimited
        self._server = _QuietServer((HOST, 0), _handler_for(self))
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    # --- delay -------------------------------------------------------------------------------

    def set_delay(self, latency_s: float = 0.0, bandwidth_bytes_per_s: float | None = None) -> None:
        """Each forwarded request waits `latency_s` plus its bytes (both ways) / bandwidth."""
        if latency_s < 0 or (bandwidth_bytes_per_s is not None and bandwidth_bytes_per_s <= 0):
            raise ValueError("latency must be >= 0 and bandwidth > 0 (or None: unlimited)")
        with self._lock:
            self._latency_s = latency_s
            self._bandwidth = bandwidth_bytes_per_s

    def delay_for(self, nbytes: int, *, round_trip: bool = False) -> float:
        """Seconds the proxy waits for `nbytes`, plus the latency when `round_trip`."""
        with self._lock:
            latency, bandwidth = self._latency_s, self._bandwidth
        transfer = nbytes / bandwidth if bandwidth else 0.0
        return transfer + (latency if round_trip else 0.0)

    def _pause(self, nbytes: int, *, round_trip: bool = False) -> None:
        seconds = self.delay_for(nbytes, round_trip=round_trip)
        if seconds > 0:
            time.sleep(seconds)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------

    @property
    def failure_rate(self) -> float:
        return self._failure_rate

    @property
    def failing_bucket(self) -> str | None:
        return self._failing_bucket

    def set_failure_rate(
        self, rate: float, *, bucket: str | None = None, methods: tuple[str, ...] | None = None
    ) -> None:
        """Answers `rate` of the requests 503; with `bucket`, only requests about that bucket
        (its objects' metadata, downloads and uploads) can fail, with `methods` (e.g.
        ("DELETE",): a client's clean-up) only requests of those HTTP methods; the rest are
        forwarded."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("failure rate must be within 0..1")
        with self._lock:
            self._failure_rate = rate
            self._failing_bucket = bucket
            self._failing_methods = frozenset(m.upper() for m in methods) if methods else None

    # --- observation ---------------------------------------------------------------------------

    @property
    def writes(self) -> list[ObjectWrite]:
        """Every object write the upstream accepted through this proxy, in order (a copy)."""
        with self._lock:
            return list(self._writes)

    def writes_to(self, bucket: str, prefix: str = "") -> list[ObjectWrite]:
        return [w for w in self.writes if w.bucket == bucket and w.name.startswith(prefix)]

    def _record_write(self, write: ObjectWrite) -> None:
        with self._lock:
            self._writes.append(write)

    def _should_fail(self, target: str = "", method: str = "GET") -> bool:
        with self._lock:
            fail = (
                self._failure_rate > 0
                and (self._failing_bucket is None or _bucket_of(target) == self._failing_bucket)
                and (self._failing_methods is None or method in self._failing_methods)
                and self._random.random() < self._failure_rate
            )
            if fail:
                self.failed += 1
                self.failed_deletes += method == "DELETE"
            else:
                self.forwarded += 1
            return fail


def _bucket_of(target: str) -> str | None:
    match = BUCKET_PATH.match(urlsplit(target).path)
    return unquote(match["bucket"]) if match else None


def _conditional_target(method: str, target: str, body: bytes) -> tuple[str, str, int] | None:
    """(bucket, object name, required generation) of a conditional object write or delete."""
    if method not in ("POST", "PUT", "DELETE", "PATCH"):
        return None
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    match = OBJECT_PATH.match(parts.path)
    if "ifGenerationMatch" not in query or match is None:
        return None
    name = unquote(match["name"]) if match["name"] else (query.get("name") or [None])[0]
    if name is None and body:  # multipart upload: the name is in the JSON metadata part
        text = body.decode("utf-8", errors="replace")
        start = text.find("{")
        if start >= 0:
            with contextlib.suppress(ValueError):
                resource, _ = json.JSONDecoder().raw_decode(text[start:])
                name = resource.get("name") if isinstance(resource, dict) else None
    if not name:
        return None
    return unquote(match["bucket"]), name, int(query["ifGenerationMatch"][0])


def _accepted_write(
    method: str, target: str, status: int, payload: bytes, *, gzipped: bool = False
) -> ObjectWrite | None:
    """The object write a 2xx answer to an object-creating request confirms, else None."""
    if method not in ("POST", "PUT") or not 200 <= status < 300 or not payload:
        return None
    parts = urlsplit(target)
    if WRITE_PATH.match(parts.path) is None:
        return None
    try:
        resource = json.loads(gzip.decompress(payload) if gzipped else payload)
    except (ValueError, OSError, EOFError):
        return None
    if isinstance(resource, dict) and isinstance(resource.get("resource"), dict):
        resource = resource["resource"]  # rewrite answers {"done": true, "resource": {...}}
    if not isinstance(resource, dict) or not resource.get("name") or not resource.get("bucket"):
        return None  # e.g. a resumable upload's start or a rewrite still in progress
    try:
        generation = int(resource.get("generation") or 0)
    except (TypeError, ValueError):
        generation = 0
    metadata = resource.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    condition = parse_qs(parts.query).get("ifGenerationMatch")
    return ObjectWrite(
        bucket=str(resource["bucket"]),
        name=str(resource["name"]),
        generation=generation,
        metadata={str(key): str(value) for key, value in metadata.items()},
        if_generation_match=int(condition[0]) if condition and condition[0].isdigit() else None,
    )


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            body = self._read_body()
            if proxy._should_fail(self.path, self.command):
                error = {"error": {"code": 503, "message": "injected by fault proxy"}}
                payload = json.dumps(error).encode()
                self._reply(503, [("Content-Type", "application/json")], payload)
                return
            proxy._pause(len(body), round_trip=True)  # set_delay: latency + request bytes
            condition = None
            if proxy.enforce_preconditions:
                condition = _conditional_target(self.command, self.path, body)
            if condition is None:
                self._forward(body)
                return
            with proxy.conditional_lock:
                bucket, name, wanted = condition
                current = self._current_generation(bucket, name)
                if current != wanted:
                    with proxy._lock:
                        proxy.precondition_failures += 1
                    error = {"error": {"code": 412, "message": "conditionNotMet (fault proxy)"}}
                    self._reply(
                        412, [("Content-Type", "application/json")], json.dumps(error).encode()
                    )
                    return
                self._forward(body)

        def _current_generation(self, bucket: str, name: str) -> int:
            connection = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S
            )
            try:
                path = f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
                connection.request("GET", path, headers={"Connection": "close"})
                response = connection.getresponse()
                payload = response.read()
                if response.status == 404:
                    return 0
                return int(json.loads(payload)["generation"])
            finally:
                connection.close()

        def _forward(self, body: bytes) -> None:
            connection = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S
            )
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Connection"] = "close"
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                gzipped = "gzip" in (response.getheader("Content-Encoding") or "").lower()
                write = _accepted_write(
                    self.command, self.path, response.status, payload, gzipped=gzipped
                )
                if write is not None:  # applied upstream: recorded before the client hears of it
                    proxy._record_write(write)
                proxy._pause(len(payload))  # set_delay: response bytes
                self._reply(response.status, response.getheaders(), payload)
            except OSError as exc:
                message = json.dumps({"error": {"code": 502, "message": str(exc)}}).encode()
                self._reply(502, [("Content-Type", "application/json")], message)
            finally:
                connection.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

    return Handler
