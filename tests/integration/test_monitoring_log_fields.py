"""The log-based metrics of infra/monitoring read fields the function really logs.

Runs the local stack (real emulators, the function under functions-framework), uploads a real
sample and a non-image, collects the function's JSON summary lines and turns each into the log
entry Cloud Run would make of it (`severity` becomes the entry's severity, every other key lands
in jsonPayload). Then, for every instance of the google_logging_metric resources of
infra/monitoring/main.tf (parsed with python-hcl2 as tools/iac does; for_each, locals and each.*
evaluated by tests/iac/test_iac_monitoring.py's Evaluator, variables kept as <var.x> markers): its
filter must match some of those entries, and in every entry it matches, its value extractor must
find a number and each label extractor a field that is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from segmentation.results import Outcome

from segment import function_logs, notifier
from tests.conftest import REPO_ROOT
from tests.iac.test_iac_monitoring import Evaluator
from tests.integration.conftest import wait_until
from tools.iac.hcl import Module, load_config

pytestmark = pytest.mark.integration

MONITORING = REPO_ROOT / "infra" / "monitoring"
SAMPLE = REPO_ROOT / "samples" / "pet-02.png"
IMAGE_NAME = "monitoring/pet-02.png"
NOT_AN_IMAGE_NAME = "monitoring/notes.txt"
# What Cloud Run takes out of a structured stdout line into the LogEntry itself.
ENTRY_FIELDS = ("severity",)
EXTRACT = re.compile(r"^EXTRACT\((jsonPayload(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\)$")
# The filter terms the metrics may use: resource terms (not checkable locally) and jsonPayload
# presence (`:*`) or equality (`="value"`) terms, joined by AND.
RESOURCE_TERM = re.compile(r'^resource\.(?:type|labels\.service_name)="[^"]*"$')
PAYLOAD_TERM = re.compile(r'^(jsonPayload(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?::\*|="([^"]*)")$')


@dataclass(frozen=True)
class Metric:
    address: str
    filter: str
    value_path: str | None
    label_paths: dict[str, str]


# --- the Terraform side ----------------------------------------------------------------------


def _module() -> Module:
    return load_config(REPO_ROOT)[MONITORING]


def log_metrics() -> list[Metric]:
    evaluator = Evaluator(_module())
    metrics = []
    for address, body, scope in evaluator.instances("google_logging_metric"):
        value = evaluator.value(body.get("value_extractor"), scope)
        labels = evaluator.value(body.get("label_extractors") or {}, scope)
        metrics.append(
            Metric(
                address=address,
                filter=evaluator.value(body["filter"], scope),
                value_path=_extract_path(value) if value is not None else None,
                label_paths={name: _extract_path(extractor) for name, extractor in labels.items()},
            )
        )
    return metrics


def _extract_path(extractor: str) -> str:
    match = EXTRACT.match(extractor)
    assert match, f"extractor {extractor!r} is not EXTRACT(jsonPayload.<field>)"
    return match.group(1)


def _terms(log_filter: str) -> Iterator[re.Match[str]]:
    """The jsonPayload terms of a filter (resource terms checked for shape and skipped)."""
    for raw in log_filter.split(" AND "):
        term = raw.strip()
        if RESOURCE_TERM.match(term):
            continue
        match = PAYLOAD_TERM.match(term)
        assert match, f"filter term {term!r} is neither a resource term nor a jsonPayload term"
        yield match


# --- the log side ----------------------------------------------------------------------------


def as_log_entry(line: dict[str, Any]) -> dict[str, Any]:
    payload = {k: v for k, v in line.items() if k not in ENTRY_FIELDS}
    return {**{k: line[k] for k in ENTRY_FIELDS if k in line}, "jsonPayload": payload}


_MISSING = object()


def lookup(entry: dict[str, Any], path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def matches(entry: dict[str, Any], log_filter: str) -> bool:
    for term in _terms(log_filter):
        path, wanted = term.group(1), term.group(2)
        value = lookup(entry, path)
        if value is _MISSING or value is None:
            return False
        if wanted is not None and str(value) != wanted:
            return False
    return True


# --- the test --------------------------------------------------------------------------------


def _summary(driver: Any, name: str) -> dict[str, Any]:
    def probe():
        found = function_logs.for_object(driver.summaries(), name)
        return found[-1] if found else None

    return wait_until(probe, timeout=90, what=f"the summary line of {name}")


@pytest.fixture(scope="module")
def log_entries(local_stack) -> list[dict[str, Any]]:
    image = local_stack.upload(IMAGE_NAME, SAMPLE.read_bytes(), "image/png")
    notifier.publish_notification(local_stack.publisher, local_stack.stack.pipeline.topic, image)
    mask_line = _summary(local_stack, IMAGE_NAME)  # first: this invocation loads the model
    junk = local_stack.upload(NOT_AN_IMAGE_NAME, b"just some notes, not pixels\n", "text/plain")
    notifier.publish_notification(local_stack.publisher, local_stack.stack.pipeline.topic, junk)
    error_line = _summary(local_stack, NOT_AN_IMAGE_NAME)
    assert mask_line["outcome"] == Outcome.MASK_WRITTEN, mask_line
    assert error_line["outcome"] == Outcome.ERROR_RECORDED, error_line
    assert error_line["reason"] == "not_an_image"
    return [as_log_entry(line) for line in (mask_line, error_line)]


def test_the_terraform_defines_the_metrics_this_test_checks() -> None:
    addresses = {metric.address for metric in log_metrics()}
    assert {
        'google_logging_metric.this["outcomes"]',
        'google_logging_metric.this["latency"]',
        'google_logging_metric.this["mean_confidence"]',
        'google_logging_metric.this["stage_latency/infer"]',
        'google_logging_metric.this["stage_latency/model_load"]',
        'google_logging_metric.this["class_fraction/border"]',
    } <= addresses


def test_filter_reader_itself() -> None:
    entry = as_log_entry({"severity": "INFO", "outcome": "mask_written", "t": {"x": 1.5}})
    assert "severity" not in entry["jsonPayload"] and entry["severity"] == "INFO"
    assert matches(entry, 'resource.type="cloud_run_revision" AND jsonPayload.t.x:*')
    assert matches(entry, 'jsonPayload.outcome="mask_written"')
    assert not matches(entry, 'jsonPayload.outcome="error_recorded"')
    assert not matches(entry, "jsonPayload.t.y:*")
    assert not matches(entry, "jsonPayload.severity:*")
    with pytest.raises(AssertionError):
        matches(entry, 'jsonPayload.outcome!="x"')


@pytest.mark.parametrize("metric", log_metrics(), ids=lambda m: m.address)
def test_each_metric_reads_fields_the_function_logs(
    metric: Metric, log_entries: list[dict[str, Any]]
) -> None:
    matched = [entry for entry in log_entries if matches(entry, metric.filter)]
    assert matched, f"{metric.address}: filter {metric.filter!r} matches no logged line"
    for entry in matched:
        if metric.value_path is not None:
            value = lookup(entry, metric.value_path)
            shown = "absent" if value is _MISSING else repr(value)
            assert isinstance(value, int | float) and not isinstance(value, bool), (
                f"{metric.address}: {metric.value_path} is {shown} in {entry['jsonPayload']}"
            )
        for label, path in metric.label_paths.items():
            assert lookup(entry, path) is not _MISSING, (
                f"{metric.address}: label {label} reads {path}, absent from {entry['jsonPayload']}"
            )


def test_outcome_metric_sees_both_outcomes(log_entries: list[dict[str, Any]]) -> None:
    [outcomes] = [m for m in log_metrics() if m.address == 'google_logging_metric.this["outcomes"]']
    seen = {lookup(e, outcomes.label_paths["outcome"]) for e in log_entries}
    assert seen == {"mask_written", "error_recorded"}
    reasons = {lookup(e, outcomes.label_paths["reason"]) for e in log_entries}
    assert "not_an_image" in reasons
