"""The operations commands with the real function on the local stack (conftest's `local_stack`):
a backfill makes real masks that `segment status` reports, and a dead-lettered upload is
replayed after the "fix" and gets its mask."""

from __future__ import annotations

import pytest
from segmentation.storage import META_SOURCE_GENERATION, mask_name

from segment import dlq, notifier, resources
from segment.cli import ENV_DEFAULTS, main
from segment.emulators import HOST, free_port
from tests.conftest import REPO_ROOT
from tests.integration.conftest import FAST_POLICY, wait_until

pytestmark = pytest.mark.integration

PET = (REPO_ROOT / "samples" / "pet-02.png").read_bytes()


@pytest.fixture
def stack_env(local_stack, monkeypatch):
    """The shell variables `segment local up` prints, set for the in-process `segment`."""
    for key, value in local_stack.stack.env().items():
        monkeypatch.setenv(key, value)
    return local_stack


def _mask_generation(driver, name: str) -> int | None:
    blob = driver.output_bucket.get_blob(mask_name(name))
    return int(blob.metadata[META_SOURCE_GENERATION]) if blob is not None else None


def _wait_for_mask(driver, blob) -> None:
    wait_until(
        lambda: _mask_generation(driver, blob.name) == int(blob.generation),
        timeout=60,
        what=f"the mask of {blob.name}",
    )


def test_local_up_exports_every_variable_the_parser_reads(stack_env):
    assert set(ENV_DEFAULTS.values()) <= set(stack_env.stack.env())


def test_backfill_reaches_the_function_and_status_reports_its_masks(stack_env, capsys):
    driver = stack_env
    done = driver.upload("backfill/done.png", PET)
    notifier.publish_notification(driver.publisher, driver.stack.pipeline.topic, done)
    _wait_for_mask(driver, done)
    missed = [driver.upload(f"backfill/missed-{i}.png", PET) for i in range(2)]  # no notification
    source = f"gs://{driver.stack.names.input_bucket}/backfill/"

    assert main(["backfill", source, "--rate", "50/s"]) == 0  # bucket and topic from the env
    assert "published 2, skipped 1 with a current output" in capsys.readouterr().out
    for blob in missed:
        _wait_for_mask(driver, blob)

    uri = f"gs://{driver.stack.names.input_bucket}/{missed[0].name}"
    assert main(["status", uri]) == 0
    out = capsys.readouterr().out
    assert "current mask" in out
    assert "model-version: " in out and "image-width: " in out
    assert main(["backfill", source, "--dry-run"]) == 0
    assert "would publish 0, skipped 3 with a current output" in capsys.readouterr().out


def test_a_dead_lettered_upload_is_replayed_after_the_fix(stack_env, capsys):
    """Uploads routed to a function that is down (nothing listens at its URL) are dead-lettered;
    after the "fix" they are replayed to the working uploads topic and get their masks."""
    driver = stack_env
    down = resources.Pipeline.named(driver.stack.names.project, "down-uploads")
    resources.create_pipeline(
        driver.publisher,
        driver.subscriber,
        down,
        function_url=f"http://{HOST}:{free_port()}",
        policy=FAST_POLICY,
    )
    blob = driver.upload("replay/pet.png", PET)
    notifier.publish_notification(driver.publisher, down.topic, blob)
    wait_until(
        lambda: dlq.list_messages(driver.subscriber, down.dead_letter_subscription, 10),
        timeout=90,
        what="the upload in the dead-letter subscription",
    )
    uri = f"gs://{driver.stack.names.input_bucket}/{blob.name}"
    assert main(["status", uri]) == 0
    assert "nothing yet" in capsys.readouterr().out

    assert main(["dlq", "list", "--subscription", down.dead_letter_subscription]) == 0
    listed = capsys.readouterr().out
    assert f"{uri}  generation {blob.generation}" in listed
    assert f"delivery attempts {FAST_POLICY.max_delivery_attempts} (on down-uploads-push)" in listed

    replay = ["dlq", "replay", "--subscription", down.dead_letter_subscription]
    assert main([*replay, "--topic", driver.stack.pipeline.topic]) == 0
    assert "replayed 1 message(s)" in capsys.readouterr().out
    _wait_for_mask(driver, blob)
    assert dlq.list_messages(driver.subscriber, down.dead_letter_subscription, 10) == []
    assert main(["status", uri]) == 0
    assert "current mask" in capsys.readouterr().out
