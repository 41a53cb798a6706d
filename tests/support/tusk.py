"""Running `tusk` commands as a user would, in child processes with an environment of their own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from tests.support.api import SECRET
from tests.support.processes import ROOT
from tusk.testing.processes import clean_env


def db_env(conninfo: str, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=conninfo, SECRET_KEY=SECRET, **extra)


def run_tusk(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tusk", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TuskProcess:
    """A long-running `tusk` command whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tusk", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop_gracefully(self) -> None:
        """SIGTERM, then check that it shut down cleanly (uvicorn re-raises the signal after a
        graceful shutdown, so "killed by SIGTERM" is a clean exit here)."""
        code = self.stop(signal.SIGTERM)
        assert code in (0, -signal.SIGTERM), self.output()
        assert "Traceback" not in self.output(), self.output()


@contextmanager
def tusk_process(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[TuskProcess]:
    process = TuskProcess(args, env, log_path)
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(30)
        process._log.close()


def wait_http(
    url: str, *, status: int = 200, timeout: float = 60, process: TuskProcess | None = None
) -> float:
    """Poll `url` until it answers `status`; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process is not None and process.proc.poll() is not None:
            raise AssertionError(f"tusk exited with {process.proc.returncode}:\n{process.output()}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    detail = process.output() if process else ""
    raise AssertionError(f"{url} did not answer {status} within {timeout} s\n{detail}")
