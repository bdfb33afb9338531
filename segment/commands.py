"""What the `segment` subcommands do (segment.cli parses the arguments)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from segment import clients, contact_sheet, function_logs
from segment import upload as uploads_mod
from segment.stack import DEFAULT_MODEL_URI, LocalStack, StackOptions

CONTACT_SHEET = "contact-sheet.png"
EXIT_INCOMPLETE = 1


class UsageError(Exception):
    """A bad combination of arguments or environment (exit 2, with the parser's usage)."""


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt like SIGINT does, so `finally` stops the stack."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(message: str) -> None:
    print(message, flush=True)


def _check_model_uri(model_uri: str) -> None:
    if model_uri.startswith("gs://"):
        return
    missing = [f for f in ("model.tflite", "manifest.json") if not (Path(model_uri) / f).is_file()]
    if missing:
        hint = " (build it with `make model`)" if model_uri == DEFAULT_MODEL_URI else ""
        raise UsageError(f"--model-uri {model_uri}: missing {', '.join(missing)}{hint}")


def _check_files(files: Sequence[Path]) -> list[Path]:
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise UsageError(f"not a file: {', '.join(missing)}")
    return list(files)


# --- segment local run -----------------------------------------------------------------------


def local_run(args: argparse.Namespace) -> int:
    files = _check_files(args.files)
    names = _object_names(files)
    _check_model_uri(args.model_uri)
    out: Path = args.out
    for stale in (out / "masks", out / "errors", out / "logs"):
        shutil.rmtree(stale, ignore_errors=True)
    (out / CONTACT_SHEET).unlink(missing_ok=True)
    log_dir = out / "logs"
    started = time.monotonic()
    with interrupts_raise(), LocalStack(StackOptions(log_dir, args.model_uri)) as stack:
        _say(f"stack up in {time.monotonic() - started:.1f}s (logs: {log_dir})")
        storage = clients.storage_client(stack.endpoints)
        publisher = clients.publisher_client(stack.endpoints)
        done = []
        for path, name in zip(files, names, strict=True):
            done.append(uploads_mod.upload_file(storage, stack.names.input_bucket, path, name))
            uploads_mod.notify(publisher, stack.pipeline.topic, done[-1])
        _say(f"uploaded and notified {len(done)} file(s); waiting for the function")
        found = uploads_mod.wait_for_outputs(
            storage,
            stack.names.output_bucket,
            done,
            timeout=args.timeout,
            on_output=lambda o: _say(f"  {o.upload.name}: {_describe(o)}"),
        )
        function_log = stack.function_log
    return _report(out, done, found, function_log)


def _object_names(files: Sequence[Path], prefix: str = "") -> list[str]:
    try:
        return uploads_mod.object_names(files, prefix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _describe(output: uploads_mod.Output) -> str:
    if output.kind == "error":
        return f"error record ({output.error_reason}) {output.object_name}"
    return f"mask {output.object_name}"


def _report(
    out: Path,
    done: Sequence[uploads_mod.Upload],
    found: dict[str, uploads_mod.Output],
    function_log: Path,
) -> int:
    rows = []
    for item in done:
        output = found.get(item.name)
        if output is not None:
            output.save(out)
        rows.append(
            contact_sheet.Row(
                name=item.name,
                input_path=item.path,
                mask_png=output.data if output and output.kind == "mask" else None,
                error=output.error_reason if output and output.kind == "error" else None,
            )
        )
    sheet = contact_sheet.write(rows, out / CONTACT_SHEET)
    records = function_logs.summaries(function_log)
    table_rows = []
    for item in done:
        matching = function_logs.for_object(records, item.name, item.generation)
        table_rows.append((item.name, matching[0] if matching else None))
    _say("\nper-image timings from the function's log (ms):")
    _say(function_logs.timing_table(table_rows))
    _say(f"\nmasks: {out / 'masks'}  errors: {out / 'errors'}  contact sheet: {sheet}")
    missing = [item.name for item in done if item.name not in found]
    if missing:
        print(f"segment: no mask or error record for: {', '.join(missing)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


# --- segment local up ------------------------------------------------------------------------


def local_up(args: argparse.Namespace) -> int:
    _check_model_uri(args.model_uri)
    with interrupts_raise(), LocalStack(StackOptions(args.log_dir, args.model_uri)) as stack:
        _say("Local stack is up. In another shell:\n")
        for key, value in stack.env().items():
            _say(f"export {key}={value}")
        _say(
            "\nsegment upload samples/pet-01.jpg --wait --out out/up"
            f"\n\nlogs: {args.log_dir}  (function: {stack.function_log})\nCtrl-C stops everything."
        )
        try:
            while True:
                for process in stack.processes:
                    if process.process.poll() is not None:
                        print(
                            f"segment: {process.name} exited ({process.process.returncode}):\n"
                            f"{process.output_tail(2000)}",
                            file=sys.stderr,
                        )
                        return EXIT_INCOMPLETE
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("stopping")
    return 0


# --- segment upload --------------------------------------------------------------------------


def upload(args: argparse.Namespace) -> int:
    files = _check_files(args.files)
    names = _object_names(files, args.prefix)
    endpoints = clients.Endpoints.from_env()
    bucket = args.bucket or os.environ.get("SEGMENT_INPUT_BUCKET")
    if not bucket:
        raise UsageError("--bucket is required (or set SEGMENT_INPUT_BUCKET)")
    topic = args.notify_topic or os.environ.get("SEGMENT_NOTIFY_TOPIC")
    if endpoints.storage_emulator and not topic:
        raise UsageError(
            "STORAGE_EMULATOR_HOST is set, and no storage emulator publishes bucket "
            "notifications: pass --notify-topic or set SEGMENT_NOTIFY_TOPIC "
            "(`segment local up` prints it)"
        )
    if topic and endpoints.storage_emulator and not endpoints.pubsub_emulator:
        raise UsageError(
            "on emulators, set PUBSUB_EMULATOR_HOST too (`segment local up` prints it)"
        )
    output_bucket = args.output_bucket or os.environ.get("SEGMENT_OUTPUT_BUCKET")
    if args.wait and not output_bucket:
        raise UsageError("--wait needs --output-bucket (or SEGMENT_OUTPUT_BUCKET)")
    if args.out and not args.wait:
        raise UsageError("--out needs --wait")

    storage = clients.storage_client(endpoints)
    publisher = clients.publisher_client(endpoints) if topic else None
    done = []
    with interrupts_raise():
        for path, name in zip(files, names, strict=True):
            item = uploads_mod.upload_file(storage, bucket, path, name)
            done.append(item)
            note = ""
            if publisher is not None:
                message_id = uploads_mod.notify(publisher, topic, item)
                note = f" (notified {topic}, message {message_id})"
            _say(f"uploaded gs://{bucket}/{name}#{item.generation}{note}")
        if not args.wait:
            return 0
        found = uploads_mod.wait_for_outputs(
            storage,
            output_bucket,
            done,
            timeout=args.timeout,
            on_output=lambda o: _say(f"  {o.upload.name}: {_describe(o)}"),
        )
    for output in found.values():
        if args.out:
            _say(f"  saved {output.save(args.out)}")
    missing = [item.name for item in done if item.name not in found]
    if missing:
        print(f"segment: timed out waiting for: {', '.join(missing)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0
