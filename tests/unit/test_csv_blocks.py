"""CSV blocks and quoted fields (daskyard.csv_blocks): a cut inside a quoted field
is refused with what to do; quotes elsewhere read back as the whole file reads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daskyard import csv_blocks
from daskyard.csv_blocks import open_quote_after, quotes_and_rows
from daskyard.data import ColumnPlan, DataSource, inspect_file, plan_columns, read_partition
from daskyard.errors import DataError
from daskyard.file_blocks import in_blocks, split_block_url
from tests.conftest import classification_frame


@pytest.mark.parametrize(
    ("data", "inside", "expected"),
    [
        (b"1,2,3\n", False, False),
        (b'1,"a\nb",0\n', False, False),  # a closed field with a line break
        (b'1,"a\n', False, True),
        (b'"a\n', False, True),  # a field at the very start opens too
        (b'1,"a""\n', False, True),  # "" is a quote: the field is still open
        (b'1,"a""",0\n', False, False),
        (b'1,"",0\n', False, False),  # an empty quoted field
        (b'1,"""",0\n', False, False),  # a field of one quote
        (b'1,12 in",0\n', False, False),  # inside an unquoted field: a character
        (b'1,12 in",0\n2,"x\n', False, True),
        (b'b",0\n', True, False),  # data that starts inside a field closes it
        (b"b\nc\n", True, True),
        (b'b"",0\n', True, True),
        (b'1,"a,",0\n', False, False),  # a closing quote after the delimiter
        (b'1,"a,""\n', False, True),
        (b'1,"a,""",0\n', False, False),
    ],
)
def test_open_quote_after_reads_quotes_as_pyarrow_does(data, inside, expected):
    assert open_quote_after(data, inside) is expected


def walk_quotes(data: bytes, inside: bool) -> tuple[int, bool]:
    """The same rules a byte at a time, as pyarrow's parser walks them: the rows
    ended (line breaks outside quoted fields), and whether a field is open."""
    rows, escaped = 0, False
    for at, byte in enumerate(data):
        if byte == ord("\n"):
            rows += not inside
        if byte != ord('"'):
            continue
        if escaped:
            escaped = False
        elif not inside:
            inside = at == 0 or data[at - 1] in b",\r\n"
        elif data[at + 1 : at + 2] == b'"':
            escaped = True
        else:
            inside = False
    return rows, inside


def test_quotes_and_rows_agree_with_a_walk_over_every_byte(monkeypatch):
    monkeypatch.setattr(csv_blocks, "_CHUNK", 5)
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b'""",,\n\n\rab', np.uint8)
    for _ in range(3_000):
        data = rng.choice(alphabet, size=rng.integers(1, 30)).tobytes() + b"\n"
        inside = bool(rng.integers(2))
        expected = walk_quotes(data, inside)
        assert quotes_and_rows(data, inside) == expected, (data, inside)
        assert open_quote_after(data, inside) is expected[1], (data, inside)


def text_frame(rows: int, seed: int, line_breaks: bool) -> pd.DataFrame:
    """Numeric features and a free-text column of commas, quotes and (maybe) line
    breaks, which pandas' to_csv quotes where needed."""
    rng = np.random.default_rng(seed)
    frame = classification_frame(rows, features=5, seed=seed)
    pieces = np.array(["ab", ",", '"', " ", "x y", *(["\n", "\r\n"] if line_breaks else [])])
    frame["note"] = ["".join(rng.choice(pieces, size=rng.integers(0, 12))) for _ in range(rows)]
    return frame


def test_open_quote_after_finds_exactly_the_line_breaks_inside_fields(monkeypatch):
    """Every line break of a pandas-written file, against where its rows really end
    (each row written alone), in chunks of 7 bytes to cross the chunks' edges."""
    monkeypatch.setattr(csv_blocks, "_CHUNK", 7)
    frame = text_frame(150, seed=3, line_breaks=True)
    rows = [frame.iloc[[i]].to_csv(index=False, header=False).encode() for i in range(len(frame))]
    data = b"".join(rows)
    assert data == frame.to_csv(index=False, header=False).encode()
    row_ends = set(np.cumsum([len(row) for row in rows]).tolist())
    breaks = [at + 1 for at, byte in enumerate(data) if byte == ord("\n")]
    assert len(breaks) > len(row_ends) + 50  # plenty of line breaks inside fields
    for end in breaks:
        assert open_quote_after(data[:end]) is (end not in row_ends), end
    assert quotes_and_rows(data) == (len(rows), False)
    # Read in two pieces at any line break, the state carries over.
    middle = breaks[len(breaks) // 2]
    ended, state = quotes_and_rows(data[:middle])
    assert state is open_quote_after(data[:middle])
    assert ended == sum(end <= middle for end in row_ends)
    assert quotes_and_rows(data[middle:], state, data[middle - 1]) == (len(rows) - ended, False)


def csv_blocks_of(frame: pd.DataFrame, path: Path, blocks: int) -> tuple[DataSource, ColumnPlan]:
    """The frame as a CSV file cut into ``blocks`` blocks, and its columns' plan."""
    frame.to_csv(path, index=False)
    size = path.stat().st_size
    dtypes, _ = inspect_file(str(path), "csv", {})
    source = DataSource(str(path), (str(path),), "csv", "f", {}, (size,))
    cut = in_blocks(source, [()], max_bytes=-(-size // blocks))
    assert len(cut.files) == blocks
    plan = plan_columns([(str(path), dtypes)], "label", ["f0", "f1", "f2"], [], True, True)
    return cut, plan


def test_quoted_text_without_line_breaks_reads_back_in_blocks(tmp_path):
    frame = text_frame(3_000, seed=4, line_breaks=False)
    frame.loc[::7, "note"] = '12 in" wide'  # a quote inside an unquoted field
    cut, plan = csv_blocks_of(frame, tmp_path / "notes.csv", blocks=6)
    parts = [read_partition(url, i, "csv", {}, plan, None) for i, url in enumerate(cut.files)]
    back = pd.concat(parts, ignore_index=True)
    expected = frame[back.columns].astype(back.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, expected, check_exact=False)


def test_a_cut_inside_a_quoted_field_is_refused_with_what_to_do(tmp_path):
    """Long notes full of line breaks: most cuts fall inside one. The block ending
    there and (when it fails to parse) the one starting there say so; none is read
    as other rows."""
    frame = text_frame(2_000, seed=5, line_breaks=True)
    # Most of a row is a note's first line: most cuts find their line break inside it.
    frame["note"] = "z" * 200 + "\n" + frame["note"]
    path = tmp_path / "notes.csv"
    cut, plan = csv_blocks_of(frame, path, blocks=8)
    size_mib = -(-path.stat().st_size // 2**20)
    refused = []
    for index, url in enumerate(cut.files):
        try:
            read_partition(url, index, "csv", {}, plan, None)
        except DataError as error:
            message = str(error)
            assert message.startswith(f"'{path}' has a line break inside a quoted field"), message
            assert f"set data.max_block_mb to {size_mib} or more" in message
            refused.append(index)
    data = path.read_bytes()
    ends = [int(split_block_url(url)[1].last) for url in cut.files[:-1]]
    cuts_inside = [
        i
        for i, last in enumerate(ends)
        if open_quote_after(data[: data.index(b"\n", last + 1) + 1])
    ]
    assert len(cuts_inside) >= 4
    assert set(cuts_inside) <= set(refused)  # every block that ends inside a field
    # The last block's end is the file's: it is refused by where it starts.
    assert cuts_inside[-1] == len(ends) - 1 and len(cut.files) - 1 in refused
    # The file itself is sound, and read whole.
    assert (
        pd.read_csv(io.BytesIO(data), engine="pyarrow")["note"].tolist() == frame["note"].tolist()
    )
    assert len(read_partition(str(path), 0, "csv", {}, plan, None)) == len(frame)


def test_a_row_named_in_a_block_counts_the_rows_before_it_not_their_line_breaks(tmp_path):
    """Notes with line breaks early in a file, plain rows after: a block of the plain
    part names a bad value's row counted from the file's start, as rows."""
    frame = text_frame(4_000, seed=6, line_breaks=False)
    frame.loc[:999, "note"] = '"a\nb,\nc"'  # 3 lines each
    frame["f1"] = frame["f1"].astype(object)
    frame.loc[3_500, "f1"] = "oops"
    cut, plan = csv_blocks_of(frame, tmp_path / "notes.csv", blocks=2)
    with pytest.raises(DataError, match=r"holds 'oops' in data row 3501 "):
        read_partition(cut.files[1], 1, "csv", {}, plan, None)
