"""Regenerate the UI screenshots in docs/ui/ from a demo instance after a range run.

    .venv/bin/python docs/ui/capture.py                 # scratch data dir, then docs/ui/*.png
    .venv/bin/python docs/ui/capture.py --data-dir data # the project's own demo instance

Steps: ``batch-inference demo`` for two days (both deployments), the last day generated again
with more rows (so the two days differ), ONE ``credit_risk__score_partition_job`` run over both
days (as a backfill runs), then ``dagster-webserver`` on ``workspace.yaml`` and that instance,
and headless Chromium (Debian's, through Debian's chromedriver: ``bash .ci/chromium``) saves
``asset-graph.png``, ``predictions-asset.png`` and ``predictions-check.png`` at 1400x900.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batch_inference_platform.defs.scope import DeploymentScope

REPO = Path(__file__).resolve().parents[2]
ENV = "BIP__BATCH_INFERENCE__"
DEPLOYMENT = "credit_risk"
LOCATION = "batch_inference_platform"
"""The code location's name in workspace.yaml."""
CHECK = "row_count_matches_validated"
VIEWPORT = (1400, 900)
WAIT = 90


def main() -> int:
    """Parse the arguments, build the instance, serve it and take the screenshots."""
    parser = argparse.ArgumentParser(description="Regenerate the UI screenshots in docs/ui/.")
    parser.add_argument("--data-dir", type=Path, help="the demo's data dir (default: scratch)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the first day")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui")
    parser.add_argument(
        "--no-runs", action="store_true", help="capture --data-dir as it is (no demo, no runs)"
    )
    args = parser.parse_args()
    data = (args.data_dir or Path(tempfile.mkdtemp(prefix="bip-ui-"))).resolve()
    env = demo_env(data)
    os.environ.update(env)
    bin_dir = Path(sys.executable).parent
    demo = [str(bin_dir / "batch-inference"), "demo", "--days", "2", "--rows", str(args.rows)]
    if args.no_runs:
        days = demo_days()
    else:
        subprocess.run([*demo, "--boost-rounds", "50"], check=True, cwd=REPO)
        days = range_run(args.rows * 17 // 10)
    home = data / "dagster_home"
    (home / ".nux").mkdir(parents=True, exist_ok=True)  # the UI's first-visit dialog: seen
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    with webserver(home, env, data / "webserver.log") as url:
        capture(url, days[0], args.out)
    print(f"screenshots of {data} in {args.out}")
    return 0


def demo_env(data: Path) -> dict[str, str]:
    """The settings that put the demo's lake, registry and instance under ``data``."""
    return {
        ENV + "DATA_DIR": str(data),
        ENV + "LAKE__ROOT": str(data / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow/mlflow.db",
        ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "mlflow" / "artifacts"),
        ENV + "API__INBOX_URL": f"sqlite:///{data}/inbox.db",
        ENV + "API__JOBS_URL": f"sqlite:///{data}/jobs.db",
    }


def demo_scope() -> DeploymentScope:
    """The credit_risk deployment's asset keys, jobs and partitions under the settings."""
    from batch_inference_platform.config import load_settings
    from batch_inference_platform.defs.scope import DeploymentScope
    from batch_inference_platform.lib.deployments.folder import read_deployments

    settings = load_settings()
    app = settings.application
    found = read_deployments(settings.project_root, app.deployments_dir, lake_root=app.lake.root)
    return DeploymentScope(found[DEPLOYMENT])


def demo_days() -> list[str]:
    """The demo's two days (the last two complete partitions)."""
    partitions = demo_scope().partitions_def
    assert partitions is not None
    return list(partitions.get_partition_keys()[-2:])


def range_run(rows_last_day: int) -> list[str]:
    """The last day of the demo generated again with ``rows_last_day`` rows, then ONE scoring
    run over the demo's two days; returns the days."""
    import dagster as dg

    from batch_inference_platform.cli import prepare_dagster_home
    from batch_inference_platform.config import load_settings
    from batch_inference_platform.definitions import build_definitions

    settings = load_settings()
    prepare_dagster_home(settings)
    scope, days = demo_scope(), demo_days()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    features = "__".join(scope.features.path)
    generated = defs.resolve_job_def(scope.job_name("generate_features_job")).execute_in_process(
        partition_key=days[-1],
        instance=instance,
        run_config={"ops": {features: {"config": {"rows": rows_last_day}}}},
    )
    assert generated.success
    scored = defs.resolve_job_def(scope.job_name("score_partition_job")).execute_in_process(
        tags={
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[-1],
        },
        instance=instance,
    )
    assert scored.success
    instance.dispose()
    return days


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def webserver(home: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """``dagster-webserver`` on the repo's workspace and ``home``; stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env={**os.environ, **env, "DAGSTER_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + WAIT
        while not answers(url + "/server_info"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dagster-webserver did not come up; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def answers(url: str) -> bool:
    """``url`` answers an HTTP GET."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def capture(url: str, day: str, out: Path) -> None:
    """The three screenshots: the credit_risk group's graph, the predictions asset with
    ``day`` selected in its Partitions tab, and the row-count check's execution history."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    width, height = VIEWPORT
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    wait = WebDriverWait(driver, WAIT)

    def visible(xpath: str) -> WebElement:
        return wait.until(ec.visibility_of_element_located((By.XPATH, xpath)))

    def save(name: str) -> None:
        """The page once two screenshots a moment apart agree (layout and animations done)."""
        previous = b""
        for _ in range(40):
            shot = driver.get_screenshot_as_png()
            if shot == previous:
                break
            previous = shot
            time.sleep(0.5)
        (out / name).write_bytes(previous)
        print(f"{out / name}: {len(previous) // 1024} KiB")

    try:
        out.mkdir(parents=True, exist_ok=True)
        driver.get(f"{url}/locations/{LOCATION}/asset-groups/{DEPLOYMENT}/lineage")
        visible("//*[normalize-space(text())='predictions']")
        visible("//*[normalize-space(text())='Hide navigation']").click()  # room for the graph
        # One step closer: the nodes then show their checks, partitions and kinds.
        visible("//*[@aria-label='zoom_in']/ancestor::button[1]").click()
        save("asset-graph.png")

        driver.get(f"{url}/assets/{DEPLOYMENT}/predictions?view=partitions")
        visible("//label[starts-with(normalize-space(), 'Missing (')]").click()
        visible(f"//*[@title='{day}']/span").click()
        visible("//tr[td[1][normalize-space()='dagster/row_count']]/td[2]")
        save("predictions-asset.png")

        driver.get(f"{url}/assets/{DEPLOYMENT}/predictions?view=checks&checkDetail={CHECK}")
        visible("//*[normalize-space(text())='Execution history']").click()
        visible("//table/tbody/tr[td]")
        save("predictions-check.png")
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
