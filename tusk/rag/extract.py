"""Turn an uploaded file into text: bytes in, `Extracted` out, nothing read or written elsewhere.

The format is chosen by the file's extension (lower-case), or by its mime type when the name has
none. The text follows a few layout rules, so that the splitter can cut on lines and blank lines:

- PDF: each page's text, keeping its line breaks; pages separated by a blank line ("\\n\\n").
- DOCX: paragraphs (headings included) separated by a blank line; a table is one line per row, its
  cells joined by " | ". Headers, footers, footnotes and text boxes are left out.
- XLSX and CSV: one line per non-empty row, "header: value; header: value", the header being the
  first non-empty row of the sheet; empty cells are skipped, whole numbers lose their ".0", dates
  are ISO 8601. Sheets are separated by a blank line and, when more than one has text, each starts
  with "# <sheet name>".
- PPTX: each slide's shapes in order, one line per paragraph or table row (cells joined by
  " | "); slides separated by a blank line.
- HTML: the visible text; table rows, list items, <br> and <div> end a line; paragraphs,
  headings, lists and tables are separated by a blank line; script, style, noscript and template
  are dropped.
- JSON: the parsed value written back with an indent of 2, so that it splits on lines.
- TXT and Markdown: the text as it is, with "\\r\\n" turned into "\\n".

Text files are decoded as UTF-8/16/32 when they start with a byte-order mark, else as UTF-8, else
in the encoding charset-normalizer recognises. `title` comes from the document's metadata (PDF,
DOCX, PPTX, XLSX) or from <title> (HTML). Every failure raises ExtractionError with a message the
user can act on; so does a document that would give more than MAX_CHARS characters, which is
checked while the text is produced. Old binary Office files (.xls, .doc, .ppt) are not read:
calamine's .xls reader can be made to allocate without bound, with no cheap check beforehand.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import itertools
import json
import re
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import charset_normalizer
from selectolax.lexbor import LexborHTMLParser, LexborNode

from tusk.rag.workbook_guard import WorkbookRefused, check_workbook, too_big

# The PDF, Word, PowerPoint and Excel libraries (~30 MB) are imported by the readers that use
# them, so a process that never reads such a file does not carry them.
if TYPE_CHECKING:
    from docx.document import Document as WordDocument
    from docx.table import _Cell, _Row
    from pptx.shapes.base import BaseShape
    from pptx.table import Table as SlideTable
    from python_calamine import CalamineWorkbook

MAX_CHARS = 50_000_000
# What an Office file may unpack to: a guard against zip bombs.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
# The area of one sheet. calamine allocates a sheet's whole bounding box (32 bytes a cell) and
# aborts the process, uncatchably, when that fails: two far-apart cells in a 2 KB file do it.
MAX_CELLS = 10_000_000

EMPTY = "the file is empty"
NO_PDF_TEXT = "no text was found in the PDF (is it a scanned image? run OCR on it first)"
PDF_PROTECTED = "the PDF is protected by a password; remove the protection and upload it again"
UNRECOGNISED = "the text's encoding could not be recognised; save it as UTF-8 and upload it again"


@dataclass(frozen=True)
class Extracted:
    text: str
    pages: int | None = None  # PDF pages, PPTX slides, spreadsheet sheets; None for plain text
    title: str | None = None  # from the document's metadata when it has one


class ExtractionError(Exception):
    """Why a file gives no usable text, in words a user can act on (it becomes the document's
    error)."""


def extract(data: bytes, filename: str, mime_type: str | None = None) -> Extracted:
    """The text of an uploaded file, laid out as the module's docstring says."""
    kind = _kind(filename, mime_type)
    if not data:
        raise ExtractionError(EMPTY)
    extracted = _READERS[kind](data, kind)
    if not extracted.text.strip():
        raise ExtractionError(EMPTY)
    return extracted


_MIME_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/json": "json",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}


def _kind(filename: str, mime_type: str | None) -> str:
    extension = PurePosixPath(filename.strip().replace("\\", "/")).suffix.lstrip(".").lower()
    if extension:
        if extension in SUPPORTED_EXTENSIONS:
            return extension
        raise ExtractionError(f"files of type .{extension} are not supported; {_supported()}")
    mime = (mime_type or "").split(";")[0].strip().lower()
    if mime in _MIME_TYPES:
        return _MIME_TYPES[mime]
    if mime:
        raise ExtractionError(
            f"the file has no extension and its type ({mime}) is not supported; {_supported()}"
        )
    raise ExtractionError(f"the file's name has no extension; {_supported()}")


def _supported() -> str:
    listed = ", ".join(f".{extension}" for extension in sorted(SUPPORTED_EXTENSIONS))
    return f"upload one of: {listed}"


class _Budget:
    """Counts the characters a document has produced, and stops it past MAX_CHARS."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, text: str) -> str:
        self.used += len(text)
        if self.used > MAX_CHARS:
            raise ExtractionError(
                f"the document has more text than Tusk indexes (over {MAX_CHARS:,} characters; "
                "split it into smaller files)"
            )
        return text


@contextmanager
def _reading(kind: str) -> Iterator[None]:
    """Turns whatever a parsing library raises on a bad file into an ExtractionError."""
    try:
        yield
    except ExtractionError:
        raise
    except RecursionError:
        raise ExtractionError("the file is nested too deeply to be read") from None
    except Exception as error:  # on a damaged file they raise anything: KeyError, zlib.error...
        detail = " ".join(str(error).split())[:160] or type(error).__name__
        raise ExtractionError(f"the file is damaged or is not a real .{kind} ({detail})") from error


def _title(value: str | None) -> str | None:
    return " ".join((value or "").split()) or None


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Text files ------------------------------------------------------------------------------------

# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode(data: bytes) -> str:
    """The text of a text file, in whichever encoding it is; its size bounds its length."""
    text = _with_bom(data)
    if text is None:
        text = _utf8(data)
        # ASCII in UTF-16 without a BOM is valid UTF-8 too, with a NUL after every letter.
        if text is None or _looks_binary(text):
            text = _guess(data)
    if text is None or _looks_binary(text):
        raise ExtractionError(UNRECOGNISED)
    return _Budget().take(_lines(text))


def _with_bom(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise ExtractionError(UNRECOGNISED) from None
    return None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _guess(data: bytes) -> str | None:
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    # charset-normalizer often takes Western European text for Baltic or Central European;
    # cp1252, the commonest legacy encoding by far, wins when it reads at least as well.
    western = next((m for m in matches if "cp1252" in m.could_be_from_charset), best)
    if western.chaos <= best.chaos + 0.1 and western.coherence >= best.coherence:
        best = western
    return str(best)


# Control characters that text does not contain (ESC does, in terminal logs).
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    return len(_BINARY.findall(sample)) > len(sample) // 20


def _read_text(data: bytes, kind: str) -> Extracted:
    return Extracted(_decode(data))


def _read_json(data: bytes, kind: str) -> Extracted:
    text = _decode(data)
    if not text.strip():
        raise ExtractionError(EMPTY)
    out, budget = io.StringIO(), _Budget()
    with _reading(kind):
        value = _parse_json(text)
        # Written piece by piece: indenting a deeply nested value can multiply its size.
        for piece in json.JSONEncoder(ensure_ascii=False, indent=2).iterencode(value):
            out.write(budget.take(piece))
    return Extracted(out.getvalue())


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ExtractionError(
            f"the file is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}; correct it and upload it again"
        ) from None


# PDF -------------------------------------------------------------------------------------------

_PDFIUM = threading.Lock()  # PDFium is not thread-safe, and extraction may run in threads


def _read_pdf(data: bytes, kind: str) -> Extracted:
    with _PDFIUM, _reading(kind):
        pdf = _open_pdf(data)
        try:
            pages = [text for text in _pdf_pages(pdf, _Budget()) if text]
            count, title = len(pdf), _title(str(pdf.get_metadata_value("Title")))
        finally:
            pdf.close()
    if not pages:
        raise ExtractionError(NO_PDF_TEXT)
    return Extracted("\n\n".join(pages), pages=count, title=title)


def _open_pdf(data: bytes) -> Any:
    import pypdfium2  # type: ignore[import-untyped]
    import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]

    try:
        return pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        if error.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise ExtractionError(PDF_PROTECTED) from None
        raise


def _pdf_pages(pdf: Any, budget: _Budget) -> Iterator[str]:
    for index in range(len(pdf)):
        page = pdf[index]
        textpage = page.get_textpage()
        try:
            yield budget.take(_lines(str(textpage.get_text_range())).strip())
        finally:
            textpage.close()
            page.close()


# Office files: DOCX, PPTX, XLSX -----------------------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _office_zip(data: bytes, kind: str) -> zipfile.ZipFile:
    """The file's zip archive, known to unpack to no more than MAX_UNPACKED_BYTES."""
    if data.startswith(_OLE_MAGIC):  # what Office writes for an encrypted or pre-2007 file
        raise ExtractionError(
            "the file is protected by a password or saved in an old Office format; remove the "
            f"protection or save it as .{kind}, and upload it again"
        )
    archive = zipfile.ZipFile(io.BytesIO(data))
    if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED_BYTES:
        raise _too_big()
    return archive


def _too_big() -> ExtractionError:
    return ExtractionError(str(too_big(MAX_UNPACKED_BYTES)))


def _read_docx(data: bytes, kind: str) -> Extracted:
    import docx

    budget = _Budget()
    with _reading(kind):
        _office_zip(data, kind)
        document = docx.Document(io.BytesIO(data))
        blocks = [budget.take(text) for text in _docx_blocks(document) if text]
        title = _title(document.core_properties.title)
    return Extracted("\n\n".join(blocks), title=title)


def _docx_blocks(document: WordDocument) -> Iterator[str]:
    from docx.text.paragraph import Paragraph

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            yield block.text.strip()
        else:
            yield "\n".join(line for line in map(_docx_row, block.rows) if line)


def _docx_row(row: _Row) -> str:
    cells: list[_Cell] = []
    for cell in row.cells:
        if not cells or cell._tc is not cells[-1]._tc:  # a merged cell repeats once per column
            cells.append(cell)
    texts = [" ".join(cell.text.split()) for cell in cells]
    return " | ".join(texts).rstrip() if any(texts) else ""


def _read_pptx(data: bytes, kind: str) -> Extracted:
    import pptx

    budget = _Budget()
    with _reading(kind):
        _office_zip(data, kind)
        deck = pptx.Presentation(io.BytesIO(data))
        slides = [budget.take("\n".join(_shape_lines(slide.shapes))) for slide in deck.slides]
        title = _title(deck.core_properties.title)
    return Extracted("\n\n".join(text for text in slides if text), pages=len(slides), title=title)


def _shape_lines(shapes: Iterable[BaseShape]) -> Iterator[str]:
    from pptx.shapes.autoshape import Shape
    from pptx.shapes.graphfrm import GraphicFrame
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shape_lines(shape.shapes)
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            yield from _slide_table_lines(shape.table)
        elif isinstance(shape, Shape) and shape.has_text_frame:
            # python-pptx writes a line break inside a paragraph as a vertical tab.
            lines = shape.text_frame.text.replace("\v", "\n").split("\n")
            yield from (line.strip() for line in lines if line.strip())


def _slide_table_lines(table: SlideTable) -> Iterator[str]:
    for row in table.rows:
        texts = [" ".join(cell.text.split()) for cell in row.cells if not cell.is_spanned]
        if any(texts):
            yield " | ".join(texts).rstrip()


# Spreadsheets: XLSX and CSV ---------------------------------------------------------------------


def _read_workbook(data: bytes, kind: str) -> Extracted:
    from python_calamine import CalamineWorkbook, SheetTypeEnum

    budget = _Budget()
    with _reading(kind):
        title = _workbook_title(_office_zip(data, kind))
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
        names = [s.name for s in book.sheets_metadata if s.typ == SheetTypeEnum.WorkSheet]
        sheets = [(name, _sheet_lines(book, name, budget)) for name in names]
    return Extracted(_join_sheets(sheets), pages=len(names), title=title)


def _workbook_title(archive: zipfile.ZipFile) -> str | None:
    try:
        raw = check_workbook(archive, max_bytes=MAX_UNPACKED_BYTES, max_cells=MAX_CELLS)
    except WorkbookRefused as refused:
        raise ExtractionError(str(refused)) from None
    return _title(html.unescape(raw)) if raw is not None else None


def _sheet_lines(book: CalamineWorkbook, name: str, budget: _Budget) -> list[str]:
    # The sheet is dropped on return: calamine holds every cell of a loaded sheet.
    return _row_lines(book.get_sheet_by_name(name).iter_rows(), budget)


def _read_csv(data: bytes, kind: str) -> Extracted:
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text))
    try:
        return Extracted("\n".join(_row_lines(reader, _Budget())))
    except csv.Error as error:
        raise ExtractionError(
            f"the CSV could not be read ({error}, line {reader.line_num}); correct it and upload "
            "it again"
        ) from None


def _csv_delimiter(text: str) -> str:
    sample = text[:16384]
    sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _row_lines(rows: Iterable[Sequence[object]], budget: _Budget) -> list[str]:
    """'header: value; ...' for each non-empty row after the first, which is the header."""
    header: list[str] | None = None
    lines: list[str] = []
    for row in rows:
        if row.count("") == len(row):  # most rows of a sparse sheet: skip them before formatting
            continue
        cells = [_cell_text(value) for value in row]
        if not any(cells):
            continue
        if header is None:
            header = cells
        else:
            lines.append(budget.take(_labelled(header, cells)))
    if header is not None and not lines:  # a single row: it is the content, not a header
        lines.append(budget.take("; ".join(cell for cell in header if cell)))
    return lines


def _labelled(header: list[str], cells: list[str]) -> str:
    labels = itertools.chain(header, itertools.repeat(""))
    pairs = ((label, value) for label, value in zip(labels, cells, strict=False) if value)
    return "; ".join(f"{label}: {value}" if label else value for label, value in pairs)


def _cell_text(value: object) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")  # Excel keeps 15 significant digits; the rest is noise
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _join_sheets(sheets: list[tuple[str, list[str]]]) -> str:
    filled = [(name, lines) for name, lines in sheets if lines]
    if len(filled) == 1:
        return "\n".join(filled[0][1])
    return "\n\n".join(f"# {name}\n" + "\n".join(lines) for name, lines in filled)


# HTML ------------------------------------------------------------------------------------------

_DROPPED = ["script", "style", "noscript", "template"]
# fmt: off
_PARAGRAPHS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre", "hr",
    "section", "article", "header", "footer", "main", "aside", "nav", "figure", "form",
    "fieldset", "address", "details",
})
_LINES = frozenset({
    "div", "li", "dt", "dd", "tr", "br", "caption", "figcaption", "summary", "legend", "option",
})
# fmt: on
_CELLS = frozenset({"td", "th"})
_PRE_END = -1
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")


def _read_html(data: bytes, kind: str) -> Extracted:
    with _reading(kind):
        tree = LexborHTMLParser(_decode(data))
        tree.strip_tags(_DROPPED)
        heading = tree.css_first("title")
        title = _title(heading.text()) if heading is not None else None
        root = tree.body or tree.root
        text = _html_text(root) if root is not None else ""
    return Extracted(text, title=title)


def _html_text(root: LexborNode) -> str:
    out = _HtmlText()
    stack: list[LexborNode | int] = [root]
    while stack:  # depth first, without recursion: a page may nest deeper than Python recurses
        item = stack.pop()
        if isinstance(item, int):
            out.end_pre() if item == _PRE_END else out.newlines(item)
        elif item.is_text_node:
            out.text(item.text_content or "")
        else:
            stack.extend(_enter(item, out))
    return out.result()


def _enter(node: LexborNode, out: _HtmlText) -> list[LexborNode | int]:
    """What to do after the node's children, then its children in reverse (the stack pops)."""
    tag = node.tag or ""
    breaks = 2 if tag in _PARAGRAPHS else 1 if tag in _LINES else 0
    out.newlines(breaks)
    if tag in _CELLS:
        out.cell = True
    after: list[LexborNode | int] = [breaks] if breaks else []
    if tag == "pre":
        out.pre += 1
        after.append(_PRE_END)
    return after + list(node.iter(include_text=True))[::-1]


class _HtmlText:
    """Joins the runs of text of a page: whitespace collapsed (but in <pre>), line breaks owed
    between runs (the most asked for wins), " | " between the cells of a table row."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.owed = 0
        self.cell = False
        self.pre = 0
        self.budget = _Budget()

    def newlines(self, count: int) -> None:
        self.owed = max(self.owed, count)

    def end_pre(self) -> None:
        self.pre -= 1

    def text(self, value: str) -> None:
        if not self.pre:
            self._put(_HTML_SPACE.sub(" ", value), raw=False)
            return
        first, *rest = value.split("\n")
        self._put(first, raw=True)
        for line in rest:
            self.newlines(1)
            self._put(line, raw=True)

    def _put(self, run: str, raw: bool) -> None:
        line_start = not self.parts or self.owed > 0
        if not raw and (line_start or self.parts[-1].endswith(" ")):
            run = run.lstrip(" ")
        if not run:
            return
        if self.parts and (self.owed or self.cell):
            self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * self.owed if self.owed else " | ")
        self.owed, self.cell = 0, False
        self.parts.append(self.budget.take(run))

    def result(self) -> str:
        return "".join(self.parts).strip()


_READERS: dict[str, Callable[[bytes, str], Extracted]] = {
    "txt": _read_text,
    "md": _read_text,
    "markdown": _read_text,
    "html": _read_html,
    "htm": _read_html,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "csv": _read_csv,
    "xlsx": _read_workbook,
    "json": _read_json,
    "pptx": _read_pptx,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_READERS)
