"""A CSV file's blocks: the lines that start inside a range of its bytes, and the
check that no cut between two blocks falls inside a quoted field.

A CSV file larger than ``data.max_block_mb`` is cut at line breaks
(``file_blocks.byte_ranges``), as ``dask.dataframe.read_csv`` cuts it. A line
break inside a quoted field (free text written by pandas, R, Excel) is no end of
a row: a cut there would end one block inside a field and start the next in the
middle of it, and pyarrow's parser reads both without complaint when the field
counts happen to fit (a quoted last column, say). So every block checks that the
quotes in its lines are all closed where it ends, and a block that fails to parse
checks whether it starts inside a field: a cut inside one is refused, with what to
do, never read as other rows. A row a block's message names is counted from the
file's start in rows, not line breaks, for the same reason.

Quotes are read as pyarrow's parser reads them (its defaults, which pandas'
``engine="pyarrow"`` keeps): a quote opens a quoted field only at the field's
start (a quote inside an unquoted field, ``12 in"``, is a character); inside
one, ``""`` is a quote and a lone ``"`` closes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskyard.errors import DataError
from daskyard.file_blocks import Span

QUOTE = ord('"')
NEWLINE = ord("\n")
# The bytes after which a field starts: the delimiter and either line end.
_FIELD_STARTS = (ord(","), NEWLINE, ord("\r"))
_CHUNK = 2**23  # bytes compared at once: a bool per byte, so 8 MiB at a time


def csv_lines(handle: Any, url: str, span: Span) -> bytes:
    """The file's header and the lines that start inside the span: a line a span
    starts within is the previous block's, the one it ends within is this one's.
    Refused if the last line's quotes are not closed where the block ends."""
    from fsspec.utils import read_block

    header = handle.readline()
    lines = read_block(handle, span.first, span.last - span.first + 1, delimiter=b"\n")
    end = handle.tell()
    # The file's last block ends where the file does: an open quote there is the
    # file's own (pandas reads it as a whole file would be read), not a cut's.
    if end < handle.seek(0, 2) and open_quote_after(lines):
        raise DataError(_cut_inside_quotes(handle, url, end))
    return lines if span.first == 0 else header + lines


def refuse_a_start_inside_quotes(handle: Any, url: str, span: Span) -> None:
    """Refused if the block's first line starts inside a quoted field opened before
    it: the file's quotes read from its start. Reads the bytes before the block, so
    it runs only for a block that failed to parse."""
    if span.first == 0:
        return
    start = _start(handle, span)
    if scan(handle, start)[1]:
        raise DataError(_cut_inside_quotes(handle, url, start))


def rows_before(handle: Any, span: Span) -> int:
    """The file's data rows before the block's first: the rows ended before it (its
    line breaks but those inside quoted fields), but the header. Read for a message."""
    return scan(handle, _start(handle, span))[0] - 1


def _start(handle: Any, span: Span) -> int:
    """Where read_block starts the block: past the first line break from its first
    byte (past the header, for the first block: its own lines hold the header)."""
    handle.seek(span.first)
    handle.readline()
    return handle.tell()


def scan(handle: Any, end: int) -> tuple[int, bool]:
    """The rows ended in the file's first ``end`` bytes, and whether a quoted field
    is open there, read from the file's start a chunk at a time. The byte before
    ``end`` is a line break (or the file's last), so no chunk reads past it."""
    handle.seek(0)
    rows, inside, before = 0, False, NEWLINE
    while (left := end - handle.tell()) > 0 and (chunk := handle.read(min(left, 2**24))):
        # A "" must not be split between two chunks (the next byte decides a quote).
        while chunk.endswith(b'"') and (more := handle.read(1)):
            chunk += more
        ended, inside = quotes_and_rows(chunk, inside, before)
        rows, before = rows + ended, chunk[-1]
    return rows, inside


def _cut_inside_quotes(handle: Any, url: str, at: int) -> str:
    """The one line that refuses a cut at byte ``at`` inside a quoted field."""
    size_mib = -(-handle.seek(0, 2) // 2**20)
    return (
        f"'{url}' has a line break inside a quoted field where daskyard cut it into "
        f"blocks of data.max_block_mb (before byte {at}): set data.max_block_mb to "
        f"{size_mib} or more to read the file whole, or write the data as Parquet"
    )


def open_quote_after(data: bytes, inside: bool = False, before: int = NEWLINE) -> bool:
    """Whether a quoted field is still open at the end of ``data``, which follows
    the byte ``before`` and starts inside a quoted field if ``inside``. ``data``
    must not end in a quote whose meaning the next byte decides."""
    if b'"' not in data:  # the common case, at memchr's speed
        return inside
    runs, open_after = _odd_runs(data, inside, before)
    return bool(open_after[-1]) if len(runs) else inside


def quotes_and_rows(data: bytes, inside: bool = False, before: int = NEWLINE) -> tuple[int, bool]:
    """The rows that end in ``data`` (its line breaks outside quoted fields), and
    whether a quoted field is open at its end; as ``open_quote_after``."""
    runs, open_after = _odd_runs(data, inside, before) if b'"' in data else ((), ())
    if not len(runs):  # no quote that changes the state: every line break or none
        return (0 if inside else data.count(b"\n")), inside
    view = np.frombuffer(data, np.uint8)
    breaks = np.concatenate([_find(view, at, NEWLINE) for at in range(0, len(view), _CHUNK)])
    # A line break is inside a field if one is open after the last odd run before it.
    last_run = np.searchsorted(runs, breaks) - 1
    open_at = np.where(last_run >= 0, open_after[np.maximum(last_run, 0)], inside)
    return int(np.count_nonzero(~open_at)), bool(open_after[-1])


def _odd_runs(data: bytes, inside: bool, before: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each run of adjacent quotes of odd length starts, and whether a quoted
    field is open after it.

    A run maps the state (inside a quoted field or not) to the next, so no loop over
    the quotes in Python: a run of even length leaves it as it is (quotes of ""
    pairs, or an empty field ""); one of odd length at a field's start flips it
    (opens a field, or closes one that held the delimiter last); one of odd length
    elsewhere closes it (ends a field, or is a character of an unquoted one). So
    after an odd run, a field is open if an odd number of flips came since the last
    close (or, before any close, since the start, from ``inside``).
    """
    view = np.frombuffer(data, np.uint8)
    quotes = np.concatenate([_find(view, at, QUOTE) for at in range(0, len(view), _CHUNK)])
    firsts = np.flatnonzero(np.diff(quotes, prepend=-2) != 1)  # where each run starts
    odd = np.diff(firsts, append=len(quotes)) % 2 == 1
    starts = quotes[firsts[odd]]
    previous = np.where(starts > 0, view[np.maximum(starts - 1, 0)], before)
    closes = ~np.isin(previous, _FIELD_STARTS)
    flips = np.cumsum(~closes)
    last_close = np.maximum.accumulate(np.where(closes, np.arange(len(starts)), -1))
    since_close = flips - flips[np.maximum(last_close, 0)]
    open_after = np.where(last_close >= 0, since_close % 2, (flips + inside) % 2) == 1
    return starts, open_after


def _find(view: np.ndarray, at: int, byte: int) -> np.ndarray:
    """The positions of ``byte`` in one chunk of ``view`` from ``at``."""
    return np.flatnonzero(view[at : at + _CHUNK] == byte) + at
