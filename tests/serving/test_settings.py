"""Settings from SKINDX_* environment variables over the repository's `.env` (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import DEFAULT_MODEL_DIR, ENV_FILE, MB, Settings, SettingsError
from skindx.inference.resources import cpu_threads
from tests.conftest import REPO_ROOT


def test_defaults():
    settings = Settings.from_env({})
    assert (
        settings.model_dir == DEFAULT_MODEL_DIR == Path(__file__).parents[2] / "serving" / "model"
    )
    assert settings.max_upload_mb == 10
    assert settings.max_upload_bytes == 10 * MB
    assert settings.admin_token is None and settings.admin_token_value is None
    assert settings.max_request_bytes > settings.max_upload_bytes
    # the CPUs this process may use (affinity, cgroup quota), not the host's core count
    assert settings.intra_op_threads == settings.decode_threads == cpu_threads()


def test_environment_overrides_and_types():
    settings = Settings.from_env(
        {
            "SKINDX_MODEL_DIR": "/srv/model",
            "SKINDX_MAX_BATCH": "32",
            "SKINDX_MAX_WAIT_MS": "2.5",
            "SKINDX_ADMIN_TOKEN": "s3cret",
            "SKINDX_WORKERS": "4",
            "SKINDX_QUEUE_SIZE": " ",
            "SKINDX_MAX_UPLOAD_MB": "25",
            "SKINDX_LOG_LEVEL": "DEBUG",
            "SKINDX_HTTP_PORT": "9000",  # a deploy default for nginx: not the API's, ignored
        }
    )
    assert settings.model_dir == Path("/srv/model")
    assert (settings.max_batch, settings.max_wait_ms, settings.workers) == (32, 2.5, 4)
    assert settings.queue_size == Settings.from_env({}).queue_size  # blank means unset
    assert settings.max_upload_bytes == 25 * MB
    assert settings.log_level == "debug"
    assert settings.admin_token_value == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SKINDX_MAX_BATCH": "many"}, "SKINDX_MAX_BATCH='many' is not a valid int"),
        ({"SKINDX_MAX_BATCH": "0"}, "max_batch must be at least 1"),
        ({"SKINDX_MAX_WAIT_MS": "-1"}, "max_wait_ms must be >= 0"),
        ({"SKINDX_MAX_UPLOAD_MB": "0"}, r"max_upload_mb must be at least 1 \(SKINDX_MAX_UPLOAD_MB"),
        ({"SKINDX_PORT": "70000"}, "port must be at most 65535"),
        ({"SKINDX_LOG_LEVEL": "loud"}, "SKINDX_LOG_LEVEL='loud'"),
        ({"SKINDX_MAX_UPLOAD_BYTES": "1000"}, "set SKINDX_MAX_UPLOAD_MB"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict, message: str):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SKINDX_MAX_BATCH": "0", "SKINDX_WORKERS": "two"})
    assert "SKINDX_MAX_BATCH" in str(caught.value) and "SKINDX_WORKERS" in str(caught.value)


def test_the_env_file_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# deploy defaults\nSKINDX_MAX_UPLOAD_MB=7\nSKINDX_MAX_BATCH=8\nSKINDX_UI_SESSIONS=3\n"
    )
    monkeypatch.delenv("SKINDX_MAX_UPLOAD_MB", raising=False)
    monkeypatch.setenv("SKINDX_MAX_BATCH", "4")
    settings = Settings(_env_file=env_file)
    assert settings.max_upload_mb == 7  # from the file
    assert settings.max_batch == 4  # the environment beats the file


def test_the_checkout_env_file_is_the_one_read():
    """The API of a checkout reads the repository's `.env`, where the deploy defaults live."""
    assert ENV_FILE == REPO_ROOT / ".env"
    assert Settings.model_config["env_file"] == ENV_FILE


def test_python_m_serving_refuses_bad_settings_in_one_line():
    import os
    import subprocess
    import sys

    env = dict(os.environ, SKINDX_MAX_BATCH="0", SKINDX_WORKERS="two")
    result = subprocess.run(
        [sys.executable, "-m", "serving"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "SKINDX_MAX_BATCH" in result.stderr and "SKINDX_WORKERS" in result.stderr
