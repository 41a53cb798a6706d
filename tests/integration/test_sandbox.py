"""The code sandbox with real bubblewrap, Python and Node.js: what snippets can do, and the attack
suite. Every attack must end in its typed error (or be shown harmless), leave nothing behind on
the host (no process, no file), and the same long-lived Sandbox must answer a normal run next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from tusk.errors import InvalidParam
from tusk.sandbox import (
    BadReturnType,
    CodeExecutionError,
    CodeRuntimeError,
    CodeSyntaxError,
    CodeTimeout,
    Language,
    Limits,
    MemoryLimitExceeded,
    OutputTooLarge,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
)
from tusk.sandbox.command import NOBODY, SANDBOX_ENV

HAS_BWRAP = shutil.which("bwrap") is not None
HAS_NODE = shutil.which("node") is not None
needs_node = pytest.mark.skipif(
    not HAS_NODE, reason="Node.js is not installed (apt-get install nodejs)"
)
pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITS = Limits(timeout=2.0)
SHORT = Limits(timeout=1.0)
SECRET = f"tusk-test-secret-{uuid.uuid4().hex}"
PY_OK = "def main(x: int) -> dict:\n    return {'y': x + 1}\n"
JS_OK = "function main({x}) { return {y: x + 1} }"
HOST_PLACES = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path.cwd(), Path.home(), Path("/")]


# --- fixtures and host checks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_environment() -> Iterator[None]:
    """The host process holds secrets in its environment, as Tusk's API and worker do."""
    names = ("SECRET_KEY", "PG_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, SECRET))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(secret_environment: None) -> AsyncIterator[Sandbox]:
    """One Sandbox for the whole suite: every attack must leave it serving."""
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    box = Sandbox(SandboxConfig(limits=LIMITS, pool_size=2))
    await box.start()
    await box.wait_ready()
    yield box
    await box.close()
    assert not box.worker_pids()


def new_marker() -> str:
    return f"tuskmark{uuid.uuid4().hex[:12]}"


def marked_processes(marker: str) -> list[psutil.Process]:
    """Processes anywhere on the host whose command line holds `marker`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def tree(pids: set[int]) -> set[int]:
    found = set(pids)
    for pid in pids:
        try:
            found |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            continue
    return found


def stray_processes(sandbox: Sandbox) -> list[int]:
    """Processes of the sandbox user, or children of this test process, that belong to no sandbox
    the pool holds now (so: left over by a run that has returned)."""
    candidates = {child.pid for child in psutil.Process().children(recursive=True)}
    if sandbox.run_as is not None:
        for proc in psutil.process_iter(["uids", "status"]):
            # A zombie is over: it only waits for an init that reaps (not every container's)
            alive = proc.info["status"] != psutil.STATUS_ZOMBIE
            if alive and proc.info["uids"] and proc.info["uids"].real == sandbox.run_as.uid:
                candidates.add(proc.pid)
    return sorted(candidates - tree(sandbox.worker_pids()))


async def assert_host_unaffected(sandbox: Sandbox, marker: str | None = None) -> None:
    await sandbox.wait_ready()  # replacements being started are no leftovers
    assert stray_processes(sandbox) == []
    if marker is not None:
        assert marked_processes(marker) == []
        assert [place for place in HOST_PLACES if (place / marker).exists()] == []
    result = await sandbox.run("python3", PY_OK, {"x": 1})
    assert result.outputs == {"y": 2}


async def expect(
    sandbox: Sandbox,
    error: type[CodeExecutionError],
    language: str,
    code: str,
    inputs: dict[str, object] | None = None,
    limits: Limits | None = None,
) -> CodeExecutionError:
    with pytest.raises(error) as caught:
        await sandbox.run(language, code, inputs or {}, limits)
    return caught.value


# --- what snippets can do ---------------------------------------------------------------------


async def test_python_main_gets_keyword_inputs_and_its_prints_are_captured(
    sandbox: Sandbox,
) -> None:
    code = (
        "import json\nimport math\n\n"
        "def main(name: str, items: list) -> dict:\n"
        "    print('hello', name)\n"
        "    return {'n': len(items), 'root': math.sqrt(items[-1]), 'echo': json.dumps(items),\n"
        "            'nested': {'a': [1, {'b': None}]}, 'text': name.upper()}\n"
    )
    result = await sandbox.run("python3", code, {"name": "zoë", "items": [1, 4, 9]})
    assert result.outputs == {
        "n": 3,
        "root": 3.0,
        "echo": "[1, 4, 9]",
        "nested": {"a": [1, {"b": None}]},
        "text": "ZOË",
    }
    assert result.stdout == "hello zoë\n"
    assert not result.stdout_truncated
    assert 0 < result.elapsed < LIMITS.timeout


async def test_json_is_there_without_an_import_as_in_dify(sandbox: Sandbox) -> None:
    code = "def main(text: str) -> dict:\n    return {'parsed': json.loads(text)}\n"
    result = await sandbox.run("python3", code, {"text": '{"a": [1, 2]}'})
    assert result.outputs == {"parsed": {"a": [1, 2]}}


async def test_python_async_main(sandbox: Sandbox) -> None:
    code = (
        "import asyncio\n\nasync def main():\n"
        "    await asyncio.sleep(0.01)\n"
        "    return {'ok': True}\n"
    )
    assert (await sandbox.run("python", code, {})).outputs == {"ok": True}


async def test_python_syntax_error_reports_its_line(sandbox: Sandbox) -> None:
    error = await expect(sandbox, CodeSyntaxError, "python3", "import os\n\ndef main(:\n    pass\n")
    assert isinstance(error, CodeSyntaxError)
    assert error.line == 3
    assert "line 3" in error.message
    assert (error.code, error.status) == ("code_execution_error", 400)


async def test_python_runtime_error_reports_the_traceback_tail(sandbox: Sandbox) -> None:
    code = (
        "def helper(x):\n    return 1 / x\n\n"
        "def main():\n    print('before')\n    return {'v': helper(0)}\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert isinstance(error, CodeRuntimeError)
    assert error.message == "ZeroDivisionError: division by zero"
    assert error.line == 2
    assert error.details["error_type"] == "ZeroDivisionError"
    assert error.traceback[-1] == "ZeroDivisionError: division by zero"
    assert any('File "<code>", line 6, in main' in line for line in error.traceback)
    assert error.stdout == "before\n"


async def test_python_code_without_main(sandbox: Sandbox) -> None:
    error = await expect(sandbox, CodeRuntimeError, "python3", "x = 1\n")
    assert "no function main" in error.message


async def test_imports_beyond_the_allow_list_are_refused(sandbox: Sandbox) -> None:
    for module in ("psutil", "tusk", "numpy"):
        code = f"import {module}\n\ndef main():\n    return {{}}\n"
        error = await expect(sandbox, CodeRuntimeError, "python3", code)
        assert error.details["error_type"] == "ModuleNotFoundError"
        assert f"module {module!r} is not allowed" in error.message


async def test_operator_packages_are_importable_when_allowed() -> None:
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    packages = Path(tempfile.mkdtemp(prefix="tusk-packages-"))
    try:
        (packages / "tuskdemo").mkdir()
        (packages / "tuskdemo" / "__init__.py").write_text("import tuskdep\nVALUE = tuskdep.V\n")
        (packages / "tuskdep.py").write_text("V = 42\n")
        for path in (packages, packages / "tuskdemo"):
            path.chmod(0o755)  # the sandbox user reads it
        config = SandboxConfig(
            limits=LIMITS,
            pool_size=0,
            packages_dir=packages,
            python_packages=frozenset({"tuskdemo"}),
        )
        async with Sandbox(config) as box:
            code = "import tuskdemo\n\ndef main():\n    return {'v': tuskdemo.VALUE}\n"
            assert (await box.run("python3", code, {})).outputs == {"v": 42}
            # tuskdemo may import its dependency; the snippet itself may not.
            error = await expect(
                box, CodeRuntimeError, "python3", "import tuskdep\ndef main(): pass"
            )
            assert "not allowed" in error.message
    finally:
        shutil.rmtree(packages)


async def test_prints_are_truncated_at_the_limit(sandbox: Sandbox) -> None:
    code = "def main():\n    for i in range(10000):\n        print('é' * 100)\n    return {}\n"
    result = await sandbox.run("python3", code, {}, Limits(timeout=2, print_bytes=1000))
    assert result.stdout_truncated
    assert len(result.stdout.encode()) <= 1000
    assert result.stdout.startswith("é" * 100)


async def test_a_too_large_result_is_refused(sandbox: Sandbox) -> None:
    code = "def main():\n    return {'x': 'a' * 2_000_000}\n"
    error = await expect(sandbox, OutputTooLarge, "python3", code)
    assert "2000009 bytes" in error.message


@pytest.mark.parametrize(
    ("returned", "says"),
    [
        ("[1, 2]", "must return a dict, not a list"),
        ("{'x': object()}", "is a object, which is not a JSON value"),
        ("{'x': {1, 2}}", "is a set"),
        ("{'x': float('nan')}", "JSON cannot represent"),
        ("{1: 'a'}", "not a string"),
        ("{'x': b'bytes'}", "is a bytes"),
        ("nested(40)", "nested deeper than 32 levels"),
        ("cycle()", "nested deeper than 32 levels"),
        ("None", "not a NoneType"),
    ],
)
async def test_returning_non_json_values_is_a_bad_return_type(
    sandbox: Sandbox, returned: str, says: str
) -> None:
    code = (
        "def nested(n):\n    v = 1\n    for _ in range(n):\n        v = {'a': v}\n    return v\n"
        "def cycle():\n    d = {}\n    d['d'] = d\n    return d\n"
        f"def main():\n    return {returned}\n"
    )
    error = await expect(sandbox, BadReturnType, "python3", code)
    assert says in error.message


async def test_bad_inputs_and_languages_are_invalid_params(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidParam):
        await sandbox.run("python3", PY_OK, {"x": float("nan")})
    with pytest.raises(InvalidParam):
        await sandbox.run("python3", PY_OK, {"x": {1, 2}})
    with pytest.raises(InvalidParam):
        await sandbox.run("ruby", PY_OK, {"x": 1})


@needs_node
async def test_javascript_main_gets_the_inputs_object(sandbox: Sandbox) -> None:
    code = (
        "function main({name, items}) {\n"
        "  console.log('hello', name, {n: items.length});\n"
        "  return {n: items.length, text: name.toUpperCase(), nested: {a: [1, {b: null}]}};\n"
        "}\n"
    )
    result = await sandbox.run("javascript", code, {"name": "zoë", "items": [1, 2]})
    assert result.outputs == {"n": 2, "text": "ZOË", "nested": {"a": [1, {"b": None}]}}
    assert result.stdout == "hello zoë { n: 2 }\n"


@needs_node
async def test_javascript_async_main_with_timers(sandbox: Sandbox) -> None:
    code = (
        "async function main() {\n"
        "  await new Promise(r => setTimeout(r, 10));\n"
        "  return {ok: true};\n}"
    )
    assert (await sandbox.run("javascript", code, {})).outputs == {"ok": True}


@needs_node
async def test_javascript_errors_report_lines(sandbox: Sandbox) -> None:
    error = await expect(sandbox, CodeSyntaxError, "javascript", "function main() {\n  retur x\n}")
    assert isinstance(error, CodeSyntaxError)
    assert error.line == 2
    code = "function main(inputs) {\n  return {v: inputs.missing.field};\n}"
    error = await expect(sandbox, CodeRuntimeError, "javascript", code)
    assert isinstance(error, CodeRuntimeError)
    assert error.details["error_type"] == "TypeError"
    assert error.line == 2
    assert "Cannot read properties of undefined" in error.message


@needs_node
@pytest.mark.parametrize(
    ("returned", "says"),
    [
        ("[1]", "must return an object, not a Array"),
        ("{a: undefined}", "is undefined"),
        ("{a: () => 1}", "is a function"),
        ("{a: 1n}", "is a BigInt"),
        ("{a: new Date(0)}", "is a Date"),
        ("{a: NaN}", "JSON cannot represent"),
        ("(() => { const o = {}; o.o = o; return o })()", "nested deeper than 32 levels"),
    ],
)
async def test_javascript_non_json_values_are_a_bad_return_type(
    sandbox: Sandbox, returned: str, says: str
) -> None:
    error = await expect(
        sandbox, BadReturnType, "javascript", f"function main() {{ return {returned} }}"
    )
    assert says in error.message


# --- the attack suite -------------------------------------------------------------------------


async def test_attack_infinite_loop(sandbox: Sandbox) -> None:
    started = time.monotonic()
    await expect(
        sandbox,
        CodeTimeout,
        "python3",
        "def main():\n    while True:\n        pass\n",
        limits=SHORT,
    )
    assert time.monotonic() - started < SHORT.timeout + 1.5
    await assert_host_unaffected(sandbox)


async def test_attack_sleeping_past_the_timeout(sandbox: Sandbox) -> None:
    code = "import time\n\ndef main():\n    time.sleep(60)\n    return {}\n"
    error = await expect(sandbox, CodeTimeout, "python3", code, limits=SHORT)
    assert error.details == {"timeout": 1.0}
    await assert_host_unaffected(sandbox)


async def test_attack_fork_bomb(sandbox: Sandbox) -> None:
    code = "import os\n\ndef main():\n    while True:\n        os.fork()\n"
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert error.details["error_type"] == "BlockingIOError"  # fork() failed: RLIMIT_NPROC
    await assert_host_unaffected(sandbox)


FORK_COUNT = """
import os, time

def main(marker):
    forked = 0
    try:
        while forked < 1000:
            if os.fork() == 0:
                os.execv('/bin/sleep', [marker, '60'])  # named after the marker
            forked += 1
    except OSError:
        pass
    return {'forked': forked}
"""


async def test_attack_fork_bomb_is_capped_per_sandbox(sandbox: Sandbox) -> None:
    """RLIMIT_NPROC binds (the sandbox runs as an unprivileged user), and counts the processes of
    one sandbox only: two bombs at once get the same budget, and leave nothing behind."""
    marker = new_marker()
    results = await asyncio.gather(
        *(sandbox.run("python3", FORK_COUNT, {"marker": marker}) for _ in range(2))
    )
    counts = [result.outputs["forked"] for result in results]
    # PID 1 (the interpreter) and the children share the budget.
    assert counts == [LIMITS.processes - 1] * 2
    await assert_host_unaffected(sandbox, marker)


async def test_attack_allocating_10_gb(sandbox: Sandbox) -> None:
    code = "def main():\n    data = bytearray(10 * 2**30)\n    return {'n': len(data)}\n"
    await expect(sandbox, MemoryLimitExceeded, "python3", code)
    code = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n"
    error = await expect(sandbox, MemoryLimitExceeded, "python3", code)
    assert (error.code, error.status) == ("code_execution_error", 400)
    await assert_host_unaffected(sandbox)


async def test_attack_writing_a_10_gb_file(sandbox: Sandbox) -> None:
    marker = new_marker()
    code = (
        "def main(marker):\n"
        "    chunk = b'\\0' * 2**20\n"
        "    with open(f'/tmp/{marker}', 'wb') as f:\n"
        "        for _ in range(10 * 1024):\n"
        "            f.write(chunk)\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code, {"marker": marker})
    assert "File too large" in error.message  # RLIMIT_FSIZE
    code = (
        "def main(marker):\n"
        "    chunk = b'\\0' * 2**20\n"
        "    for i in range(10 * 1024):\n"
        "        with open(f'/tmp/{marker}{i}', 'wb') as f:\n"
        "            f.write(chunk)\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code, {"marker": marker})
    assert "No space left on device" in error.message  # the tmpfs's size
    await assert_host_unaffected(sandbox, marker)


async def test_attack_writing_outside_the_sandbox_tmp(sandbox: Sandbox) -> None:
    marker = new_marker()
    places = [str(place) for place in HOST_PLACES] + ["/usr", "/proc", "/dev", "/work", "/root"]
    code = (
        "def main(marker, places):\n"
        "    written = []\n"
        "    for place in places:\n"
        "        try:\n"
        "            with open(f'{place}/{marker}', 'w') as f:\n"
        "                f.write('x')\n"
        "            written.append(place)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return {'written': written}\n"
    )
    result = await sandbox.run("python3", code, {"marker": marker, "places": places})
    assert set(result.outputs["written"]) <= {"/tmp", "/dev/shm"}  # the sandbox's own tmpfs
    await assert_host_unaffected(sandbox, marker)


async def test_attack_printing_1_gb(sandbox: Sandbox) -> None:
    code = (
        "def main():\n    line = 'x' * 2**20\n"
        "    for _ in range(1024):\n        print(line)\n"
        "    return {'done': True}\n"
    )
    result = await sandbox.run("python3", code, {})
    assert result.outputs == {"done": True}
    assert result.stdout_truncated
    assert len(result.stdout) == LIMITS.print_bytes
    await assert_host_unaffected(sandbox)


async def test_attack_flooding_the_response_stream(sandbox: Sandbox) -> None:
    """Writing straight to the descriptor the response travels on: cut off at the limit."""
    code = (
        "import os\n\ndef main():\n"
        "    chunk = b'x' * 2**20\n"
        "    for fd in range(3, 10):\n"
        "        for _ in range(1024):\n"
        "            try:\n"
        "                os.write(fd, chunk)\n"
        "            except OSError:\n"
        "                break\n"
        "    return {}\n"
    )
    await expect(sandbox, OutputTooLarge, "python3", code)
    code = (
        "import os\n\ndef main():\n"
        "    os.write(1, b'x' * 2**24)\n    os.write(2, b'y' * 2**24)\n"
        "    return {'ok': 1}\n"
    )
    assert (await sandbox.run("python3", code, {})).outputs == {"ok": 1}  # fd 1 is not the response
    await assert_host_unaffected(sandbox)


async def test_attack_reading_secrets(sandbox: Sandbox) -> None:
    code = (
        "import glob, json, os\n\n"
        "def read(path):\n"
        "    try:\n"
        "        with open(path, 'rb') as f:\n"
        "            return f.read().decode('utf-8', 'replace')\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__\n\n"
        "def main():\n"
        "    found = {'environ': dict(os.environ), 'ppid': os.getppid(), 'uid': os.getuid()}\n"
        "    for path in ['/proc/1/environ', f'/proc/{os.getppid()}/environ', '/etc/shadow',\n"
        "                 '/etc/passwd', '/proc/1/cmdline', *glob.glob('/proc/[0-9]*/environ')]:\n"
        "        found[path] = read(path)\n"
        "    found['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "    found['root'] = sorted(os.listdir('/'))\n"
        "    print(json.dumps(found))\n"
        "    open('/etc/shadow').read()\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert error.details["error_type"] == "FileNotFoundError"  # there is no /etc at all
    assert SECRET not in error.stdout
    assert "SECRET_KEY" not in error.stdout
    assert "PG_PASSWORD" not in error.stdout
    found = json.loads(error.stdout)
    assert found["environ"] == {**SANDBOX_ENV, "PWD": "/tmp"}  # the fixed minimal set
    assert found["/etc/shadow"] == found["/etc/passwd"] == "FileNotFoundError"
    assert found["pids"] == [1]  # a PID namespace of its own: no host process to read
    assert found["ppid"] == 0
    assert found["uid"] == NOBODY
    assert set(found["root"]) <= {"bin", "dev", "lib", "lib64", "lib32", "libx32", "proc"} | {
        "sbin",
        "tmp",
        "usr",
    }
    await assert_host_unaffected(sandbox)


async def test_attack_connecting_to_a_host_port(sandbox: Sandbox) -> None:
    """A port that the host listens on (as PostgreSQL does on 5432) cannot be reached."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code = (
            "import socket\n\ndef main(port):\n"
            "    socket.create_connection(('127.0.0.1', port), timeout=0.5)\n"
            "    return {'connected': True}\n"
        )
        error = await expect(sandbox, CodeRuntimeError, "python3", code, {"port": port})
        assert error.details["error_type"] == "ConnectionRefusedError"
        code = code.replace("port), timeout", "5432), timeout")
        error = await expect(sandbox, CodeRuntimeError, "python3", code, {"port": port})
        assert error.details["error_type"] == "ConnectionRefusedError"
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # the host can
        writer.close()
    finally:
        server.close()
    await assert_host_unaffected(sandbox)


async def test_attack_reaching_any_address(sandbox: Sandbox) -> None:
    code = (
        "import socket\n\ndef main():\n"
        "    with open('/proc/net/dev') as f:\n"
        "        print(sorted(line.split(':')[0].strip() for line in f.readlines()[2:]))\n"
        "    for host in ['8.8.8.8', '10.0.0.1', '::1']:\n"
        "        try:\n"
        "            socket.create_connection((host, 443), timeout=0.5)\n"
        "            print('connected', host)\n"
        "        except OSError as exc:\n"
        "            print(host, type(exc).__name__)\n"
        "    socket.getaddrinfo('example.com', 443)\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert error.details["error_type"] == "gaierror"  # no DNS either
    assert error.stdout.splitlines()[0] == "['lo']"  # the network namespace holds loopback only
    assert "connected" not in error.stdout
    await assert_host_unaffected(sandbox)


async def test_attack_os_system_and_subprocesses(sandbox: Sandbox) -> None:
    marker = new_marker()
    code = (
        "import os, subprocess\n\ndef main(marker):\n"
        "    os.system(f'id -u > /tmp/out; cat /etc/shadow >> /tmp/out 2>&1; touch /{marker}')\n"
        "    os.system(f'kill -9 -1; touch /usr/{marker} 2>> /tmp/out')\n"
        "    print(open('/tmp/out').read())\n"
        "    subprocess.run(['cat', '/etc/shadow'], check=True, capture_output=True)\n"
    )
    error = await expect(sandbox, CodeRuntimeError, "python3", code, {"marker": marker})
    assert error.details["error_type"] == "CalledProcessError"
    assert error.stdout.splitlines()[0] == str(NOBODY)
    assert "No such file or directory" in error.stdout  # no /etc/shadow in there
    assert "Read-only file system" in error.stdout
    await assert_host_unaffected(sandbox, marker)


async def test_attack_ctypes_system_calls(sandbox: Sandbox) -> None:
    code = (
        "import ctypes, os\n\ndef main():\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    calls = {\n"
        "        'setuid(0)': lambda: libc.setuid(0),\n"
        "        'unshare(user)': lambda: libc.unshare(0x10000000),\n"
        "        'unshare(mount)': lambda: libc.unshare(0x00020000),\n"
        "        'unshare(net)': lambda: libc.unshare(0x40000000),\n"
        "        'mount': lambda: libc.mount(b'none', b'/usr', b'tmpfs', 0, None),\n"
        "        'chroot': lambda: libc.chroot(b'/tmp'),\n"
        "        'reboot': lambda: libc.reboot(0x4321FEDC),\n"
        "        'ptrace(attach, 1)': lambda: libc.ptrace(16, 1, None, None),\n"
        "    }\n"
        "    return {name: call() for name, call in calls.items()} | {'uid': os.getuid()}\n"
    )
    result = await sandbox.run("python3", code, {})
    assert result.outputs.pop("uid") == NOBODY
    assert result.outputs == dict.fromkeys(result.outputs, -1)  # every one refused
    await assert_host_unaffected(sandbox)


async def test_attack_ctypes_crash(sandbox: Sandbox) -> None:
    code = "import ctypes\n\ndef main():\n    ctypes.string_at(0)\n"
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert error.message == "the Python process crashed (SIGSEGV)"
    await assert_host_unaffected(sandbox)


async def test_attack_background_process_outliving_the_call(sandbox: Sandbox) -> None:
    marker = new_marker()
    code = (
        "import os, subprocess\n\ndef main(marker):\n"
        "    command = f'sleep 300; : {marker}'\n"
        "    subprocess.Popen(['/bin/sh', '-c', command], start_new_session=True)\n"
        "    if os.fork() == 0:  # a daemon: double fork, new session, signals ignored\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            command = f'trap \"\" HUP TERM INT; sleep 301; : {marker}'\n"
        "            os.execv('/bin/sh', ['sh', '-c', command])\n"
        "        os._exit(0)\n"
        "    return {'started': True}\n"
    )
    result = await sandbox.run("python3", code, {"marker": marker})
    assert result.outputs == {"started": True}
    assert marked_processes(marker) == []  # gone by the time run() returns
    await assert_host_unaffected(sandbox, marker)


async def test_attack_recursion_bomb(sandbox: Sandbox) -> None:
    code = "def main():\n    def f(n):\n        return f(n + 1)\n    return f(0)\n"
    error = await expect(sandbox, CodeRuntimeError, "python3", code)
    assert error.details["error_type"] == "RecursionError"
    assert isinstance(error, CodeRuntimeError)
    assert len(error.traceback) <= 12
    # Without the interpreter's limit, Python 3.11+ frames fill the heap (not the C stack) until
    # an allocation fails: a MemoryError, or CPython's own SystemError where it misses one.
    code = "import sys\nsys.setrecursionlimit(10**8)\n" + code
    error = await expect(sandbox, CodeExecutionError, "python3", code, limits=Limits(memory_mb=64))
    assert isinstance(error, MemoryLimitExceeded | CodeRuntimeError)
    await assert_host_unaffected(sandbox)


@needs_node
async def test_attack_javascript_while_true(sandbox: Sandbox) -> None:
    await expect(
        sandbox, CodeTimeout, "javascript", "function main() { while (true) {} }", limits=SHORT
    )
    code = "async function main() { await new Promise(r => setTimeout(r, 60000)); return {} }"
    await expect(sandbox, CodeTimeout, "javascript", code, limits=SHORT)
    await assert_host_unaffected(sandbox)


@needs_node
async def test_attack_javascript_require_child_process(sandbox: Sandbox) -> None:
    code = "function main() { require('child_process').execSync('id'); return {} }"
    error = await expect(sandbox, CodeRuntimeError, "javascript", code)
    assert error.message == "ReferenceError: require is not defined"
    code = "async function main() { await import('child_process'); return {} }"
    await expect(sandbox, CodeRuntimeError, "javascript", code)
    # The classic escape from a vm context reaches the host's Function constructor, which may not
    # compile strings (--disallow-code-generation-from-strings).
    code = (
        "function main() {\n"
        "  const p = this.constructor.constructor('return process')();\n"
        "  return {pid: p.pid};\n}"
    )
    error = await expect(sandbox, CodeRuntimeError, "javascript", code)
    assert error.details["error_type"] == "EvalError"
    await assert_host_unaffected(sandbox)


@needs_node
async def test_attack_javascript_memory(sandbox: Sandbox) -> None:
    small = Limits(timeout=10, memory_mb=64)
    code = "function main() { const a = []; while (true) a.push({s: 'x' + Math.random()}); }"
    await expect(sandbox, MemoryLimitExceeded, "javascript", code, limits=small)
    code = "function main() { const a = new Uint8Array(2 ** 30); a.fill(1); return {} }"
    await expect(sandbox, MemoryLimitExceeded, "javascript", code, limits=small)
    await assert_host_unaffected(sandbox)


# --- the pool ---------------------------------------------------------------------------------


async def test_each_run_gets_a_fresh_sandbox(sandbox: Sandbox) -> None:
    code = (
        "import os\n\ndef main():\n"
        "    seen = os.path.exists('/tmp/left')\n"
        "    open('/tmp/left', 'w').close()\n"
        "    return {'seen': seen}\n"
    )
    for _ in range(3):
        assert (await sandbox.run("python3", code, {})).outputs == {"seen": False}


async def test_used_sandboxes_are_replaced_in_the_background(sandbox: Sandbox) -> None:
    await sandbox.wait_ready()
    before = sandbox.worker_pids()
    await sandbox.run("python3", PY_OK, {"x": 1})
    await sandbox.wait_ready()
    after = sandbox.worker_pids()
    assert sandbox.pooled()[Language.PYTHON] == 2
    assert len(after) == len(before)
    assert len(before - after) == 1  # the used one is gone, and another took its place


async def test_a_crashed_pre_started_sandbox_is_replaced(sandbox: Sandbox) -> None:
    await sandbox.wait_ready()
    victim = min(sandbox.worker_pids())
    for child in psutil.Process(victim).children():
        os.kill(child.pid, signal.SIGKILL)  # its interpreter dies while waiting for work
    deadline = time.monotonic() + 10
    while victim in sandbox.worker_pids() or sum(sandbox.pooled().values()) < 2 * len(Language):
        assert time.monotonic() < deadline, "the pool did not replace a dead sandbox"
        await asyncio.sleep(0.02)
        await sandbox.wait_ready()
    await assert_host_unaffected(sandbox)


async def test_sandboxes_run_as_an_unprivileged_user(sandbox: Sandbox) -> None:
    if os.geteuid() != 0:
        pytest.skip("as a normal user, the sandboxes run as that user")
    assert sandbox.run_as is not None
    assert sandbox.run_as.uid != 0
    await sandbox.wait_ready()
    for pid in tree(sandbox.worker_pids()):
        assert psutil.Process(pid).uids().real == sandbox.run_as.uid


async def test_concurrent_runs(sandbox: Sandbox) -> None:
    runs = [sandbox.run("python3", PY_OK, {"x": i}) for i in range(8)]
    if HAS_NODE:
        runs += [sandbox.run("javascript", JS_OK, {"x": i}) for i in range(8)]
    results = await asyncio.gather(*runs)
    assert [result.outputs["y"] for result in results] == [i + 1 for i in range(8)] * (
        len(runs) // 8
    )
    await assert_host_unaffected(sandbox)


async def test_other_limits_start_a_sandbox_of_their_own(sandbox: Sandbox) -> None:
    code = (
        "import resource\n\n"
        "def main():\n    return {'as': resource.getrlimit(resource.RLIMIT_AS)[0]}\n"
    )
    result = await sandbox.run("python3", code, {}, Limits(timeout=2, memory_mb=64))
    assert result.outputs == {"as": 64 * 2**20}
    await assert_host_unaffected(sandbox)


async def test_a_cancelled_run_leaves_nothing(sandbox: Sandbox) -> None:
    marker = new_marker()
    code = (
        "import subprocess, time\n\ndef main(marker):\n"
        "    subprocess.Popen(['/bin/sh', '-c', f'sleep 300; : {marker}'])\n"
        "    time.sleep(60)\n"
    )
    task = asyncio.create_task(sandbox.run("python3", code, {"marker": marker}))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_host_unaffected(sandbox, marker)


async def test_runs_cancelled_while_their_sandbox_starts_leave_nothing(sandbox: Sandbox) -> None:
    """A run whose limits no pooled sandbox fits starts one of its own; cancelled at any moment of
    that start (as a failing branch cancels its siblings), it must end at once."""
    own = Limits(timeout=2, memory_mb=96)
    for delay in (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05):
        task = asyncio.create_task(sandbox.run("python3", PY_OK, {"x": 1}, own))
        await asyncio.sleep(delay)
        task.cancel()
        async with asyncio.timeout(10):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await assert_host_unaffected(sandbox)


async def test_close_kills_every_sandbox() -> None:
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    box = Sandbox(SandboxConfig(limits=LIMITS, pool_size=2))
    await box.start()
    await box.wait_ready()
    running = asyncio.create_task(
        box.run("python3", "import time\ndef main():\n    time.sleep(60)\n", {})
    )
    await asyncio.sleep(0.3)
    pids = tree(box.worker_pids())
    assert len(pids) >= 2 * len(Language)
    await box.close()
    with pytest.raises(SandboxUnavailable):
        await running
    assert box.worker_pids() == set()
    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
    with pytest.raises(SandboxUnavailable):
        await box.run("python3", PY_OK, {"x": 1})


# --- where bubblewrap or Node.js is missing ---------------------------------------------------


async def test_without_bubblewrap_code_is_refused_naming_the_package() -> None:
    async with Sandbox(SandboxConfig(bwrap="/nonexistent/bwrap", pool_size=0)) as box:
        with pytest.raises(SandboxUnavailable) as caught:
            await box.run("python3", PY_OK, {"x": 1})
    assert "apt-get install bubblewrap" in caught.value.message
    assert (caught.value.code, caught.value.status) == ("sandbox_unavailable", 503)


async def test_unsafe_mode_runs_without_bubblewrap_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SandboxConfig(bwrap="/nonexistent/bwrap", unsafe=True, pool_size=1, limits=LIMITS)
    with caplog.at_level(logging.WARNING, logger="tusk.sandbox.runner"):
        async with Sandbox(config) as box:
            assert "WITHOUT isolation" in caplog.text
            assert (await box.run("python3", PY_OK, {"x": 1})).outputs == {"y": 2}
            code = "import time\ndef main():\n    time.sleep(60)\n"
            await expect(box, CodeTimeout, "python3", code, limits=SHORT)
            assert (await box.run("python3", PY_OK, {"x": 2})).outputs == {"y": 3}


async def test_without_node_javascript_is_refused() -> None:
    config = SandboxConfig(node=Path("/nonexistent/node"), pool_size=0, limits=LIMITS)
    async with Sandbox(config) as box:
        with pytest.raises(SandboxUnavailable) as caught:
            await box.run("javascript", JS_OK, {"x": 1})
        assert "TUSK_SANDBOX_NODE" in caught.value.message
        if HAS_BWRAP:
            assert (await box.run("python3", PY_OK, {"x": 1})).outputs == {"y": 2}
