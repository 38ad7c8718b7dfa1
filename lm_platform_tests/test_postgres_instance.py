"""The production instance against a real PostgreSQL: a throwaway cluster in a temp dir (initdb as a
non-root user, loopback port, stopped at the end), a dagster.yaml pointing at it (dagster-postgres), part
of the demo graph materialized, a GPU-pool step, a tick of the training sensor from the real daemon, and
the rows checked through SQL."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own: yields its URL; stopped and removed afterwards."""
    if _pg_bin() is None:  # `make install` installs it; try the same script (root + apt-get) once more
        subprocess.run(["bash", str(REPO / "scripts" / "install_postgres.sh")], stdin=subprocess.DEVNULL)
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL (initdb) is not installed and could not be installed (not root / no apt-get)")
    # initdb refuses to run as root: the cluster belongs to an unprivileged user.
    as_user = {}
    base = Path(tempfile.mkdtemp(prefix="lm-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data, port = base / "data", _free_port()
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(base)}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        env=env,
        cwd=base,
        **as_user,
    )
    opts = f"-p {port} -k {base} -h 127.0.0.1 -c fsync=off"
    ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*ctl, "-o", opts, "-l", str(base / "log"), "-w", "-t", "120", "start"],
        check=True,
        capture_output=True,
        env=env,
        cwd=base,
        **as_user,
    )
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE dagster")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], capture_output=True, env=env, cwd=base, **as_user)
        shutil.rmtree(base, ignore_errors=True)


def _sql(url: str, query: str) -> list[tuple]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


@pytest.fixture(scope="module")
def home(postgres, tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    config = {
        "storage": {
            "postgres": {"postgres_url": postgres.replace("postgresql://", "postgresql+psycopg2://")}
        },
        "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def test_runs_events_materializations_and_pool_slots_live_in_postgres(postgres, home, tmp_path, demo_recipe):
    from lm_platform.defs.deployment import build_deployment_definitions
    from lm_platform.defs.resources import LMStorage
    from lm_platform.deployment.profile import Profile

    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    defs = build_deployment_definitions(demo_recipe, Profile(), prefix=[])
    corpus = [defs.get_assets_def(dg.AssetKey(["corpus", s.name])) for s in demo_recipe.sources]

    # A GPU-pool step (the pool every checkpoint/<stage> declares), cheap here.
    @dg.asset(key=["pool_probe"], pool="gpu")
    def pool_probe() -> None:
        return None

    storage = LMStorage(root=str(tmp_path / "data"))
    result = dg.materialize([*corpus, pool_probe], instance=instance, resources={"storage": storage})
    assert result.success

    runs = _sql(postgres, "SELECT run_id, status FROM runs")
    assert (result.run_id, "SUCCESS") in runs
    (events,) = _sql(postgres, f"SELECT count(*) FROM event_logs WHERE run_id = '{result.run_id}'")[0:1]
    assert events[0] > 10
    keys = {
        row[0]
        for row in _sql(
            postgres,
            "SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            f"AND run_id = '{result.run_id}'",
        )
    }
    for src in demo_recipe.sources:
        assert dg.AssetKey(["corpus", src.name]).to_string() in keys
    # The gpu pool: its limit (default_limit) and the slot the step claimed and released.
    assert ("gpu", 1) in _sql(postgres, 'SELECT concurrency_key, "limit" FROM concurrency_limits')
    slots = _sql(postgres, "SELECT concurrency_key, run_id FROM concurrency_slots WHERE NOT deleted")
    assert slots == [("gpu", None)], "one gpu slot, free again after the run"
    steps = _sql(postgres, "SELECT concurrency_key, run_id, step_key FROM pending_steps")
    assert steps == [] or all(k == "gpu" for k, _, _ in steps)
    probe = _sql(
        postgres,
        "SELECT count(*) FROM event_logs WHERE step_key = 'pool_probe' AND dagster_event_type = 'STEP_SUCCESS'",
    )
    assert probe[0][0] == 1


def test_training_sensor_ticks_into_postgres(postgres, home, tmp_path):
    """The real daemon evaluates the demo's training sensors (running: profile `sensors: running`) and
    records the tick and the sensors' state in Postgres."""
    instance = dg.DagsterInstance.from_config(str(home))  # creates the schedule storage's tables
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    profile = tmp_path / "profile.yaml"
    profile.write_text("kind: local\nsensors: running\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module: {module_name: lm_platform.definitions, location_name: lm_platform}\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LM_PLATFORM_PROFILE": str(profile),
        "LM_PLATFORM_STORAGE": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ticks: list[tuple] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not ticks:
            time.sleep(3)
            rows = _sql(postgres, "SELECT type, status, tick_body FROM job_ticks")
            ticks = [r for r in rows if "train_demo_" in r[2]]
        assert ticks, "no tick of a training sensor reached Postgres within 5 minutes"
        states = _sql(postgres, "SELECT job_origin_id, status FROM jobs")
        assert states, "the running sensors' instigator state is in Postgres"
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
