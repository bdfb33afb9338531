"""infra/monitoring, offline: the module's layout and variables, the alert policies the service
needs (each check also shown to flag a copy that breaks it), the moves from the addresses of
earlier versions, the root wiring, and the dashboard (dashboard.json renders, and charts only
metrics the module defines).

That the metrics read fields the function really logs is checked against the running function in
tests/integration/test_monitoring_log_fields.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from segmentation.contract import CLASS_NAMES
from segmentation.results import Outcome

from segment.function_logs import STAGES
from tests.iac.conftest import edit
from tools.iac.hcl import (
    BLOCK_MARK,
    REPO_ROOT,
    Module,
    all_blocks,
    expression,
    first_block,
    load_config,
    parse_text,
)

MODULE = "infra/monitoring"
LAYOUT = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
DASHBOARD = REPO_ROOT / MODULE / "dashboard.json"
USER_METRIC = "logging.googleapis.com/user/"


def _module(root: Path) -> Module:
    return load_config(root)[root / MODULE]


# An entry of local.alert_policies made only when a condition is false: `COND ? null : {...}`.
OPTIONAL_ENTRY = re.compile(r"^\$\{.+? \? null : (\{.*\})\}$", re.DOTALL)
# What a policy's body reads from its entry: each.value.PATH, or try(each.value.PATH, null).
EACH_VALUE = re.compile(r"^(?:each\.value\.([\w.]+)|try\(each\.value\.([\w.]+), null\))$")


def _entry(value: Any) -> dict[str, Any]:
    """One entry of local.alert_policies as an object (an optional one as the policy it makes)."""
    if isinstance(value, dict):
        return value
    match = OPTIONAL_ENTRY.match(value) if isinstance(value, str) else None
    assert match, f"unsupported local.alert_policies entry {value!r}"
    return parse_text(f"entry = {match.group(1)}\n")["entry"]


def _fill(node: Any, entry: dict[str, Any]) -> Any:
    """A policy body with each whole each.value.PATH (or try(..., null)) replaced by the entry's."""
    if isinstance(node, dict):
        return {key: _fill(value, entry) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, entry) for value in node]
    match = EACH_VALUE.match(expression(node) or "")
    if not match:
        return node
    value: Any = entry
    for part in (match.group(1) or match.group(2)).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _policies(module: Module) -> dict[str, dict[str, Any]]:
    """Every alert policy the module can make, by name: the body of a plain policy resource, or
    of the one that iterates over local.alert_policies with each entry filled in."""
    entries = module.locals().get("alert_policies") or {}
    policies = {}
    for block in module.resources("google_monitoring_alert_policy"):
        for_each = block.body.get("for_each")
        if for_each is None:
            policies[block.labels[1]] = block.body
            continue
        assert "local.alert_policies" in str(for_each), f"{block.address}: for_each {for_each!r}"
        for name, entry in entries.items():
            policies[name] = _fill(block.body, _entry(entry))
    return policies


def _threshold(policy: dict[str, Any]) -> dict[str, Any]:
    condition = first_block(policy, "conditions") or {}
    return first_block(condition, "condition_threshold") or {}


def _aggregation(threshold: dict[str, Any]) -> dict[str, Any]:
    return first_block(threshold, "aggregations") or {}


# --- reading the module's data ------------------------------------------------------------------
# The log-based metrics are instances of one resource whose for_each is built by merge() and
# {for ...} expressions over locals; tests/integration/test_monitoring_log_fields.py reads them
# through this too.

FOR_EXPRESSION = re.compile(r"\{for (\w+)(?:, (\w+))? in (.+?) : (.+?) => (.+)\}", re.DOTALL)
CALL = re.compile(r"(\w+)\((.*)\)", re.DOTALL)
REFERENCE = re.compile(r'[A-Za-z_]\w*(?:\.[A-Za-z_][\w-]*|\["[^"]*"\])*')


def _template_parts(text: str) -> list[tuple[bool, str]]:
    """A string as (is_expression, text) parts: its literal text and the insides of its ${...}."""
    parts, at = [], 0
    while (start := text.find("${", at)) >= 0:
        depth, end = 0, start + 1
        while end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        parts += [(False, text[at:start]), (True, text[start + 2 : end])]
        at = end + 1
    return [(is_expr, part) for is_expr, part in [*parts, (False, text[at:])] if is_expr or part]


def _top_level(text: str, separator: str = ",") -> list[str]:
    """``text`` split at the separators outside brackets and strings."""
    parts, depth, quoted, start, at = [], 0, False, 0, 0
    while at < len(text):
        char = text[at]
        if quoted:
            at += char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            assert depth >= 0, f"unbalanced {text!r}"
        elif char == separator and depth == 0:
            parts.append(text[start:at])
            start = at + 1
        at += 1
    return [*parts, text[start:]]


class Evaluator:
    """Values of a module's expressions, in the subset its data uses: literals, string templates,
    references (local.X, each.key, each.value, for variables, then .attr and ["key"]; var.X stays
    the text <var.X>), merge(), keys(), toset() and {for ...} expressions without an if clause.
    Anything else fails, so a new construct in the module cannot be misread silently."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self._locals = module.locals()
        self._cache: dict[str, Any] = {}

    def instances(self, rtype: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(address, body, scope) of every instance of the resources of type ``rtype``."""
        found = []
        for block in self.module.resources(rtype):
            if "for_each" not in block.body:
                found.append((block.address, block.body, {}))
                continue
            each = self.value(block.body["for_each"], {})
            items = each.items() if isinstance(each, dict) else ((key, key) for key in each)
            for key, value in items:
                scope = {"each": {"key": key, "value": value}}
                found.append((f'{block.address}["{key}"]', block.body, scope))
        return found

    def value(self, node: Any, scope: dict[str, Any]) -> Any:
        if isinstance(node, dict):
            return {k: self.value(v, scope) for k, v in node.items() if k != BLOCK_MARK}
        if isinstance(node, list):
            return [self.value(item, scope) for item in node]
        if not isinstance(node, str):
            return node
        parts = _template_parts(node)
        if len(parts) == 1 and parts[0][0]:
            return self.expression(parts[0][1], scope)
        return "".join(
            self._text(self.expression(part, scope)) if is_expr else part for is_expr, part in parts
        )

    def expression(self, text: str, scope: dict[str, Any]) -> Any:
        text = text.strip()
        if text == "null":
            return None
        if match := FOR_EXPRESSION.fullmatch(text):
            return self._for(*match.groups(), scope)
        if match := CALL.fullmatch(text):
            args = [self.expression(arg, scope) for arg in _top_level(match.group(2))]
            return self._call(match.group(1), args)
        if REFERENCE.fullmatch(text):
            return self._reference(text, scope)
        literal = parse_text(f"value = {text}\n")["value"]
        assert literal != f"${{{text}}}", f"unsupported expression {text!r}"
        return self.value(literal, scope)

    def _for(self, first, second, collection, key, value, scope) -> dict[str, Any]:
        items = self.expression(collection, scope)
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        result = {}
        for k, v in pairs:
            inner = {**scope, first: k, second: v} if second else {**scope, first: v}
            result[self._text(self.expression(key, inner))] = self.expression(value, inner)
        return result

    @staticmethod
    def _call(name: str, args: list[Any]) -> Any:
        if name == "merge":
            assert all(isinstance(arg, dict) for arg in args), args
            return {k: v for arg in args for k, v in arg.items()}
        if name == "keys":
            return sorted(args[0])
        if name == "toset":
            return sorted(set(args[0]))
        raise AssertionError(f"unsupported function {name}()")

    def _reference(self, text: str, scope: dict[str, Any]) -> Any:
        parts = [p[2:-2] if p[0] == "[" else p for p in re.findall(r'\["[^"]*"\]|[\w-]+', text)]
        if parts[0] == "var":
            assert len(parts) == 2, text
            return f"<var.{parts[1]}>"
        if parts[0] == "local":
            if parts[1] not in self._cache:
                self._cache[parts[1]] = self.value(self._locals[parts[1]], {})
            value, rest = self._cache[parts[1]], parts[2:]
        else:
            assert parts[0] in scope, f"cannot resolve {text!r}"
            value, rest = scope[parts[0]], parts[1:]
        for part in rest:
            value = value[part]
        return value

    @staticmethod
    def _text(value: Any) -> str:
        assert value is not None, "null in a string template"
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def monitoring_problems(root: Path) -> list[str]:
    """What the service needs from infra/monitoring; empty when all is there."""
    module = _module(root)
    policies = _policies(module)
    problems = []

    def policy_where(predicate) -> list[str]:
        return [name for name, body in policies.items() if predicate(_threshold(body))]

    def filt(threshold: dict[str, Any]) -> str:
        return str(threshold.get("filter", ""))

    wanted = {
        "dead-letter backlog": lambda t: (
            "subscription/num_undelivered_messages" in filt(t)
            and "${var.dead_letter_subscription}" in filt(t)
        ),
        "push subscription's oldest unacked age": lambda t: (
            "subscription/oldest_unacked_message_age" in filt(t)
            and "${var.push_subscription}" in filt(t)
        ),
        "error-record rate": lambda t: (
            "${local.metric_types.outcomes}" in filt(t)
            and 'metric.label.outcome="error_recorded"' in filt(t)
            and _aggregation(t).get("per_series_aligner") == "ALIGN_RATE"
        ),
        "p95 latency": lambda t: (
            "${local.metric_types.latency}" in filt(t)
            and _aggregation(t).get("cross_series_reducer") == "REDUCE_PERCENTILE_95"
        ),
        "mean confidence below the baseline": lambda t: (
            "${local.metric_types.mean_confidence}" in filt(t)
            and t.get("comparison") == "COMPARISON_LT"
            and expression(t.get("threshold_value")) == "local.confidence_floor"
        ),
    }
    for what, predicate in wanted.items():
        if not policy_where(predicate):
            problems.append(f"no alert policy on the {what}")
    floor = str(module.locals().get("confidence_floor", ""))
    if not re.search(r"var\.mean_confidence_baseline\s*-\s*var\.mean_confidence_margin", floor):
        problems.append(
            "confidence_floor must be mean_confidence_baseline - mean_confidence_margin"
        )
    for name, body in policies.items():
        if expression(body.get("notification_channels")) != "local.notification_channels":
            problems.append(f"alert policy {name} does not notify local.notification_channels")
        if not all_blocks(body, "documentation"):
            problems.append(f"alert policy {name} has no documentation")
    return problems


# --- the repository ----------------------------------------------------------------------------


def test_standard_layout() -> None:
    for name in LAYOUT:
        assert (REPO_ROOT / MODULE / name).is_file(), name


def test_variables_are_typed_described_and_safe_by_default() -> None:
    variables = _module(REPO_ROOT).variables()
    for name, body in variables.items():
        assert body.get("type") and len(str(body.get("description", ""))) > 20, name
    assert variables["notification_email"]["default"] is None
    assert variables["mean_confidence_baseline"]["default"] is None
    assert 0 < variables["mean_confidence_margin"]["default"] < 1
    assert variables["dead_letter_backlog_threshold"]["default"] == 0


def test_the_service_has_every_alert_it_needs() -> None:
    assert monitoring_problems(REPO_ROOT) == []


def test_metrics_cover_the_functions_stages_and_classes() -> None:
    local_values = _module(REPO_ROOT).locals()
    assert tuple(local_values["stages"]) == STAGES
    assert tuple(local_values["classes"]) == CLASS_NAMES


def test_outcome_values_in_filters_are_real_outcomes() -> None:
    texts = [DASHBOARD.read_text()]
    for body in _policies(_module(REPO_ROOT)).values():
        texts.append(str(_threshold(body).get("filter", "")))
    named = set()
    for raw in texts:
        text = raw.replace('\\"', '"')
        named |= set(re.findall(r'metric\.label\.outcome="(\w+)"', text))
        for group in re.findall(r"metric\.label\.outcome=one_of\(([^)]*)\)", text):
            named |= set(re.findall(r'"(\w+)"', group))
    assert named and named <= {str(o) for o in Outcome}, named - {str(o) for o in Outcome}


def test_log_metrics_read_from_the_data() -> None:
    evaluator = Evaluator(_module(REPO_ROOT))
    metrics = {
        address: {
            name: evaluator.value(body.get(name), scope)
            for name in ("name", "filter", "value_extractor", "label_extractors")
        }
        for address, body, scope in evaluator.instances("google_logging_metric")
    }
    summary = (
        'resource.type="cloud_run_revision" AND '
        'resource.labels.service_name="<var.function_name>" AND jsonPayload.outcome:*'
    )
    model_version = {"model_version": "EXTRACT(jsonPayload.model_version)"}
    assert metrics['google_logging_metric.this["outcomes"]'] == {
        "name": "<var.prefix>/outcomes",
        "filter": summary,
        "value_extractor": None,
        "label_extractors": {
            "model_version": "EXTRACT(jsonPayload.model_version)",
            "outcome": "EXTRACT(jsonPayload.outcome)",
            "reason": "EXTRACT(jsonPayload.reason)",
        },
    }
    assert metrics['google_logging_metric.this["stage_latency/model_load"]'] == {
        "name": "<var.prefix>/stage_latency_ms/model_load",
        "filter": f"{summary} AND jsonPayload.timings_ms.model_load:*",
        "value_extractor": "EXTRACT(jsonPayload.timings_ms.model_load)",
        "label_extractors": model_version,
    }
    assert metrics['google_logging_metric.this["class_fraction/border"]'] == {
        "name": "<var.prefix>/class_fraction/border",
        "filter": f'{summary} AND jsonPayload.outcome="mask_written"',
        "value_extractor": "EXTRACT(jsonPayload.quality.class_fractions.border)",
        "label_extractors": model_version,
    }


def test_root_wires_the_module() -> None:
    root = load_config(REPO_ROOT)[REPO_ROOT]
    call = root.module_calls()["monitoring"]
    assert call["source"] == "./infra/monitoring"
    assert expression(call["function_name"]) == "module.function.function_name"
    assert expression(call["push_subscription"]) == "module.messaging.push_subscription"
    assert (
        expression(call["dead_letter_subscription"]) == "module.messaging.dead_letter_subscription"
    )
    assert "monitoring.googleapis.com" in root.locals()["services"]
    variables = root.variables()
    for name in (
        "monitoring_enabled",
        "alert_email",
        "mean_confidence_baseline",
        "mean_confidence_margin",
    ):
        assert "default" in variables[name] and variables[name].get("description"), name


# --- the dashboard -----------------------------------------------------------------------------


def _template_vars() -> dict[str, Any]:
    [dashboard] = _module(REPO_ROOT).resources("google_monitoring_dashboard")
    text = str(dashboard.body["dashboard_json"])
    assert text.startswith('${templatefile("${path.module}/dashboard.json", {')
    arguments = text.split('dashboard.json", ', 1)[1]
    return dict.fromkeys(re.findall(r"[{,]\s*(\w+)\s*=(?!=)", arguments))


def render(text: str, values: dict[str, Any]) -> str:
    """templatefile for the subset dashboard.json uses: ${name} and ${name.key}; $${ escapes."""

    def substitute(match: re.Match[str]) -> str:
        value: Any = values
        for part in match.group(1).split("."):
            value = value[part]
        return str(value)

    rendered = re.sub(r"(?<!\$)\$\{([A-Za-z_]\w*(?:\.\w+)?)\}", substitute, text)
    assert "%{" not in text, "template directives would make dashboard.json invalid JSON"
    return rendered.replace("$${", "${")


def _sample_values() -> dict[str, Any]:
    return {
        "title": "p: serverless segmentation",
        "metrics": {
            name: f"{USER_METRIC}p/{name}"
            for name in ("outcomes", "latency", "mean_confidence", "low_confidence_fraction")
        },
        "stages": {stage: f"{USER_METRIC}p/stage_latency_ms/{stage}" for stage in STAGES},
        "classes": {name: f"{USER_METRIC}p/class_fraction/{name}" for name in CLASS_NAMES},
        "push_subscription": "p-uploads-push",
        "dead_letter_subscription": "p-uploads-dlq-hold",
        "confidence_floor": "0.7",
    }


def _filters(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["filter"]] if isinstance(node.get("filter"), str) else []
        return found + [f for value in node.values() for f in _filters(value)]
    if isinstance(node, list):
        return [f for item in node for f in _filters(item)]
    return []


def test_dashboard_is_json_whose_placeholders_main_tf_supplies() -> None:
    text = DASHBOARD.read_text()
    json.loads(text)  # valid JSON as committed
    used = {m.split(".")[0] for m in re.findall(r"(?<!\$)\$\{([\w.]+)\}", text)}
    supplied = set(_template_vars())
    assert used == supplied, (used, supplied)
    assert set(_sample_values()) == supplied
    module = _module(REPO_ROOT)
    assert set(module.locals()["metric_types"]) == set(_sample_values()["metrics"])


def test_dashboard_charts_every_metric_and_the_subscriptions() -> None:
    dashboard = json.loads(render(DASHBOARD.read_text(), _sample_values()))
    assert dashboard["displayName"] == "p: serverless segmentation"
    filters = _filters(dashboard)
    charted = {m for f in filters for m in re.findall(r'metric\.type="([^"]+)"', f)}
    values = _sample_values()
    defined = {*values["metrics"].values(), *values["stages"].values(), *values["classes"].values()}
    assert defined <= charted, defined - charted
    pubsub = {m for m in charted if m.startswith("pubsub.googleapis.com/")}
    assert charted - pubsub <= defined
    assert pubsub == {
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    }
    titles = [tile["widget"]["title"] for tile in dashboard["mosaicLayout"]["tiles"]]
    assert any("alert floor: 0.7" in title for title in titles)
    legends = json.dumps(dashboard)
    assert "${metric.labels.model_version}" in legends  # Monitoring's placeholder survives
    for tile in dashboard["mosaicLayout"]["tiles"]:
        assert tile["xPos"] + tile["width"] <= dashboard["mosaicLayout"]["columns"]


# --- each check bites --------------------------------------------------------------------------

MONITORING_MAIN = f"{MODULE}/main.tf"

MUTATIONS = {
    "no-dead-letter-alert": (
        'resource.label.subscription_id=\\"${var.dead_letter_subscription}\\"',
        'resource.label.subscription_id=\\"${var.push_subscription}\\"',
        "dead-letter backlog",
    ),
    "error-records-on-the-wrong-outcome": (
        'metric.label.outcome=\\"error_recorded\\""',
        'metric.label.outcome=\\"duplicate\\""',
        "error-record rate",
    ),
    "p95-becomes-p50": (
        'cross_series_reducer = "REDUCE_PERCENTILE_95"',
        'cross_series_reducer = "REDUCE_PERCENTILE_50"',
        "p95 latency",
    ),
    "confidence-alert-above": (
        'comparison      = "COMPARISON_LT"',
        'comparison      = "COMPARISON_GT"',
        "mean confidence below the baseline",
    ),
    "floor-ignores-the-margin": (
        "var.mean_confidence_baseline - var.mean_confidence_margin",
        "var.mean_confidence_baseline",
        "confidence_floor must be",
    ),
    "policy-without-channels": (
        "  notification_channels = local.notification_channels\n  user_labels",
        "  notification_channels = []\n  user_labels",
        "does not notify local.notification_channels",
    ),
    "policy-ignores-its-comparison": (
        "comparison      = each.value.threshold.comparison",
        'comparison      = "COMPARISON_GT"',
        "mean confidence below the baseline",
    ),
    "policy-ignores-its-reducer": (
        "try(each.value.aggregations.cross_series_reducer, null)",
        '"REDUCE_SUM"',
        "p95 latency",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_check_flags_a_broken_copy(tf_copy: Path, mutation: str) -> None:
    old, new, expected = MUTATIONS[mutation]
    edit(tf_copy / MONITORING_MAIN, old, new)
    problems = monitoring_problems(tf_copy)
    assert any(expected in problem for problem in problems), problems
