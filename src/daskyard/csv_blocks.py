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
do, never read as other rows.

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
    if handle.read(1) and open_quote_after(lines):
        raise DataError(cut_inside_quotes(handle, url, end))
    return lines if span.first == 0 else header + lines


def starts_inside_quotes(handle: Any, span: Span) -> bool:
    """Whether the block's first line starts inside a quoted field opened before it:
    the file's quotes read from its start. Reads the bytes before the block, so it
    runs only for a block that failed to parse."""
    if span.first == 0:
        return False
    handle.seek(span.first)
    handle.readline()  # where read_block starts: past the first line break from here
    start = handle.tell()
    handle.seek(0)
    inside, before = False, NEWLINE
    while (left := start - handle.tell()) > 0:
        chunk = handle.read(min(left, 2**24))
        # A "" must not be split between two chunks; the block's start is no quote.
        while chunk.endswith(b'"') and (more := handle.read(1)):
            chunk += more
        inside, before = open_quote_after(chunk, inside, before), chunk[-1]
    return inside


def cut_inside_quotes(handle: Any, url: str, at: int) -> str:
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
    must not end in a quote whose meaning the next byte decides.

    Read as runs of adjacent quotes, each of which maps the state (inside a quoted
    field or not) to the next, so no loop over the quotes in Python: a run of even
    length leaves it as it is (quotes of "" pairs, or an empty field ""); one of
    odd length at a field's start flips it (opens a field, or closes one that held
    the delimiter last); one of odd length elsewhere leaves the field closed
    (closes one, or is a character of an unquoted field).
    """
    if b'"' not in data:  # the common case, at memchr's speed
        return inside
    view = np.frombuffer(data, np.uint8)
    quotes = np.concatenate(
        [np.flatnonzero(view[at : at + _CHUNK] == QUOTE) + at for at in range(0, len(view), _CHUNK)]
    )
    firsts = np.flatnonzero(np.diff(quotes, prepend=-2) != 1)  # where each run starts
    odd = np.diff(firsts, append=len(quotes)) % 2 == 1
    starts = quotes[firsts]
    previous = np.where(starts > 0, view[np.maximum(starts - 1, 0)], before)
    closes = np.flatnonzero(odd & ~np.isin(previous, _FIELD_STARTS))
    if len(closes):  # the state after the last close: closed, then the flips after it
        inside = False
        odd = odd[closes[-1] + 1 :]  # every run of odd length here is at a field start
    return bool(inside ^ (np.count_nonzero(odd) % 2))
