"""The program the sandboxed Python runs (`python3 -I -S -c <this file>`): standard library only,
as it runs under the system's Python inside bubblewrap, where Tusk itself is not installed.

It starts, says "ready", then blocks reading ONE JSON request from stdin (so a pre-started copy
waits in the pool at no cost), runs the snippet and writes ONE JSON response line to the protocol
stream, then exits. Its exit, as the sandbox's PID 1, makes the kernel kill whatever the snippet
left running. Nothing here is a security boundary: the sandbox around it is.
"""

from __future__ import annotations

import builtins
import json
import linecache
import math
import os
import sys
import traceback

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and importlib.abc would add milliseconds to every sandbox's start
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import CodeType, FrameType, ModuleType
    from typing import Any, TextIO

CODE_NAME = "<code>"  # the file name of the snippet in tracebacks
TRACEBACK_LINES = 12
BOOT_PID = os.getpid()
_exit = os._exit  # kept before user code runs, which may replace os._exit


class Refused(Exception):
    """The snippet's result cannot be returned; `kind` says which error the host raises."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- imports ----------------------------------------------------------------------------------


def _importer() -> str | None:
    """The module doing the import being looked up: the first frame outside importlib."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not name.startswith(("importlib", "_frozen_importlib")):
            return name
        frame = frame.f_back
    return None


class ImportPolicy:
    """Lets the snippet import the standard library and the allowed packages; the allowed packages
    themselves may import anything they depend on. A policy, not a boundary. (A meta path finder
    needs only `find_spec`.)"""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = frozenset(allowed)

    def permits(self, fullname: str, importer: str | None) -> bool:
        top = fullname.partition(".")[0]
        if top in sys.stdlib_module_names or top in self.allowed:
            return True
        return importer is not None and importer.partition(".")[0] in self.allowed

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if self.permits(fullname, _importer()):
            return None  # the ordinary finders look it up
        allowed = ", ".join(sorted(self.allowed)) or "none"
        top = fullname.partition(".")[0]
        raise ModuleNotFoundError(
            f"module {top!r} is not allowed in code: only the standard library and the "
            f"packages configured by the operator ({allowed}) can be imported",
            name=fullname,
        )


# --- print capture ----------------------------------------------------------------------------


class Capture:
    """Stands for sys.stdout and sys.stderr: keeps the first `limit` bytes, drops the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.truncated = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - len(self.kept)
        if room > 0:
            # A character is one to four bytes: `room` characters cover `room` bytes.
            data = text[:room].encode("utf-8", "surrogatepass")
            self.kept += data[:room]
            self.truncated = self.truncated or len(data) > room or len(text) > room
        elif text:
            self.truncated = True
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def value(self) -> str:
        return self.kept.decode("utf-8", "ignore")


# --- the result -------------------------------------------------------------------------------


def check_value(value: object, path: str, depth: int, max_depth: int) -> None:
    """Refuse what is not a JSON value, or is nested deeper than `max_depth` (so also cycles)."""
    if depth > max_depth:
        raise Refused("bad_return_type", f"{path} is nested deeper than {max_depth} levels")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused("bad_return_type", f"{path} is {value}, which JSON cannot represent")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_value(item, f"{path}[{index}]", depth + 1, max_depth)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused("bad_return_type", f"{path} has a key {key!r}, not a string")
            check_value(item, f"{path}[{key!r}]", depth + 1, max_depth)
        return
    kind = type(value).__name__
    raise Refused("bad_return_type", f"{path} is a {kind}, which is not a JSON value")


def encode_outputs(result: object, max_depth: int, max_bytes: int) -> dict[str, Any]:
    """`result` checked: a dict of JSON values, within the depth and size limits."""
    if not isinstance(result, dict):
        kind = type(result).__name__
        raise Refused("bad_return_type", f"main() must return a dict, not a {kind}")
    check_value(result, "the result", 1, max_depth)
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Refused("bad_return_type", f"the result cannot be written as JSON: {exc}") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise Refused("output_too_large", f"the result is {size} bytes, over {max_bytes}")
    return result


# --- errors -----------------------------------------------------------------------------------


def syntax_error(exc: SyntaxError | ValueError) -> dict[str, Any]:
    if not isinstance(exc, SyntaxError):  # compile() refuses NUL bytes with a ValueError
        return {"kind": "syntax_error", "message": str(exc), "line": None}
    where = f" (line {exc.lineno})" if exc.lineno else ""
    return {
        "kind": "syntax_error",
        "message": f"{type(exc).__name__}: {exc.msg}{where}",
        "line": exc.lineno,
        "column": exc.offset,
        "text": (exc.text or "").rstrip("\n") or None,
    }


def runtime_error(exc: BaseException) -> dict[str, Any]:
    """The exception with the traceback's frames in the snippet only, last lines first kept."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == CODE_NAME]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    tail = "".join(lines).splitlines()[-TRACEBACK_LINES:]
    summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return {
        "kind": "memory_exceeded" if isinstance(exc, MemoryError) else "runtime_error",
        "message": summary,
        "error_type": type(exc).__name__,
        "line": frames[-1].lineno if frames else None,
        "traceback": tail,
    }


# --- running the snippet ----------------------------------------------------------------------


def compile_code(code: str) -> CodeType:
    linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
    return compile(code, CODE_NAME, "exec", dont_inherit=True)


def call_main(program: CodeType, inputs: dict[str, Any]) -> object:
    # `json` is there without an import, as Dify's code runner leaves it for snippets
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, "json": json}
    exec(program, namespace)  # noqa: S102 - running the user's code is the point, in the sandbox
    main = namespace.get("main")
    if not callable(main):
        raise NameError("the code defines no function main")
    result = main(**inputs)
    if type(result).__name__ == "coroutine":  # `async def main`
        import asyncio

        result = asyncio.run(result)
    return result


def execute(request: dict[str, Any]) -> dict[str, Any]:
    limits = request["limits"]
    try:
        program = compile_code(request["code"])
    except (SyntaxError, ValueError) as exc:
        return syntax_error(exc)
    sys.meta_path.insert(0, ImportPolicy(request.get("modules", [])))
    sys.path.extend(request.get("path", []))
    try:
        result = call_main(program, request["inputs"])
        outputs = encode_outputs(result, limits["max_depth"], limits["output_bytes"])
    except Refused as exc:
        return {"kind": exc.kind, "message": str(exc)}
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: all are the snippet's
        return runtime_error(exc)
    return {"kind": "ok", "outputs": outputs}


def send(stream: int, message: dict[str, Any] | str) -> None:
    text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
    data = (text + "\n").encode("utf-8", "surrogatepass")
    while data:
        data = data[os.write(stream, data) :]


def respond(stream: int, response: dict[str, Any], capture: Capture) -> None:
    response["stdout"] = capture.value()
    response["stdout_truncated"] = capture.truncated
    try:
        send(stream, response)
    except MemoryError:
        send(stream, {"kind": "memory_exceeded", "message": "out of memory writing the result"})


def main() -> None:
    # The response goes to a private copy of fd 1; fd 1 itself is pointed at stderr so that what
    # the snippet or its child processes write there cannot corrupt the response.
    protocol = os.dup(1)
    os.dup2(2, 1)
    send(protocol, "ready")
    request = json.loads(sys.stdin.buffer.read())
    capture = Capture(request["limits"]["print_bytes"])
    streams: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout = sys.stderr = capture
    try:
        response = execute(request)
    except MemoryError:
        response = {"kind": "memory_exceeded", "message": "MemoryError"}
    if os.getpid() != BOOT_PID:  # a process the snippet forked returned here: it has no say
        _exit(0)
    sys.stdout, sys.stderr = streams
    respond(protocol, response, capture)
    _exit(0)  # no clean-up: whatever the snippet left (threads, atexit hooks) must not run


if __name__ == "__main__":
    main()
