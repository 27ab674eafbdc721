"""Settings from SKINDX_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import DEFAULT_MODEL_DIR, MB, Settings


def test_defaults():
    settings = Settings.from_env({})
    assert (
        settings.model_dir == DEFAULT_MODEL_DIR == Path(__file__).parents[2] / "serving" / "model"
    )
    assert settings.max_upload_bytes == 10 * MB
    assert settings.admin_token is None
    assert settings.max_request_bytes > settings.max_upload_bytes


def test_environment_overrides_and_types():
    settings = Settings.from_env(
        {
            "SKINDX_MODEL_DIR": "/srv/model",
            "SKINDX_MAX_BATCH": "32",
            "SKINDX_MAX_WAIT_MS": "2.5",
            "SKINDX_ADMIN_TOKEN": "s3cret",
            "SKINDX_WORKERS": "4",
            "SKINDX_QUEUE_SIZE": " ",
        }
    )
    assert settings.model_dir == Path("/srv/model")
    assert (settings.max_batch, settings.max_wait_ms, settings.workers) == (32, 2.5, 4)
    assert settings.queue_size == Settings().queue_size  # blank means unset
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SKINDX_MAX_BATCH": "many"}, "SKINDX_MAX_BATCH='many' is not a valid int"),
        ({"SKINDX_MAX_BATCH": "0"}, "max_batch must be at least 1"),
        ({"SKINDX_MAX_WAIT_MS": "-1"}, "max_wait_ms must be >= 0"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
