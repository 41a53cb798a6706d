"""`tusk up`: the API and the worker as child processes, stopped together.

Children run in their own session so that a terminal's Ctrl-C reaches only this process, which
then stops them once, gracefully; on Linux they also die with it if it is killed outright.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

GRACE_SECONDS = 20.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tusk", *command],
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


class Stop:
    """Remembers that SIGINT or SIGTERM arrived."""

    def __init__(self) -> None:
        self.requested = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested += 1


def stop_all(children: list[subprocess.Popen[bytes]], grace: float = GRACE_SECONDS) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.args)
            child.kill()
            child.wait()


def supervise(commands: dict[str, list[str]], env: Mapping[str, str]) -> int:
    """Run the children until a signal or until one of them exits; return the exit code."""
    stop = Stop()
    children = {name: spawn(command, env) for name, command in commands.items()}
    code = 0
    while not stop.requested:
        exited = {name: c.returncode for name, c in children.items() if c.poll() is not None}
        if exited:
            log.error(
                "stopping: %s exited unexpectedly",
                ", ".join(f"{n} ({c})" for n, c in exited.items()),
            )
            code = 1
            break
        time.sleep(0.2)
    log.info("stopping the API and the worker")
    stop_all(list(children.values()))
    return code
