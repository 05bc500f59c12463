"""The platform's wheel, built from the repository and uploaded where the cluster installs it;
content-addressed, so an unchanged build is uploaded once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

SOURCE_ROOT = Path(__file__).resolve().parents[3]
"""The repository root when the platform runs from a checkout (it holds pyproject.toml)."""


class ArtifactError(RuntimeError):
    """The wheel could not be built or found."""


def build_wheel(out_dir: Path, source: Path = SOURCE_ROOT) -> Path:
    """``pip wheel`` the platform (no dependencies: the cluster resolves them) into ``out_dir``."""
    if not (source / "pyproject.toml").is_file():
        raise ArtifactError(
            f"no pyproject.toml at {source}: set batch-inference.databricks.wheel to a built "
            "wheel when the platform is installed rather than run from its repository"
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out_dir),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out_dir.glob("batch_inference_platform-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ArtifactError(f"building the wheel from {source} failed: {done.stderr[-2000:]}")
    return wheels[-1]


def upload_wheel(client: WorkspaceClient, wheel: Path, artifacts_dir: str) -> str:
    """Upload ``wheel`` under ``artifacts_dir`` (``dbfs:/...``) in a folder named by its
    content hash; returns the ``dbfs:/`` path the task's ``libraries`` names."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    target = f"{artifacts_dir.rstrip('/')}/{digest}/{wheel.name}"
    path = target.removeprefix("dbfs:")
    try:
        client.dbfs.get_status(path)
        return target
    except NotFound:
        pass
    with wheel.open("rb") as data:
        client.dbfs.upload(path, data, overwrite=True)
    return target


def prepared_wheel(client: WorkspaceClient, artifacts_dir: str, prebuilt: str = "") -> str:
    """The uploaded wheel: ``prebuilt`` if given, else built from the repository."""
    if prebuilt:
        wheel = Path(prebuilt)
        if not wheel.is_file():
            raise ArtifactError(f"batch-inference.databricks.wheel: no file at {prebuilt}")
        return upload_wheel(client, wheel, artifacts_dir)
    with tempfile.TemporaryDirectory(prefix="bip-wheel-") as out:
        return upload_wheel(client, build_wheel(Path(out)), artifacts_dir)
