"""The sandbox's pure parts: command lines, limits, the request/response protocol, how exits are
read, and the checks the boot program makes (run here, in-process, on trusted inputs)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tusk.config import Settings
from tusk.errors import InvalidParam, TuskError
from tusk.sandbox import boot
from tusk.sandbox.command import (
    NOBODY,
    PACKAGES_MOUNT,
    SANDBOX_ENV,
    Language,
    Launch,
    Layout,
    RunAs,
    host_layout,
    parse_language,
    sandbox_command,
)
from tusk.sandbox.errors import (
    BadReturnType,
    CodeExecutionError,
    CodeRuntimeError,
    CodeSyntaxError,
    CodeTimeout,
    MemoryLimitExceeded,
    OutputTooLarge,
    SandboxUnavailable,
)
from tusk.sandbox.limits import Limits, SpawnLimits
from tusk.sandbox.protocol import (
    Result,
    classify_exit,
    depth,
    encode_request,
    parse_response,
    start_failure,
)
from tusk.sandbox.runner import HOST_ENV, SandboxConfig, Tools, tool_problem

MIB = 2**20
LAYOUT = Layout(binds=("/usr",), symlinks=(("usr/lib", "/lib"), ("usr/bin", "/bin")))


def launch(language: Language = Language.PYTHON, **changes: object) -> Launch:
    fields: dict[str, object] = {
        "language": language,
        "interpreter": "/usr/bin/python3" if language is Language.PYTHON else "/usr/bin/node",
        "boot": "BOOT SOURCE",
        "spawn": Limits().spawn(),
        "prlimit": "/usr/bin/prlimit",
        "bwrap": "/usr/bin/bwrap",
        "layout": LAYOUT,
    }
    return Launch(**{**fields, **changes})  # type: ignore[arg-type]


def option(argv: list[str], name: str) -> list[str]:
    """The values following each occurrence of `name` in `argv`."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


# --- command lines ----------------------------------------------------------------------------


def test_the_bwrap_command_unshares_every_namespace_and_shows_only_system_paths() -> None:
    argv = sandbox_command(launch())
    assert argv[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"):
        assert flag in argv
    for flag in ("--unshare-uts", "--disable-userns", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--as-pid-1" in argv  # its exit kills the namespace
    assert "--share-net" not in argv
    assert option(argv, "--cap-drop") == ["ALL"]
    assert option(argv, "--uid") == option(argv, "--gid") == [str(NOBODY)]
    assert option(argv, "--ro-bind") == ["/usr"]
    assert option(argv, "--bind") == option(argv, "--dev-bind") == []  # nothing writable
    assert option(argv, "--symlink") == ["usr/lib", "usr/bin"]
    assert option(argv, "--tmpfs") == ["/dev/shm", "/tmp"]
    assert option(argv, "--size") == [str(16 * MIB), str(64 * MIB)]
    assert option(argv, "--remount-ro") == ["/dev", "/"]
    assert option(argv, "--chdir") == ["/tmp"]


def test_the_sandbox_environment_is_a_fixed_minimal_set() -> None:
    argv = sandbox_command(launch())
    assert "--clearenv" in argv
    assert dict(
        zip(option(argv, "--setenv"), argv[argv.index("--setenv") + 2 :: 3], strict=False)
    ) == (SANDBOX_ENV)
    assert set(HOST_ENV) == {"PATH"}  # what bwrap itself, and so /proc/1/environ, gets


def test_limits_are_set_inside_the_sandbox_with_prlimit() -> None:
    argv = sandbox_command(launch())
    inner = argv[argv.index("--", argv.index("--chdir")) + 1 :]
    assert inner[0] == "/usr/bin/prlimit"
    assert inner[1 : inner.index("--")] == [
        "--cpu=11:12",
        f"--fsize={16 * MIB}",
        "--nofile=64",
        "--core=0",
        "--nproc=32",
        f"--as={256 * MIB}",
    ]
    python = inner[inner.index("--") + 1 :]
    assert python == ["/usr/bin/python3", "-I", "-S", "-B", "-X", "utf8", "-c", "BOOT SOURCE"]


def test_javascript_bounds_the_heap_and_data_segment_not_the_address_space() -> None:
    spawn = Limits(memory_mb=128).spawn()
    argv = sandbox_command(launch(Language.JAVASCRIPT, spawn=spawn))
    assert f"--data={(256 + 128) * MIB}" in argv
    assert not [arg for arg in argv if arg.startswith("--as=")]
    node = argv[argv.index("/usr/bin/node") :]
    assert node[1:3] == ["--max-old-space-size=128", "--disallow-code-generation-from-strings"]
    assert node[-2:] == ["-e", "BOOT SOURCE"]


def test_as_root_setpriv_becomes_the_sandbox_user_before_bwrap() -> None:
    argv = sandbox_command(
        launch(run_as=RunAs(999, 995, "tusk-sandbox"), setpriv="/usr/bin/setpriv")
    )
    assert argv[: argv.index("/usr/bin/bwrap")] == [
        "/usr/bin/setpriv",
        "--reuid=999",
        "--regid=995",
        "--clear-groups",
        "--",
    ]


def test_packages_are_mounted_read_only() -> None:
    argv = sandbox_command(launch(packages_dir="/srv/packages"))
    at = argv.index("/srv/packages")
    assert argv[at - 1 : at + 2] == ["--ro-bind", "/srv/packages", PACKAGES_MOUNT]


def test_without_bwrap_the_interpreter_runs_directly_and_nproc_is_not_set() -> None:
    argv = sandbox_command(launch(bwrap=None))
    assert argv[0] == "/usr/bin/prlimit"
    assert not [
        arg for arg in argv if arg.startswith("--nproc")
    ]  # it would count all our processes


def test_host_layout_follows_merged_usr(tmp_path: Path) -> None:
    layout = host_layout([Path("/usr/bin/python3")])
    assert layout.binds[0] == "/usr"
    for target, link in layout.symlinks:
        assert Path(link).is_symlink()
        assert not Path(target).is_absolute() or target.startswith("/usr")
    outside = tmp_path / "opt" / "node" / "bin"
    outside.mkdir(parents=True)
    (outside / "node").touch()
    assert str(tmp_path / "opt" / "node") in host_layout([outside / "node"]).binds


def test_missing_tools_name_what_to_install() -> None:
    node = Path("/usr/bin/node")
    found = {Language.PYTHON: Path("/usr/bin/python3"), Language.JAVASCRIPT: node}
    tools = Tools("/usr/bin/bwrap", "/usr/bin/prlimit", "/usr/bin/setpriv", found)
    assert tool_problem(Language.PYTHON, tools, unsafe=False, root=True) is None
    no_bwrap = Tools(None, "/usr/bin/prlimit", "/usr/bin/setpriv", found)
    problem = tool_problem(Language.PYTHON, no_bwrap, unsafe=False, root=False)
    assert problem is not None
    assert "apt-get install bubblewrap" in problem
    assert tool_problem(Language.PYTHON, no_bwrap, unsafe=True, root=False) is None
    no_setpriv = Tools("/usr/bin/bwrap", "/usr/bin/prlimit", None, found)
    assert "util-linux" in str(tool_problem(Language.PYTHON, no_setpriv, unsafe=False, root=True))
    assert tool_problem(Language.PYTHON, no_setpriv, unsafe=False, root=False) is None
    no_node = Tools(
        "/usr/bin/bwrap", "/usr/bin/prlimit", None, {**found, Language.JAVASCRIPT: None}
    )
    assert "TUSK_SANDBOX_NODE" in str(
        tool_problem(Language.JAVASCRIPT, no_node, unsafe=False, root=False)
    )
    bad = Tools("/usr/bin/bwrap", "/usr/bin/prlimit", None, {Language.PYTHON: Path("/nonexistent")})
    assert "TUSK_SANDBOX_PYTHON" in str(
        tool_problem(Language.PYTHON, bad, unsafe=False, root=False)
    )


# --- limits -----------------------------------------------------------------------------------


def test_limits_defaults_and_derived_values() -> None:
    limits = Limits()
    assert (limits.timeout, limits.memory_mb, limits.output_bytes) == (10.0, 256, 1_000_000)
    assert (limits.print_bytes, limits.max_depth) == (65536, 32)
    assert Limits(timeout=2.5).cpu_seconds == 4
    assert limits.response_bytes > limits.output_bytes + 6 * limits.print_bytes


@pytest.mark.parametrize(
    "bad",
    [{"timeout": 0}, {"timeout": -1}, {"memory_mb": 0}, {"processes": -3}, {"max_depth": 1.5}],
)
def test_limits_refuse_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limits(**bad)  # type: ignore[arg-type]


def test_a_started_sandbox_serves_the_same_spawn_limits_or_less_cpu() -> None:
    pool = Limits(timeout=10).spawn()
    assert pool.serves(Limits(timeout=10).spawn())
    assert pool.serves(Limits(timeout=1).spawn())  # the wall clock stops it first
    assert not pool.serves(Limits(timeout=30).spawn())
    assert not pool.serves(Limits(timeout=10, memory_mb=64).spawn())
    assert not pool.serves(Limits(timeout=10, tmp_size_mb=1).spawn())
    assert isinstance(pool, SpawnLimits)


def test_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUSK_SANDBOX_TIMEOUT", "3.5")
    monkeypatch.setenv("TUSK_SANDBOX_MEMORY_MB", "128")
    monkeypatch.setenv("TUSK_SANDBOX_POOL_SIZE", "4")
    monkeypatch.setenv("TUSK_SANDBOX_PYTHON_PACKAGES", " numpy, pandas ,,")
    monkeypatch.setenv("TUSK_SANDBOX_PACKAGES_DIR", "/var/lib/tusk/sandbox-packages")
    monkeypatch.setenv("CODE_EXECUTION_UNSAFE", "true")
    config = SandboxConfig.from_settings(Settings(_env_file=None))
    assert config.limits == Limits(timeout=3.5, memory_mb=128)
    assert config.pool_size == 4
    assert config.python_packages == {"numpy", "pandas"}
    assert config.packages_dir == Path("/var/lib/tusk/sandbox-packages")
    assert config.unsafe
    assert config.node is None


# --- the protocol -----------------------------------------------------------------------------


def test_requests_carry_code_inputs_and_the_per_run_limits() -> None:
    data = encode_request("code", {"a": [1, "é"]}, Limits(max_depth=5), {"numpy"}, ["/p"])
    assert data.endswith(b"\n")
    assert json.loads(data) == {
        "code": "code",
        "inputs": {"a": [1, "é"]},
        "limits": {"max_depth": 5, "output_bytes": 1_000_000, "print_bytes": 65536},
        "modules": ["numpy"],
        "path": ["/p"],
    }


@pytest.mark.parametrize(
    "inputs", [{"x": float("nan")}, {"x": {1}}, {"x": object()}, {1: "a"}, ["not", "a", "dict"]]
)
def test_inputs_that_are_not_json_are_invalid(inputs: object) -> None:
    with pytest.raises(InvalidParam):
        encode_request("code", inputs, Limits(), (), [])  # type: ignore[arg-type]


def test_parse_language() -> None:
    assert parse_language("python3") is parse_language("Python") is Language.PYTHON
    assert parse_language("javascript") is parse_language("nodejs") is Language.JAVASCRIPT
    with pytest.raises(InvalidParam):
        parse_language("ruby")


def response(**fields: object) -> bytes:
    return json.dumps({"stdout": "printed\n", "stdout_truncated": False, **fields}).encode()


def test_a_successful_response_is_a_result() -> None:
    result = parse_response(response(kind="ok", outputs={"a": [1]}), Limits(), 0.25)
    assert result == Result({"a": [1]}, "printed\n", False, 0.25)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("syntax_error", CodeSyntaxError),
        ("runtime_error", CodeRuntimeError),
        ("bad_return_type", BadReturnType),
        ("output_too_large", OutputTooLarge),
        ("memory_exceeded", MemoryLimitExceeded),
        ("something new", CodeRuntimeError),
    ],
)
def test_error_responses_become_typed_errors(kind: str, error: type[CodeExecutionError]) -> None:
    line = response(kind=kind, message="it failed", line=3, traceback=["a", "b"], error_type="E")
    with pytest.raises(error) as caught:
        parse_response(line, Limits(), 0.1)
    assert caught.value.message == "it failed"
    assert caught.value.stdout == "printed\n"
    assert caught.value.details == {"line": 3, "traceback": ["a", "b"], "error_type": "E"}


def test_syntax_and_runtime_errors_expose_line_and_traceback() -> None:
    with pytest.raises(CodeSyntaxError) as syntax:
        parse_response(response(kind="syntax_error", message="m", line=7), Limits(), 0)
    assert syntax.value.line == 7
    with pytest.raises(CodeRuntimeError) as runtime:
        parse_response(response(kind="runtime_error", message="m", traceback=["x"]), Limits(), 0)
    assert runtime.value.traceback == ["x"]
    assert runtime.value.line is None


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        response(kind="ok", outputs=[1]),
    ],
)
def test_a_corrupted_response_is_the_codes_fault(line: bytes) -> None:
    with pytest.raises((CodeRuntimeError, BadReturnType)):
        parse_response(line, Limits(), 0)


def test_the_host_checks_the_depth_again() -> None:
    deep: object = 1
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(BadReturnType, match="deeper than 32"):
        parse_response(response(kind="ok", outputs=deep), Limits(), 0)
    assert depth({"a": [1, {"b": 2}]}, 32) == 3
    assert depth({"a": [[[[[1]]]]]}, 2) == 3  # counting stops past the limit


def test_exits_without_a_response_are_classified() -> None:
    limits = Limits(timeout=2, memory_mb=64)
    python, node = Language.PYTHON, Language.JAVASCRIPT
    heap = b"FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
    assert isinstance(classify_exit(134, heap, node, limits), MemoryLimitExceeded)
    assert isinstance(classify_exit(139, b"std::bad_alloc", node, limits), MemoryLimitExceeded)
    timeout = classify_exit(128 + signal.SIGXCPU, b"", python, limits)
    assert isinstance(timeout, CodeTimeout)
    assert "3 s of CPU" in timeout.message
    assert isinstance(classify_exit(128 + signal.SIGKILL, b"", python, limits), MemoryLimitExceeded)
    crash = classify_exit(128 + signal.SIGSEGV, b"", python, limits)
    assert crash.message == "the Python process crashed (SIGSEGV)"
    assert classify_exit(-signal.SIGSEGV, b"", node, limits).message == (
        "the Node.js process crashed (SIGSEGV)"
    )
    exited = classify_exit(3, b"bye", python, limits)
    assert type(exited) is CodeRuntimeError
    assert "exit code 3" in exited.message
    assert exited.details["stderr"] == "bye"


def test_start_failures_give_hints() -> None:
    userns = b"bwrap: setting up uid map: Permission denied"
    assert "unprivileged user namespaces" in start_failure(Language.PYTHON, 1, userns)
    source = b"bwrap: Can't find source path /srv/p: Permission denied"
    assert "TUSK_SANDBOX_PACKAGES_DIR" in start_failure(Language.PYTHON, 1, source)


def test_errors_are_tusk_errors_with_codes() -> None:
    for error in (CodeSyntaxError, CodeRuntimeError, CodeTimeout, MemoryLimitExceeded):
        assert issubclass(error, TuskError)
        assert (error.code, error.status) == ("code_execution_error", 400)
    assert (SandboxUnavailable.code, SandboxUnavailable.status) == ("sandbox_unavailable", 503)
    assert {e.kind for e in (CodeTimeout, OutputTooLarge, BadReturnType)} == {
        "timeout",
        "output_too_large",
        "bad_return_type",
    }


# --- the boot program's checks ----------------------------------------------------------------


def test_capture_keeps_the_first_bytes_and_flags_truncation() -> None:
    capture = boot.Capture(10)
    capture.write("héllo")
    assert not capture.truncated
    capture.write("wörld!")
    assert capture.truncated
    assert capture.value() == "héllowör"  # 10 bytes, cut on a character boundary
    capture.write("more")
    assert len(capture.kept) == 10


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([1], "must return a dict, not a list"),
        ({"x": object()}, "the result['x'] is a object"),
        ({"x": [1, {"y": {1, 2}}]}, "the result['x'][1]['y'] is a set"),
        ({"x": float("inf")}, "JSON cannot represent"),
        ({1: "x"}, "has a key 1"),
    ],
)
def test_the_result_must_be_a_dict_of_json_values(value: object, says: str) -> None:
    with pytest.raises(boot.Refused) as caught:
        boot.encode_outputs(value, 32, 1000)
    assert caught.value.kind == "bad_return_type"
    assert says in str(caught.value)


def test_the_result_size_and_depth_are_limited() -> None:
    assert boot.encode_outputs({"a": (1, 2), "b": None}, 32, 100) == {"a": (1, 2), "b": None}
    with pytest.raises(boot.Refused) as caught:
        boot.encode_outputs({"a": "é" * 60}, 32, 100)
    assert caught.value.kind == "output_too_large"
    cycle: dict[str, object] = {}
    cycle["self"] = cycle
    with pytest.raises(boot.Refused, match="deeper than 32"):
        boot.encode_outputs(cycle, 32, 1000)


def test_the_import_policy() -> None:
    policy = boot.ImportPolicy(["numpy"])
    assert policy.permits("json", None)
    assert policy.permits("os.path", "__main__")
    assert policy.permits("numpy.linalg", "__main__")
    assert not policy.permits("pandas", "__main__")
    assert not policy.permits("tusk.sandbox", "__main__")
    assert policy.permits("scipy", "numpy.core")  # an allowed package's own dependency
    assert not policy.permits("scipy", "json.decoder")  # the standard library vouches for nothing


def test_syntax_errors_report_line_and_column() -> None:
    with pytest.raises(SyntaxError) as caught:
        boot.compile_code("x = 1\ndef main(:\n    pass\n")
    found = boot.syntax_error(caught.value)
    assert found["kind"] == "syntax_error"
    assert (found["line"], found["column"], found["text"]) == (2, 10, "def main(:")
    assert "(line 2)" in found["message"]
    assert (
        boot.syntax_error(ValueError("source code string cannot contain null bytes"))["line"]
        is None
    )


def test_runtime_errors_keep_the_snippets_frames_only() -> None:
    program = boot.compile_code(
        "def helper():\n    raise KeyError('k')\n\ndef main():\n    helper()\n"
    )
    with pytest.raises(KeyError) as caught:
        boot.call_main(program, {})
    found = boot.runtime_error(caught.value)
    assert found["kind"] == "runtime_error"
    assert found["message"] == "KeyError: 'k'"
    assert found["line"] == 2
    assert found["traceback"][0] == "Traceback (most recent call last):"
    assert found["traceback"][-1] == "KeyError: 'k'"
    assert not [line for line in found["traceback"] if "boot.py" in line]
    assert boot.runtime_error(MemoryError())["kind"] == "memory_exceeded"


def test_main_must_exist_and_may_be_async() -> None:
    with pytest.raises(NameError, match="no function main"):
        boot.call_main(boot.compile_code("x = 1\n"), {})
    program = boot.compile_code("async def main(a):\n    return {'a': a}\n")
    assert boot.call_main(program, {"a": 1}) == {"a": 1}
