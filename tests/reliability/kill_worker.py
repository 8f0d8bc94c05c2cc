"""The service as a separate process driven step by step, so a test can SIGKILL it mid-cycle.

    python kill_worker.py SETTINGS.json

SETTINGS holds the config overrides and the start time. Each line on stdin is a virtual time (ISO);
the worker sets its clock there and runs the jobs due, announcing each job on stdout before it runs
("job NAME") and "done" after the cycle, so the test can kill it at a chosen point of a cycle.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sentinel.clock import ManualClock  # noqa: E402
from sentinel.config import DEFAULT_PATH, load_config  # noqa: E402
from sentinel.service import Service  # noqa: E402


def main(settings_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text(encoding="utf-8"))
    config = load_config(DEFAULT_PATH, overrides=settings["overrides"])
    clock = ManualClock(datetime.fromisoformat(settings["start"]))
    service = Service(config, clock, sleep=clock.advance)
    jobs = service.jobs()
    for job in jobs:
        job.run = _announced(job.name, job.run)
    print("ready", flush=True)
    for line in sys.stdin:
        clock.set(datetime.fromisoformat(line.strip()))
        service.run_due(jobs)
        print("done", flush=True)


def _announced(name, run):
    def announced():
        print(f"job {name}", flush=True)
        return run()

    return announced


if __name__ == "__main__":
    main(sys.argv[1])
