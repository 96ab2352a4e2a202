"""Issue 5, bad files: every whole-file case, through ``land_file`` and through
``greenstream process``. Each file is either processed correctly (its rows asserted line by
line) or rejected with a reason that says what is wrong; the other files of the call go on.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from greenstream_dagster.landing import land_file
from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse
from greenstream_dagster.storage.raw_zone import ACCEPTED, REJECTED, RawZone

from .helpers import (
    ARRIVAL,
    DAY,
    HEADER,
    assert_balanced,
    land_and_run,
    line_outcome,
    run_days,
    utc,
)

T0 = "2026-11-20T00:00:00Z"
MEGABYTES = 3 * 1024 * 1024


def ok(meter, kw, ts=T0):
    return ("clean", meter, utc(ts), kw, "measured")


def bad(reason, detail):
    return ("quarantine", reason, detail)


def csv_bytes(*lines: str, header: str = HEADER, newline: str = "\n") -> bytes:
    return (newline.join([header, *lines]) + newline).encode("utf-8")


GOOD = csv_bytes("g1,2026-11-20T00:00:00Z,1.5,kW", "g1,2026-11-20T00:15:00Z,1500,W")
GZIPPED = gzip.compress(csv_bytes("z1,2026-11-20T00:00:00Z,1.5,kW"), mtime=0)
HUGE_VALUE = "9" * MEGABYTES


class Rejected:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Accepted:
    """Accepted on DAY; ``lines`` maps a source line to its exact outcome (every line listed)."""

    def __init__(self, lines: dict[int, tuple | object]) -> None:
        self.lines = lines


class StartsEnds:
    """A quarantine detail too long to spell out: its reason, start and end."""

    def __init__(self, reason: str, start: str, end: str) -> None:
        self.reason, self.start, self.end = reason, start, end

    def __eq__(self, found) -> bool:
        return (
            found[:2] == ("quarantine", self.reason)
            and found[2].startswith(self.start)
            and found[2].endswith(self.end)
        )

    def __repr__(self) -> str:
        return f"quarantine {self.reason} '{self.start}...{self.end}'"


# (case id, file name, content, expected). Meter ids are unique across cases, so that all
# files can also be processed together in one call.
CASES = [
    # --- rejected as a whole ---
    ("empty", "empty.csv", b"", Rejected("empty file")),
    ("whitespace_only", "blank.csv", b" \n\n\t\r\n", Rejected("empty file")),
    ("bom_only", "bom.csv", b"\xef\xbb\xbf", Rejected("empty file")),
    (
        "header_only",
        "header.csv",
        csv_bytes(),
        Rejected("no data rows after the header"),
    ),
    (
        "header_and_blank_lines",
        "header_blank.csv",
        csv_bytes("", "", newline="\r\n"),
        Rejected("no data rows after the header"),
    ),
    (
        "required_column_missing",
        "no_unit.csv",
        csv_bytes("x1,2026-11-20T00:00:00Z,1.5", header="meter_id,timestamp,energy_value"),
        Rejected(
            "header lacks required column(s): energy_unit; found: meter_id, timestamp, energy_value"
        ),
    ),
    (
        "misspelled_column",
        "misspelled.csv",
        csv_bytes(
            "x2,2026-11-20T00:00:00Z,1.5,kW", header="meter_id,timestamp,energy_value,energy_units"
        ),
        Rejected(
            "header lacks required column(s): energy_unit; found: meter_id, timestamp, "
            "energy_value, energy_units"
        ),
    ),
    (
        "no_header",
        "no_header.csv",
        b"x3,2026-11-20T00:00:00Z,1.5,kW\n",
        Rejected(
            "header lacks required column(s): meter_id, timestamp, energy_value, energy_unit; "
            "found: x3, 2026-11-20T00:00:00Z, 1.5, kW"
        ),
    ),
    (
        "json_not_csv",
        "readings.csv",
        b'{"meter_id": "x4", "energy_value": 1.5}\n',
        Rejected(
            "header lacks required column(s): meter_id, timestamp, energy_value, energy_unit; "
            'found: {"meter_id": "x4", "energy_value": 1.5}'
        ),
    ),
    (
        "binary",
        "binary.csv",
        bytes(range(256)) * 16,
        Rejected("binary content, not a CSV text file"),
    ),
    (
        "png_image",
        "image.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
        Rejected("binary content, not a CSV text file"),
    ),
    (
        "latin1_not_utf8",
        "latin1.csv",
        (HEADER + "\nz\xe4hler,2026-11-20T00:00:00Z,1.5,kW\n").encode("latin-1"),
        Rejected("not UTF-8: invalid byte at line 2"),
    ),
    (
        "utf16_not_utf8",
        "utf16.csv",
        (HEADER + "\nx5,2026-11-20T00:00:00Z,1.5,kW\n").encode("utf-16"),
        Rejected(
            "not UTF-8: the file is UTF-16 (it starts with a UTF-16 byte order mark); "
            "save it as UTF-8"
        ),
    ),
    (
        "utf32_not_utf8",
        "utf32.csv",
        (HEADER + "\nx11,2026-11-20T00:00:00Z,1.5,kW\n").encode("utf-32"),
        Rejected(
            "not UTF-8: the file is UTF-32 (it starts with a UTF-32 byte order mark); "
            "save it as UTF-8"
        ),
    ),
    (
        "corrupt_gzip",
        "corrupt.csv.gz",
        GZIPPED[:10] + b"\xff" * 8 + GZIPPED[18:],
        Rejected("corrupt gzip: Error -3 while decompressing data: invalid block type"),
    ),
    (
        "truncated_gzip",
        "truncated.csv.gz",
        GZIPPED[: len(GZIPPED) // 2],
        Rejected("corrupt gzip: compressed file ended before the end-of-stream marker was reached"),
    ),
    (
        "gzip_header_only",
        "magic.csv.gz",
        b"\x1f\x8b",
        Rejected("corrupt gzip: compressed file ended before the end-of-stream marker was reached"),
    ),
    (
        "gzip_with_trailing_junk",
        "junk.csv.gz",
        gzip.compress(csv_bytes("x6,2026-11-20T00:00:00Z,1.5,kW"), mtime=0) + b"junk",
        Rejected("corrupt gzip: unexpected data after the end of the stream"),
    ),
    ("gzip_of_nothing", "nothing.csv.gz", gzip.compress(b"", mtime=0), Rejected("empty file")),
    (
        "gzip_of_binary",
        "gzbinary.csv.gz",
        gzip.compress(bytes(range(256)), mtime=0),
        Rejected("binary content, not a CSV text file"),
    ),
    (
        "same_column_twice",
        "twice.csv",
        csv_bytes(
            "x7,2026-11-20T00:00:00Z,1.5,kW,x8",
            header="meter_id,timestamp,energy_value,energy_unit,meter_id",
        ),
        Rejected("column 'meter_id' appears twice in the header (columns 1 and 5)"),
    ),
    (
        "same_column_twice_other_case",
        "twice_case.csv",
        csv_bytes(
            "x9,1.5,2026-11-20T00:00:00Z,1.5,kW",
            header="meter_id,Energy_Value,timestamp,energy_value,energy_unit",
        ),
        Rejected("column 'Energy_Value' appears twice in the header (columns 2 and 4)"),
    ),
    (
        "same_extra_column_twice",
        "twice_extra.csv",
        csv_bytes(
            "x10,2026-11-20T00:00:00Z,1.5,kW,a,b",
            header="meter_id,timestamp,energy_value,energy_unit,site,site",
        ),
        Rejected("column 'site' appears twice in the header (columns 5 and 6)"),
    ),
    # --- processed ---
    (
        "good",
        "good.csv",
        GOOD,
        Accepted({2: ok("g1", 1.5), 3: ok("g1", 1.5, "2026-11-20T00:15:00Z")}),
    ),
    (
        "columns_in_another_order",
        "reordered.csv",
        csv_bytes(
            "kW,1.5,2026-11-20T00:00:00Z,a1", header="energy_unit,energy_value,timestamp,meter_id"
        ),
        Accepted({2: ok("a1", 1.5)}),
    ),
    (
        "extra_columns",
        "extra.csv",
        csv_bytes(
            'a2,north,2026-11-20T00:00:00Z,1.5,kW,"says ""hi"""',
            header="meter_id,site,timestamp,energy_value,energy_unit,note",
        ),
        Accepted({2: ok("a2", 1.5)}),
    ),
    (
        "header_case_spaces_quotes",
        "header_style.csv",
        csv_bytes(
            "a3,2026-11-20T00:00:00Z,1.5,kW",
            header=' Meter_ID ,"TIMESTAMP", Energy_Value ,ENERGY_UNIT',
            newline="\r\n",
        ),
        Accepted({2: ok("a3", 1.5)}),
    ),
    (
        "bom_and_crlf",
        "bom_crlf.csv",
        b"\xef\xbb\xbf" + csv_bytes("a4,2026-11-20T00:00:00Z,1.5,kW", newline="\r\n"),
        Accepted({2: ok("a4", 1.5)}),
    ),
    (
        "no_final_newline",
        "no_newline.csv",
        csv_bytes("a5,2026-11-20T00:00:00Z,1.5,kW").rstrip(b"\n"),
        Accepted({2: ok("a5", 1.5)}),
    ),
    (
        "blank_lines_between",
        "gaps.csv",
        csv_bytes("", "a6,2026-11-20T00:00:00Z,1.5,kW", "", "", "a6,2026-11-20T00:15:00Z,2,kW"),
        Accepted({3: ok("a6", 1.5), 6: ok("a6", 2.0, "2026-11-20T00:15:00Z")}),
    ),
    ("gzip", "good.csv.gz", GZIPPED, Accepted({2: ok("z1", 1.5)})),
    (
        "gzip_two_members",
        "members.csv.gz",
        gzip.compress(csv_bytes("a7,2026-11-20T00:00:00Z,1.5,kW"), mtime=0)
        + gzip.compress(b"a7,2026-11-20T00:15:00Z,2.5,kW\n", mtime=0),
        Accepted({2: ok("a7", 1.5), 3: ok("a7", 2.5, "2026-11-20T00:15:00Z")}),
    ),
    (
        "gz_name_but_plain_text",
        "plain.csv.gz",
        csv_bytes("a8,2026-11-20T00:00:00Z,1.5,kW"),
        Accepted({2: ok("a8", 1.5)}),
    ),
    (
        "last_line_cut",
        "cut.csv",
        csv_bytes("a9,2026-11-20T00:00:00Z,1.5,kW").rstrip(b"\n") + b"\na9,2026-11-20T00:1",
        Accepted(
            {
                2: ok("a9", 1.5),
                3: bad(
                    "malformed_row", "expected the header's fields, found 2: a9,2026-11-20T00:1"
                ),
            }
        ),
    ),
    (
        "last_line_cut_inside_quotes",
        "cut_quoted.csv",
        csv_bytes("a10,2026-11-20T00:00:00Z,1.5,kW") + b'a10,"2026-11-20T00:1',
        Accepted(
            {
                2: ok("a10", 1.5),
                3: bad(
                    "malformed_row", "expected the header's fields, found 2: a10,\"2026-11-20T00:1"
                ),
            }
        ),
    ),
    (
        "line_of_megabytes_in_a_value",
        "big_value.csv",
        csv_bytes(f"a11,2026-11-20T00:00:00Z,{HUGE_VALUE},kW", "a11,2026-11-20T00:15:00Z,1.5,kW"),
        Accepted(
            {
                2: StartsEnds(
                    "invalid_value", "energy_value '9999", "9' is not a finite decimal number"
                ),
                3: ok("a11", 1.5, "2026-11-20T00:15:00Z"),
            }
        ),
    ),
    (
        "line_of_megabytes_without_delimiters",
        "big_line.csv",
        csv_bytes("x" * MEGABYTES, "a12,2026-11-20T00:00:00Z,1.5,kW"),
        Accepted(
            {
                2: bad("malformed_row", "expected the header's fields, found 1: " + "x" * 300),
                3: ok("a12", 1.5),
            }
        ),
    ),
    (
        "quoted_commas_and_newlines",
        "quoted.csv",
        csv_bytes(
            '"a13,x","2026-11-20T00:00:00Z","1.5","kW"',
            '"a13\ny",2026-11-20T00:00:00Z,2,kW',
            'a13z,2026-11-20T00:00:00Z,"3",kW',
        ),
        # The record of lines 3-4 is line 3; the next record keeps its physical line number.
        Accepted({2: ok("a13,x", 1.5), 3: ok("a13\ny", 2.0), 5: ok("a13z", 3.0)}),
    ),
    (
        "semicolon_separator",
        "semicolon.csv",
        csv_bytes(
            "a14;2026-11-20T00:00:00Z;1.5;kW",
            "a14;2026-11-20T00:15:00Z;1,5;kW",
            header="meter_id;timestamp;energy_value;energy_unit",
        ),
        Accepted(
            {
                2: ok("a14", 1.5),
                3: bad("invalid_value", "energy_value '1,5' is not a finite decimal number"),
            }
        ),
    ),
    (
        "tab_separator",
        "tabs.tsv",
        csv_bytes("a15\t2026-11-20T00:00:00Z\t1.5\tkW", header=HEADER.replace(",", "\t")),
        Accepted({2: ok("a15", 1.5)}),
    ),
]

IDS = [case[0] for case in CASES]
assert len(set(IDS)) == len(IDS)
assert len({case[2] for case in CASES}) == len(CASES), "every case needs distinct bytes"


def write_case(folder, name, content):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("name", "content", "expected"), [c[1:] for c in CASES], ids=IDS)
def test_land_file(tmp_path, name, content, expected):
    settings = Settings(home=tmp_path / "home")
    path = write_case(tmp_path / "in", name, content)
    with warehouse.connect(":memory:") as con:
        (landed,) = land_and_run(con, settings, [path])
        sidecar = landed.sidecar
        assert sidecar.original_name == name
        assert sidecar.size_bytes == len(content)
        # Accepted or rejected, the bytes are kept in the raw zone exactly.
        assert RawZone(settings.raw_dir).data_path(sidecar.source_file).read_bytes() == content
        if isinstance(expected, Rejected):
            assert (sidecar.status, sidecar.reason, sidecar.days) == (REJECTED, expected.reason, [])
            assert con.execute("SELECT count(*) FROM raw_readings").fetchone() == (0,)
        else:
            assert (sidecar.status, sidecar.reason, sidecar.days) == (ACCEPTED, None, [DAY])
            assert_outcomes(con, sidecar.source_file, expected)


def assert_outcomes(con, sha, expected: Accepted):
    lines = [
        n
        for (n,) in con.execute(
            "SELECT source_line FROM raw_readings WHERE source_file = ? ORDER BY 1", [sha]
        ).fetchall()
    ]
    assert lines == sorted(expected.lines)
    for line, outcome in expected.lines.items():
        assert outcome == line_outcome(con, sha, line), f"line {line}"
    assert_balanced(con, [DAY])


def test_extra_columns_are_carried_into_raw(tmp_path):
    settings = Settings(home=tmp_path / "home")
    (name, content) = next(c[1:3] for c in CASES if c[0] == "extra_columns")
    with warehouse.connect(":memory:") as con:
        land_and_run(con, settings, [write_case(tmp_path, name, content)])
        (extra,) = con.execute("SELECT extra_fields FROM raw_readings").fetchone()
    assert json.loads(extra) == {"site": "north", "note": 'says "hi"'}


def test_process_command_lands_every_file_and_goes_on(tmp_path):
    """All cases in one ``greenstream process`` call: each rejected file is named with its
    reason in the summary and in an alert, and every other file is processed."""
    home = tmp_path / "home"
    paths = [write_case(tmp_path / "in", name, content) for _, name, content, _ in CASES]
    env = {**os.environ, "GREENSTREAM_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    env.pop("GREENSTREAM_ALERT_WEBHOOK", None)
    done = subprocess.run(
        [sys.executable, "-m", "greenstream_dagster.cli", "process", *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "day 2026-11-20: OK" in done.stdout

    zone = RawZone(home / "raw")
    by_name = {s.original_name: s for s in zone.sidecars()}
    assert sorted(by_name) == sorted(name for _, name, _, _ in CASES)
    alerts = [json.loads(line) for line in (home / "alerts.jsonl").read_text().splitlines()]
    rejections = {a["file"]: a["message"] for a in alerts if a["kind"] == "file_rejected"}
    with warehouse.connect(home / "warehouse.duckdb", read_only=True) as con:
        for _, name, _, expected in CASES:
            sidecar = by_name[name]
            if isinstance(expected, Rejected):
                assert (sidecar.status, sidecar.reason) == (REJECTED, expected.reason)
                assert (
                    f"file {name} [{sidecar.source_file[:12]}]: REJECTED: {expected.reason}"
                    in done.stdout
                )
                assert rejections[name] == f"file {name} was rejected: {expected.reason}"
            else:
                assert sidecar.status == ACCEPTED
                assert f"file {name} [{sidecar.source_file[:12]}]: accepted, days 2026-11-20" in (
                    done.stdout
                )
                assert_outcomes(con, sidecar.source_file, expected)
        rejected_files = con.execute(
            "SELECT original_name, reason FROM raw_files WHERE status = 'rejected' ORDER BY 1"
        ).fetchall()
    assert rejected_files == sorted(
        (name, e.reason) for _, name, _, e in CASES if isinstance(e, Rejected)
    )
    assert len(rejections) == len(rejected_files)


# --- a gzip bomb --------------------------------------------------------------------------------

BOMB_CAP = 4 * 1024 * 1024  # GREENSTREAM_MAX_INFLATED_MIB=4 for the test (default 2 GiB)
BOMB_MIB = 200  # what the bomb inflates to, in MiB of blank lines after one good row
BOMB_REASON = (
    "gzip expands beyond 4 MiB uncompressed, the most one file may hold; "
    "split the export into smaller files"
)


def gzip_bomb(head: bytes, mebibytes: int) -> bytes:
    """A valid gzip of ``head`` then ``mebibytes`` MiB of blank lines: valid CSV (blank lines are
    skipped), about 1,000 times smaller than what it inflates to. Built without compressing
    200 MB: after a full flush deflate forgets what came before, so every MiB of newlines
    compresses to the same bytes, which are simply repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip frame is ours
    block = b"\n" * (1 << 20)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()
    crc = zlib.crc32(head)
    for _ in range(mebibytes):
        crc = zlib.crc32(block, crc)
    size = len(head) + mebibytes * len(block)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + first + repeated * mebibytes + end + trailer


def test_gzip_bomb_is_rejected_in_bounded_memory_and_the_other_files_go_on(tmp_path):
    head = csv_bytes("bomb1,2026-11-20T00:00:00Z,1.5,kW")
    # The recipe makes a real gzip (checked on a small one; the big one only differs in length).
    assert gzip.decompress(gzip_bomb(head, 2)) == head + b"\n" * (2 << 20)
    bomb = gzip_bomb(head, BOMB_MIB)
    assert len(bomb) < 250_000  # 200 MiB inflated

    settings = Settings(home=tmp_path / "home", max_inflated_mib=BOMB_CAP // 2**20)
    folder = tmp_path / "in"
    paths = [
        write_case(folder, "before.csv", csv_bytes("c1,2026-11-20T00:00:00Z,1.5,kW")),
        write_case(folder, "bomb.csv.gz", bomb),
        write_case(
            folder, "after.csv.gz", gzip.compress(csv_bytes("c2,2026-11-20T00:15:00Z,2.5,kW"))
        ),
    ]
    landed = [land_file(paths[0], settings, arrival=ARRIVAL)]
    tracemalloc.start()  # after a first landing: what it imports is not the bomb's doing
    try:
        held_before = tracemalloc.get_traced_memory()[0]
        landed.append(land_file(paths[1], settings, arrival=ARRIVAL))
        held_at_most = tracemalloc.get_traced_memory()[1] - held_before
    finally:
        tracemalloc.stop()
    landed.append(land_file(paths[2], settings, arrival=ARRIVAL))
    first, rejected, last = (item.sidecar for item in landed)
    assert (rejected.status, rejected.reason, rejected.days) == (REJECTED, BOMB_REASON, [])
    assert RawZone(settings.raw_dir).data_path(rejected.source_file).read_bytes() == bomb
    # Inflating stopped at the cap: never the 200 MiB. What was held: the inflated bytes (at
    # most the cap, in a buffer that grows by an eighth ahead), a piece being inflated, and
    # the compressed file itself.
    bound = BOMB_CAP + BOMB_CAP // 8 + 1024 * 1024
    assert held_at_most < bound, f"{held_at_most / 2**20:.2f} MiB"

    # The files on either side of it are landed and processed as if it were not there.
    assert [(s.status, s.days) for s in (first, last)] == [(ACCEPTED, [DAY])] * 2
    with warehouse.connect(":memory:") as con:
        run_days(con, settings, [DAY])
        assert line_outcome(con, first.source_file, 2) == ok("c1", 1.5)
        assert line_outcome(con, last.source_file, 2) == ok("c2", 2.5, "2026-11-20T00:15:00Z")
        assert con.execute("SELECT count(*) FROM raw_readings").fetchone() == (2,)
        assert con.execute(
            "SELECT original_name, reason FROM raw_files WHERE status = 'rejected'"
        ).fetchall() == [("bomb.csv.gz", BOMB_REASON)]
        assert_balanced(con, [DAY])
