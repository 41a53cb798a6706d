"""The request/response protocol with a sandbox's boot program, and how its exits are read."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tusk.errors import InvalidParam
from tusk.sandbox.command import Language
from tusk.sandbox.errors import (
    ERRORS_BY_KIND,
    BadReturnType,
    CodeExecutionError,
    CodeRuntimeError,
    CodeTimeout,
    MemoryLimitExceeded,
)
from tusk.sandbox.limits import Limits

OUT_OF_MEMORY = re.compile(
    r"out of memory|heap limit|MemoryError|allocation failed|bad_alloc", re.I
)


@dataclass(frozen=True)
class Result:
    outputs: dict[str, Any]
    stdout: str  # what the code printed, at most `Limits.print_bytes`
    stdout_truncated: bool
    elapsed: float  # seconds from sending the inputs to receiving the outputs


# --- requests and responses (pure) -----------------------------------------------------------


def encode_request(
    code: str, inputs: Mapping[str, Any], limits: Limits, modules: Iterable[str], path: list[str]
) -> bytes:
    if not isinstance(code, str):
        raise InvalidParam("code must be a string")
    if not isinstance(inputs, Mapping) or not all(isinstance(key, str) for key in inputs):
        raise InvalidParam("inputs must be an object whose keys are strings")
    request = {
        "code": code,
        "inputs": dict(inputs),
        "limits": {
            "max_depth": limits.max_depth,
            "output_bytes": limits.output_bytes,
            "print_bytes": limits.print_bytes,
        },
        "modules": sorted(modules),
        "path": path,
    }
    try:
        text = json.dumps(request, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParam(f"the inputs are not JSON values: {exc}") from None
    return text.encode("utf-8", "surrogatepass") + b"\n"


def depth(value: object, limit: int) -> int:
    """How deeply `value` nests (a scalar is 0), counted up to `limit + 1` at most."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((depth(item, limit - 1) for item in items), default=0)


def _error(kind: str, message: Mapping[str, Any], stdout: str) -> CodeExecutionError:
    cls = ERRORS_BY_KIND.get(kind, CodeRuntimeError)
    keys = ("line", "column", "text", "error_type", "traceback")
    details = {key: message[key] for key in keys if message.get(key) is not None}
    text = message.get("message")
    return cls(text if isinstance(text, str) else kind, details=details, stdout=stdout)


def parse_response(line: bytes, limits: Limits, elapsed: float) -> Result:
    """The boot program's answer as a Result, or the typed error it reports."""
    try:
        message = json.loads(line.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        message = None
    if not isinstance(message, dict):
        raise CodeRuntimeError("the code corrupted the sandbox's response")
    stdout = message["stdout"] if isinstance(message.get("stdout"), str) else ""
    kind = message.get("kind")
    if kind != "ok":
        raise _error(str(kind), message, stdout)
    outputs = message.get("outputs")
    if not isinstance(outputs, dict):
        raise BadReturnType("main() must return a dict", stdout=stdout)
    if depth(outputs, limits.max_depth) > limits.max_depth:
        raise BadReturnType(f"the result is nested deeper than {limits.max_depth} levels")
    return Result(outputs, stdout, bool(message.get("stdout_truncated")), elapsed)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_exit(
    returncode: int, stderr: bytes, language: Language, limits: Limits
) -> CodeExecutionError:
    """The error for a sandbox that ended without answering. bwrap exits 128+N when its child
    died of signal N; without bwrap, asyncio reports -N."""
    text = stderr.decode("utf-8", "replace")
    details: dict[str, object] = {"exit_code": returncode, "stderr": text[-2000:]}
    number = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    if OUT_OF_MEMORY.search(text):
        return MemoryLimitExceeded(
            f"the code used more than {limits.memory_mb} MB of memory", details=details
        )
    if number == signal.SIGXCPU:
        return CodeTimeout(f"the code used more than {limits.cpu_seconds} s of CPU time")
    if number == signal.SIGKILL:
        return MemoryLimitExceeded(
            "the code was killed by the system, most likely for using too much memory",
            details=details,
        )
    if number == signal.SIGXFSZ:
        return CodeRuntimeError(
            f"the code wrote a file larger than {limits.file_size_mb} MB", details=details
        )
    if number:
        name = "Python" if language is Language.PYTHON else "Node.js"
        return CodeRuntimeError(
            f"the {name} process crashed ({_signal_name(number)})", details=details
        )
    return CodeRuntimeError(
        f"the code ended its process (exit code {returncode}) before main() returned",
        details=details,
    )


def start_failure(language: Language, returncode: int | None, stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()[-1000:] or "no message"
    hint = ""
    if re.search(r"uid map|new namespace", text):
        hint = (
            " (bubblewrap needs unprivileged user namespaces: sysctl "
            "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu "
            "24.04 and later also an AppArmor profile that lets bwrap use them)"
        )
    elif "Can't find source path" in text:
        hint = " (the sandbox user must be able to read TUSK_SANDBOX_PACKAGES_DIR)"
    return f"the {language} sandbox did not start (exit code {returncode}): {text}{hint}"
