"""Real documents built in memory for the extraction tests: PDF, DOCX, XLSX, PPTX.

Each builder returns the file's bytes, written by the format's usual library (reportlab, pypdf,
python-docx, openpyxl, python-pptx), except the hand-written XLSX packages that only a crafted
file would contain."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterable, Sequence

import docx
import openpyxl
import pptx
import pypdf
from pptx.util import Inches
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

Cell = str | int | float | bool | None


def pdf(pages: Sequence[Sequence[str]], title: str | None = None) -> bytes:
    """A PDF whose every page has the given lines of text, one under the other."""
    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    page.setTitle(title or "")  # reportlab's default is "untitled"
    for lines in pages:
        for number, line in enumerate(lines):
            page.drawString(72, 760 - 16 * number, line)
        page.showPage()
    page.save()
    return out.getvalue()


def image_only_pdf() -> bytes:
    """A PDF with drawings but no text, as a scanner makes."""
    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    page.rect(72, 500, 300, 200, fill=1)
    page.showPage()
    page.save()
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """A PDF that opens only with a password."""
    password = "s3cret"
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf([["Top secret"]])))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def word(
    blocks: Iterable[str | tuple[str, str] | list[list[str]]], title: str | None = None
) -> bytes:
    """A DOCX: a str is a paragraph, ("h1", text) a heading, a list of rows a table."""
    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    for block in blocks:
        if isinstance(block, str):
            document.add_paragraph(block)
        elif isinstance(block, tuple):
            document.add_heading(block[1], level=int(block[0][1:]))
        else:
            table = document.add_table(rows=len(block), cols=len(block[0]))
            for row, values in zip(table.rows, block, strict=True):
                for cell, value in zip(row.cells, values, strict=True):
                    cell.text = value
    return _saved(document)


def word_with_merged_cells() -> bytes:
    """A DOCX table whose first row has one cell spanning two columns."""
    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    merged = table.cell(0, 1).merge(table.cell(0, 2))
    table.cell(0, 0).text, merged.text = "Name", "Contact"
    for cell, value in zip(
        table.rows[1].cells, ["Ann", "ann@example.com", "+33 1 23"], strict=True
    ):
        cell.text = value
    return _saved(document)


def workbook(sheets: dict[str, Sequence[Sequence[Cell]]], title: str | None = None) -> bytes:
    """An XLSX with one sheet per entry, its rows written from A1 (None leaves a cell empty)."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    if title is not None:
        book.properties.title = title
    return _saved(book)


def presentation(
    slides: Sequence[Sequence[str | list[list[str]]]],
    title: str | None = None,
    titles: bool = False,
) -> bytes:
    """A PPTX: per slide, a str is a text box (its lines as paragraphs), a list of rows a table.
    The second text box of a slide, if any, goes inside a group. With `titles`, each slide's first
    item goes into the title placeholder of a "Title Only" slide."""
    deck = pptx.Presentation()
    if title is not None:
        deck.core_properties.title = title
    for items in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5 if titles else 6])
        if titles:
            slide.shapes.title.text, *items = items
        for number, item in enumerate(items):
            top = Inches(1 + number * 1.5)
            if isinstance(item, str):
                shapes = slide.shapes.add_group_shape().shapes if number == 1 else slide.shapes
                box = shapes.add_textbox(Inches(1), top, Inches(6), Inches(1))
                box.text_frame.text = item
            else:
                frame = slide.shapes.add_table(
                    len(item), len(item[0]), Inches(1), top, Inches(6), Inches(1)
                )
                for r, values in enumerate(item):
                    for c, value in enumerate(values):
                        frame.table.cell(r, c).text = value
    return _saved(deck)


def _saved(
    document: docx.document.Document | openpyxl.Workbook | pptx.presentation.Presentation,
) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


# Hand-written XLSX packages: what openpyxl would take minutes to write, or never writes.

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="worksheets/sheet1.xml" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/worksheet"/></Relationships>'
)


def raw_workbook(sheet_data: str, extra_parts: dict[str, str] | None = None) -> bytes:
    """An XLSX of one sheet, "Data", whose <sheetData> holds the given XML."""
    sheet = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{sheet_data}</sheetData></worksheet>"
    )
    parts = {
        "[Content_Types].xml": _CONTENT_TYPES,
        "_rels/.rels": _ROOT_RELS,
        "xl/workbook.xml": _WORKBOOK,
        "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS,
        "xl/worksheets/sheet1.xml": sheet,
        **(extra_parts or {}),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return out.getvalue()


def sparse_workbook(rows: int, columns: int, values: dict[tuple[int, int], str | int]) -> bytes:
    """An XLSX whose sheet has rows × columns cells, all empty but `values` ((row, column) from 1).

    Every other empty cell is an empty string, which calamine keeps as a cell, and the rest carry
    only a style, as Excel writes formatted cells."""
    names = list(enumerate(map(column_name, range(1, columns + 1)), start=1))
    empty = "".join(_cell(f"{name}#", n, None) for n, name in names)  # "#": the row's number
    filled_rows = {row for row, _ in values}
    out = []
    for row in range(1, rows + 1):
        if row in filled_rows:
            cells = "".join(_cell(f"{name}{row}", n, values.get((row, n))) for n, name in names)
        else:
            cells = empty.replace("#", str(row))
        out.append(f'<row r="{row}">{cells}</row>')
    return raw_workbook("".join(out))


def _cell(ref: str, column: int, value: str | int | None) -> str:
    if isinstance(value, int):
        return f'<c r="{ref}"><v>{value}</v></c>'
    if value is not None:
        return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'
    if column % 2:
        return f'<c r="{ref}" t="inlineStr"><is><t></t></is></c>'
    return f'<c r="{ref}" s="0"/>'


def column_name(number: int) -> str:
    """A spreadsheet column's letters: 1 -> "A", 28 -> "AB"."""
    letters = ""
    while number:
        number, remainder = divmod(number - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def with_part(data: bytes, name: str, content: bytes) -> bytes:
    """A copy of a zip-based document with one more part (or a part replaced)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            if info.filename != name:
                archive.writestr(info.filename, source.read(info))
        archive.writestr(name, content)
    return out.getvalue()


def with_declared_size(data: bytes, name: str, size: int) -> bytes:
    """A copy of a zip whose central directory declares another unpacked size for one part, as a
    crafted file would to slip content past a reader that trusts the declaration."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    out = bytearray(data)
    position = archive.start_dir
    while out[position : position + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", out, position + 28)
        if out[position + 46 : position + 46 + name_length].decode() == name:
            struct.pack_into("<I", out, position + 24, size)
        position += 46 + name_length + extra_length + comment_length
    return bytes(out)
