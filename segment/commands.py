"""What the `segment` subcommands do (segment.cli parses the arguments)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from segment import backfill as backfill_mod
from segment import clients, contact_sheet, function_logs, ratelimit
from segment import dlq as dlq_mod
from segment import models as models_mod
from segment import outputs as outputs_mod
from segment import upload as uploads_mod
from segment.progress import Progress
from segment.stack import DEFAULT_MODEL_URI, LocalStack, StackOptions

CONTACT_SHEET = "contact-sheet.png"
EXIT_INCOMPLETE = 1


class UsageError(Exception):
    """A bad combination of arguments or environment (exit 2, with the parser's usage)."""


class MissingOptionError(UsageError):
    """`option` has no value (nor a default from its environment variable, which segment.cli
    declares and names in the message): required always, or `when` something else holds."""

    def __init__(self, option: str, when: str = "", hint: str = "") -> None:
        super().__init__(f"{option} is required {when}".strip())
        self.option, self.when, self.hint = option, when, hint


def _require(value: str | None, option: str) -> str:
    if not value:
        raise MissingOptionError(option)
    return value


def _endpoints(
    args: argparse.Namespace, endpoints: clients.Endpoints | None = None
) -> clients.Endpoints:
    """The endpoints this command talks to (from the environment unless given), kept on `args`
    so that a network failure names them (segment.cli)."""
    args.endpoints = endpoints or clients.Endpoints.from_env()
    return args.endpoints


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
        endpoints = _endpoints(args, stack.endpoints)
        storage = clients.storage_client(endpoints)
        publisher = clients.publisher_client(endpoints)
        done = []
        for path, name in zip(files, names, strict=True):
            done.append(uploads_mod.upload_file(storage, stack.names.input_bucket, path, name))
            uploads_mod.notify(publisher, stack.pipeline.topic, done[-1])
        _say(f"uploaded and notified {len(done)} file(s); waiting for the function")
        found = _wait(storage, stack.names.output_bucket, done, args.timeout)
        function_log = stack.function_log
    return _report(out, done, found, function_log)


def _object_names(files: Sequence[Path], prefix: str = "") -> list[str]:
    try:
        return uploads_mod.object_names(files, prefix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _describe(output: outputs_mod.OutputRecord) -> str:
    if output.kind == outputs_mod.ERROR:
        return f"error record ({output.error_reason}) {output.name}"
    return f"mask {output.name}"


def _wait(
    storage: Any, output_bucket: str, done: Sequence[uploads_mod.Upload], timeout: float
) -> dict[str, outputs_mod.OutputRecord]:
    """Waits for each upload's mask or error record, a line (and a bar tick) as each comes."""
    with Progress("waiting for outputs", total=len(done), unit="output") as progress:

        def arrived(name: str, output: outputs_mod.OutputRecord) -> None:
            progress.say(f"  {name}: {_describe(output)}")
            progress.update()

        return outputs_mod.wait_for_outputs(
            storage,
            output_bucket,
            uploads_mod.generations(done),
            timeout=timeout,
            on_output=arrived,
        )


def _report(
    out: Path,
    done: Sequence[uploads_mod.Upload],
    found: dict[str, outputs_mod.OutputRecord],
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
                mask_png=output.data if output and output.kind == outputs_mod.MASK else None,
                error=output.error_reason if output else None,
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
    endpoints = _endpoints(args)
    bucket = _require(args.bucket, "--bucket")
    topic = args.notify_topic
    if endpoints.storage_emulator and not topic:
        raise MissingOptionError(
            "--notify-topic",
            f"when {clients.STORAGE_EMULATOR_ENV} is set: no storage emulator publishes bucket "
            "notifications",
            "`segment local up` prints it",
        )
    if topic and endpoints.storage_emulator and not endpoints.pubsub_emulator:
        raise UsageError(
            f"on emulators, set {clients.PUBSUB_EMULATOR_ENV} too (`segment local up` prints it)"
        )
    output_bucket = args.output_bucket
    if args.wait and not output_bucket:
        raise MissingOptionError("--output-bucket", "with --wait")
    if args.out and not args.wait:
        raise UsageError("--out needs --wait")

    storage = clients.storage_client(endpoints)
    publisher = None  # made after the first upload: a storage failure is reported first
    done = []
    with interrupts_raise():
        for path, name in zip(files, names, strict=True):
            item = uploads_mod.upload_file(storage, bucket, path, name)
            done.append(item)
            note = ""
            if topic:
                if publisher is None:
                    publisher = clients.publisher_client(endpoints)
                message_id = uploads_mod.notify(publisher, topic, item)
                note = f" (notified {topic}, message {message_id})"
            _say(f"uploaded gs://{bucket}/{name}#{item.generation}{note}")
        if not args.wait:
            return 0
        found = _wait(storage, output_bucket, done, args.timeout)
    for output in found.values():
        if args.out:
            _say(f"  saved {output.save(args.out)}")
    missing = [item.name for item in done if item.name not in found]
    if missing:
        print(f"segment: timed out waiting for: {', '.join(missing)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


# --- operations: shared helpers --------------------------------------------------------------


def _split_gs_uri(uri: str, *, what: str) -> tuple[str, str]:
    """`gs://BUCKET/REST` -> (BUCKET, REST); REST may be empty."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise UsageError(f"{what} must look like gs://BUCKET/... (got {uri!r})")
    bucket, _, rest = uri[len("gs://") :].partition("/")
    if not bucket:
        raise UsageError(f"{what} must look like gs://BUCKET/... (got {uri!r})")
    return bucket, rest


def _check_resource(path: str, kind: str, option: str, project: str | None) -> str:
    """`projects/P/KIND/NAME`; a bare NAME (as `terraform output` prints it) gets `project`
    (the endpoints' project: GOOGLE_CLOUD_PROJECT)."""
    if "/" not in path and path:
        if not project:
            raise UsageError(
                f"{option} {path}: give projects/P/{kind}/{path}, or set GOOGLE_CLOUD_PROJECT"
            )
        path = f"projects/{project}/{kind}/{path}"
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != kind or not all(parts):
        raise UsageError(f"{option} must look like projects/P/{kind}/NAME (got {path!r})")
    return path


def _check_emulator_pair(endpoints: clients.Endpoints) -> None:
    if endpoints.storage_emulator and not endpoints.pubsub_emulator:
        raise UsageError(
            f"{clients.STORAGE_EMULATOR_ENV} is set but {clients.PUBSUB_EMULATOR_ENV} is not: on "
            "emulators set both (`segment local up` prints them)"
        )


def _output_label(output: outputs_mod.OutputRecord, generation: int | None) -> str:
    """`current mask`, `stale error record (not_an_image)`, `mask (object gone)`, ..."""
    what = "mask"
    if output.kind == outputs_mod.ERROR:
        reason = output.error_reason
        what = f"error record ({reason})" if reason else "error record"
    if generation is None:
        return f"{what} (object gone)"
    return f"{output.freshness(generation)} {what}"


# --- segment backfill ------------------------------------------------------------------------


def backfill(args: argparse.Namespace) -> int:
    bucket, prefix = _split_gs_uri(args.source, what="SOURCE")
    output_bucket = _require(args.output_bucket, "--output-bucket")
    endpoints = _endpoints(args)
    topic = args.notify_topic
    if topic:
        topic = _check_resource(topic, "topics", "--notify-topic", endpoints.project)
    elif not args.dry_run:
        raise MissingOptionError("--notify-topic", "unless --dry-run")
    try:
        rate = ratelimit.parse_rate(args.rate)
    except ValueError as exc:
        raise UsageError(f"--rate: {exc}") from None
    if bucket == output_bucket:
        raise UsageError("the output bucket is the input bucket: the function refuses its events")
    _check_emulator_pair(endpoints)
    storage = clients.storage_client(endpoints)
    publisher = None if args.dry_run else clients.publisher_client(endpoints)
    limiter = ratelimit.RateLimiter(rate)
    verb = "would publish" if args.dry_run else "published"
    bar = Progress("backfill", unit="object")

    def progress(decision: backfill_mod.Decision, message_id: str | None) -> None:
        blob = decision.blob
        where = f"gs://{bucket}/{blob.name}#{blob.generation}"
        if decision.action == backfill_mod.PUBLISH:
            note = f" (message {message_id})" if message_id else ""
            bar.say(f"  {verb} {where}{note}")
        elif decision.action == backfill_mod.SKIP_CURRENT:
            labels = ", ".join(_output_label(o, int(blob.generation)) for o in decision.outputs)
            bar.say(f"  skip {where}: {labels}")
        else:
            bar.say(f"  skip {where}: {decision.action}")
        bar.update()

    _say(
        f"backfill gs://{bucket}/{prefix} -> {topic or '(dry run, no topic)'} at most "
        f"{rate:g}/s{' (dry run: publishes nothing)' if args.dry_run else ''}"
    )
    if args.state is not None:
        try:
            last, _ = backfill_mod.load_state(args.state, backfill_mod.source_uri(bucket, prefix))
        except backfill_mod.StateError as exc:
            raise UsageError(str(exc)) from None
        if last is not None:
            _say(f"resuming after {last} (state file {args.state}; delete it to start over)")
    with interrupts_raise(), bar:
        try:
            report = backfill_mod.run(
                storage,
                publisher,
                bucket=bucket,
                prefix=prefix,
                output_bucket=output_bucket,
                topic=topic or "",
                limiter=limiter,
                state_path=args.state,
                dry_run=args.dry_run,
                on_decision=progress,
            )
        except backfill_mod.StateError as exc:
            raise UsageError(str(exc)) from None
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    _say(
        f"examined {report.examined} object(s): {verb} {report.published}, skipped {skipped}"
        + (f"; state: {args.state}" if args.state and not args.dry_run else "")
    )
    return 0


# --- segment dlq list / replay ---------------------------------------------------------------

LOG_HINT = (
    "The reason a message was dead-lettered is not in the message: find the function's summary "
    "log lines for its object and generation (outcome transient_error, configuration_error or "
    "internal_error): the `logs:` filter above, for `gcloud logging read` (locally: grep the "
    "function log for the object). See docs/operations.md."
)


def _dlq_subscription(args: argparse.Namespace, endpoints: clients.Endpoints) -> str:
    subscription = _require(args.subscription, "--subscription")
    return _check_resource(subscription, "subscriptions", "--subscription", endpoints.project)


def _describe_dead_letter(index: int, message: dlq_mod.DeadLetter) -> str:
    first = message.attributes.get(dlq_mod.SOURCE_PUBLISH_TIME, "unknown")
    dead = message.publish_time.isoformat() if message.publish_time else "unknown"
    return (
        f"{index:3d}. {message.object_uri or '(no bucketId/objectId attributes)'}"
        f"  generation {message.generation or '?'}"
        f"  event {message.event_type or '?'}\n"
        f"     delivery attempts {message.attempts}  first published {first}"
        f"  dead-lettered {dead}  message {message.message_id}\n"
        f"     logs: {_log_filter(message)}"
    )


def _log_filter(message: dlq_mod.DeadLetter) -> str:
    """The Cloud Logging filter for the function's summary lines about this message's upload."""
    name = json.dumps(message.object_name or "")
    generation = json.dumps(message.generation or "")
    return f"jsonPayload.object={name} AND jsonPayload.generation={generation}"


def _dead_letter_json(message: dlq_mod.DeadLetter) -> dict[str, object]:
    return {
        "message_id": message.message_id,
        "object": message.object_uri,
        "bucket": message.bucket,
        "name": message.object_name,
        "generation": message.generation,
        "event_type": message.event_type,
        "delivery_attempts": message.attempts,
        "first_published": message.attributes.get(dlq_mod.SOURCE_PUBLISH_TIME),
        "dead_lettered": message.publish_time.isoformat() if message.publish_time else None,
        "log_filter": _log_filter(message),
        "attributes": dict(sorted(message.attributes.items())),
    }


def dlq_list(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    subscription = _dlq_subscription(args, endpoints)
    subscriber = clients.subscriber_client(endpoints)
    if not args.json:
        _say(f"dead-lettered messages in {subscription} (pulled and released, none consumed):")
    messages = dlq_mod.list_messages(subscriber, subscription, args.limit)
    if args.json:
        document = {
            "subscription": subscription,
            "limit": args.limit,
            "limit_reached": len(messages) >= args.limit,
            "count": len(messages),
            "messages": [_dead_letter_json(message) for message in messages],
        }
        _say(json.dumps(document, indent=2))
        return 0
    for index, message in enumerate(messages, 1):
        _say(_describe_dead_letter(index, message))
    more = " (the --limit; there may be more)" if len(messages) >= args.limit else ""
    _say(f"{len(messages)} message(s){more}")
    if messages:
        _say(LOG_HINT)
        _say(f"After a fix: segment dlq replay --subscription {subscription} --topic TOPIC")
    return 0


def dlq_replay(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args)
    subscription = _dlq_subscription(args, endpoints)
    topic = _check_resource(_require(args.topic, "--topic"), "topics", "--topic", endpoints.project)
    subscriber = clients.subscriber_client(endpoints)
    publisher = None if args.dry_run else clients.publisher_client(endpoints)
    index = 0
    bar = Progress("replay", unit="message")

    def progress(message: dlq_mod.DeadLetter, message_id: str | None) -> None:
        nonlocal index
        index += 1
        bar.say(_describe_dead_letter(index, message))
        if message_id:
            bar.say(f"     replayed to {topic} as message {message_id}; acked on the DLQ")
        else:
            bar.say(f"     would replay to {topic} (dry run)")
        bar.update()

    _say(
        f"replay {subscription} -> {topic}"
        + (" (dry run: publishes and acks nothing)" if args.dry_run else "")
    )
    with interrupts_raise(), bar:
        count = dlq_mod.replay(
            subscriber,
            publisher,
            subscription=subscription,
            topic=topic,
            limit=args.limit,
            dry_run=args.dry_run,
            on_message=progress,
        )
    _say(f"{'would replay' if args.dry_run else 'replayed'} {count} message(s)")
    return 0


# --- segment status --------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    bucket, name = _split_gs_uri(args.object, what="OBJECT")
    if not name or name.endswith("/"):
        raise UsageError(f"OBJECT must name an object, gs://BUCKET/NAME (got {args.object!r})")
    output_bucket = _require(args.output_bucket, "--output-bucket")
    storage = clients.storage_client(_endpoints(args))
    blob = storage.bucket(bucket).get_blob(
        name, retry=clients.storage_retry(), timeout=clients.STORAGE_TIMEOUT
    )
    generation = int(blob.generation) if blob is not None else None
    found = outputs_mod.find_outputs(storage, output_bucket, name)
    if args.json:
        _say(json.dumps(_status_json(bucket, name, blob, found), indent=2))
        return 0
    if blob is None:
        _say(f"gs://{bucket}/{name}: object not found (deleted, or not uploaded yet)")
    else:
        _say(f"gs://{bucket}/{name}: generation {generation}, {blob.size} bytes")
    if not found:
        _say("  nothing yet: no mask and no error record")
    for output in found:
        _say(f"  {_output_label(output, generation)}: {output.uri}")
        source = output.source_generation
        _say(
            f"    source generation {source if source is not None else '?'}"
            f" vs object generation {generation if generation is not None else '(gone)'}"
        )
        for key in sorted(output.metadata):
            _say(f"    {key}: {output.metadata[key]}")
    return 0


def _status_json(
    bucket: str, name: str, blob: Any, found: Sequence[outputs_mod.OutputRecord]
) -> dict[str, object]:
    """`segment status --json`: the object, its outputs and whether it is processed."""
    generation = int(blob.generation) if blob is not None else None
    return {
        "object": {
            "uri": f"gs://{bucket}/{name}",
            "bucket": bucket,
            "name": name,
            "exists": blob is not None,
            "generation": generation,
            "size": int(blob.size) if blob is not None else None,
        },
        "processed": generation is not None and outputs_mod.is_processed(found, generation),
        "outputs": [
            {
                "kind": output.kind,
                "uri": output.uri,
                "bucket": output.bucket,
                "name": output.name,
                "freshness": output.freshness(generation) if generation is not None else "gone",
                "source_generation": output.source_generation,
                "error_reason": output.error_reason,
                "updated": output.updated.isoformat() if output.updated else None,
                "metadata": dict(sorted(output.metadata.items())),
            }
            for output in found
        ],
    }


# --- segment models list / promote / rollback / compare --------------------------------------


def _registry(args: argparse.Namespace) -> models_mod.Registry:
    base = _require(args.registry, "--registry")
    endpoints = _endpoints(args)
    return models_mod.open_registry(base, gcs_client=lambda: clients.storage_client(endpoints))


def models_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    state = models_mod.read_pointer(registry)
    entries = models_mod.list_versions(registry)
    if args.json:
        _say(json.dumps(models_mod.list_json(registry, state, entries), indent=2))
    else:
        _say(models_mod.list_text(registry, state, entries))
    return 0


def _report_move(move: models_mod.Move) -> None:
    if not move.moved:
        _say(f"{move.pointer_uri} already names {move.to_version}: nothing to do")
        return
    history = move.pointer.get("previous") or []
    _say(
        f"{move.action}: {move.pointer_uri} now names {move.to_version} "
        f"(was {move.from_version or 'nothing'}; rollback would go to "
        f"{history[0] if history else 'nothing'}). Warm instances follow within "
        "MODEL_REFRESH_SECONDS; new instances at once."
    )


def models_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    _report_move(models_mod.promote(registry, args.version))
    return 0


def models_rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    _report_move(models_mod.rollback(registry))
    return 0


def models_compare(args: argparse.Namespace) -> int:
    output_bucket = _require(args.output_bucket, "--output-bucket")
    storage = clients.storage_client(_endpoints(args))
    metadatas = models_mod.mask_metadata(
        storage, output_bucket, prefix=args.prefix, since=args.since
    )
    comparison = models_mod.summarise(metadatas)
    where = f"gs://{output_bucket}/masks/{args.prefix}"
    if args.json:
        context = {
            "output_bucket": output_bucket,
            "prefix": args.prefix,
            "since": args.since.isoformat() if args.since else None,
        }
        _say(json.dumps(models_mod.compare_json(comparison, **context), indent=2))
        return 0
    since = f" since {args.since.isoformat()}" if args.since else ""
    _say(models_mod.compare_text(comparison, where + since))
    return 0
