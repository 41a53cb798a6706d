"""Extraction: real files of every supported format, built in memory, and the ways they go wrong."""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from collections.abc import Callable

import pytest

from tests.support import documents
from tusk.rag import extract as extract_module
from tusk.rag.extract import SUPPORTED_EXTENSIONS, Extracted, ExtractionError, extract

DAMAGED = "the file is damaged or is not a real"


def fails(data: bytes, filename: str, mime_type: str | None = None) -> str:
    with pytest.raises(ExtractionError) as caught:
        extract(data, filename, mime_type)
    return str(caught.value)


# Choosing the format ----------------------------------------------------------------------------


def test_supported_extensions() -> None:
    assert {
        "txt", "md", "markdown", "html", "htm", "pdf", "docx", "csv", "xlsx", "json", "pptx",
    } == SUPPORTED_EXTENSIONS  # fmt: skip


def test_unsupported_extension_is_named_with_the_supported_ones() -> None:
    message = fails(b"MZ\x90\x00", "setup.EXE")
    assert ".exe are not supported" in message
    for listed in (".pdf", ".docx", ".xlsx", ".md"):
        assert listed in message


def test_extension_is_case_insensitive() -> None:
    assert extract(b"hello", "NOTES.TXT").text == "hello"


def test_mime_type_is_used_when_the_name_has_no_extension() -> None:
    data = documents.pdf([["From the mime type"]])
    assert extract(data, "download", "application/pdf; charset=binary").text == "From the mime type"
    assert extract(b'{"a": 1}', "payload", "application/json").text == '{\n  "a": 1\n}'


def test_extension_wins_over_the_mime_type() -> None:
    assert extract(b"# Title", "notes.md", "application/pdf").text == "# Title"


def test_no_extension_and_no_known_mime_type() -> None:
    assert "no extension" in fails(b"data", "README")
    assert "application/zip" in fails(b"data", "archive", "application/zip")


@pytest.mark.parametrize("filename", [f"empty.{kind}" for kind in sorted(SUPPORTED_EXTENSIONS)])
def test_an_empty_file_is_refused(filename: str) -> None:
    assert fails(b"", filename) == "the file is empty"


@pytest.mark.parametrize("filename", ["blank.txt", "blank.md", "blank.csv", "blank.json"])
def test_a_file_of_whitespace_is_empty(filename: str) -> None:
    assert fails(b" \r\n\t\n ", filename) == "the file is empty"


# PDF -----------------------------------------------------------------------------------------


def test_pdf_pages_are_separated_by_a_blank_line_and_keep_their_lines() -> None:
    data = documents.pdf([["Hello world", "second line"], ["Page two"]], title="Quarterly report")
    assert extract(data, "report.pdf") == Extracted(
        "Hello world\nsecond line\n\nPage two", pages=2, title="Quarterly report"
    )


def test_pdf_without_a_title_in_its_metadata() -> None:
    assert extract(documents.pdf([["Just text"]]), "a.pdf").title is None


def test_pdf_without_text_asks_for_ocr() -> None:
    message = fails(documents.image_only_pdf(), "scan.pdf")
    assert message == extract_module.NO_PDF_TEXT
    assert "OCR" in message


def test_encrypted_pdf_asks_to_remove_the_password() -> None:
    message = fails(documents.encrypted_pdf(), "secret.pdf")
    assert (
        message == "the PDF is protected by a password; remove the protection and upload it again"
    )


@pytest.mark.parametrize("data", [b"%PDF-1.7\nnot really a pdf", b"\x89PNG\r\n\x1a\n" + bytes(64)])
def test_damaged_pdf(data: bytes) -> None:
    assert fails(data, "broken.pdf").startswith(f"{DAMAGED} .pdf (")


def test_a_hundred_page_pdf_is_quick() -> None:
    data = documents.pdf([[f"Page {n} line {line}" for line in range(40)] for n in range(100)])
    started = time.perf_counter()
    extracted = extract(data, "long.pdf")
    elapsed = time.perf_counter() - started
    assert extracted.pages == 100
    assert extracted.text.count("\n\n") == 99
    assert "Page 99 line 39" in extracted.text
    assert elapsed < 2


# DOCX ----------------------------------------------------------------------------------------


def test_docx_paragraphs_headings_and_tables() -> None:
    data = documents.word(
        [
            ("h1", "Introduction"),
            "Tusk keeps its state in PostgreSQL.",
            [["Name", "Age"], ["Ann", "41"], ["Bob", ""]],
            ("h2", "Next steps"),
            "Line one\nline two of the same paragraph.",
        ],
        title="Design notes",
    )
    assert extract(data, "notes.docx") == Extracted(
        "Introduction\n\nTusk keeps its state in PostgreSQL.\n\nName | Age\nAnn | 41\nBob |\n\n"
        "Next steps\n\nLine one\nline two of the same paragraph.",
        title="Design notes",
    )


def test_docx_merged_cells_are_written_once() -> None:
    extracted = extract(documents.word_with_merged_cells(), "contacts.docx")
    assert extracted == Extracted("Name | Contact\nAnn | ann@example.com | +33 1 23")


def test_docx_without_text_is_empty() -> None:
    assert fails(documents.word([""]), "blank.docx") == "the file is empty"


# XLSX and CSV --------------------------------------------------------------------------------


def test_xlsx_rows_become_header_value_lines() -> None:
    data = documents.workbook(
        {
            "People": [
                [None, None, None],
                ["Name", "Born", "Score", "Member"],
                ["Ann", datetime.date(1984, 5, 17), 1.0, True],
                [None, None, None, None],
                ["Bob", datetime.datetime(1990, 1, 2, 3, 4, 5), 0.1 + 0.2, False],
                ["Cy", None, 2.5, None, "extra"],
            ]
        },
        title="Members",
    )
    assert extract(data, "people.xlsx") == Extracted(
        "Name: Ann; Born: 1984-05-17; Score: 1; Member: TRUE\n"
        "Name: Bob; Born: 1990-01-02T03:04:05; Score: 0.3; Member: FALSE\n"
        "Name: Cy; Score: 2.5; extra",
        pages=1,
        title="Members",
    )


def test_xlsx_sheets_are_prefixed_with_their_names_when_several_have_text() -> None:
    data = documents.workbook(
        {
            "People": [["Name"], ["Ann"], ["Bob"]],
            "Empty": [],
            "Cities": [["City", "Country"], ["Lyon", "France"]],
        }
    )
    extracted = extract(data, "book.xlsx")
    assert (
        extracted.text == "# People\nName: Ann\nName: Bob\n\n# Cities\nCity: Lyon; Country: France"
    )
    assert extracted.pages == 3


def test_xlsx_sheet_of_one_row_keeps_it() -> None:
    data = documents.workbook({"Only": [[None, "a", 2, None, "c"]]})
    assert extract(data, "one.xlsx").text == "a; 2; c"


def test_xlsx_numbers_are_written_naturally() -> None:
    row = [3.0, 1e20, 1 / 3, -0.5, 12345678901234, 7]
    data = documents.workbook({"N": [["a", "b", "c", "d", "e", "f"], row]})
    text = extract(data, "n.xlsx").text
    assert text == "a: 3; b: 1e+20; c: 0.333333333333333; d: -0.5; e: 12345678901234; f: 7"


def test_a_million_empty_cells_are_read_quickly() -> None:
    values: dict[tuple[int, int], str | int] = {
        (1, 1): "Name",
        (1, 2): "Age",
        (5_000, 1): "Ann",
        (5_000, 2): 41,
        (10_000, 100): "far corner",
    }
    data = documents.sparse_workbook(10_000, 100, values)
    started = time.perf_counter()
    extracted = extract(data, "sparse.xlsx")
    elapsed = time.perf_counter() - started
    assert extracted.text == "Name: Ann; Age: 41\nfar corner"
    assert elapsed < 3


@pytest.mark.parametrize(
    "sheet_data",
    [
        # Two cells at opposite corners of the grid: 17 billion cells to calamine.
        '<row r="1"><c r="A1"><v>1</v></c></row>'
        '<row r="1048576"><c r="XFD1048576"><v>2</v></c></row>',
        # The same, written so that a careless scan would miss the far cell.
        "<row r='1'><c r='A1'><v>1</v></c><c s='1'r = 'xfd1048576' x=\"/\"><v>2</v></c></row>",
        # A cell without a reference, placed by counting after a far-down row.
        '<row r="1"><c r="XFD1"><v>1</v></c></row><row r="1048576"><c><v>2</v></c></row>',
    ],
)
def test_a_sheet_spanning_the_whole_grid_is_refused_without_loading_it(sheet_data: str) -> None:
    message = fails(documents.raw_workbook(sheet_data), "bomb.xlsx")
    assert "delete the unused rows and columns" in message
    assert re.search(r"spans 1,048,57\d rows by 16,38\d columns", message)


def test_an_impossible_shared_string_count_is_refused() -> None:
    strings = (
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'count="4000000000" uniqueCount="4000000000"><si><t>hi</t></si></sst>'
    )
    data = documents.raw_workbook(
        '<row r="1"><c r="A1" t="s"><v>0</v></c></row>', {"xl/sharedStrings.xml": strings}
    )
    assert fails(data, "strings.xlsx").startswith(f"{DAMAGED} .xlsx")


def test_a_part_larger_than_its_declared_size_is_refused() -> None:
    data = documents.workbook({"S": [["a"], ["b"]]})
    forged = documents.with_declared_size(data, "xl/worksheets/sheet1.xml", 10)
    assert fails(forged, "forged.xlsx").startswith(f"{DAMAGED} .xlsx")


@pytest.mark.parametrize("member", ["mimetype", "xl/_rels/workbook.bin.rels"])
def test_other_workbook_formats_in_an_xlsx_are_refused(member: str) -> None:
    data = documents.with_part(documents.workbook({"S": [["a"], ["b"]]}), member, b"x")
    assert "not an .xlsx workbook" in fails(data, "other.xlsx")


def test_the_unpacked_size_of_an_office_file_is_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "MAX_UNPACKED_BYTES", 2_000)
    for data, name in [
        (documents.workbook({"S": [["a"], ["b"]]}), "big.xlsx"),
        (documents.word(["text"]), "big.docx"),
        (documents.presentation([["text"]]), "big.pptx"),
    ]:
        assert "unpacks to more than Tusk reads" in fails(data, name)


def test_csv_rows_become_header_value_lines() -> None:
    data = b'name,city,note\r\nAnn,Lyon,"two\r\nlines"\r\n,,\r\nBob,,"a, b"\r\n'
    assert extract(data, "people.csv") == Extracted(
        "name: Ann; city: Lyon; note: two lines\nname: Bob; note: a, b"
    )


def test_csv_delimiter_is_detected() -> None:
    data = "nom;ville\nZoé;Besançon\nLéa;Nîmes\n".encode("cp1252")
    assert extract(data, "villes.csv").text == "nom: Zoé; ville: Besançon\nnom: Léa; ville: Nîmes"


def test_csv_that_cannot_be_parsed() -> None:
    data = b"a,b\n" + b'x,"' + b"y" * 200_000 + b'"\n'
    message = fails(data, "huge-field.csv")
    assert message.startswith("the CSV could not be read (")
    assert "line 2" in message


# PPTX ----------------------------------------------------------------------------------------


def test_pptx_slides_shapes_groups_and_tables() -> None:
    data = documents.presentation(
        [
            ["Roadmap\nQ1: extraction", "Inside a group"],
            [[["Step", "Owner"], ["Split", "Ann"]], "After the table"],
        ],
        title="Plans",
    )
    assert extract(data, "plans.pptx") == Extracted(
        "Roadmap\nQ1: extraction\nInside a group\n\nStep | Owner\nSplit | Ann\nAfter the table",
        pages=2,
        title="Plans",
    )


def test_pptx_title_placeholders_come_first() -> None:
    data = documents.presentation([["Agenda", "Welcome", "Questions"]], titles=True)
    assert extract(data, "talk.pptx").text == "Agenda\nWelcome\nQuestions"


def test_pptx_slides_without_text_still_count_as_pages() -> None:
    extracted = extract(documents.presentation([["First"], [], ["Third"]]), "deck.pptx")
    assert extracted.text == "First\n\nThird"
    assert extracted.pages == 3


# Damaged and protected Office files ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_damaged_office_files(kind: str) -> None:
    assert fails(b"PK\x03\x04 not a zip at all", f"broken.{kind}").startswith(
        f"{DAMAGED} .{kind} ("
    )


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_a_zip_that_is_not_the_office_file_it_claims(kind: str) -> None:
    other = documents.word(["text"]) if kind == "xlsx" else documents.workbook({"S": [["a"]]})
    assert fails(other, f"wrong.{kind}").startswith(f"{DAMAGED} .{kind} (")


@pytest.mark.parametrize("kind", ["docx", "xlsx", "pptx"])
def test_encrypted_or_old_office_files(kind: str) -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    message = fails(ole, f"locked.{kind}")
    assert "protected by a password or saved in an old Office format" in message
    assert f"save it as .{kind}" in message


@pytest.mark.parametrize("kind", ["pdf", "docx", "xlsx", "pptx"])
def test_truncated_files_give_text_or_an_extraction_error(kind: str) -> None:
    whole = {
        "pdf": documents.pdf([["Some text"]] * 3),
        "docx": documents.word(["Some text"] * 3),
        "xlsx": documents.workbook({"S": [["a"], ["Some text"]]}),
        "pptx": documents.presentation([["Some text"]] * 3),
    }[kind]
    for length in (len(whole) // 3, len(whole) // 2, len(whole) - 20):
        try:
            result = extract(whole[:length], f"cut.{kind}")
        except ExtractionError:
            continue  # any other exception fails the test
        assert "Some text" in result.text


def test_random_bytes_give_an_extraction_error_for_every_format() -> None:
    noise = random.Random(7).randbytes(4096)
    for kind in sorted(SUPPORTED_EXTENSIONS):
        with pytest.raises(ExtractionError):
            extract(noise, f"noise.{kind}")


# HTML ----------------------------------------------------------------------------------------


PAGE = """<!doctype html>
<html><head><title> Tusk  &amp; RAG </title><style>p { color: red }</style>
<script>var hidden = "script text";</script></head>
<body>
  <noscript>Enable JavaScript</noscript>
  <template><p>template text</p></template>
  <h1>Getting   started</h1>
  <p>Tusk keeps <b>all</b> its state
     in <a href="#">PostgreSQL</a>.</p>
  <div>First line<br>second line</div>
  <ul><li>one</li><li>two <em>items</em></li></ul>
  <table><tr><th>Name</th><th>Age</th></tr><tr><td>Ann</td><td>41</td></tr></table>
  <pre>def f():
    return 1</pre>
  <!-- a comment -->
</body></html>"""


def test_html_visible_text_keeps_its_blocks() -> None:
    assert extract(PAGE.encode(), "page.html") == Extracted(
        "Getting started\n\n"
        "Tusk keeps all its state in PostgreSQL.\n\n"
        "First line\nsecond line\n\n"
        "one\ntwo items\n\n"
        "Name | Age\nAnn | 41\n\n"
        "def f():\n    return 1",
        title="Tusk & RAG",
    )


def test_html_deeply_nested_is_read_without_recursion() -> None:
    page = "<div>" * 5_000 + "deep text" + "</div>" * 5_000
    assert extract(page.encode(), "deep.htm").text == "deep text"


def test_html_in_a_legacy_encoding() -> None:
    page = "<p>Le café où l'on déjeune était plein, à côté de la gare — naïve façade.</p>" * 3
    assert extract(page.encode("cp1252"), "cafe.html").text.startswith("Le café où l'on déjeune")


# JSON ----------------------------------------------------------------------------------------


def test_json_is_written_back_with_an_indent() -> None:
    data = json.dumps({"name": "Zoé", "tags": ["a", "b"], "n": 1}, separators=(",", ":"))
    expected = '{\n  "name": "Zoé",\n  "tags": [\n    "a",\n    "b"\n  ],\n  "n": 1\n}'
    assert extract(data.encode(), "data.json") == Extracted(expected)


def test_invalid_json_says_where() -> None:
    message = fails(b'{\n  "a": 1,\n  "b": [1, 2,, 3]\n}', "bad.json")
    assert "line 3, column 14" in message
    assert message.startswith("the file is not valid JSON")


def test_json_nested_too_deeply() -> None:
    assert "nested too deeply" in fails(b"[" * 100_000 + b"]" * 100_000, "deep.json")


# Text and encodings --------------------------------------------------------------------------


def test_text_is_kept_as_is_with_unix_newlines() -> None:
    data = b"# Title\r\n\r\n  indented  line\r\nlast"
    assert extract(data, "notes.markdown") == Extracted("# Title\n\n  indented  line\nlast")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_text_with_a_byte_order_mark(encoding: str) -> None:
    text = "Zoé писала 東京 🚀"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    assert extract(data, "bom.txt").text == text


def test_utf16_without_a_byte_order_mark_is_recognised() -> None:
    text = "Plain English text saved as UTF-16 without a byte order mark. " * 4
    assert extract(text.encode("utf-16-le"), "wide.txt").text == text


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("cp1252", "Le café où l'on déjeune était plein; naïve façade, déjà vu. " * 5),
        ("gb18030", "北京是中华人民共和国的首都，也是全国的政治和文化中心。今天天气很好。" * 3),
        ("cp1251", "Привет, как дела? Это текст в старой кодировке Windows. " * 3),
    ],
)
def test_legacy_encodings_are_recognised(encoding: str, text: str) -> None:
    assert extract(text.encode(encoding), "legacy.txt").text == text


def test_random_bytes_with_nuls_are_not_text() -> None:
    noise = random.Random(1).randbytes(4096) + b"\x00" * 16
    message = fails(noise, "binary.txt")
    assert (
        message
        == "the text's encoding could not be recognised; save it as UTF-8 and upload it again"
    )


def test_text_with_a_stray_nul_is_still_text() -> None:
    assert (
        extract(b"hello\x00 world, this is text", "nul.txt").text == "hello\x00 world, this is text"
    )


# The size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"x" * 101, "long.txt"),
        (b"[" + b"[" * 30 + b"]" * 30 + b"]", "indent.json"),
        (b"<p>" + b"word " * 30 + b"</p>", "page.html"),
        (b"header\n" + b"value\n" * 30, "rows.csv"),
    ],
)
def test_text_beyond_max_chars_is_refused(
    monkeypatch: pytest.MonkeyPatch, data: bytes, filename: str
) -> None:
    monkeypatch.setattr(extract_module, "MAX_CHARS", 100)
    message = fails(data, filename)
    assert message.startswith("the document has more text than Tusk indexes (over 100 characters")
    assert "split it into smaller files" in message


@pytest.mark.parametrize(
    ("build", "filename"),
    [
        (lambda: documents.workbook({"S": [["column"]] + [["value"]] * 30}), "rows.xlsx"),
        (lambda: documents.pdf([["a line of text"]] * 10), "pages.pdf"),
        (lambda: documents.word(["a paragraph of text"] * 10), "long.docx"),
        (lambda: documents.presentation([["a slide of text"]] * 10), "long.pptx"),
    ],
)
def test_documents_beyond_max_chars_are_refused(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[], bytes], filename: str
) -> None:
    data = build()
    monkeypatch.setattr(extract_module, "MAX_CHARS", 100)
    assert fails(data, filename).startswith("the document has more text than Tusk indexes")


def test_text_within_max_chars_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "MAX_CHARS", 100)
    assert extract(b"x" * 100, "exact.txt").text == "x" * 100
