"""DESIGN.md section 1: reading one meter file into raw text rows, or rejecting it whole.

Every case writes real bytes to a file and compares every row of the table with the rows
expected: the reader is the first place a record could be lost or shifted by a line, so the
line numbers are checked everywhere. The same cases run plain and gzipped.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re

import pyarrow as pa
import pytest

from greenstream_dagster.rules import meter_csv
from greenstream_dagster.rules.codes import REQUIRED_COLUMNS
from greenstream_dagster.rules.meter_csv import (
    DELIMITERS,
    MAX_RECORD_LINES,
    RAW_LINE_MAX_CHARS,
    MeterCsv,
    RejectedFile,
    read_meter_csv,
)

HEADER = "meter_id,timestamp,energy_value,energy_unit"
TS = "2026-11-20T00:15:00Z"
TS2 = "2026-11-20T00:30:00Z"


def row(
    line: int,
    meter_id: str | None,
    timestamp: str | None,
    energy_value: str | None,
    energy_unit: str | None,
    *,
    count: int = 4,
    raw: str | None = None,
    extra: dict | None = None,
) -> dict:
    """One expected row of the table."""
    return {
        "meter_id": meter_id,
        "timestamp": timestamp,
        "energy_value": energy_value,
        "energy_unit": energy_unit,
        "extra_fields": None
        if extra is None
        else json.dumps(extra, separators=(",", ":"), ensure_ascii=False),
        "source_line": line,
        "field_count": count,
        "raw_line": raw,
    }


def lines(*texts: str, end: str = "\n") -> bytes:
    return "".join(text + end for text in texts).encode()


def read(tmp_path, content: bytes, name: str = "readings.csv") -> MeterCsv:
    path = tmp_path / name
    path.write_bytes(content)
    return read_meter_csv(path)


# (file content, expected rows). Each case names the rule of the contract it holds to.
ACCEPTED = {
    "plain": (
        lines(HEADER, f"M1,{TS},1.5,kW", f"M2,{TS},250,W"),
        [row(2, "M1", TS, "1.5", "kW"), row(3, "M2", TS, "250", "W")],
    ),
    "byte order mark is not part of the first column name": (
        b"\xef\xbb\xbf" + lines(HEADER, f"M1,{TS},1.5,kW"),
        [row(2, "M1", TS, "1.5", "kW")],
    ),
    "CRLF line ends": (
        lines(HEADER, f"M1,{TS},1.5,kW", f"M2,{TS},2,W", end="\r\n"),
        [row(2, "M1", TS, "1.5", "kW"), row(3, "M2", TS, "2", "W")],
    ),
    "blank lines are skipped but still counted": (
        lines("", "\r", HEADER, "", f"M1,{TS},1,kW", "\r", "", f"M2,{TS},2,kW", "", ""),
        [row(5, "M1", TS, "1", "kW"), row(8, "M2", TS, "2", "kW")],
    ),
    "last line without a newline": (
        lines(HEADER, f"M1,{TS},1,kW").rstrip(b"\n") + b"\nM2,2026-11-20T00:",
        [
            row(2, "M1", TS, "1", "kW"),
            row(3, "M2", "2026-11-20T00:", None, None, count=2, raw="M2,2026-11-20T00:"),
        ],
    ),
    "last line without a newline, after CRLF lines": (
        lines(HEADER, f"M1,{TS},1,kW", end="\r\n") + f"M2,{TS},2,kW".encode(),
        [row(2, "M1", TS, "1", "kW"), row(3, "M2", TS, "2", "kW")],
    ),
    "fields are kept as written: spaces, empty fields, odd text": (
        lines(HEADER, f" M1 , {TS} , NULL ,kw ", "M2,,,", "M3,x,1e3,Wh"),
        [
            row(2, " M1 ", f" {TS} ", " NULL ", "kw "),
            row(3, "M2", "", "", ""),
            row(4, "M3", "x", "1e3", "Wh"),
        ],
    ),
    "columns in another order": (
        lines("energy_unit,energy_value,meter_id,timestamp", f"kW,1.5,M1,{TS}"),
        [row(2, "M1", TS, "1.5", "kW")],
    ),
    "header names in odd case, with spaces and quotes": (
        lines(' Meter_ID ,"TIMESTAMP", Energy_Value ,  "energy_UNIT" ', f"M1,{TS},1,kW"),
        [row(2, "M1", TS, "1", "kW")],
    ),
    "too many and too few fields": (
        lines(HEADER, f"M1,{TS},1,kW,surplus", f"M2,{TS}", "M3", f"M4,{TS},4,kW"),
        [
            row(2, "M1", TS, "1", "kW", count=5, raw=f"M1,{TS},1,kW,surplus"),
            row(3, "M2", TS, None, None, count=2, raw=f"M2,{TS}"),
            row(4, "M3", None, None, None, count=1, raw="M3"),
            row(5, "M4", TS, "4", "kW"),
        ],
    ),
    "a line of spaces is a record, not a blank line": (
        lines(HEADER, "   ", f"M1,{TS},1,kW"),
        [row(2, "   ", None, None, None, count=1, raw="   "), row(3, "M1", TS, "1", "kW")],
    ),
    "quoted fields with delimiters and doubled quotes": (
        lines(HEADER, f'"M,1",{TS},"1,5",kW', f'M2,{TS},"say ""2""",W', f'M3,{TS},"",kW'),
        [
            row(2, "M,1", TS, "1,5", "kW"),
            row(3, "M2", TS, 'say "2"', "W"),
            row(4, "M3", TS, "", "kW"),
        ],
    ),
    "quoted newlines: one record, later line numbers still right": (
        lines(
            HEADER,
            f'M1,{TS},"1',
            "",
            '2",kW',
            f"M2,{TS},2,kW",
            f'"M3\r\nx",{TS},3,kW',
            f"M4,{TS},4,kW",
        ),
        [
            row(2, "M1", TS, "1\n\n2", "kW"),
            row(5, "M2", TS, "2", "kW"),
            row(6, "M3\r\nx", TS, "3", "kW"),
            row(8, "M4", TS, "4", "kW"),
        ],
    ),
    "quoted newline in a CRLF file keeps its CRLF": (
        lines(HEADER, f'M1,{TS},1,"k', 'W"', f"M2,{TS},2,kW", end="\r\n"),
        [row(2, "M1", TS, "1", "k\r\nW"), row(4, "M2", TS, "2", "kW")],
    ),
    "fully quoted file": (
        lines(
            '"meter_id","timestamp","energy_value","energy_unit"',
            f'"M1","{TS}","1.5","kW"',
            f'"M2","{TS2}","","W"',
            end="\r\n",
        ),
        [row(2, "M1", TS, "1.5", "kW"), row(3, "M2", TS2, "", "W")],
    ),
    "fully quoted file with one escaped quote and one malformed row": (
        lines(
            HEADER,
            f'"M1","{TS}","1.5","kW"',
            f'"M""2","{TS}","2","kW"',
            f'"M3","{TS}","3"',
            f'"M4","{TS}","4","kW"',
        ),
        [
            row(2, "M1", TS, "1.5", "kW"),
            row(3, 'M"2', TS, "2", "kW"),
            row(4, "M3", TS, "3", None, count=3, raw=f'"M3","{TS}","3"'),
            row(5, "M4", TS, "4", "kW"),
        ],
    ),
    "a quote inside an unquoted field is a plain character": (
        lines(HEADER, f'M1,{TS},1",kW', f'M2,{TS},2,k"W"'),
        [row(2, "M1", TS, '1"', "kW"), row(3, "M2", TS, "2", 'k"W"')],
    ),
    "an unterminated quote takes its line alone, split naively": (
        lines(HEADER, f'M1,"{TS},1,kW', f"M2,{TS},2,kW", f"M3,{TS},3,kW"),
        [
            row(2, "M1", f'"{TS}', "1", "kW"),
            row(3, "M2", TS, "2", "kW"),
            row(4, "M3", TS, "3", "kW"),
        ],
    ),
    "an unterminated quote on the last line": (
        lines(HEADER, f"M1,{TS},1,kW", f'M2,{TS},"2,kW'),
        [row(2, "M1", TS, "1", "kW"), row(3, "M2", TS, '"2', "kW")],
    ),
    "a second stray quote closes the first one, as in any CSV reader": (
        lines(HEADER, f'M1,"{TS},1,kW', f'M2,{TS},"2,kW'),
        [
            row(
                2,
                "M1",
                f"{TS},1,kW\nM2,{TS},2",
                "kW",
                None,
                count=3,
                raw=f'M1,"{TS},1,kW\nM2,{TS},"2,kW',
            )
        ],
    ),
    "an unterminated quote with too few fields": (
        lines(HEADER, f'M1,"{TS},1', f"M2,{TS},2,kW"),
        [
            row(2, "M1", f'"{TS}', "1", None, count=3, raw=f'M1,"{TS},1'),
            row(3, "M2", TS, "2", "kW"),
        ],
    ),
    "semicolon delimiter": (
        lines(HEADER.replace(",", ";"), f"M1;{TS};1,5;kW", f"M2;{TS};2"),
        [
            row(2, "M1", TS, "1,5", "kW"),
            row(3, "M2", TS, "2", None, count=3, raw=f"M2;{TS};2"),
        ],
    ),
    "tab delimiter": (
        lines(HEADER.replace(",", "\t"), f"M1\t{TS}\t1\tkW"),
        [row(2, "M1", TS, "1", "kW")],
    ),
    "pipe delimiter, quoted": (
        lines(HEADER.replace(",", "|"), f'"M|1"|{TS}|1|kW'),
        [row(2, "M|1", TS, "1", "kW")],
    ),
    "extra columns become a JSON object, in file order": (
        lines(
            "Site,meter_id,timestamp,energy_value,energy_unit,Note",
            f"S1,M1,{TS},1,kW,",
            f'S2,M2,{TS},2,kW,"a ""b"", c\\d\te"',
            f"S3,M3,{TS},3,kW,x,surplus",
            "S4,M4",
            f"S5,M5,{TS},5,kW,bell\x07",
        ),
        [
            row(2, "M1", TS, "1", "kW", count=6, extra={"Site": "S1", "Note": ""}),
            row(3, "M2", TS, "2", "kW", count=6, extra={"Site": "S2", "Note": 'a "b", c\\d\te'}),
            row(
                4,
                "M3",
                TS,
                "3",
                "kW",
                count=7,
                raw=f"S3,M3,{TS},3,kW,x,surplus",
                extra={"Site": "S3", "Note": "x"},
            ),
            row(
                5, "M4", None, None, None, count=2, raw="S4,M4", extra={"Site": "S4", "Note": None}
            ),
            row(6, "M5", TS, "5", "kW", count=6, extra={"Site": "S5", "Note": "bell\x07"}),
        ],
    ),
    "text beyond ASCII": (
        lines(HEADER + ",Straße", f"Zähler-1,{TS},1,kW,München"),
        [row(2, "Zähler-1", TS, "1", "kW", count=5, extra={"Straße": "München"})],
    ),
}


def quote_span_case(span: int) -> tuple[bytes, list[dict]]:
    """A quoted field opened on line 2 and closed ``span`` physical lines later."""
    body = [f'M1,{TS},"note'] + ["x"] * (span - 2) + ['end",kW', f"M2,{TS},2,kW"]
    return lines(HEADER, *body), body


def test_a_quoted_record_may_span_the_limit_exactly(tmp_path):
    content, _ = quote_span_case(MAX_RECORD_LINES)
    rows = read(tmp_path, content).table.to_pylist()
    note = "note\n" + "x\n" * (MAX_RECORD_LINES - 2) + "end"
    assert rows == [
        row(2, "M1", TS, note, "kW"),
        row(2 + MAX_RECORD_LINES, "M2", TS, "2", "kW"),
    ]


def test_a_quote_open_past_the_limit_is_a_stray_quote(tmp_path):
    content, body = quote_span_case(MAX_RECORD_LINES + 1)
    rows = read(tmp_path, content).table.to_pylist()
    x_rows = [
        row(n, "x", None, None, None, count=1, raw="x") for n in range(3, 2 + MAX_RECORD_LINES)
    ]
    last = 2 + MAX_RECORD_LINES
    assert rows == [
        row(2, "M1", TS, '"note', None, count=3, raw=body[0]),
        *x_rows,
        row(last, 'end"', "kW", None, None, count=2, raw='end",kW'),
        row(last + 1, "M2", TS, "2", "kW"),
    ]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_file(tmp_path, case, compress):
    content, expected = ACCEPTED[case]
    if compress:
        content = gzip.compress(content)
    assert read(tmp_path, content).table.to_pylist() == expected


def test_layout_is_reported(tmp_path):
    result = read(
        tmp_path, lines(" Note ;Energy_Unit;meter_id;timestamp;energy_value;x", "n;kW;M1;t;1;y")
    )
    assert result.delimiter == ";"
    assert result.header == ["Note", "Energy_Unit", "meter_id", "timestamp", "energy_value", "x"]
    assert result.extra_columns == ["Note", "x"]


def test_unnamed_columns_are_named_by_position(tmp_path):
    """Spreadsheets export trailing delimiters: empty names are not duplicates of each other."""
    result = read(tmp_path, lines(HEADER + ",,", f"M1,{TS},1,kW,,x", f"M2,{TS},2,kW"))
    assert result.header == [*HEADER.split(","), "", ""]
    assert result.extra_columns == ["column_5", "column_6"]
    assert result.table.to_pylist() == [
        row(2, "M1", TS, "1", "kW", count=6, extra={"column_5": "", "column_6": "x"}),
        row(
            3,
            "M2",
            TS,
            "2",
            "kW",
            count=4,
            raw=f"M2,{TS},2,kW",
            extra={"column_5": None, "column_6": None},
        ),
    ]


def test_table_schema(tmp_path):
    table = read(tmp_path, lines(HEADER, f"M1,{TS},1,kW")).table
    assert table.schema == pa.schema(
        [
            ("meter_id", pa.string()),
            ("timestamp", pa.string()),
            ("energy_value", pa.string()),
            ("energy_unit", pa.string()),
            ("extra_fields", pa.string()),
            ("source_line", pa.int64()),
            ("field_count", pa.int32()),
            ("raw_line", pa.string()),
        ]
    )


def test_gzip_is_detected_by_its_bytes_not_its_name(tmp_path):
    content, expected = ACCEPTED["plain"]
    assert read(tmp_path, gzip.compress(content), "readings.csv").table.to_pylist() == expected
    assert read(tmp_path, content, "readings.csv.gz").table.to_pylist() == expected


def test_gzip_of_several_members(tmp_path):
    content = gzip.compress(lines(HEADER, f"M1,{TS},1,kW")) + gzip.compress(lines(f"M2,{TS},2,W"))
    assert read(tmp_path, content).table.to_pylist() == [
        row(2, "M1", TS, "1", "kW"),
        row(3, "M2", TS, "2", "W"),
    ]


def test_lines_of_several_megabytes(tmp_path):
    long_id = "M" * 3_000_000
    long_quoted = "a,b " * 1_000_000
    content = lines(
        HEADER,
        f"{long_id},{TS},1,kW",
        f'M2,{TS},2,"{long_quoted}"',
        f"M3,{TS},3,kW,{long_id}",
        f"M4,{TS},4,kW",
    )
    rows = read(tmp_path, content).table.to_pylist()
    assert rows == [
        row(2, long_id, TS, "1", "kW"),
        row(3, "M2", TS, "2", long_quoted),
        row(4, "M3", TS, "3", "kW", count=5, raw=f"M3,{TS},3,kW,{long_id}"[:RAW_LINE_MAX_CHARS]),
        row(5, "M4", TS, "4", "kW"),
    ]
    assert len(rows[2]["raw_line"]) == RAW_LINE_MAX_CHARS


def test_raw_line_is_cut_at_characters_not_bytes(tmp_path):
    text = f"M1,{TS},1,kW," + "é" * 400
    rows = read(tmp_path, lines(HEADER, text)).table.to_pylist()
    assert rows[0]["raw_line"] == text[:RAW_LINE_MAX_CHARS]


def test_many_lines_keep_their_numbers(tmp_path):
    """Enough lines to cross the scanner's chunks, with quoted and blank lines among them."""
    body, expected = [], []
    for n in range(60_000):
        line_number = len(body) + 2
        if n % 1000 == 0:
            body.append(f'"M{n}","{TS}","{n}","kW"')
        elif n % 997 == 0:  # a record over two physical lines
            body.append(f'M{n},"{TS}')
            body.append(f'",{n},kW')
            expected.append(row(line_number, f"M{n}", f"{TS}\n", str(n), "kW"))
            continue
        elif n % 101 == 0:
            body.append("")
            continue
        else:
            body.append(f"M{n},{TS},{n},kW")
        expected.append(row(line_number, f"M{n}", TS, str(n), "kW"))
    content = lines(HEADER, *body)
    assert read(tmp_path, content).table.to_pylist() == expected


def test_a_long_run_of_lines_that_need_the_csv_parser(tmp_path):
    """More consecutive quoted lines than the parser takes at once, with a record over three
    lines across that boundary, then a stray quote and plain lines after it."""
    body, expected = [], []
    for n in range(69_200):
        line_number = len(body) + 2
        if n == 65_535:
            body += [f'M{n},{TS},"{n}', "", ',5",kW']
            expected.append(row(line_number, f"M{n}", TS, f"{n}\n\n,5", "kW"))
        elif n == 69_000:
            body.append(f'M{n},"{TS},{n},kW')
            expected.append(row(line_number, f"M{n}", f'"{TS}', str(n), "kW"))
        elif n > 69_000:
            body.append(f"M{n},{TS},{n},kW")
            expected.append(row(line_number, f"M{n}", TS, str(n), "kW"))
        else:
            body.append(f'M{n},{TS},"{n},5",kW')
            expected.append(row(line_number, f"M{n}", TS, f"{n},5", "kW"))
    assert read(tmp_path, lines(HEADER, *body)).table.to_pylist() == expected


REJECTED = {
    "0 bytes": (b"", "empty file"),
    "whitespace only": (b" \n\r\n\t  \n\n", "empty file"),
    "byte order mark only": (b"\xef\xbb\xbf\r\n", "empty file"),
    "header only": (lines(HEADER), "no data rows after the header"),
    "header without a newline": (HEADER.encode(), "no data rows after the header"),
    "header and blank lines": (lines(HEADER, "", "\r", ""), "no data rows after the header"),
    "missing columns": (
        lines("meter_id,timestamp,value", "M1,t,1"),
        "header lacks required column(s): energy_value, energy_unit; "
        "found: meter_id, timestamp, value",
    ),
    "missing column, best delimiter quoted": (
        lines("Meter_ID;timestamp;energy_value;unit", "M1;t;1;kW"),
        "header lacks required column(s): energy_unit; "
        "found: Meter_ID, timestamp, energy_value, unit",
    ),
    "not a CSV at all": (
        lines("<html><body>hello</body></html>"),
        "header lacks required column(s): meter_id, timestamp, energy_value, energy_unit; "
        "found: <html><body>hello</body></html>",
    ),
    "duplicate column": (
        lines(HEADER + ", Meter_ID", f"M1,{TS},1,kW,M1"),
        "column 'meter_id' appears twice in the header (columns 1 and 5)",
    ),
    "duplicate extra column": (
        lines("note," + HEADER + ",NOTE", f"n,M1,{TS},1,kW,m"),
        "column 'note' appears twice in the header (columns 1 and 6)",
    ),
    "NUL bytes": (
        lines(HEADER, f"M1,{TS},1,kW") + b"\x00\x00\x01\x02",
        "binary content, not a CSV text file",
    ),
    "not UTF-8 (Latin-1)": (
        lines(HEADER, f"M1,{TS},1,kW", "") + b"Z\xe4hler,t,1,kW\n",
        "not UTF-8: invalid byte at line 4",
    ),
    "UTF-16 with its byte order mark": (
        lines(HEADER, f"M1,{TS},1,kW").decode().encode("utf-16"),
        "not UTF-8: the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8",
    ),
    "UTF-32 with its byte order mark": (
        lines(HEADER, f"M1,{TS},1,kW").decode().encode("utf-32"),
        "not UTF-8: the file is UTF-32 (it starts with a UTF-32 byte order mark); save it as UTF-8",
    ),
    "not UTF-8 in the header": (
        b"meter_id\xff," + lines(HEADER, f"M1,{TS},1,kW"),
        "not UTF-8: invalid byte at line 1",
    ),
}


def corrupt(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]


GOOD_GZIP = gzip.compress(lines(HEADER, *[f"M{n},{TS},{n},kW" for n in range(1000)]), mtime=0)
REJECTED_GZIP = {
    "truncated gzip": (
        GOOD_GZIP[: len(GOOD_GZIP) // 2],
        "corrupt gzip: compressed file ended before the end-of-stream marker was reached",
    ),
    "gzip with a wrong checksum": (
        corrupt(GOOD_GZIP, len(GOOD_GZIP) - 8),
        "corrupt gzip: Error -3 while decompressing data: incorrect data check",
    ),
    "gzip magic but no gzip": (
        b"\x1f\x8bmeter_id,timestamp\n",
        "corrupt gzip: Error -3 while decompressing data: unknown compression method",
    ),
    "gzip with trailing garbage": (
        GOOD_GZIP + b"garbage",
        "corrupt gzip: unexpected data after the end of the stream",
    ),
    "gzip of nothing": (gzip.compress(b""), "empty file"),
    "gzip of a binary file": (
        gzip.compress(b"\x00\x01\x02" * 100),
        "binary content, not a CSV text file",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED) + list(REJECTED_GZIP))
def test_rejected_file(tmp_path, case):
    content, reason = REJECTED.get(case) or REJECTED_GZIP[case]
    with pytest.raises(RejectedFile) as caught:
        read(tmp_path, content)
    assert caught.value.reason == reason
    assert str(caught.value) == reason


def test_damaged_gzip_says_what_zlib_found(tmp_path):
    """The words after the prefix are zlib's own, which may change with its version."""
    with pytest.raises(RejectedFile) as caught:
        read(tmp_path, corrupt(GOOD_GZIP, 12))
    assert caught.value.reason.startswith("corrupt gzip: Error -3 while decompressing data: ")


def test_gzip_padding_with_zeros_is_accepted(tmp_path):
    content, expected = ACCEPTED["plain"]
    assert read(tmp_path, gzip.compress(content) + b"\x00" * 16).table.to_pylist() == expected


# --- the inflated-size cap (a gzip bomb) ----------------------------------------------------


@pytest.fixture(params=["tiny pieces", "default pieces"])
def pieces(request, monkeypatch):
    """Inflate a few bytes at a time too, so that every piece boundary is crossed."""
    if request.param == "tiny pieces":
        monkeypatch.setattr(meter_csv, "_INFLATE_OUT_CHUNK", 7)
        monkeypatch.setattr(meter_csv, "_INFLATE_IN_CHUNK", 5)


def read_capped(tmp_path, content: bytes, cap: int) -> MeterCsv:
    path = tmp_path / "readings.csv.gz"
    path.write_bytes(content)
    return read_meter_csv(path, max_inflated_bytes=cap)


def beyond(cap_text: str) -> str:
    return (
        f"gzip expands beyond {cap_text} uncompressed, the most one file may hold; "
        "split the export into smaller files"
    )


CAP_CASES = {
    # name: (members, cap minus the inflated size, rejection reason or None)
    "one member, exactly the cap": (1, 0, None),
    "one member, one byte over": (1, -1, "{cap:,} bytes"),
    "two members, together exactly the cap": (2, 0, None),
    "two members, each under, together over": (2, -1, "{cap:,} bytes"),
}


@pytest.mark.parametrize("case", list(CAP_CASES))
def test_gzip_inflated_size_cap(tmp_path, pieces, case):
    members, slack, reason = CAP_CASES[case]
    first, second = lines(HEADER, f"M1,{TS},1.5,kW"), lines(f"M2,{TS},250,W")
    if members == 1:
        content, size = gzip.compress(first + second), len(first + second)
    else:
        content, size = gzip.compress(first) + gzip.compress(second), len(first + second)
    cap = size + slack
    if reason is None:
        rows = read_capped(tmp_path, content + b"\x00" * 4, cap).table.to_pylist()
        assert rows == [row(2, "M1", TS, "1.5", "kW"), row(3, "M2", TS, "250", "W")]
    else:
        with pytest.raises(RejectedFile) as caught:
            read_capped(tmp_path, content, cap)
        assert caught.value.reason == beyond(reason.format(cap=cap))


def test_gzip_cap_checks_still_find_damage(tmp_path, pieces):
    """Read in pieces, a damaged or cut stream is still refused with zlib's words."""
    for case in ("truncated gzip", "gzip with a wrong checksum", "gzip with trailing garbage"):
        content, reason = REJECTED_GZIP[case]
        with pytest.raises(RejectedFile) as caught:
            read_capped(tmp_path, content, 1 << 30)
        assert caught.value.reason == reason, case


def test_default_cap_and_how_a_reason_spells_sizes():
    assert meter_csv.MAX_INFLATED_BYTES == 2 * 1024**3
    assert [meter_csv._size_text(n) for n in (2 * 1024**3, 4 << 20, 1536 << 10, 1000)] == [
        "2 GiB",
        "4 MiB",
        "1536 KiB",
        "1,000 bytes",
    ]


# --- agreement with a plain reference reader ----------------------------------------------------

_LONE_CR = re.compile("\r(?!\n)")


def _record_end(physical: list[str], first: int, delimiter: str) -> int | None:
    """The last line of the record starting at ``first`` (None: its quote never closes),
    by the state machine of Python's csv module, one character at a time. A lone CR is data."""
    state = "start"
    for k in range(first, min(first + MAX_RECORD_LINES, len(physical))):
        for char in _LONE_CR.sub("x", physical[k] + "\n"):
            if state == "quoted":
                state = "quote in quoted" if char == '"' else "quoted"
            elif state == "quote in quoted" and char == '"':
                state = "quoted"
            elif char == delimiter or char in "\r\n":
                state = "start"
            elif state == "start" and char == '"':
                state = "quoted"
            else:
                state = "field"
        if state != "quoted":
            return k
    return None


def reference_rows(content: bytes, delimiter: str, header: list[str]) -> list[dict]:
    """The contract read line by line: slow, but plain enough to trust."""
    text = content.decode("utf-8").removeprefix("\ufeff")
    physical = text.split("\n")
    if text.endswith("\n"):
        physical.pop()
    stripped = [line.removesuffix("\r") for line in physical]
    lowered = [name.lower() for name in header]
    extra = [i for i, name in enumerate(lowered) if name not in REQUIRED_COLUMNS]
    rows = []
    line = next(i for i, text in enumerate(stripped) if text) + 1
    while line < len(physical):
        if not stripped[line]:
            line += 1
            continue
        last = _record_end(physical, line, delimiter) if '"' in physical[line] else None
        if last is None:
            fields, span = stripped[line].split(delimiter), 1
        else:
            record = [_LONE_CR.sub("\0", text + "\n") for text in physical[line : last + 1]]
            fields = next(csv.reader(record, delimiter=delimiter))
            fields = [field.replace("\0", "\r") for field in fields]
            span = last - line + 1

        def field(i: int, fields: list[str] = fields) -> str | None:
            return fields[i] if i < len(fields) else None

        extra_fields = {header[i] or f"column_{i + 1}": field(i) for i in extra}
        raw = "\n".join(physical[line : line + span]).removesuffix("\r")[:RAW_LINE_MAX_CHARS]
        rows.append(
            {
                **{name: field(lowered.index(name)) for name in REQUIRED_COLUMNS},
                "extra_fields": json.dumps(extra_fields, separators=(",", ":"), ensure_ascii=False)
                if extra
                else None,
                "source_line": line + 1,
                "field_count": len(fields),
                "raw_line": None if len(fields) == len(header) else raw,
            }
        )
        line += span
    return rows


def random_file(rng: random.Random) -> tuple[bytes, str, list[str]]:
    delimiter = rng.choice(DELIMITERS)
    header = [*REQUIRED_COLUMNS, *rng.sample(["Site", "note", ""], rng.randint(0, 2))]
    rng.shuffle(header)
    pieces = ["a", "7", " ", "é", "\t", "\\", delimiter, delimiter, '"', '"', '""']
    pieces += ["\n", "\n", "\n", "\r\n", "\r"]
    body = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 300)))
    text = rng.choice(["", "\ufeff", "\n"]) + delimiter.join(header) + rng.choice(["\n", "\r\n"])
    return (text + body).encode(), delimiter, header


@pytest.mark.parametrize("seed", range(0, 400, 50))
def test_agrees_with_a_reference_reader(tmp_path, seed):
    """Random files full of quotes, delimiters, CRs and blank lines: the vectorised reader and
    the line-by-line reference must give the same rows. 50 files per case."""
    assert_agrees_with_reference(tmp_path, range(seed, seed + 50))


def test_agrees_with_a_reference_reader_in_tiny_pieces(tmp_path, monkeypatch):
    """The same with scan chunks, record blocks and csv windows of a few units, so that every
    boundary between them falls inside records, quotes and CRLFs."""
    monkeypatch.setattr(meter_csv, "_SCAN_CHUNK", 7)
    monkeypatch.setattr(meter_csv, "_RECORD_BLOCK", 3)
    monkeypatch.setattr(meter_csv, "_PARSER_WINDOW", 2)
    assert_agrees_with_reference(tmp_path, range(1000, 1200))


def assert_agrees_with_reference(tmp_path, cases: range) -> None:
    for case in cases:
        content, delimiter, header = random_file(random.Random(case))
        expected = reference_rows(content, delimiter, header)
        try:
            rows = read(tmp_path, content).table.to_pylist()
        except RejectedFile as rejected:
            assert not expected and rejected.reason == "no data rows after the header"
            continue
        assert rows == expected, f"random file {case}: {content!r}"
