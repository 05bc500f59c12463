"""``batch-inference register-webhook`` against registries without a webhooks API: one clear
line and exit code 2, never a traceback (the server case is in test_model_update_sensor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENV

URL = "http://127.0.0.1:8080/api/v1/webhooks/mlflow"


@pytest.mark.parametrize(
    ("tracking_uri", "says"),
    [
        ("sqlite:///{tmp}/mlflow.db", "has no webhooks API"),
        ("databricks", "Databricks registry-webhooks API"),
    ],
)
def test_a_registry_without_webhooks_gets_one_clear_line(
    tmp_path: Path, tracking_uri: str, says: str
) -> None:
    env = {
        **os.environ,
        ENV + "MLFLOW__TRACKING_URI": tracking_uri.format(tmp=tmp_path),
        ENV + "DATA_DIR": str(tmp_path),
        "MLFLOW_WEBHOOK_SECRET": "a-secret-never-printed",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batch_inference_platform.cli",
            "register-webhook",
            "--url",
            "http://127.0.0.1:8080/api/v1/webhooks/mlflow",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("register-webhook:")]
    assert len(lines) == 1 and says in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "a-secret-never-printed" not in done.stdout + done.stderr


def test_an_unreachable_server_is_named_without_its_credentials(tmp_path: Path) -> None:
    """A tracking URI with user info (``https://user:token@host``) is shown without it."""
    env = {
        **os.environ,
        ENV + "MLFLOW__TRACKING_URI": "http://bip:a-token-never-printed@127.0.0.1:9",
        ENV + "DATA_DIR": str(tmp_path),
        "MLFLOW_WEBHOOK_SECRET": "a-secret-never-printed",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "batch_inference_platform.cli", "register-webhook", "--url", URL],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("register-webhook:")]
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0], done.stderr[-2000:]
    assert "a-token-never-printed" not in done.stdout + done.stderr
