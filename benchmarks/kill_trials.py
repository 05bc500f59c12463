"""``python -m benchmarks.kill_trials --trials 20``: kill -9 scoring runs at random points and
check that nothing is lost, duplicated or partial, and that every killed run ends FAILURE.

On a fresh platform in ``--workdir`` (its own lake, MLflow registry and local Dagster instance,
``lib/instance_yaml.local_instance_yaml``, with ``dagster-daemon run`` for run monitoring, and
its own deployments folder: the package's ``credit_risk``, its source table under the workdir):

1. prepare: ``--days`` days of ``--rows`` generated features, the demo model trained, each day
   scored once (which also compiles the model into the cache); a further unkilled scoring run
   is timed from process start to exit (T);
2. each trial: a worker process runs ``credit_risk__score_partition_job`` for one day on the
   instance (as ``make demo`` does) and gets SIGKILL after a uniformly random 0..T seconds
   (``--seed``);
   then: the run it created, if any, must become FAILURE (the monitoring daemon; how long it
   took is measured); the day's predictions must be a whole partition of one write that
   scored exactly the validated rows (no row lost, none twice, no null score); a rerun must
   succeed and leave the same rows, written by the rerun;
3. the files the trials left in the lake (replaced partitions, files of killed writers) are
   measured against the live data, and ``lake_maintenance`` (retention 0 here: nothing else
   writes) removes them.

Exit status 0 when every check held. The figures are printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "credit_risk"
"""The package's deployment whose scoring runs are killed."""
FIRST_DAY = dt.date(2026, 11, 2)
FAILURE_DEADLINE_SECONDS = 120
"""A killed run must be FAILURE within this (the monitoring's promise is a minute; a run killed
before it STARTED waits for the 40 s start timeout)."""
ENV = "BIP__BATCH_INFERENCE__"


# --------------------------------------------------------------------------- the worker


def worker(command: str, args: list[str]) -> int:
    """What a worker process does: ``prepare DAYS ROWS``, ``score DAY``, ``maintain``. It
    prints one ``RESULT {json}`` line."""
    import dagster as dg

    from batch_inference_platform.config import load_settings
    from batch_inference_platform.definitions import build_definitions
    from batch_inference_platform.defs.scope import DeploymentScope
    from batch_inference_platform.lib.deployments.folder import read_deployments

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    settings = load_settings()
    defs = build_definitions(settings)
    scope = DeploymentScope(
        read_deployments(
            settings.project_root,
            settings.application.deployments_dir,
            lake_root=settings.application.lake.root,
        )[DEPLOYMENT]
    )
    features, demo_model = ("__".join(scope.key(a).path) for a in ("feature_tables", "demo_model"))
    result: dict[str, Any] = {}
    with dg.DagsterInstance.get() as instance:

        def run(job: str, partition: str | None = None, **config: Any) -> Any:
            """Run ``job``: the deployment's (``<name>__<job>``) unless it is the platform's."""
            name = job if job == "lake_maintenance_job" else scope.job_name(job)
            outcome = defs.resolve_job_def(name).execute_in_process(
                instance=instance,
                partition_key=partition,
                run_config={**quiet, **config},
                raise_on_error=False,
            )
            if not outcome.success and command != "score":
                raise RuntimeError(f"{job} {partition or ''} failed")
            return outcome

        if command == "prepare":
            days, rows = int(args[0]), int(args[1])
            for day in _days(days):
                run("generate_features_job", day, ops={features: {"config": {"rows": rows}}})
            run("train_demo_model_job", ops={demo_model: {"config": {"num_boost_round": 50}}})
            for day in _days(days):
                run("score_partition_job", day)
        elif command == "score":
            outcome = run("score_partition_job", args[0])
            result = {"run_id": outcome.run_id, "success": outcome.success}
        elif command == "maintain":
            outcome = run("lake_maintenance_job")
            (event,) = outcome.get_asset_materialization_events()
            metadata = event.step_materialization_data.materialization.metadata
            names = ("files_removed", "bytes_removed", "live_bytes", "tables_maintained")
            result = {name: metadata[name].value for name in names}
        else:
            raise SystemExit(f"unknown worker command {command!r}")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _days(count: int) -> list[str]:
    return [(FIRST_DAY + dt.timedelta(days=n)).isoformat() for n in range(count)]


# --------------------------------------------------------------------------- the driver


@dataclass
class Trial:
    number: int
    day: str
    fraction: float
    """Where in the run (0..1 of a run's duration) the kill is aimed (seeded)."""
    kill_after: float = 0.0
    """Seconds after the run's creation: ``fraction`` x the median duration of the runs so far."""
    outcome: str = ""
    """Where the run stood at the kill: its status and running steps, or ``finished``."""
    run_id: str = ""
    detected_after: float | None = None
    """Seconds from the kill until the run was FAILURE."""
    problems: list[str] = field(default_factory=list)


class Platform:
    """The trial platform's environment, processes and checks."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        data = workdir / "data"
        self.lake = data / "lake"
        self.home = workdir / "dagster_home"
        self.logs = workdir / "logs"
        self.deployments = workdir / "deployments"
        self.env = {
            **os.environ,
            "PYTHONWARNINGS": "ignore",
            "DAGSTER_HOME": str(self.home),
            ENV + "DATA_DIR": str(data),
            ENV + "LAKE__ROOT": str(self.lake),
            ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
            ENV + "MLFLOW__REGISTRY_URI": "",
            ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
            ENV + "MAINTENANCE__VACUUM_RETENTION": "0h",
            ENV + "DEPLOYMENTS_DIR": str(self.deployments),
        }
        self.daemon: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        from batch_inference_platform.lib.instance_yaml import local_instance_yaml

        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        for folder in (self.lake, self.home, self.logs):
            folder.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text(local_instance_yaml())
        self._write_deployment()
        with self.instance() as instance:
            instance.get_runs(limit=1)  # create the storage before processes race for it

    def _write_deployment(self) -> None:
        """The package's credit_risk, its source table in the trial lake (not the project's
        ``data/lake``, which ``make demo`` writes)."""
        from batch_inference_platform.lib.deployments.folder import DEFAULT_FOLDER

        document = yaml.safe_load((DEFAULT_FOLDER / DEPLOYMENT / "defs.yaml").read_text())
        document["attributes"]["source"]["table"] = str(self.lake / "features" / DEPLOYMENT)
        path = self.deployments / DEPLOYMENT / "defs.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def tables(self) -> Any:
        """The deployment's tables in the trial lake (``DeploymentTables``)."""
        from batch_inference_platform.lib.deployments.folder import read_deployments
        from batch_inference_platform.lib.lake.layout import LakeLayout

        deployment = read_deployments(REPO, self.deployments, lake_root=str(self.lake))[DEPLOYMENT]
        return LakeLayout(str(self.lake)).deployment(deployment)

    def instance(self) -> Any:
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "benchmarks.kill_trials", "worker", *args]
        with (self.logs / f"worker-{args[0]}.log").open("ab") as log:
            return subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )

    def work(self, *args: str) -> dict[str, Any]:
        process = self.start_worker(*args)
        out, _ = process.communicate()
        line = next((x for x in out.decode().splitlines() if x.startswith("RESULT ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"worker {args} failed (exit {process.returncode}), see {self.logs}")
        return json.loads(line.removeprefix("RESULT "))

    def run_seconds(self, run_id: str) -> float:
        """A finished run's duration, from its creation to its end."""
        with self.instance() as instance:
            record = instance.get_run_record_by_id(run_id)
            assert record is not None and record.end_time is not None
            return record.end_time - record.create_timestamp.timestamp()

    def start_daemon(self) -> None:
        daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run"]
        daemon += ["-m", "batch_inference_platform.definitions"]
        with (self.logs / "daemon.log").open("ab") as log:
            self.daemon = subprocess.Popen(
                daemon, cwd=REPO, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 180
        with self.instance() as instance:
            while not instance.get_daemon_heartbeats().get("MONITORING"):
                if time.monotonic() > deadline or self.daemon.poll() is not None:
                    raise RuntimeError(f"the daemon did not start, see {self.logs}/daemon.log")
                time.sleep(0.5)

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(timeout=30)


def partition_problems(platform: Platform, day: str, *, written_by: str | None = None) -> list[str]:
    """What is wrong with the day's predictions against its validated rows (nothing: [])."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    def read(uri: str, columns: list[str]) -> list[dict[str, Any]]:
        dataset = DeltaTable(uri).to_pyarrow_dataset()
        where = ds.field("event_date") == pa.scalar(dt.date.fromisoformat(day), pa.date32())
        return [r for b in dataset.to_batches(columns=columns, filter=where) for r in b.to_pylist()]

    tables = platform.tables()
    validated = {row["customer_id"] for row in read(tables.validated.uri, ["customer_id"])}
    scored = read(tables.predictions.uri, ["customer_id", "score", "run_id"])
    keys = Counter(row["customer_id"] for row in scored)
    writers = {row["run_id"] for row in scored}
    problems = []
    if lost := len(validated - keys.keys()):
        problems.append(f"{lost} validated rows have no score")
    if extra := len(keys.keys() - validated):
        problems.append(f"{extra} scores for rows that are not validated")
    if twice := sum(count - 1 for count in keys.values() if count > 1):
        problems.append(f"{twice} rows scored more than once")
    if nulls := sum(row["score"] is None for row in scored):
        problems.append(f"{nulls} null scores")
    if len(writers) != 1:
        problems.append(f"the partition mixes {len(writers)} writes")
    elif written_by is not None and writers != {written_by}:
        problems.append(f"written by {writers} instead of the rerun {written_by}")
    return problems


def run_trial(platform: Platform, trial: Trial) -> str:
    """Start a scoring worker, SIGKILL it ``trial.kill_after`` seconds after its run was
    created, wait for the run to be FAILURE, check the partition, rerun, check again; the
    rerun's run id."""
    import dagster as dg

    started = dt.datetime.now(dt.UTC)
    worker = platform.start_worker("score", trial.day)
    with platform.instance() as instance:
        created = None
        while created is None and worker.poll() is None:
            records = instance.get_run_records(
                filters=dg.RunsFilter(tags={"dagster/partition": trial.day}, created_after=started),
                limit=1,
            )
            if records:
                created = records[0]
            else:
                time.sleep(0.02)
        if created is None:
            trial.problems.append(f"the worker exited ({worker.returncode}) without a run")
            return ""
        trial.run_id = created.dagster_run.run_id
        kill_at = created.create_timestamp.timestamp() + trial.kill_after
        time.sleep(max(0.0, kill_at - time.time()))
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        killed_at = time.monotonic()
        run = instance.get_run_by_id(trial.run_id)
        assert run is not None
        if run.status == dg.DagsterRunStatus.SUCCESS:
            trial.outcome = "finished"
        else:
            trial.outcome = f"{run.status.value} {_running_steps(instance, run.run_id)}".strip()
            while run.status != dg.DagsterRunStatus.FAILURE:
                if time.monotonic() - killed_at > FAILURE_DEADLINE_SECONDS:
                    trial.problems.append(f"run still {run.status.value} after the deadline")
                    break
                time.sleep(0.25)
                run = instance.get_run_by_id(trial.run_id) or run
            else:
                trial.detected_after = time.monotonic() - killed_at
    trial.problems += [f"after the kill: {p}" for p in partition_problems(platform, trial.day)]
    rerun = platform.work("score", trial.day)
    if not rerun["success"]:
        trial.problems.append(f"the rerun {rerun['run_id']} failed")
    problems = partition_problems(platform, trial.day, written_by=rerun["run_id"])
    trial.problems += [f"after the rerun: {p}" for p in problems]
    return rerun["run_id"] if rerun["success"] else ""


def _running_steps(instance: Any, run_id: str) -> str:
    """The steps the run had started and not finished (where the kill hit it)."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    running: list[str] = []
    for record in instance.get_records_for_run(run_id, of_type=kinds).records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            running.append(event.step_key)
        elif event.step_key in running:
            running.remove(event.step_key)
    return f"in {','.join(running)}" if running else "between steps"


def lake_bytes(root: Path) -> tuple[int, int]:
    """Data files under the lake root (not the logs) and their bytes."""
    files = [p for p in root.rglob("*") if p.is_file() and "_delta_log" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--days", type=int, default=2, help="days the trials rotate over")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per day")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=REPO / "data" / "kill_trials")
    args = parser.parse_args()
    platform = Platform(args.workdir.resolve())
    platform.create()
    clock = time.perf_counter()
    print(f"kill trials: {args.trials}, {args.days} days x {args.rows:,} rows, seed {args.seed}")
    platform.work("prepare", str(args.days), str(args.rows))
    days = _days(args.days)
    durations = [platform.run_seconds(platform.work("score", days[0])["run_id"])]
    prepared = time.perf_counter() - clock
    print(
        f"prepared in {prepared:.0f} s; a scoring run takes {durations[0]:.1f} s (created to end)"
    )

    chooser = random.Random(args.seed)
    trials = [Trial(n + 1, days[n % len(days)], chooser.random()) for n in range(args.trials)]
    platform.start_daemon()
    try:
        for trial in trials:
            trial.kill_after = trial.fraction * statistics.median(durations)
            rerun = run_trial(platform, trial)
            if rerun:
                durations.append(platform.run_seconds(rerun))
            detected = f"{trial.detected_after:5.1f} s" if trial.detected_after else "    -  "
            status = "ok" if not trial.problems else "; ".join(trial.problems)
            print(
                f"  trial {trial.number:2}  {trial.day}  kill at {trial.kill_after:5.1f} s  "
                f"run {trial.outcome:28}  FAILURE after {detected}  {status}",
                flush=True,
            )
    finally:
        platform.stop_daemon()

    files, size = lake_bytes(platform.lake)
    maintenance = platform.work("maintain")
    files_after, size_after = lake_bytes(platform.lake)
    problems = [p for day in days for p in partition_problems(platform, day)]
    _print_figures(trials, durations, (files, size), maintenance, (files_after, size_after))
    failed = [t for t in trials if t.problems] or problems
    print("RESULT: " + ("FAILED" if failed else "every check held"))
    return 1 if failed else 0


def _print_figures(
    trials: list[Trial],
    durations: list[float],
    before: tuple[int, int],
    maintenance: dict[str, Any],
    after: tuple[int, int],
) -> None:
    killed = [t for t in trials if t.run_id and t.outcome != "finished"]
    detections = [t.detected_after for t in killed if t.detected_after is not None]
    outcomes = Counter(t.outcome for t in trials if t.outcome)
    mb = 1024 * 1024
    print()
    print(
        f"trials:                  {len(trials)} (killed at a uniformly random point of the run; "
        f"runs took {min(durations):.1f}..{max(durations):.1f} s, created to end)"
    )
    print(f"where the kill landed:   {dict(sorted(outcomes.items()))}")
    print(f"killed runs:             {len(killed)}, FAILURE: {len(detections)}")
    if detections:
        print(
            f"marked FAILURE after:    median {statistics.median(detections):.1f} s, "
            f"max {max(detections):.1f} s"
        )
    print(f"trials with problems:    {sum(bool(t.problems) for t in trials)}")
    print(
        f"lake before maintenance: {before[0]} files, {before[1] / mb:.1f} MB "
        f"({maintenance['live_bytes'] / mb:.1f} MB live)"
    )
    print(
        f"lake_maintenance:        {maintenance['files_removed']} files, "
        f"{maintenance['bytes_removed'] / mb:.1f} MB removed from "
        f"{maintenance['tables_maintained']} tables"
    )
    print(f"lake after maintenance:  {after[0]} files, {after[1] / mb:.1f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
