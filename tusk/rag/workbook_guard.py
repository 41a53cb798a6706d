"""Checks an .xlsx archive before calamine reads it.

calamine allocates a sheet's whole bounding box (32 bytes a cell) and a shared-string table of
the declared size, and aborts the process, uncatchably, when that fails: two far-apart cells in
a 2 KB file do it. Every part is read here as calamine's zip reader reads it (past the size the
archive declares), and a workbook that would make it allocate without bound is refused.
"""

from __future__ import annotations

import copy
import operator
import re
import zipfile
from collections.abc import Iterator


class WorkbookRefused(Exception):
    """Why the workbook is not read, in words a user can act on."""


def too_big(max_bytes: int) -> WorkbookRefused:
    return WorkbookRefused(
        f"the file unpacks to more than Tusk reads ({max_bytes:,} bytes); "
        "split it into smaller files"
    )


# calamine opens a zip that its .xlsx reader refuses with its .xlsb or .ods one instead.
_OTHER_WORKBOOKS = frozenset({"mimetype", "xl/_rels/workbook.bin.rels"})
_CORE_TITLE = re.compile(rb"<(?:[\w.-]+:)?title\b[^>]*>([^<]*)<")


def check_workbook(archive: zipfile.ZipFile, *, max_bytes: int, max_cells: int) -> str | None:
    """Refuses what would make calamine allocate without bound; returns the raw title, if any.

    Every part is read as calamine's zip reader reads it, past the size the archive declares."""
    title, left = None, max_bytes
    for info in archive.infolist():
        name = info.filename.replace("\\", "/").lower()
        if name in _OTHER_WORKBOOKS:
            raise WorkbookRefused(
                "the file is not an .xlsx workbook; save it as .xlsx and upload it again"
            )
        part = _unpack(archive, info, left, max_bytes)
        left -= len(part)
        _check_part(part, max_cells)
        if name == "docprops/core.xml" and (found := _CORE_TITLE.search(part)):
            title = found.group(1).decode("utf-8", "replace")
    return title


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, max_bytes: int) -> bytes:
    probe = copy.copy(info)
    probe.file_size = limit + 1  # read to the end of the data, whatever the archive declares
    with archive.open(probe) as member:
        part = member.read(limit + 1)
    if len(part) > limit:
        raise too_big(max_bytes)
    if len(part) != info.file_size:
        raise WorkbookRefused("the file is damaged or is not a real .xlsx (a part's size is wrong)")
    return part


# An r="…" attribute: a cell's reference ("B7"), or a row's number ("7"). calamine needs no
# space before an attribute, nor single or double quotes in particular. (Patterns that start
# with a plain letter and look behind afterwards are searched twice as fast.)
_REF = re.compile(rb"""r(?<=[\s"']r)\s*=\s*["']([A-Za-z]*)([0-9]+)(?=["'])""")
# A cell without r="…", which calamine puts just after the previous cell. Counted when in doubt.
_BARE_CELL = re.compile(rb"""c(?<=<c|:c)(?=[\s/>])(?![^>]{0,512}?(?<=[\s"'])r\s*=)""")
_ROW = re.compile(rb"<(?:[\w.-]+:)?row(?=[\s/>])")
_UNIQUE_COUNT = re.compile(rb"""uniqueCount\s*=\s*["'][\s+]*([0-9]+)""")


def _check_part(part: bytes, max_cells: int) -> None:
    counts = [int(count) for count in _UNIQUE_COUNT.findall(part)]
    # calamine reserves room for that many strings at once; each takes 11 bytes at least.
    if counts and max(counts) > len(part) // 8:
        raise WorkbookRefused(
            "the file is damaged or is not a real .xlsx (its string count is wrong)"
        )
    rows, columns = _sheet_size(part)
    if rows * columns > max_cells:
        raise WorkbookRefused(
            f"a sheet spans {rows:,} rows by {columns:,} columns, more than Tusk reads "
            f"({max_cells:,} cells); delete the unused rows and columns, or split the sheet, "
            "and upload it again"
        )


def _sheet_size(part: bytes) -> tuple[int, int]:
    """The rows and columns of the box around a part's cells, which calamine allocates whole."""
    top, bottom, bare = 1 << 62, 0, 0
    columns: set[bytes] = set()
    for start, end in _windows(part):  # in slices, to keep the lists of matches small
        refs = _REF.findall(part, start, end)
        bare += len(_BARE_CELL.findall(part, start, end))
        if refs:
            numbers = list(map(int, map(operator.itemgetter(1), refs)))
            top, bottom = min(top, min(numbers)), max(bottom, max(numbers))
            columns.update(map(operator.itemgetter(0), refs))
    numbers = [_column_number(letters) for letters in columns if letters]
    left, right = min(numbers, default=1), max(numbers, default=0)
    if bare:  # calamine places them by counting on from the previous cell or row
        top, left = 1, 1
        bottom, right = bottom + len(_ROW.findall(part)), right + bare
    return max(0, bottom - top + 1), max(0, right - left + 1)


def _windows(data: bytes, size: int = 1 << 20) -> Iterator[tuple[int, int]]:
    """Slices of about `size` bytes, each cut just before a "<" so that no attribute is split."""
    start = 0
    while start < len(data):
        end = data.find(b"<", start + size)
        end = len(data) if end == -1 else end
        yield start, end
        start = end


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - ord("A") + 1
    return number
