"""A singleton scheduler job (``PeriodicJob``, the base of the release jobs) run by
two processes on one PostgreSQL: one run at a time across both, never overlapping."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HERE = Path(__file__).parent
SECONDS = 8.0


def test_two_processes_never_run_a_singleton_job_at_once(postgres: Any, tmp_path: Path) -> None:
    name = postgres.create()
    try:
        config = tmp_path / "emaild.toml"
        config.write_text("", encoding="utf-8")
        (tmp_path / "state").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
        env.update(
            EMAILD_CONFIG=str(config),
            EMAILD_STATE_DIR=str(tmp_path / "state"),
            EMAILD_DATABASE_URL=postgres.url(name),
            HOME=str(tmp_path),
        )
        log = tmp_path / "runs.log"
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "cluster_job.py"), str(log), str(SECONDS)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=SECONDS + 40)
            assert proc.returncode == 0, err.decode()
    finally:
        postgres.drop(name)

    runs: list[tuple[int, float, float]] = []
    started: dict[int, float] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, pid, at = line.split()
        if kind == "start":
            started[int(pid)] = float(at)
        else:
            runs.append((int(pid), started.pop(int(pid)), float(at)))
    assert not started, "a run started and never ended"
    runs.sort(key=lambda r: r[1])
    print(
        f"{len(runs)} runs: "
        + ", ".join(f"{p}: {sum(r[0] == p for r in runs)}" for p in {r[0] for r in runs})
    )
    for before, after in itertools.pairwise(runs):
        assert after[1] >= before[2], f"runs overlap: {before} and {after}"
    assert len(runs) >= 10, runs  # both kept trying: the job ran most of the time
    assert len({r[0] for r in runs}) == 2, "one process never got a turn"
