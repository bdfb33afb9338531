"""Settings: defaults, parsing, and errors that name the bad variable."""

from __future__ import annotations

import dataclasses

import pytest
from segmentation.errors import ConfigurationError, SettingsError
from segmentation.settings import Settings, is_valid_bucket_name, load_settings

REQUIRED = {"OUTPUT_BUCKET": "demo-seg-output", "MODEL_URI": "gs://demo-seg-models/unet/latest"}


def test_defaults_apply_when_only_required_variables_are_set() -> None:
    settings = load_settings(REQUIRED)
    assert settings == Settings(
        output_bucket="demo-seg-output",
        model_uri="gs://demo-seg-models/unet/latest",
        max_image_bytes=20971520,
        max_image_pixels=40000000,
        num_threads=1,
        log_level="INFO",
        model_cache_dir="/tmp/segmentation-models",
    )


def test_every_variable_is_read() -> None:
    env = {
        **REQUIRED,
        "MAX_IMAGE_BYTES": "1024",
        "MAX_IMAGE_PIXELS": " 5000 ",
        "NUM_THREADS": "4",
        "LOG_LEVEL": "debug",
        "MODEL_CACHE_DIR": "/var/cache/models",
    }
    settings = load_settings(env)
    assert settings.max_image_bytes == 1024
    assert settings.max_image_pixels == 5000
    assert settings.num_threads == 4
    assert settings.log_level == "DEBUG"
    assert settings.model_cache_dir == "/var/cache/models"


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in REQUIRED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NUM_THREADS", "3")
    assert load_settings().num_threads == 3


def test_empty_optional_variables_mean_default() -> None:
    settings = load_settings({**REQUIRED, "NUM_THREADS": "", "LOG_LEVEL": "  "})
    assert settings.num_threads == 1
    assert settings.log_level == "INFO"


def test_settings_are_frozen() -> None:
    settings = load_settings(REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.num_threads = 8  # type: ignore[misc]


@pytest.mark.parametrize("variable", ["OUTPUT_BUCKET", "MODEL_URI"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_variables(variable: str, value: str | None) -> None:
    env = dict(REQUIRED)
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.variable == variable
    assert variable in str(info.value)
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OUTPUT_BUCKET", "gs://demo-seg-output"),
        ("OUTPUT_BUCKET", "Upper-Case"),
        ("OUTPUT_BUCKET", "a"),
        ("OUTPUT_BUCKET", "bucket/with/path"),
        ("OUTPUT_BUCKET", "goog-reserved"),
        ("MODEL_URI", "gs://"),
        ("MODEL_URI", "gs://demo-seg-models"),
        ("MODEL_URI", "gs://demo-seg-models/"),
        ("MODEL_URI", "gs://BAD_bucket!/unet"),
        ("MODEL_URI", "s3://bucket/model"),
        ("MODEL_URI", "https://example.com/model"),
        ("MAX_IMAGE_BYTES", "20MB"),
        ("MAX_IMAGE_BYTES", "0"),
        ("MAX_IMAGE_BYTES", "-5"),
        ("MAX_IMAGE_BYTES", "1.5"),
        ("MAX_IMAGE_PIXELS", "lots"),
        ("MAX_IMAGE_PIXELS", "0"),
        ("NUM_THREADS", "0"),
        ("NUM_THREADS", "two"),
        ("NUM_THREADS", "1000"),
        ("LOG_LEVEL", "VERBOSE"),
        ("LOG_LEVEL", "CRITICAL"),
        ("MODEL_CACHE_DIR", "bad\x00dir"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**REQUIRED, variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert repr(value) in str(info.value)


def test_model_uri_forms() -> None:
    assert load_settings({**REQUIRED, "MODEL_URI": "gs://m-b/unet/v1/"}).model_uri == (
        "gs://m-b/unet/v1"
    )
    assert load_settings({**REQUIRED, "MODEL_URI": "/models/unet/"}).model_uri == "/models/unet"
    assert load_settings({**REQUIRED, "MODEL_URI": "models/unet"}).model_uri == "models/unet"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("abc", True),
        ("demo-seg_output.v1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        (".".join(["a" * 60] * 3), True),
        ("ab", False),
        ("-abc", False),
        ("abc-", False),
        ("a..b", False),
        ("googbucket", False),
        ("ABC", False),
    ],
)
def test_bucket_names(name: str, valid: bool) -> None:
    assert is_valid_bucket_name(name) is valid


def test_each_setting_has_the_variable_of_its_name_and_the_deployment_sets_it():
    """One owner: a field of Settings is read from its upper-cased name, and Terraform passes
    every one except DEPLOY_DEFAULTED (tools/iac/check_structure.py holds root main.tf to it)."""
    from segmentation import settings as settings_lib

    names = settings_lib.variable_names()
    assert names[:2] == ("OUTPUT_BUCKET", "MODEL_URI")
    assert set(settings_lib.DEPLOY_DEFAULTED) <= set(names)
    environ = {"OUTPUT_BUCKET": "out-bucket", "MODEL_URI": "gs://models/unet/latest"}
    for name in names[2:]:  # every optional setting is read from its own variable
        with pytest.raises(SettingsError, match=name):
            settings_lib.load_settings({**environ, name: "\x00not a value"})


def test_input_bucket_and_delete_outputs_on_delete() -> None:
    settings = load_settings(REQUIRED)
    assert settings.input_bucket is None and settings.delete_outputs_on_delete is True
    settings = load_settings(
        {**REQUIRED, "INPUT_BUCKET": "demo-seg-input", "DELETE_OUTPUTS_ON_DELETE": "False"}
    )
    assert settings.input_bucket == "demo-seg-input"
    assert settings.delete_outputs_on_delete is False
    for raw, value in (("true", True), ("1", True), ("yes", True), ("0", False), ("off", False)):
        assert (
            load_settings({**REQUIRED, "DELETE_OUTPUTS_ON_DELETE": raw}).delete_outputs_on_delete
            is value
        )
    with pytest.raises(SettingsError, match=r"^DELETE_OUTPUTS_ON_DELETE: must be true or false"):
        load_settings({**REQUIRED, "DELETE_OUTPUTS_ON_DELETE": "maybe"})
    with pytest.raises(SettingsError, match=r"^INPUT_BUCKET: is not a valid"):
        load_settings({**REQUIRED, "INPUT_BUCKET": "gs:/x"})
    with pytest.raises(SettingsError, match=r"^INPUT_BUCKET: must not be OUTPUT_BUCKET"):
        load_settings({**REQUIRED, "INPUT_BUCKET": REQUIRED["OUTPUT_BUCKET"]})
