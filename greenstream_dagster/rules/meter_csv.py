"""DESIGN.md section 1: one landed meter file as raw text rows, or the reason it is rejected whole.

Files are large (millions of lines), so no Python code runs per line on the common path. The
whole content is scanned once with numpy for the bytes that matter (delimiter, LF, double
quote); every field then is a byte range of the content, and Arrow's ``take`` copies the ranges
of one column into a string column in a single C++ pass. Fields wrapped in quotes with no quote
inside (a fully quoted file) stay on that path. Only records that need a real CSV parser (an
escaped quote, a quoted delimiter or newline, a stray quote) go through Python's ``csv`` module.

Fields are kept as text exactly as in the file (after CSV unquoting): judging them is the job of
the row rules, which must see what the meter sent.
"""

from __future__ import annotations

import csv
import json
import operator
import re
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..settings import Settings
from .codes import REQUIRED_COLUMNS

# Candidate delimiters, in the order they are tried on the header.
DELIMITERS = (",", ";", "\t", "|")
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# Byte order marks of the other Unicode encodings (UTF-32 first: its LE mark starts like UTF-16's).
# Such a file is text, so it is refused as "not UTF-8" rather than as binary content.
OTHER_UNICODE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
# A quoted field still open after this many physical lines is taken as a stray quote, so that
# one bad byte cannot swallow the rest of the file into a single record.
MAX_RECORD_LINES = 100
# raw_line keeps this much of a malformed record: enough for an operator to recognise it.
RAW_LINE_MAX_CHARS = 300
# Longest header text quoted back in a rejection reason, so the reason stays one readable line.
REASON_MAX_CHARS = 300
# The most a gzip file may inflate to unless told otherwise: GREENSTREAM_MAX_INFLATED_MIB's
# default. Deflate packs up to ~1000:1, so a 2 MB upload could otherwise claim gigabytes of
# memory (a "gzip bomb"). 2 GiB is over ten times a whole day of the 50,000-meter fleet in one
# file; inflating stops as soon as it is passed.
MAX_INFLATED_BYTES = Settings().max_inflated_bytes

# Bytes scanned per numpy step: small enough to keep the temporary masks in cache.
_SCAN_CHUNK = 1 << 20
# Gzip is inflated this much at a time (output), fed this much at a time (input): memory stays
# within the cap plus about one piece, and no call copies more than one input piece.
_INFLATE_OUT_CHUNK = 1 << 18
_INFLATE_IN_CHUNK = 1 << 16
# Records per block when building a column (see _Records.columns).
_RECORD_BLOCK = 1 << 19
# Physical lines decoded at once for csv: bounds the memory of a file where every line needs it.
_PARSER_WINDOW = 1 << 16
_LF, _CR, _QUOTE = 10, 13, 34
_INT32_LIMIT = 2**31 - 1
_NON_SPACE = re.compile(rb"\S")
_LONE_CR = re.compile("\r(?!\n)")
# What str.splitlines splits on besides LF and CRLF.
_OTHER_LINE_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

TABLE_SCHEMA = pa.schema(
    [
        *(pa.field(name, pa.string()) for name in REQUIRED_COLUMNS),
        pa.field("extra_fields", pa.string()),
        pa.field("source_line", pa.int64()),
        pa.field("field_count", pa.int32()),
        pa.field("raw_line", pa.string()),
    ]
)


class RejectedFile(Exception):
    """The whole file cannot be read; ``reason`` is a one-line sentence an operator understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MeterCsv:
    """A file's records as raw text, with what the header told about the layout."""

    table: pa.Table
    delimiter: str
    header: list[str]
    extra_columns: list[str]


def read_meter_csv(path: Path, max_inflated_bytes: int | None = None) -> MeterCsv:
    """Read one landed file, plain or gzip, or raise ``RejectedFile`` saying why it is unusable.

    A gzip file that inflates beyond ``max_inflated_bytes`` (default ``MAX_INFLATED_BYTES``) is
    rejected, holding no more than that and one inflated piece in memory."""
    content: bytes | bytearray = Path(path).read_bytes()
    if content.startswith(GZIP_MAGIC):
        cap = MAX_INFLATED_BYTES if max_inflated_bytes is None else max_inflated_bytes
        content = _gunzip(content, cap)
    body_start = len(UTF8_BOM) if content.startswith(UTF8_BOM) else 0
    _check_text(content, body_start)

    header_line, header_text, data_start = _first_line(content, body_start)
    delimiter, header = _parse_header(header_text)
    if data_start >= len(content):
        raise RejectedFile("no data rows after the header")

    lowered = [name.lower() for name in header]
    extra_positions = [i for i, name in enumerate(lowered) if name not in REQUIRED_COLUMNS]
    extra_columns = _extra_keys(header, extra_positions)
    required_positions = [lowered.index(name) for name in REQUIRED_COLUMNS]
    # numpy and Arrow release the GIL: two threads use both cores of a small machine.
    with ThreadPoolExecutor(max_workers=2) as pool:
        records = _split_records(content, data_start, header_line + 1, delimiter, len(header), pool)
        if records.count == 0:
            raise RejectedFile("no data rows after the header")
        fields, raw_line = records.columns(required_positions + extra_positions)
        if extra_positions:
            extra_fields = _json_objects(extra_columns, fields[len(REQUIRED_COLUMNS) :], pool)
        else:
            extra_fields = pa.nulls(records.count, pa.string())

    table = pa.Table.from_arrays(
        [
            *fields[: len(REQUIRED_COLUMNS)],
            extra_fields,
            pa.array(records.source_line, pa.int64()),
            pa.array(records.field_count, pa.int32()),
            raw_line,
        ],
        schema=TABLE_SCHEMA,
    )
    return MeterCsv(table=table, delimiter=delimiter, header=header, extra_columns=extra_columns)


# --- whole-file checks ----------------------------------------------------------------------


def _gunzip(data: bytes, cap: int) -> bytearray:
    """Inflate every gzip member; any damage rejects the file rather than keep part of it, and
    so does content beyond ``cap`` bytes in total, found before more than ``cap`` is held."""
    out = bytearray()
    view = memoryview(data)
    start = 0  # where the current member begins in ``data``
    try:
        while True:
            inflater = zlib.decompressobj(wbits=31)
            fed = start  # input handed to the inflater so far ends here
            while not inflater.eof:
                feed = inflater.unconsumed_tail  # input left over when the output piece was full
                if not feed:
                    feed = view[fed : fed + _INFLATE_IN_CHUNK]
                    fed += len(feed)
                # One byte past the cap is enough to know the file is too big.
                piece = inflater.decompress(feed, min(_INFLATE_OUT_CHUNK, cap + 1 - len(out)))
                if len(out) + len(piece) > cap:
                    raise RejectedFile(
                        f"gzip expands beyond {_size_text(cap)} uncompressed, the most one file "
                        "may hold; split the export into smaller files"
                    )
                out += piece
                if not piece and not feed:
                    raise RejectedFile(
                        "corrupt gzip: compressed file ended before the end-of-stream marker "
                        "was reached"
                    )
            start = fed - len(inflater.unused_data)
            # Zero padding after the last member is allowed by gzip.
            if data.count(0, start) == len(data) - start:
                break
            if data[start : start + len(GZIP_MAGIC)] != GZIP_MAGIC:
                raise RejectedFile("corrupt gzip: unexpected data after the end of the stream")
    except zlib.error as error:
        raise RejectedFile(f"corrupt gzip: {error}") from None
    return out


def _size_text(size: int) -> str:
    """2147483648 -> '2 GiB': a size as an operator would write it."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} bytes"


def _check_text(content: bytes, body_start: int) -> None:
    """Reject what is not CSV text before any parsing can misread it."""
    if _NON_SPACE.search(content, body_start) is None:
        raise RejectedFile("empty file")
    for bom, encoding in OTHER_UNICODE_BOMS:
        if content.startswith(bom):
            raise RejectedFile(
                f"not UTF-8: the file is {encoding} (it starts with a {encoding} byte order "
                "mark); save it as UTF-8"
            )
    if content.find(b"\x00") != -1:
        raise RejectedFile("binary content, not a CSV text file")
    if content.isascii():
        return
    # Arrow checks UTF-8 in place; decoding to a str would cost up to four times the file size.
    whole = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, len(content)], np.int64)), pa.py_buffer(content)
    )
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as error:
            line = content.count(b"\n", 0, error.start) + 1
            raise RejectedFile(f"not UTF-8: invalid byte at line {line}") from None
        raise


def _first_line(content: bytes, start: int) -> tuple[int, str, int]:
    """The header: first non-blank line, as (line number, text, offset just after it)."""
    line_number = 1
    while True:
        newline = content.find(b"\n", start)
        end = len(content) if newline == -1 else newline
        line = content[start:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            return line_number, line.decode("utf-8"), end + 1
        start = end + 1
        line_number += 1


def _parse_header(text: str) -> tuple[str, list[str]]:
    """Sniff the delimiter as the first one that yields every required column."""
    best_names: list[str] = []
    best_score = (-1, -1)
    for delimiter in DELIMITERS:
        names = _header_names(text, delimiter)
        lowered = [name.lower() for name in names]
        found = sum(column in lowered for column in REQUIRED_COLUMNS)
        if found == len(REQUIRED_COLUMNS):
            _reject_duplicates(names)
            return delimiter, names
        if (found, len(names)) > best_score:
            best_names, best_score = names, (found, len(names))
    lowered = [name.lower() for name in best_names]
    missing = ", ".join(column for column in REQUIRED_COLUMNS if column not in lowered)
    found_text = ", ".join(best_names)
    if len(found_text) > REASON_MAX_CHARS:
        found_text = found_text[:REASON_MAX_CHARS] + "..."
    raise RejectedFile(f"header lacks required column(s): {missing}; found: {found_text}")


def _header_names(text: str, delimiter: str) -> list[str]:
    try:
        fields = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        fields = text.split(delimiter)
    names = []
    for field in fields:
        name = field.strip()
        # A quote after a leading space is not CSV quoting, but the intent is still plain.
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].strip()
        names.append(name)
    return names


def _reject_duplicates(names: list[str]) -> None:
    """Two columns of one name would make every row ambiguous, so the file is refused.

    Columns without a name are not counted: spreadsheets export trailing empty columns, and
    they are told apart by position (see ``_extra_keys``).
    """
    first_seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            continue
        earlier = first_seen.setdefault(name.lower(), position)
        if earlier != position:
            raise RejectedFile(
                f"column '{names[earlier - 1]}' appears twice in the header "
                f"(columns {earlier} and {position})"
            )


def _extra_keys(header: list[str], positions: list[int]) -> list[str]:
    """Names of the extra columns; an unnamed one is called by its position, like ``column_7``,
    so that every key of ``extra_fields`` is distinct."""
    return [header[i] or f"column_{i + 1}" for i in positions]


# --- records ----------------------------------------------------------------------------------


def _split_records(
    content: bytes,
    data_start: int,
    first_line: int,
    delimiter: str,
    n_columns: int,
    pool: ThreadPoolExecutor,
) -> _Records:
    """Locate every field of every record after the header, without a Python loop per line."""
    size = len(content)
    dtype = np.int32 if size < _INT32_LIMIT else np.int64
    buf = np.frombuffer(content, np.uint8)
    ends, newline, n_quotes = _scan(buf, data_start, ord(delimiter), dtype, pool)

    # One entry per physical line after the header; blank lines included, dropped below.
    newline_at = ends[newline]
    line_start = np.empty_like(newline_at)
    line_start[0] = data_start
    line_start[1:] = newline_at[:-1] + 1
    line_end = newline_at - ((newline_at > line_start) & (buf[newline_at - 1] == _CR))
    first_field = np.empty_like(newline)
    first_field[0] = 0
    np.add(newline[:-1], 1, out=first_field[1:])
    field_count = (newline - first_field + 1).astype(np.int32)

    wrapped = None
    needs_parser = np.empty(0, np.int64)
    if n_quotes:
        wrapped = _wrapped_fields(buf, data_start, ends, newline, line_end, pool)
        # A wrapped field ("...") holds at least two quotes. When the quotes of a line are
        # exactly two per wrapped field, every quote is a wrapping one and the line splits
        # naively; any other quote (escaped, or around a delimiter or newline) is csv's job.
        # Counting per line costs a second pass, so first compare the totals.
        if n_quotes != 2 * np.count_nonzero(wrapped):
            wrapped_per_line = np.add.reduceat(wrapped, first_field, dtype=np.int32)
            quotes = _quotes_per_line(buf, data_start, newline_at)
            needs_parser = np.flatnonzero(quotes != 2 * wrapped_per_line)
            del wrapped_per_line, quotes

    slow = _parse_quoted_records(
        content, line_start, line_end, newline_at, needs_parser, delimiter, n_columns
    )
    del newline_at, newline
    keep = line_end != line_start  # blank lines are not records
    if slow.lines:
        keep &= ~slow.covered(len(keep))
    if keep.all():  # the usual case: no copies of the per-line arrays
        fast = slice(None)
        fast_lines = np.arange(first_line, first_line + len(keep), dtype=np.int64)
    else:
        fast = np.flatnonzero(keep)
        fast_lines = fast + first_line
    del keep

    if slow.lines:
        source_line = np.concatenate([fast_lines, np.array(slow.lines, np.int64) + first_line])
        counts = np.concatenate([field_count[fast], np.array(slow.field_counts, np.int32)])
    else:
        source_line, counts = fast_lines, field_count[fast]
    return _Records(
        content=content,
        ends=ends,
        wrapped=wrapped,
        first_field=first_field[fast],
        field_count=field_count[fast],
        line_start=line_start[fast],
        line_end=line_end[fast],
        n_columns=n_columns,
        slow=slow,
        source_line=source_line,
        counts=counts,
        pool=pool,
    )


def _chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(offset, min(offset + size, stop)) for offset in range(start, stop, size)]


def _scan(
    buf: np.ndarray, start: int, delimiter: int, dtype: type, pool: ThreadPoolExecutor
) -> tuple[np.ndarray, np.ndarray, int]:
    """Find the field boundaries (delimiters and LFs) after ``start``, in one pass.

    Returns the boundary offsets, the index among them of each line's LF (a last line without
    one gets a virtual LF at the end of the content) and the number of double quotes. Chunks
    keep the temporary masks small and in cache, and two threads share them.
    """

    def scan_chunk(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
        chunk = buf[bounds[0] : bounds[1]]
        is_lf = chunk == _LF
        mask = chunk == delimiter
        mask |= is_lf
        found = np.flatnonzero(mask)
        lf_index = np.flatnonzero(is_lf[found])
        found += bounds[0]
        quotes = int(np.count_nonzero(chunk == _QUOTE))
        return found.astype(dtype, copy=False), lf_index.astype(dtype, copy=False), quotes

    boundary_parts, newline_parts = [], []
    n_boundaries = n_quotes = 0
    for found, lf_index, quotes in pool.map(scan_chunk, _chunks(start, len(buf), _SCAN_CHUNK)):
        boundary_parts.append(found)
        lf_index += n_boundaries
        newline_parts.append(lf_index)
        n_boundaries += len(found)
        n_quotes += quotes
    if buf[-1] != _LF:
        boundary_parts.append(np.array([len(buf)], dtype))
        newline_parts.append(np.array([n_boundaries], dtype))
    return np.concatenate(boundary_parts), np.concatenate(newline_parts), n_quotes


def _wrapped_fields(
    buf: np.ndarray,
    data_start: int,
    ends: np.ndarray,
    newline: np.ndarray,
    line_end: np.ndarray,
    pool: ThreadPoolExecutor,
) -> np.ndarray:
    """Which fields look like ``"..."``: at least two bytes, a quote first and last."""
    wrapped = np.empty(len(ends), bool)
    last_byte = len(buf) - 1

    def check_block(bounds: tuple[int, int]) -> None:
        first, stop = bounds
        end = ends[first:stop].copy()
        lo, hi = np.searchsorted(newline, [first, stop])
        end[newline[lo:hi] - first] = line_end[lo:hi]  # a line's last field ends before its CR
        start = np.empty_like(end)
        start[0] = data_start if first == 0 else ends[first - 1] + 1
        np.add(ends[first : stop - 1], 1, out=start[1:])
        out = wrapped[first:stop]
        np.greater_equal(end - start, 2, out=out)
        np.minimum(start, last_byte, out=start)  # an empty last field may start past the end
        out &= buf[start] == _QUOTE
        end -= 1
        out &= buf[end] == _QUOTE

    for _ in pool.map(check_block, _chunks(0, len(ends), _SCAN_CHUNK)):
        pass
    return wrapped


def _quotes_per_line(buf: np.ndarray, data_start: int, newline_at: np.ndarray) -> np.ndarray:
    """Number of double quotes on each physical line (only needed when some are escaped)."""
    counts = np.zeros(len(newline_at), np.int64)
    for first, stop in _chunks(data_start, len(buf), _SCAN_CHUNK):
        at = np.flatnonzero(buf[first:stop] == _QUOTE)
        if not len(at):
            continue
        at += first
        lo = np.searchsorted(newline_at, at[0])
        hi = np.searchsorted(newline_at, at[-1]) + 1
        line = np.searchsorted(newline_at[lo:hi], at)
        counts[lo:hi] += np.bincount(line, minlength=hi - lo)
    return counts


class _Records:
    """Every data record as byte ranges of one buffer; columns are gathered from it on demand.

    Fast records point into the file content itself. Records parsed by ``csv`` have their field
    texts appended after the content, so both kinds are gathered by the same ``take``.
    """

    def __init__(
        self,
        *,
        content: bytes,
        ends: np.ndarray,
        wrapped: np.ndarray | None,
        first_field: np.ndarray,
        field_count: np.ndarray,
        line_start: np.ndarray,
        line_end: np.ndarray,
        n_columns: int,
        slow: _ParsedRecords,
        source_line: np.ndarray,
        counts: np.ndarray,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.count = len(source_line)
        # Parsed records sit after the fast ones; put every record back at its place in the file.
        self._order = np.argsort(source_line, kind="stable") if slow.lines else None
        self.source_line = source_line if self._order is None else source_line[self._order]
        self.field_count = counts if self._order is None else counts[self._order]
        self._pool = pool
        self._ends = ends
        self._wrapped = wrapped
        self._first_field = first_field
        self._fast_count = field_count
        self._line_start = line_start
        self._line_end = line_end
        self._n_columns = n_columns

        if slow.lines:
            blobs, slow_ranges = _slow_columns(slow, n_columns, len(content))
            content = b"".join([content, *blobs])
        else:
            nothing = np.empty(0, np.int64)
            slow_ranges = [(nothing, nothing, nothing.astype(bool))] * (n_columns + 1)
        self._slow_fields, self._slow_raw = slow_ranges[:-1], slow_ranges[-1]
        self._content = pa.py_buffer(content)

    def columns(self, positions: list[int]) -> tuple[list[pa.ChunkedArray], pa.ChunkedArray]:
        """The string columns at these header positions, and ``raw_line``.

        Columns are built in blocks of records, two at a time: small temporary arrays are
        reused by the allocator instead of taking fresh pages, which are slow to come by on a
        virtual machine. Records parsed by ``csv`` must be merged in file order, so a file that
        has any is done in one block.
        """
        n_fast = len(self._fast_count)
        if self._order is None:
            blocks = _chunks(0, n_fast, _RECORD_BLOCK)
        else:
            blocks = [(0, n_fast)]
        tasks = [(position, *block) for position in [*positions, None] for block in blocks]
        pieces = list(self._pool.map(lambda task: self._piece(*task), tasks))
        columns = [
            pa.chunked_array(pieces[i : i + len(blocks)], pa.string())
            for i in range(0, len(pieces), len(blocks))
        ]
        return columns[:-1], columns[-1]

    def _piece(self, position: int | None, lo: int, hi: int) -> pa.Array:
        """Records ``lo`` to ``hi`` of the column at ``position`` (None: ``raw_line``)."""
        if position is None:
            fast_count = self._fast_count[lo:hi]
            ranges = (self._line_start[lo:hi], self._line_end[lo:hi], fast_count != self._n_columns)
            slow = self._slow_raw
        else:
            ranges = self._field_ranges(position, lo, hi)
            slow = self._slow_fields[position]
        if self._order is not None:
            ranges = _concat_ranges(ranges, slow)
        piece = _gather(self._content, *ranges, self._order)
        if position is None and piece.null_count < len(piece):
            piece = pc.utf8_slice_codeunits(piece, 0, RAW_LINE_MAX_CHARS)
        return piece

    def _field_ranges(
        self, position: int, lo: int, hi: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fast_count = self._fast_count[lo:hi]
        present = fast_count > position
        index = self._first_field[lo:hi] + position
        index[~present] = 0
        end = self._ends[index]
        last = fast_count == position + 1
        end[last] = self._line_end[lo:hi][last]
        if position == 0:
            start = self._line_start[lo:hi].copy()
        else:
            start = self._ends[index - 1]
            start += 1
        if self._wrapped is not None:  # "abc" is abc; only simple lines reach here
            unwrap = self._wrapped[index]
            start += unwrap
            end -= unwrap
        return start, end, present


@dataclass
class _ParsedRecords:
    """Records read by ``csv``, kept apart until they are merged back in file order."""

    lines: list[int]  # index of the first physical line after the header
    spans: list[int]  # physical lines taken
    fields: list[list[str]]
    texts: list[str | None]  # the record's text, kept only when its field count is wrong

    @property
    def field_counts(self) -> list[int]:
        return [len(f) for f in self.fields]

    def covered(self, n_lines: int) -> np.ndarray:
        mask = np.zeros(n_lines, bool)
        mask[self.lines] = True
        for line, span in zip(self.lines, self.spans, strict=True):
            if span > 1:
                mask[line : line + span] = True
        return mask


def _parse_quoted_records(
    content: bytes,
    line_start: np.ndarray,
    line_end: np.ndarray,
    newline_at: np.ndarray,
    starts: np.ndarray,
    delimiter: str,
    n_columns: int,
) -> _ParsedRecords:
    """Parse with ``csv`` each record that starts on one of the ``starts`` lines.

    A record may run over the next lines (a quoted newline); those lines are then part of it,
    whatever they hold. Consecutive lines that need ``csv`` share one reader over a window of
    text, so a file full of quoted delimiters costs a few microseconds per record.
    """
    parsed = _ParsedRecords([], [], [], [])
    if not len(starts):
        return parsed
    n_lines = len(line_start)
    pending = starts.tolist()
    # For each pending line, the end of its run of consecutive pending lines.
    run_breaks = np.flatnonzero(np.diff(starts) != 1)
    run_last = np.append(starts[run_breaks], starts[-1])
    run_sizes = np.diff(np.append(-1, np.append(run_breaks, len(starts) - 1)))
    run_end = np.repeat(run_last + 1, run_sizes).tolist()
    if len(pending) * 16 > n_lines:  # many records: Python ints index faster than numpy's
        line_start, line_end, newline_at = (a.tolist() for a in (line_start, line_end, newline_at))

    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(content)))  # multi-megabyte fields are legitimate
    try:
        i = 0
        while i < len(pending):
            first = pending[i]
            stop = min(run_end[i], first + _PARSER_WINDOW)  # records starting before stop
            # A record is at most MAX_RECORD_LINES long, so this window holds every one of them;
            # a reader that runs dry has met a quote that never closes.
            window_end = min(stop + MAX_RECORD_LINES, n_lines)
            # The window's last line is cut before its CR, like every line end (even the file's
            # last line, without LF): only a record that ran dry could end there.
            text = _text(content, line_start[first], line_end[window_end - 1])
            # csv ends a record at a lone CR, but here only LF ends a line: hide lone CRs behind
            # NUL, which a file never holds (it would have been refused as binary).
            lone_cr = _LONE_CR.search(text) is not None
            if lone_cr:
                text = _LONE_CR.sub("\x00", text)
            text += "\n"
            ran_dry = [False]
            reader = csv.reader(
                chain(_physical_lines(text), _mark_dry(ran_dry)), delimiter=delimiter, strict=False
            )
            line = first
            while line < stop:
                taken = reader.line_num
                try:
                    fields = next(reader)
                    if lone_cr:
                        fields = [field.replace("\x00", "\r") for field in fields]
                    span = reader.line_num - taken
                    closed = not ran_dry[0] and span <= MAX_RECORD_LINES
                except csv.Error:
                    closed = False
                if not closed:  # a stray quote: its line alone, split naively; then start over
                    fields = _text(content, line_start[line], line_end[line]).split(delimiter)
                    span = 1
                parsed.lines.append(line)
                parsed.spans.append(span)
                parsed.fields.append(fields)
                if len(fields) == n_columns:
                    parsed.texts.append(None)
                else:
                    parsed.texts.append(_text(content, line_start[line], line_end[line + span - 1]))
                line += span
                if not closed:
                    break
            while i < len(pending) and pending[i] < line:
                i += 1
    finally:
        csv.field_size_limit(old_limit)
    return parsed


def _physical_lines(text: str) -> Iterator[str]:
    """The lines of the text, each with its LF (csv needs it to keep quoted newlines)."""
    if _OTHER_LINE_BREAKS.search(text) is None:
        return iter(text.splitlines(keepends=True))  # same lines, split faster
    physical = text.split("\n")
    if not physical[-1]:
        physical.pop()
    return map(operator.add, physical, repeat("\n"))


def _mark_dry(flag: list[bool]) -> Iterator[str]:
    """An empty iterator that records that it was reached."""
    flag[0] = True
    yield from ()


def _text(content: bytes, start: int, end: int) -> str:
    return content[start:end].decode("utf-8")


def _slow_columns(
    slow: _ParsedRecords, n_columns: int, base: int
) -> tuple[list[bytes], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The parsed records' texts as data for ``_gather``.

    Returns the data to append after the content and, per column (then raw_line), the ranges of
    its values in the combined buffer. The Python lists are flattened and converted in C, so
    this stays cheap even when every record went through ``csv``.
    """
    values = pa.array(list(chain.from_iterable(slow.fields)), pa.large_string())
    value_offsets = np.frombuffer(values.buffers()[1], np.int64, len(values) + 1) + base
    lengths = np.fromiter(map(len, slow.fields), np.int64, len(slow.fields))
    row_first = np.cumsum(lengths) - lengths
    ranges = []
    for position in range(n_columns):
        present = lengths > position
        index = row_first + position
        index[~present] = 0
        ranges.append((value_offsets[index], value_offsets[index + 1], present))
    blobs = [_data_bytes(values)]

    texts = pa.array(slow.texts, pa.large_string())
    text_offsets = np.frombuffer(texts.buffers()[1], np.int64, len(texts) + 1)
    text_offsets = text_offsets + int(value_offsets[-1])
    present = texts.is_valid().to_numpy(zero_copy_only=False)
    ranges.append((text_offsets[:-1], text_offsets[1:], present))
    blobs.append(_data_bytes(texts))
    return blobs, ranges


def _data_bytes(array: pa.Array) -> bytes:
    """The character data of a fresh (unsliced) large string array, exactly."""
    data = array.buffers()[2]
    used = int(np.frombuffer(array.buffers()[1], np.int64, len(array) + 1)[-1])
    return b"" if data is None else data.to_pybytes()[:used]


def _concat_ranges(
    fast: tuple[np.ndarray, np.ndarray, np.ndarray],
    slow: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not len(slow[0]):
        return fast
    return tuple(np.concatenate([a, b]) for a, b in zip(fast, slow, strict=True))


def _gather(
    content: pa.Buffer,
    starts: np.ndarray,
    ends: np.ndarray,
    present: np.ndarray,
    order: np.ndarray | None,
) -> pa.Array:
    """Copy the byte ranges ``content[starts[i]:ends[i]]`` into one string column.

    The ranges of present values ascend and do not overlap, so together with the gaps between
    them they tile the buffer: a string array over the whole buffer with those offsets costs no
    copy, and ``take`` of every second element yields the column.
    """
    n = len(starts)
    kept = int(np.count_nonzero(present))
    if kept == 0:
        return pa.nulls(n, pa.string())
    large = content.size > _INT32_LIMIT
    offset_type = np.int64 if large else np.int32
    offsets = np.empty(2 * kept + 2, offset_type)
    offsets[0] = 0
    offsets[1:-1:2] = starts[present] if kept < n else starts
    offsets[2:-1:2] = ends[present] if kept < n else ends
    offsets[-1] = content.size
    array_type = pa.LargeStringArray if large else pa.StringArray
    pieces = array_type.from_buffers(2 * kept + 1, pa.py_buffer(offsets), content)

    if kept == n:
        index = np.arange(1, 2 * n, 2, dtype=offset_type)
    else:
        index = 2 * np.cumsum(present, dtype=offset_type) - 1
    mask = None
    if order is not None:
        index = index[order]
        present = present[order]
    if kept < n:
        mask = ~present
    taken = pieces.take(pa.array(index, mask=mask))
    return taken.cast(pa.string()) if large else taken


# --- extra columns ----------------------------------------------------------------------------

_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_OTHER_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _json_objects(
    names: list[str], columns: list[pa.ChunkedArray], pool: ThreadPoolExecutor
) -> pa.ChunkedArray:
    """One JSON object per row, built column-wise (and block by block, on two threads) so that
    extra columns stay cheap."""
    keys = [
        ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
        for i, name in enumerate(names)
    ]

    def block(i: int) -> pa.Array:
        parts: list[pa.Array | str] = []
        for key, column in zip(keys, columns, strict=True):
            parts += [key, _json_string_or_null(column.chunk(i))]
        return pc.binary_join_element_wise(*parts, "}", "")

    return pa.chunked_array(list(pool.map(block, range(columns[0].num_chunks))), pa.string())


def _json_string_or_null(column: pa.Array) -> pa.Array:
    if _needs_escape(column):
        column = _json_escape(column)
    return pc.fill_null(pc.binary_join_element_wise('"', column, '"', ""), "null")


def _needs_escape(column: pa.Array) -> bool:
    """Whether any value holds a quote, a backslash or a control character: rarely, so one
    numpy pass over the characters usually spares every escaping pass."""
    data = column.buffers()[2]
    if data is None:
        return False
    offsets = np.frombuffer(column.buffers()[1], np.int32, len(column) + 1, column.offset * 4)
    chars = np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]]
    return bool(((chars < 0x20) | (chars == ord('"')) | (chars == ord("\\"))).any())


def _json_escape(column: pa.Array) -> pa.Array:
    escaped = column
    for text, escape in _JSON_ESCAPES:
        escaped = pc.replace_substring(escaped, text, escape)
    rare = pc.fill_null(pc.match_substring_regex(escaped, _OTHER_CONTROL), False)
    if pc.any(rare).as_py():  # other control characters: let json spell them, row by row
        rows = np.flatnonzero(rare.to_numpy(zero_copy_only=False))
        values = column.take(pa.array(rows)).to_pylist()
        fixed = [json.dumps(v, ensure_ascii=False)[1:-1] for v in values]
        escaped = pc.replace_with_mask(escaped, rare, pa.array(fixed, pa.string()))
    return escaped
