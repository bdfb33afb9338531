"""I/O-inclusive throughput of one function instance: images/s, p50/p95 and busy time at a fixed
number of requests in flight.

The local stack (`segment.stack.LocalStack`) runs the function under functions-framework
(gunicorn, one worker, `THREADS` = the concurrency under test, the way Cloud Run caps one
instance at `max_instance_request_concurrency` requests). The function reaches the storage
emulator through the fault proxy (`tests/fakes/fault_proxy.py`), which delays every storage
request by a fixed latency plus its bytes / bandwidth: an in-region Cloud Storage round trip
(`STORAGE_LATENCY_MS`, `STORAGE_BANDWIDTH_MB_S` below, with their source). The function's
processes are pinned to one CPU (`taskset -a -p`), the deployed tier's 1 vCPU.

The load generator POSTs the Pub/Sub push body a subscription would deliver for each upload
(straight to the function, not through the Pub/Sub emulator, whose push concurrency we cannot
set) from exactly `c` client threads, each sending its next request when its previous one is
answered: always `c` requests in flight. Every request names a different uploaded object, so
none is skipped as a duplicate; each must be answered 200 and write its mask.

Per concurrency level: a fresh function process, a warm-up (model load, one interpreter per
server thread), then `images` timed requests; images/s = images / wall time from the first send
to the last answer; busy time = the time with at least one request in flight (what request-based
billing charges); then one round of `c` concurrent 12 MP uploads, after which the instance's
peak RSS is read (`VmHWM` of each process in the function's process group).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.worker import quantile

# --- the injected storage round trip (a parameter: --storage-latency-ms, --storage-bandwidth) --
#
# Source: Cloud Storage FUSE's published gRPC/HTTP benchmarks (GoogleCloudPlatform/gcsfuse,
# docs/grpc_benchmarks.md; test setup in docs/benchmarks.md: a C4 VM and an HNS bucket, both in
# us-south1). Single-threaded whole-file sequential reads over HTTP with O_DIRECT: 4 KiB files at
# 0.08 MB/s and 128 KiB files at 2.57 MB/s, i.e. about 20 files/s, 51 ms per small file; 1 MiB
# files at 16.43 MB/s, 64 ms each. So a small in-region read costs about 50 ms end to end, and
# each further MB about 14 ms (the 128 KiB -> 1 MiB step: about 70 MB/s). We charge every
# storage request the function makes 50 ms plus its bytes at 70 MB/s. Caveats: the figure
# includes gcsfuse's own path (a FUSE open and read; probably a single GCS request with its stat
# cache warm) and the same table's small writes are slower (4 KiB: 0.04 MB/s, about 100 ms per
# file), so 50 ms is a middle figure for our mix of metadata reads, a download and an upload.
STORAGE_LATENCY_MS = 50.0
STORAGE_BANDWIDTH_MB_S = 70.0
STORAGE_SOURCE = (
    "https://github.com/GoogleCloudPlatform/gcsfuse/blob/master/docs/grpc_benchmarks.md "
    "(single-threaded HTTP reads in us-south1: 4 KiB and 128 KiB files about 51 ms each, "
    "1 MiB 64 ms; setup in docs/benchmarks.md); a parameter: --storage-latency-ms, "
    "--storage-bandwidth-mb-s"
)
CONCURRENCY_LEVELS = (1, 2, 4, 8)
REQUEST_TIMEOUT_S = 120.0


def _log(message: str) -> None:
    import sys

    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- pure parts (unit-tested) ------------------------------------------------------------------


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Total time covered by at least one (start, end) interval: the instance's billed time."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def level_row(concurrency: int, intervals: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """One throughput row from the timed requests' (send, answer) times."""
    if not intervals:
        raise ValueError("no timed requests")
    latencies = [end - start for start, end in intervals]
    wall = max(end for _, end in intervals) - min(start for start, _ in intervals)
    busy = busy_seconds(intervals)
    return {
        "concurrency": concurrency,
        "images": len(intervals),
        "seconds": round(wall, 3),
        "images_per_s": round(len(intervals) / wall, 2),
        "p50_ms": round(1e3 * statistics.median(latencies), 1),
        "p95_ms": round(1e3 * quantile(latencies, 0.95), 1),
        "busy_seconds_per_image": round(busy / len(intervals), 4),
    }


def push_body(resource: dict[str, Any], attributes: dict[str, str], message_id: str, sub: str):
    """The JSON body a Pub/Sub push subscription POSTs for one bucket notification."""
    data = json.dumps(resource, separators=(",", ":")).encode()
    return {
        "message": {
            "attributes": attributes,
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": attributes.get("eventTime") or "2026-01-01T00:00:00.000Z",
        },
        "subscription": sub,
    }


# --- CPU pinning and memory of a process group --------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is `pgid` (the function: master and worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after ")": state, ppid, pgrp
            pids.append(int(entry.name))
    return sorted(pids)


def pin(pids: Iterable[int], cpu: int) -> str:
    """Pins every thread of `pids` to `cpu`; threads they start later inherit it. Returns how."""
    tool = shutil.which("taskset")
    for pid in pids:
        if tool:
            subprocess.run(
                [tool, "-a", "-p", "-c", str(cpu), str(pid)],
                check=True,
                capture_output=True,
            )
        else:  # the same system call, per thread
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), {cpu})
    return f"taskset -a -p -c {cpu}" if tool else f"sched_setaffinity per thread to CPU {cpu}"


def status_kib(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` figure in kB (VmRSS, VmHWM); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_memory_mib(pgid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of each process of the group, their sum (an upper bound: pages the
    worker shares with the master it forked from count twice) and the largest one."""
    peaks = [status_kib(pid, "VmHWM") / 1024 for pid in group_pids(pgid)]
    return {
        "peak_rss_sum_mib": round(sum(peaks), 1),
        "peak_rss_largest_process_mib": round(max(peaks, default=0.0), 1),
        "processes": len(peaks),
    }


# --- the load generator --------------------------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    path: str


class LoadError(RuntimeError):
    pass


def drive(target: Target, bodies: Sequence[bytes], concurrency: int) -> list[tuple[float, float]]:
    """Sends `bodies` with exactly `concurrency` in flight (one connection per client thread);
    returns each request's (send, answer) perf_counter times. Raises on any non-200 answer."""
    lock = threading.Lock()
    queue = iter(bodies)
    intervals: list[tuple[float, float]] = []
    errors: list[str] = []
    start_gate = threading.Barrier(concurrency)

    def client() -> None:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=REQUEST_TIMEOUT_S)
        try:
            start_gate.wait()
            while True:
                with lock:
                    body = next(queue, None)
                if body is None or errors:
                    return
                sent = time.perf_counter()
                connection.request(
                    "POST", target.path, body=body, headers={"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                payload = response.read()
                answered = time.perf_counter()
                with lock:
                    if response.status != 200:
                        errors.append(f"{response.status}: {payload[:300]!r}")
                    intervals.append((sent, answered))
        except Exception as exc:  # a dropped connection: the level failed
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S * 4)
    if errors:
        raise LoadError(f"{len(errors)} request(s) failed, first: {errors[0]}")
    return intervals


# --- the measurement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    images_per_level: int
    latency_ms: float
    bandwidth_mb_s: float
    num_threads: int  # NUM_THREADS: the interpreter's threads (the deployed 1)
    configured_concurrency: int


def measure(
    model_uri: str, image: Path, large: Path, plan: Plan, *, cpu: int | None = None
) -> dict[str, Any]:
    """Runs every level of `plan` on one local stack (see the module docstring)."""
    from segment.stack import LocalStack, StackOptions
    from tests.fakes.fault_proxy import FaultProxy

    cpu = max(os.sched_getaffinity(0)) if cpu is None else cpu
    log_dir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    options = StackOptions(
        log_dir=log_dir,
        model_uri=model_uri,
        function_env={"NUM_THREADS": str(plan.num_threads), "LOG_LEVEL": "WARNING"},
    )
    rows: list[dict[str, Any]] = []
    how = "not pinned (no level ran)"
    try:
        _log("throughput: starting the local stack")
        with LocalStack(options) as stack, FaultProxy(stack.gcs.url) as proxy:
            proxy.set_delay(plan.latency_ms / 1e3, plan.bandwidth_mb_s * 1e6)
            uploader = _Uploader(stack)
            for c in plan.levels:
                _log(f"throughput: concurrency {c}")
                row, how = _level(stack, proxy, uploader, c, image, large, plan, cpu)
                rows.append(row)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "status": "measured",
        "storage_latency_ms": plan.latency_ms,
        "storage_bandwidth_mb_s": plan.bandwidth_mb_s,
        "storage_source": STORAGE_SOURCE,
        "pinning": how,
        "cpu": cpu,
        "num_threads": plan.num_threads,
        "configured_concurrency": plan.configured_concurrency,
        "image": image.stem,
        "large_image": large.stem,
        "warmup_requests": {str(c): warmup_count(c) for c in plan.levels},
        "rows": rows,
        "note": (
            "one instance (functions-framework, gunicorn, 1 worker, THREADS = concurrency) pinned "
            "to one CPU; push bodies POSTed straight to it, exactly `concurrency` in flight; "
            "peak RSS after the timed requests and one round of `concurrency` 12 MP uploads"
        ),
    }


def warmup_count(concurrency: int) -> int:
    """Untimed requests before a level: the model load and one interpreter per server thread."""
    return 2 * concurrency


class _Uploader:
    """Uploads copies of an image under fresh names; returns the push bodies announcing them."""

    def __init__(self, stack: Any) -> None:
        from segment import clients

        self.stack = stack
        self.storage = clients.storage_client(stack.endpoints)
        self.counter = itertools.count()

    def __call__(self, path: Path, count: int, prefix: str) -> list[bytes]:
        from segment import notifier

        bucket = self.storage.bucket(self.stack.names.input_bucket)
        bodies = []
        for _ in range(count):
            i = next(self.counter)
            blob = bucket.blob(f"{prefix}/{i}{path.suffix}")
            blob.upload_from_filename(str(path), content_type="image/jpeg")
            data, attributes = notifier.notification_message(notifier.object_resource(blob))
            body = push_body(
                json.loads(data), attributes, str(i), self.stack.pipeline.push_subscription
            )
            bodies.append(json.dumps(body).encode())
        return bodies


def _level(
    stack: Any,
    proxy: Any,
    uploader: _Uploader,
    c: int,
    image: Path,
    large: Path,
    plan: Plan,
    cpu: int,
) -> tuple[dict[str, Any], str]:
    """One concurrency level on a fresh, pinned function process (module docstring)."""
    out = stack.names.output_bucket
    warm = uploader(image, warmup_count(c), f"c{c}/warm")
    timed = uploader(image, plan.images_per_level, f"c{c}/timed")
    big = uploader(large, c, f"c{c}/large")
    function = stack.restart_function(
        env={"STORAGE_EMULATOR_HOST": proxy.url, "THREADS": str(c), "CONCURRENCY": str(c)}
    )
    pgid = function.process.pid
    _wait_for_worker(pgid)
    how = pin(group_pids(pgid), cpu)
    parts = urlsplit(stack.pipeline.push_endpoint(function.url))
    target = Target(parts.hostname or "127.0.0.1", parts.port or 80, parts.path)
    drive(target, warm, c)
    masks_before = len(proxy.writes_to(out, "masks/"))
    requests_before = proxy.forwarded
    intervals = drive(target, timed, c)
    storage_requests = proxy.forwarded - requests_before
    masks = len(proxy.writes_to(out, "masks/")) - masks_before
    if masks != len(timed):
        raise LoadError(f"concurrency {c}: {masks} masks written for {len(timed)} requests")
    drive(target, big, c)
    row = level_row(c, intervals)
    row["storage_requests_per_image"] = round(storage_requests / len(timed), 2)
    row.update(group_memory_mib(pgid))
    return row, how


def _wait_for_worker(pgid: int, timeout: float = 30.0) -> None:
    """gunicorn's master binds the port, then forks its worker: wait for both."""
    deadline = time.monotonic() + timeout
    while len(group_pids(pgid)) < 2:
        if time.monotonic() > deadline:
            raise LoadError("the function's gunicorn worker did not start")
        time.sleep(0.05)


def best_row(rows: Sequence[dict[str, Any]], *, p95_factor: float = 2.0) -> dict[str, Any] | None:
    """The fastest level whose p95 stays within `p95_factor` x concurrency 1's: the concurrency
    one would configure. None without a concurrency-1 row."""
    base = next((r for r in rows if r["concurrency"] == 1), None)
    if base is None:
        return None
    allowed = [r for r in rows if r["p95_ms"] <= p95_factor * base["p95_ms"]]
    return max(allowed, key=lambda r: r["images_per_s"], default=base)
