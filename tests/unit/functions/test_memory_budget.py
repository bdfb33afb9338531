"""The memory budget (segmentation/memory.py): cold start refuses a concurrency the instance's
memory cannot hold at its worst, the same figures Terraform checks (tests/iac) and the docs show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from segmentation import imaging
from segmentation.errors import SettingsError
from segmentation.memory import BUDGET_FILE, MIB, load_budget
from segmentation.settings import DEFAULT_CONCURRENCY, load_settings

from bench import request_memory

REPO_ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {"OUTPUT_BUCKET": "demo-seg-output", "MODEL_URI": "gs://demo-seg-models/unet/latest"}


def test_shape_settings_are_read_and_default_to_one_request_and_no_check() -> None:
    settings = load_settings(REQUIRED)
    assert settings.concurrency == DEFAULT_CONCURRENCY == 1
    assert settings.memory_mib is None
    assert settings.request_timeout_seconds == 300
    env = {**REQUIRED, "CONCURRENCY": "4", "MEMORY_MIB": "4096", "REQUEST_TIMEOUT_SECONDS": "60"}
    settings = load_settings(env)
    assert (settings.concurrency, settings.memory_mib, settings.request_timeout_seconds) == (
        4,
        4096,
        60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONCURRENCY", "0"),
        ("CONCURRENCY", "1001"),
        ("MEMORY_MIB", "1Gi"),
        ("REQUEST_TIMEOUT_SECONDS", "-5"),
    ],
)
def test_bad_shape_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**REQUIRED, variable: value})
    assert caught.value.variable == variable


def test_the_deployed_defaults_fit_one_gibibyte() -> None:
    settings = load_settings({**REQUIRED, "MEMORY_MIB": "1024"})
    assert settings.concurrency == 1


def test_cold_start_refuses_a_concurrency_the_memory_cannot_hold() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**REQUIRED, "MEMORY_MIB": "1024", "CONCURRENCY": "2"})
    message = str(caught.value)
    assert caught.value.variable == "MEMORY_MIB"
    for name in ("CONCURRENCY 2", "MAX_IMAGE_PIXELS 40000000", "MAX_IMAGE_BYTES", "1830 MiB"):
        assert name in message


def test_a_lower_pixel_limit_buys_concurrency() -> None:
    env = {**REQUIRED, "MEMORY_MIB": "2048", "CONCURRENCY": "4", "MAX_IMAGE_PIXELS": "12000000"}
    assert load_settings(env).concurrency == 4
    with pytest.raises(SettingsError):
        load_settings({**env, "MAX_IMAGE_PIXELS": "24000000"})


def test_required_memory_arithmetic() -> None:
    budget = load_budget()
    per_request = budget.request_mib(max_image_pixels=10 * MIB, max_image_bytes=MIB)
    assert per_request == round(budget.bytes_per_pixel * 10) + budget.upload_copies + (
        budget.request_overhead_mib
    )
    assert (
        budget.required_mib(concurrency=3, max_image_pixels=10 * MIB, max_image_bytes=MIB)
        == budget.baseline_mib + 3 * per_request
    )


def test_the_budget_covers_the_measured_worst_format_with_a_margin() -> None:
    budget = load_budget()
    document = json.loads(BUDGET_FILE.read_text())
    measured = float(document["measured_worst_bytes_per_pixel"])
    assert budget.bytes_per_pixel >= 1.2 * measured


def test_the_measurement_covers_every_accepted_format() -> None:
    measured = {name.split("_")[0].upper() for name in request_memory.CASES}
    accepted = {fmt for fmt in imaging.ACCEPTED_FORMATS}
    assert accepted <= measured


def test_the_docs_table_is_the_budget() -> None:
    text = (REPO_ROOT / "docs/performance.md").read_text()
    rows = re.findall(r"^\| (\d+) MP[^|]*\| (\d+) \| (.+) \|$", text, flags=re.MULTILINE)
    assert len(rows) == 3
    budget = load_budget()
    for megapixels, per_request, cells in rows:
        pixels = int(megapixels) * 1_000_000
        assert int(per_request) == budget.request_mib(
            max_image_pixels=pixels, max_image_bytes=20 * MIB
        )
        needed = [int(cell.split()[0]) for cell in cells.split(" | ")]
        assert needed == [
            budget.required_mib(concurrency=c, max_image_pixels=pixels, max_image_bytes=20 * MIB)
            for c in (1, 2, 4, 8)
        ]
