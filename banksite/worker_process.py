"""A ``celery -A banksite worker`` child process, as tests and benchmarks run it.

The worker and its pool processes form a process group of their own, so
stopping or killing it reaches all of them. Its output goes to a log file.
"""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """Start a prefork worker on one queue; stop it gently, or kill it."""

    def __init__(
        self,
        *,
        queue: str,
        env: dict[str, str],
        log_path: Path,
        name: str,
        concurrency: int = 2,
        loglevel: str = "INFO",
        beat: bool = False,
    ):
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "banksite",
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--queues={queue}",
            f"--hostname={name}-{uuid.uuid4().hex[:8]}@%h",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
        if beat:
            # An embedded beat with the plain file scheduler: the schedule
            # from settings, without touching the database's schedule tables.
            command += [
                "--beat",
                "--scheduler=celery.beat:PersistentScheduler",
                f"--schedule={log_path.with_suffix('.beat')}",
            ]
        self.log_path = log_path
        self.log = log_path.open("w")
        # A fixed command, no shell.
        self.process = subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL the worker and all its pool processes at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def stop(self, timeout: float = 30) -> None:
        """Ask the worker to finish (SIGTERM); kill it if it takes too long."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
