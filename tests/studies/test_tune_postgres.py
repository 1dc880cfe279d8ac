"""`cnnlab tune --storage postgresql://` against a real, throwaway PostgreSQL server.

The server binaries come from Debian's ``postgresql`` package (scripts/_postgres.sh installs it);
the fixture runs initdb in a temporary folder, listens on 127.0.0.1 only, runs as an
unprivileged user (PostgreSQL refuses root) and stops the server at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

from cnnlab.studies.tune import TuneConfig, open_storage, tune

from ._tune_helpers import expected_keys, need_fashion_mnist, open_at_once, write_space


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        reason = ("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (install "
                  "Debian's postgresql package: scripts/_postgres.sh)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    bin_dir = Path(found[-1]).parent
    root = tempfile.mkdtemp(prefix="cnnlab-pg-")
    data = os.path.join(root, "data")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use the unprivileged 'nobody'
        user = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    port = _free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120,
                              cwd=root)

    r = run(str(bin_dir / "initdb"), "-D", data, "-A", "trust", "-U", "cnnlab", "--no-sync")
    assert r.returncode == 0, r.stdout + r.stderr
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
    r = run(str(bin_dir / "pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(root, "log"),
            "-w", "-t", "60", "start")
    assert r.returncode == 0, r.stdout + r.stderr + Path(root, "log").read_text()
    try:
        yield f"postgresql://cnnlab@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    need_fashion_mnist()
    cfg = TuneConfig(space=str(write_space(tmp_path)), out=str(tmp_path / "out"),
                     storage=postgres_url, workers=2, threads=2, trials=6, subset=1200,
                     max_epochs=2, reduction_factor=2, device="cpu", retrain=False)
    result = tune(cfg)
    study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(postgres_url))
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 6 and len(result.trials) == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both worker processes ran trials
    numbers = [t.number for t in trials]
    ids = [t._trial_id for t in trials]
    assert len(set(numbers)) == len(numbers) and len(set(ids)) == len(ids)  # none twice
    assert sorted(numbers) == list(range(len(trials)))
    for t in finished:
        assert set(t.params) == expected_keys(t.params)
    assert "postgresql://cnnlab@127.0.0.1" in (Path(cfg.out) / "report.md").read_text()


@pytest.mark.slow
def test_workers_starting_at_once_on_a_new_postgresql_database_all_get_it(postgres_url):
    """Several machines' first workers create the schema at the same moment: none fails."""
    said = open_at_once(postgres_url, n=6)
    assert said == ["ok"] * 6, said
