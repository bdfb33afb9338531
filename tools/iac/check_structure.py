"""Structural checks of the Terraform configuration: the properties the service relies on.

Each ``check_*`` function takes a loaded configuration (tools.iac.hcl.load_config) and returns a
list of problems (empty = fine), so that tests can break a copy of the configuration and assert
that the check notices. The properties (see docs/architecture.md and docs/deploy.md):

* the input bucket's notification is OBJECT_FINALIZE, OBJECT_DELETE and OBJECT_ARCHIVE +
  JSON_API_V1 on the uploads topic, and the Cloud Storage service agent may publish to that topic
  (else creating it fails with 403);
* the subscription that delivers uploads to the function is on the uploads topic (the one the
  storage notification publishes to), pushes to the function's service URI with an OIDC token
  whose audience is that URI, has a retry policy and a dead-letter policy (>= 5 attempts) to a
  dead-letter topic that has a subscription of its own, and the Pub/Sub service agent has the
  rights dead-lettering needs;
* the function is python312 / segment_image, internal ingress only, gets the env var contract,
  and its service account holds bucket-level roles only (no project/folder/org role beyond
  FUNCTION_PROJECT_ROLE_ALLOWLIST);
* the training VM has a GPU, on_host_maintenance = TERMINATE, no external IP, shielded VM, its own
  service account (project roles only from TRAINER_PROJECT_ROLE_ALLOWLIST) and the NVIDIA driver
  metadata;
* buckets: uniform bucket-level access, public access prevention enforced, versioning, and
  force_destroy false by default;
* the google provider is pinned to ~> 6.50; every variable has a type and a description, and
  every root variable but project_id a default;
* Cloud Build: the trigger of cloudbuild.yaml (tests) and the trigger of cloudbuild-deploy.yaml
  (terraform apply) run as two different service accounts of the configuration; the test account
  holds no IAM grant at all beyond CI_PROJECT_ROLE_ALLOWLIST (so it cannot deploy), the deploy
  account no basic role and no project-wide actAs, the deploy trigger waits for an approval and
  the test trigger never sets _APPLY.

Run ``python -m tools.iac.check_structure [ROOT]``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segmentation import settings as function_settings

from tools.iac.hcl import (
    REPO_ROOT,
    Block,
    Module,
    all_blocks,
    expression,
    first_block,
    interpolations,
    load_config,
)

Config = dict[Path, Module]

# Project-level (or broader) roles each identity may hold. The function needs none: Cloud Run
# ships stdout/stderr to Cloud Logging without any role on the runtime identity.
FUNCTION_PROJECT_ROLE_ALLOWLIST: frozenset[str] = frozenset()
# The training VM writes its logs and metrics to the project (no narrower resource exists).
TRAINER_PROJECT_ROLE_ALLOWLIST = frozenset(
    {"roles/logging.logWriter", "roles/monitoring.metricWriter"}
)

# The Cloud Build test identity writes its build logs (CLOUD_LOGGING_ONLY) and nothing else.
CI_PROJECT_ROLE_ALLOWLIST = frozenset({"roles/logging.logWriter"})
# Never on the deploy identity: basic roles, and actAs / token creation on every account.
DEPLOYER_FORBIDDEN_PROJECT_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
    }
)
TEST_BUILD_CONFIG = "cloudbuild.yaml"
DEPLOY_BUILD_CONFIG = "cloudbuild-deploy.yaml"

# Every setting of the function (functions/segmentation/settings.py owns the list), less the
# ones the deployment leaves at their defaults.
FUNCTION_ENV_CONTRACT = tuple(
    name
    for name in function_settings.variable_names()
    if name not in function_settings.DEPLOY_DEFAULTED
)
# Roles that grant a principal access to a whole project, folder or organization.
PROJECT_WIDE_IAM_TYPES = (
    "google_project_iam_member",
    "google_project_iam_binding",
    "google_project_iam_policy",
    "google_folder_iam_member",
    "google_folder_iam_binding",
    "google_organization_iam_member",
    "google_organization_iam_binding",
)
REQUIRED_ROOT_VARIABLES = frozenset({"project_id"})
# Uploads, and the deletions / archivals whose outputs the function deletes.
NOTIFICATION_EVENT_TYPES = ("OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE")
MIN_DELIVERY_ATTEMPTS = 5


# --- helpers -------------------------------------------------------------------------------------


def _find(config: Config, rtype: str) -> list[tuple[Module, Block]]:
    return [(m, b) for m in config.values() for b in m.resources(rtype)]


def _refs(value: Any) -> str:
    """All interpolated expressions of a value, joined (for 'does it reference X' tests)."""
    return " ".join(interpolations(value))


def _references(value: Any, rtype: str, name: str) -> bool:
    return (
        re.search(rf"(?<![\w.]){re.escape(rtype)}\.{re.escape(name)}\b", _refs(value)) is not None
    )


def _callers(config: Config, module: Module) -> list[tuple[Module, dict[str, Any]]]:
    """(caller module, module-call body) of every call of ``module``."""
    found = []
    for caller in config.values():
        for body in caller.module_calls().values():
            source = body.get("source")
            if (
                isinstance(source, str)
                and (caller.path / source).resolve() == module.path.resolve()
            ):
                found.append((caller, body))
    return found


def effective(config: Config, module: Module, value: Any, depth: int = 3) -> Any:
    """Resolve ``${var.x}`` through the module's callers (the value they pass) or its default.

    Returns the first literal found; an expression that cannot be resolved is returned as is.
    """
    expr = expression(value)
    if not expr or depth == 0:
        return value
    match = re.fullmatch(r"var\.([A-Za-z_][\w-]*)", expr)
    if not match:
        return value
    name = match.group(1)
    for caller, body in _callers(config, module):
        if name in body:
            return effective(config, caller, body[name], depth - 1)
    variable = module.variables().get(name)
    if variable is not None and "default" in variable:
        return variable["default"]
    return value


def _literal_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _topic_ref(value: Any) -> str | None:
    """Name of the google_pubsub_topic a value references (``google_pubsub_topic.X.id``)."""
    match = re.search(r"(?<![\w.])google_pubsub_topic\.([\w-]+)\.(?:id|name)\b", _refs(value))
    return match.group(1) if match else None


# local.X, var.X, module.M.OUTPUT, or the function's service URI (the reference chain ends there).
_REF_RE = re.compile(
    r"(?<![\w.])(?:(local|var)\.([\w-]+)|module\.([\w-]+)(?:\[[^\]]*\])?\.([\w-]+)"
    r"|google_cloudfunctions2_function\.([\w-]+)\.(?:service_config\[0\]\.uri|url)\b)"
)


def _called_module(config: Config, caller: Module, call_name: str) -> Module | None:
    source = caller.module_calls().get(call_name, {}).get("source")
    if not isinstance(source, str):
        return None
    target = (caller.path / source).resolve()
    return next((m for m in config.values() if m.path.resolve() == target), None)


def points_at_function_uri(config: Config, module: Module, value: Any, depth: int = 8) -> bool:
    """Does the value start with the function's service URI?

    That is: a string whose first interpolation leads, through locals, module variables (the
    values every caller passes, else the default) and module outputs, to
    ``google_cloudfunctions2_function.X.service_config[0].uri`` (or ``.url``) of a function of
    the module holding that reference. Wrapping calls such as ``trimsuffix(..., "/")`` are
    looked through; a literal prefix (``"https://elsewhere/${...}"``) is not the function's URI.
    """
    if depth == 0 or not isinstance(value, str) or not value.startswith("${"):
        return False
    match = _REF_RE.search(next(interpolations(value), ""))
    if match is None:
        return False
    kind, name, call, output, function = match.groups()
    if kind == "local":
        local = module.locals().get(name)
        return points_at_function_uri(config, module, local, depth - 1)
    if kind == "var":
        return _variable_points_at_function_uri(config, module, name, depth - 1)
    if call is not None:
        called = _called_module(config, module, call)
        out = (called.outputs().get(output) or {}) if called is not None else {}
        return called is not None and points_at_function_uri(
            config, called, out.get("value"), depth - 1
        )
    return module.resource("google_cloudfunctions2_function", function) is not None


def _variable_points_at_function_uri(config: Config, module: Module, name: str, depth: int) -> bool:
    """var.<name> points at the function's URI in every call of the module (or by default)."""
    callers = _callers(config, module)
    if callers:
        return all(
            name in body and points_at_function_uri(config, caller, body[name], depth)
            for caller, body in callers
        )
    variable = module.variables().get(name) or {}
    return points_at_function_uri(config, module, variable.get("default"), depth)


def _project_iam_of(config: Config, member_pattern: str) -> list[tuple[Block, str]]:
    """(block, role) of every project/folder/org IAM grant whose member matches the pattern."""
    grants = []
    for rtype in PROJECT_WIDE_IAM_TYPES:
        for _module, block in _find(config, rtype):
            members = _refs(block.body.get("member")) + " " + _refs(block.body.get("members"))
            members += " " + _refs(block.body.get("policy_data"))
            if re.search(member_pattern, members):
                grants.append((block, str(block.body.get("role", "<policy>"))))
    return grants


# --- checks --------------------------------------------------------------------------------------


def check_notification(config: Config) -> list[str]:
    problems = []
    found = _find(config, "google_storage_notification")
    if not found:
        return ["no google_storage_notification: uploads would trigger nothing"]
    for module, block in found:
        body = block.body
        where = f"{module.path.name}/{block.address}"
        if effective(config, module, body.get("payload_format")) != "JSON_API_V1":
            problems.append(f"{where}: payload_format must be JSON_API_V1")
        if _literal_list(effective(config, module, body.get("event_types"))) != list(
            NOTIFICATION_EVENT_TYPES
        ):
            problems.append(f"{where}: event_types must be {json.dumps(NOTIFICATION_EVENT_TYPES)}")
        topic = _topic_ref(body.get("topic"))
        topic_block = module.resource("google_pubsub_topic", topic) if topic else None
        if topic_block is None:
            problems.append(f"{where}: topic must reference a google_pubsub_topic of the module")
            continue
        if not str(topic_block.body.get("name", "")).endswith("-uploads"):
            problems.append(f"{where}: the notification's topic is not the <prefix>-uploads topic")
        problems += _check_gcs_publisher(module, block, topic, where)
    return problems


def _check_gcs_publisher(module: Module, notification: Block, topic: str, where: str) -> list[str]:
    bindings = [
        b
        for rtype in ("google_pubsub_topic_iam_member", "google_pubsub_topic_iam_binding")
        for b in module.resources(rtype)
        if _references(b.body.get("topic"), "google_pubsub_topic", topic)
        and b.body.get("role") == "roles/pubsub.publisher"
        and re.search(
            r"data\.google_storage_project_service_account\.[\w-]+\.email_address",
            _refs(b.body.get("member")) + _refs(b.body.get("members")),
        )
    ]
    if not bindings:
        return [
            f"{where}: no roles/pubsub.publisher for the Cloud Storage service agent "
            "(data.google_storage_project_service_account) on the uploads topic"
        ]
    depends = _refs(notification.body.get("depends_on"))
    if not any(f"{b.labels[0]}.{b.labels[1]}" in depends for b in bindings):
        return [f"{where}: must depend_on the service agent's publisher binding (403 race)"]
    return []


def check_delivery(config: Config) -> list[str]:
    """Retries and dead-lettering on the subscription that delivers uploads to the function."""
    problems = []
    for module, block in _find(config, "google_cloudfunctions2_function"):
        if all_blocks(block.body, "event_trigger"):
            problems.append(
                f"{module.path.name}/{block.address}: has an event_trigger; its Eventarc-managed "
                "subscription cannot carry a dead-letter policy (use the push subscription)"
            )
    pushes = [
        (m, b)
        for m, b in _find(config, "google_pubsub_subscription")
        if first_block(b.body, "push_config") is not None
    ]
    if not pushes:
        return [*problems, "no push subscription delivers uploads to the function"]
    uploads_topics = _notification_topics(config)
    for module, block in pushes:
        problems += _check_push_subscription(config, module, block, uploads_topics)
    return problems


def _notification_topics(config: Config) -> set[tuple[Path, str]]:
    """(module path, topic name) of every google_pubsub_topic a storage notification targets."""
    return {
        (module.path, topic)
        for module, block in _find(config, "google_storage_notification")
        if (topic := _topic_ref(block.body.get("topic"))) is not None
    }


def _check_push_subscription(
    config: Config, module: Module, block: Block, uploads_topics: set[tuple[Path, str]]
) -> list[str]:
    body = block.body
    where = f"{module.path.name}/{block.address}"
    problems = []
    topic = _topic_ref(body.get("topic"))
    if topic is None or (module.path, topic) not in uploads_topics:
        problems.append(
            f"{where}: topic must be the uploads topic, the one the storage notification "
            f"publishes to (got {body.get('topic')!r})"
        )
    push = first_block(body, "push_config") or {}
    if not points_at_function_uri(config, module, push.get("push_endpoint")):
        problems.append(
            f"{where}: push_endpoint must be the function's service URI "
            f"(google_cloudfunctions2_function service_config[0].uri), got "
            f"{push.get('push_endpoint')!r}"
        )
    oidc = first_block(push, "oidc_token")
    if not oidc or not oidc.get("service_account_email"):
        problems.append(f"{where}: push_config needs an oidc_token (authenticated push)")
    elif not points_at_function_uri(config, module, oidc.get("audience")):
        problems.append(
            f"{where}: the oidc_token audience must be the function's service URI "
            f"(got {oidc.get('audience')!r})"
        )
    retry = first_block(body, "retry_policy")
    if not retry or not retry.get("minimum_backoff") or not retry.get("maximum_backoff"):
        problems.append(f"{where}: needs a retry_policy with minimum_backoff and maximum_backoff")
    dlq = first_block(body, "dead_letter_policy")
    if not dlq:
        return [*problems, f"{where}: needs a dead_letter_policy"]
    dlq_topic = _topic_ref(dlq.get("dead_letter_topic"))
    source_topic = _topic_ref(body.get("topic"))
    if not dlq_topic or dlq_topic == source_topic:
        problems.append(f"{where}: dead_letter_topic must be another google_pubsub_topic")
    attempts = effective(config, module, dlq.get("max_delivery_attempts"))
    if not isinstance(attempts, int) or attempts < MIN_DELIVERY_ATTEMPTS:
        problems.append(
            f"{where}: max_delivery_attempts must be a number >= {MIN_DELIVERY_ATTEMPTS} "
            f"(got {attempts!r})"
        )
    if dlq_topic:
        held = [
            b
            for b in module.resources("google_pubsub_subscription")
            if _topic_ref(b.body.get("topic")) == dlq_topic
        ]
        if not held:
            problems.append(
                f"{where}: the dead-letter topic has no subscription (messages dropped)"
            )
        problems += _check_dlq_rights(module, block, dlq_topic, where)
    return problems


_PUBSUB_AGENT = r"gcp-sa-pubsub\.iam\.gserviceaccount\.com"


def _is_pubsub_agent(module: Module, member: Any) -> bool:
    text = str(member)
    if re.search(_PUBSUB_AGENT, text):
        return True
    # member = local.x where the local holds the agent's address
    for name, value in module.locals().items():
        if re.search(rf"local\.{re.escape(name)}\b", text) and re.search(_PUBSUB_AGENT, str(value)):
            return True
    return False


def _check_dlq_rights(module: Module, subscription: Block, dlq_topic: str, where: str) -> list[str]:
    problems = []
    publisher = [
        b
        for b in module.resources("google_pubsub_topic_iam_member")
        if _references(b.body.get("topic"), "google_pubsub_topic", dlq_topic)
        and b.body.get("role") == "roles/pubsub.publisher"
        and _is_pubsub_agent(module, b.body.get("member"))
    ]
    if not publisher:
        problems.append(
            f"{where}: the Pub/Sub service agent needs publisher on the dead-letter topic"
        )
    subscriber = [
        b
        for b in module.resources("google_pubsub_subscription_iam_member")
        if _references(
            b.body.get("subscription"), "google_pubsub_subscription", subscription.labels[1]
        )
        and b.body.get("role") == "roles/pubsub.subscriber"
        and _is_pubsub_agent(module, b.body.get("member"))
    ]
    if not subscriber:
        problems.append(
            f"{where}: the Pub/Sub service agent needs subscriber on the source subscription"
        )
    return problems


def _service_account_of(value: Any) -> str | None:
    match = re.search(
        r"(?<![\w.])google_service_account\.([\w-]+)\.(?:email|member|name|id)\b", _refs(value)
    )
    return match.group(1) if match else None


def check_function(config: Config) -> list[str]:
    found = _find(config, "google_cloudfunctions2_function")
    if len(found) != 1:
        return [f"expected one google_cloudfunctions2_function, found {len(found)}"]
    module, block = found[0]
    where = f"{module.path.name}/{block.address}"
    problems = []
    build = first_block(block.body, "build_config") or {}
    service = first_block(block.body, "service_config") or {}
    if effective(config, module, build.get("runtime")) != "python312":
        problems.append(f"{where}: runtime must be python312")
    if effective(config, module, build.get("entry_point")) != "segment_image":
        problems.append(f"{where}: entry_point must be segment_image")
    if service.get("ingress_settings") != "ALLOW_INTERNAL_ONLY":
        problems.append(f"{where}: ingress_settings must be ALLOW_INTERNAL_ONLY")
    env = service.get("environment_variables")
    # The module sets some variables itself and takes the rest from its caller (root main.tf).
    callers = [str(body) for _, body in _callers(config, module)]
    env_text = " ".join([str(env), str(module.locals()), *callers])
    missing = [k for k in FUNCTION_ENV_CONTRACT if k not in env_text]
    if missing:
        problems.append(f"{where}: environment variables missing: {', '.join(missing)}")
    account = _service_account_of(service.get("service_account_email"))
    if account is None:
        return [*problems, f"{where}: must run as a dedicated google_service_account"]
    problems += _check_no_project_roles(
        config, module, account, FUNCTION_PROJECT_ROLE_ALLOWLIST, "function service account"
    )
    problems += _check_function_bucket_roles(module, account, where)
    return problems


def _check_no_project_roles(
    config: Config, module: Module, account: str, allowlist: frozenset[str], what: str
) -> list[str]:
    patterns = [rf"(?<![\w.])google_service_account\.{re.escape(account)}\b"]
    # Grants made by a caller through the module's outputs of that account's email/member.
    for name, output in module.outputs().items():
        if _service_account_of(output.get("value")) == account:
            for caller, body in _callers(config, module):
                for call_name, call_body in caller.module_calls().items():
                    if call_body is body:
                        patterns.append(rf"module\.{re.escape(call_name)}(\[[^\]]*\])?\.{name}\b")
    problems = []
    for pattern in patterns:
        for grant, role in _project_iam_of(config, pattern):
            if role not in allowlist:
                problems.append(
                    f"{grant.address}: {what} must not hold project-wide role {role} "
                    f"(allowed: {', '.join(sorted(allowlist)) or 'none'})"
                )
    return problems


def _check_function_bucket_roles(module: Module, account: str, where: str) -> list[str]:
    wanted = {
        "input_bucket": {"roles/storage.objectViewer"},
        "output_bucket": {"roles/storage.objectUser", "roles/storage.objectAdmin"},
        "models_bucket": {"roles/storage.objectViewer"},
    }
    problems = []
    bindings = [
        b
        for b in module.resources("google_storage_bucket_iam_member")
        if _service_account_of(b.body.get("member")) == account
    ]
    for bucket_var, roles in wanted.items():
        if not any(
            bucket_var in _refs(b.body.get("bucket")) and b.body.get("role") in roles
            for b in bindings
        ):
            problems.append(
                f"{where}: its service account needs {sorted(roles)[0]} on {bucket_var}"
            )
    return problems


def check_training_vm(config: Config) -> list[str]:
    found = _find(config, "google_compute_instance")
    if not found:
        return ["no google_compute_instance for training"]
    problems = []
    for module, block in found:
        body = block.body
        where = f"{module.path.name}/{block.address}"
        gpus = all_blocks(body, "guest_accelerator")
        if not gpus or not all(g.get("type") and g.get("count") for g in gpus):
            problems.append(f"{where}: needs a guest_accelerator with type and count")
        scheduling = first_block(body, "scheduling") or {}
        if scheduling.get("on_host_maintenance") != "TERMINATE":
            problems.append(f'{where}: scheduling.on_host_maintenance must be "TERMINATE" (GPU)')
        for nic in all_blocks(body, "network_interface"):
            if all_blocks(nic, "access_config") or all_blocks(nic, "ipv6_access_config"):
                problems.append(f"{where}: network_interface must not have an external IP")
        shielded = first_block(body, "shielded_instance_config") or {}
        if (
            shielded.get("enable_vtpm") is not True
            or shielded.get("enable_integrity_monitoring") is not True
        ):
            problems.append(
                f"{where}: needs shielded_instance_config with vTPM and integrity monitoring"
            )
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or str(metadata.get("install-nvidia-driver")) != "True":
            problems.append(f'{where}: metadata install-nvidia-driver must be "True"')
        elif "templatefile(" not in str(metadata.get("startup-script", "")):
            problems.append(f"{where}: the startup-script must come from templatefile()")
        account = _service_account_of((first_block(body, "service_account") or {}).get("email"))
        if account is None:
            problems.append(f"{where}: must run as its own google_service_account")
            continue
        problems += _check_no_project_roles(
            config, module, account, TRAINER_PROJECT_ROLE_ALLOWLIST, "training VM service account"
        )
    return problems


def check_buckets(config: Config) -> list[str]:
    found = _find(config, "google_storage_bucket")
    if not found:
        return ["no google_storage_bucket"]
    problems = []
    for module, block in found:
        body = block.body
        where = f"{module.path.name}/{block.address}"
        if body.get("uniform_bucket_level_access") is not True:
            problems.append(f"{where}: uniform_bucket_level_access must be true")
        if body.get("public_access_prevention") != "enforced":
            problems.append(f'{where}: public_access_prevention must be "enforced"')
        if effective(config, module, body.get("force_destroy", False)) is not False:
            problems.append(f"{where}: force_destroy must default to false")
        versioning = first_block(body, "versioning") or {}
        if versioning.get("enabled") is not True:
            problems.append(f"{where}: versioning must be enabled (the models bucket at least)")
    return problems


def _grants_of(config: Config, account: str) -> list[tuple[Block, str]]:
    """(block, role) of every IAM grant, at any level, to google_service_account.<account>."""
    pattern = rf"(?<![\w.])google_service_account\.{re.escape(account)}\b"
    grants = []
    for module in config.values():
        for block in module.resources():
            if not re.search(r"_iam_(member|binding|policy)$", block.labels[0]):
                continue
            members = _refs(block.body.get("member")) + " " + _refs(block.body.get("members"))
            members += " " + _refs(block.body.get("policy_data"))
            if re.search(pattern, members):
                grants.append((block, str(block.body.get("role", "<policy>"))))
    return grants


Triggers = dict[str, list[tuple[Module, Block]]]


def _test_account_problems(config: Config, triggers: Triggers, account: str) -> list[str]:
    problems = []
    for grant, role in _grants_of(config, account):
        if grant.labels[0] != "google_project_iam_member" or role not in CI_PROJECT_ROLE_ALLOWLIST:
            problems.append(
                f"{grant.address}: the test build's account must hold nothing but "
                f"{', '.join(sorted(CI_PROJECT_ROLE_ALLOWLIST))} (it must not be able to "
                f"deploy), found {role}"
            )
    for _module, block in triggers.get(TEST_BUILD_CONFIG, []):
        if "_APPLY" in (block.body.get("substitutions") or {}):
            problems.append(f"{block.address}: the test trigger must not set _APPLY")
    return problems


def _deploy_account_problems(config: Config, triggers: Triggers, account: str) -> list[str]:
    problems = []
    for grant, role in _grants_of(config, account):
        if grant.labels[0] in PROJECT_WIDE_IAM_TYPES and role in DEPLOYER_FORBIDDEN_PROJECT_ROLES:
            problems.append(f"{grant.address}: the deploy account must not hold {role}")
    for _module, block in triggers.get(DEPLOY_BUILD_CONFIG, []):
        approval = first_block(block.body, "approval_config") or {}
        if approval.get("approval_required") is not True:
            problems.append(
                f"{block.address}: the deploy trigger must require an approval "
                "(approval_config.approval_required = true)"
            )
    return problems


def check_cloudbuild_identities(config: Config) -> list[str]:
    triggers: Triggers = {}
    for module, block in _find(config, "google_cloudbuild_trigger"):
        triggers.setdefault(str(block.body.get("filename")), []).append((module, block))
    problems = []
    accounts: dict[str, str | None] = {}
    for config_file in (TEST_BUILD_CONFIG, DEPLOY_BUILD_CONFIG):
        found = triggers.get(config_file, [])
        accounts[config_file] = None
        if len(found) != 1:
            problems.append(f"expected one google_cloudbuild_trigger of {config_file}")
            continue
        block = found[0][1]
        accounts[config_file] = _service_account_of(block.body.get("service_account"))
        if accounts[config_file] is None:
            problems.append(f"{block.address}: must run as a google_service_account of its own")
    test_account, deploy_account = accounts[TEST_BUILD_CONFIG], accounts[DEPLOY_BUILD_CONFIG]
    if test_account and test_account == deploy_account:
        problems.append("the test and deploy builds must run as two different service accounts")
    if test_account:
        problems += _test_account_problems(config, triggers, test_account)
    if deploy_account:
        problems += _deploy_account_problems(config, triggers, deploy_account)
    return problems


def _roots(config: Config) -> list[Module]:
    """Modules no other module calls (the root module)."""
    return [m for m in config.values() if not _callers(config, m)]


def check_versions(config: Config) -> list[str]:
    roots = _roots(config)
    if len(roots) != 1:
        return [f"expected one root module, found {[str(m.path) for m in roots]}"]
    module = roots[0]
    pins = []
    for block in module.of_kind("terraform"):
        for providers in block.body.get("required_providers", []):
            google = providers.get("google")
            if isinstance(google, dict):
                pins.append(google.get("version"))
    if pins != ["~> 6.50"]:
        return [f'the root module must pin the google provider to "~> 6.50" (found {pins})']
    return []


def check_variables(config: Config) -> list[str]:
    problems = []
    roots = {m.path for m in _roots(config)}
    for module in config.values():
        for name, body in module.variables().items():
            where = f"{module.path.name}/var.{name}"
            if "type" not in body:
                problems.append(f"{where}: needs a type")
            if not body.get("description"):
                problems.append(f"{where}: needs a description")
            if (
                module.path in roots
                and "default" not in body
                and name not in REQUIRED_ROOT_VARIABLES
            ):
                problems.append(f"{where}: root variables need a (safe) default")
        for name, body in module.outputs().items():
            if not body.get("description"):
                problems.append(f"{module.path.name}/output.{name}: needs a description")
    return problems


CHECKS: tuple[Callable[[Config], list[str]], ...] = (
    check_notification,
    check_delivery,
    check_function,
    check_training_vm,
    check_buckets,
    check_versions,
    check_variables,
    check_cloudbuild_identities,
)


def check_config(config: Config) -> list[str]:
    return [problem for check in CHECKS for problem in check(config)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]).resolve() if args else REPO_ROOT
    problems = check_config(load_config(root))
    for problem in problems:
        print(problem)
    print(f"structure check: {len(problems)} problem(s) from {len(CHECKS)} checks under {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
