"""What one run of user code may use. Safe defaults; the timeout and memory come from settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tusk.config import Settings


@dataclass(frozen=True)
class SpawnLimits:
    """The limits fixed when a sandbox process starts (rlimits, interpreter flags, tmpfs sizes):
    a pre-started sandbox serves a run only if these fit."""

    memory_mb: int
    processes: int
    open_files: int
    file_size_mb: int
    tmp_size_mb: int
    cpu_seconds: int

    def serves(self, wanted: SpawnLimits) -> bool:
        """True if a sandbox started with these limits may run code that asked for `wanted`: the
        same limits, or more CPU seconds (the wall-clock timeout stops the run first anyway)."""
        return (
            replace(self, cpu_seconds=wanted.cpu_seconds) == wanted
            and self.cpu_seconds >= wanted.cpu_seconds
        )


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds from sending the inputs to the outputs
    memory_mb: int = 256  # Python: address space; JavaScript: V8 heap (data: 2x + 128 MB)
    output_bytes: int = 1_000_000  # the returned dict, as JSON
    print_bytes: int = 64 * 1024  # captured print/console output kept; the rest is dropped
    max_depth: int = 32  # nesting of the returned dict
    processes: int = 32  # processes and threads inside one sandbox (Node.js needs about 11)
    open_files: int = 64
    file_size_mb: int = 16  # the largest file the code may write
    tmp_size_mb: int = 64  # the sandbox's writable /tmp; /dev/shm gets a quarter of that

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= 3600:
            raise ValueError(f"timeout must be in (0, 3600] seconds, not {self.timeout}")
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "timeout" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{field.name} must be a positive integer, not {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(timeout=settings.sandbox_timeout, memory_mb=settings.sandbox_memory_mb)

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU: a backstop behind the wall-clock timeout, one second above it."""
        return math.ceil(self.timeout) + 1

    @property
    def response_bytes(self) -> int:
        """The most a response line may hold: the outputs, the prints JSON-escaped (up to six
        bytes a byte), and room for an error's traceback."""
        return self.output_bytes + 6 * self.print_bytes + 64 * 1024

    def spawn(self) -> SpawnLimits:
        return SpawnLimits(
            memory_mb=self.memory_mb,
            processes=self.processes,
            open_files=self.open_files,
            file_size_mb=self.file_size_mb,
            tmp_size_mb=self.tmp_size_mb,
            cpu_seconds=self.cpu_seconds,
        )
