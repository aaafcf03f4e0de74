"""Read records from JSONL, a JSON array (streamed with ijson), Parquet (in batches) or CSV with a header row.

The format is told from the content: first non-space byte '{' -> JSONL, '[' -> JSON array, the
Parquet magic 'PAR1' -> Parquet, else CSV with a header row. Each record comes with where it is:
its line for JSONL and CSV, "record N" (counted from 1) for a JSON array or Parquet.
"""
import codecs
import csv
import re
from pathlib import Path

import ijson

from common.errors import InputError
from common.io import jsonl_values

FORMATS = ("jsonl", "array", "parquet", "csv")
SNIFF_BYTES = 4096
READ_BYTES = 1 << 20  # ijson reads; YAJL re-scans a string cut by a read, so small reads make a huge string slow
PARQUET_BATCH = 1024
CSV_FIELD_LIMIT = (1 << 31) - 1  # csv.field_size_limit for one cell (a C long on every platform)
WHAT = "JSONL (first character '{'), a JSON array ('['), Parquet or CSV with a header row"


def _invalid(reason, message, file=None, where=None, field=None):
    return InputError(message, file, where, field, reason)


def detect(path):
    """'jsonl', 'array', 'parquet' or 'csv' from the first bytes; None for an empty (or blank) file."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        if head.startswith(b"PAR1"):
            return "parquet"
        while head and not head.lstrip(b" \t\r\n\xef\xbb\xbf"):
            head = fh.read(SNIFF_BYTES)  # a long run of blank lines
    start = head.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]
    return {b"": None, b"{": "jsonl", b"[": "array"}.get(start, "csv")


def read_records(path, tally=None, columns=()):
    """Yield (where, record) for each record of path, whatever its format.

    Bad records (invalid JSON or UTF-8, not an object, a CSV row of the wrong width) raise InputError
    naming file and line or record; with a `tally` they are counted as dropped instead. A file with
    no record, or one that cannot be read past a point (a broken array, a bad CSV quote), raises
    InputError in any case. `columns`: names a CSV header or Parquet schema must have.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = detect(path)
    if fmt is None:
        raise _invalid("empty file", "no records: the file is empty", path)
    reader = {"jsonl": _jsonl, "array": _array, "parquet": _parquet, "csv": _csv}[fmt]
    seen = False
    for where, record in reader(path, columns):
        seen = True
        if isinstance(record, InputError):
            if tally is None or getattr(record, "reason", None) is None:
                raise record
            tally.drop(record.reason)
            continue
        if not isinstance(record, dict):
            err = _invalid("not a JSON object", f"expected a JSON object, got {type(record).__name__}", path, where)
            if tally is None:
                raise err
            tally.drop(err.reason)
            continue
        yield where, record
    if not seen:
        raise _invalid("empty file", f"no records: {_EMPTY[fmt]}", path)


_EMPTY = {"jsonl": "the file is empty", "array": "the JSON array is empty", "parquet": "the Parquet file has no rows",
          "csv": "the CSV has a header row but no rows"}


# --- JSONL ----------------------------------------------------------------------------------------

def _jsonl(path, columns):
    return jsonl_values(path)  # common.io's reader: BOM accepted, bad lines returned for a tally


# --- JSON array -----------------------------------------------------------------------------------

# a \uD800-\uDBFF escape without a low surrogate escape after it, after an even number of backslashes:
# YAJL would read it as '?' (a lone low surrogate makes it fail, which is caught as invalid unicode)
_LONE_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")
_OVERLAP = 64  # bytes of the previous chunk searched again, so an escape cut by a chunk is still seen


class _Guarded:
    """A binary file for ijson that raises _LoneSurrogate(byte offset) at a lone high surrogate escape."""

    def __init__(self, fh):
        self.fh, self.tail, self.offset = fh, b" ", fh.tell() - 1  # offset: where tail starts in the file

    def read(self, size=-1):
        chunk = self.fh.read(size)
        data = self.tail + chunk
        if b"\\u" in chunk or b"\\" in self.tail:
            for match in _LONE_HIGH.finditer(data):
                # at the very end the low half may still come in the next chunk: that part is searched again
                if chunk and match.end() > len(data) - 6:
                    break
                k = match.start()
                while k > 0 and data[k - 1] == 0x5C:  # backslashes before it: an even number, or it is no escape
                    k -= 1
                if (match.start() - k) % 2 == 0:
                    raise _LoneSurrogate(self.offset + match.start(), match.group().decode())
        self.tail = data[-_OVERLAP:]
        self.offset += len(data) - len(self.tail)
        return chunk


class _LoneSurrogate(Exception):
    pass


def json_items(path, prefix="item"):
    """Yield (index, value) for each element of the JSON array at `prefix` ("item": the top-level array;
    "messages.item": the "messages" list of a top-level object), one element at a time (ijson)."""
    index = 0
    with open(path, "rb") as fh:
        if fh.read(3) != codecs.BOM_UTF8:
            fh.seek(0)
        try:
            values = ijson.items(_Guarded(fh), prefix, use_float=True, buf_size=READ_BYTES)
            for index, value in enumerate(values, 1):
                yield index - 1, value
        except _LoneSurrogate as err:
            offset, escape = err.args
            raise _invalid("invalid unicode", f"lone surrogate escape {escape} at byte {offset} (half of a "
                           "UTF-16 pair without the other half)", path) from None
        except UnicodeDecodeError:
            raise _invalid("invalid unicode", "invalid UTF-8 or a lone surrogate escape", path,
                           f"record {index + 1}") from None
        except ijson.JSONError as err:
            raise _json_error(err, path, index) from None


def _array(path, columns):
    """Yield ("record N", value) for each element of a top-level JSON array."""
    for index, value in json_items(path):
        yield f"record {index + 1}", value


def _json_error(err, path, index):
    """One line from a YAJL error (its first line; the rest quotes the input)."""
    text = err.args[0] if err.args else str(err)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.startswith(("b'", 'b"')):
        text = text[2:]
    message = text.split("\n")[0].split("\\n")[0].strip().rstrip(".")
    if "invalid bytes in UTF8" in message:
        return _invalid("invalid UTF-8", "invalid UTF-8 in a string", path, f"record {index + 1}")
    if "trailing garbage" in message:
        return _invalid("invalid JSON", f"invalid JSON: {message} after the top-level value (after record "
                        f"{index}): expected one JSON document, or JSONL with one object per line", path)
    where = f"record {index + 1}"
    if "premature EOF" in message:
        message += " (the array is cut off)"
    return _invalid("invalid JSON", f"invalid JSON: {message}", path, where)


# --- Parquet --------------------------------------------------------------------------------------

def _parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"the Parquet file must have the columns {','.join(columns)} (it has "
                             f"{','.join(names)})", path, None, missing[0])
        index = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                index += 1
                yield f"record {index}", record
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"invalid Parquet: {str(err).splitlines()[0]}", path) from None


# --- CSV ------------------------------------------------------------------------------------------

def _decoded_lines(path):
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"invalid UTF-8 at byte {err.start}", path, number) from None


def _check_header(header, path):
    """A CSV header is at least two distinct, non-empty, short names; anything else is no known format."""
    names = [h.strip() for h in header]
    if len(names) < 2 or len(set(names)) != len(names) or not all(0 < len(h) <= 100 for h in names):
        shown = repr(",".join(header)[:60])
        raise InputError(f"not a known format: expected {WHAT}; the first line {shown} is no CSV header "
                         "(two or more distinct column names)", path, 1)


def _csv(path, columns):
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # the default, 128 KiB, would stop at a long message
    try:
        head = open(path, "rb").readline(SNIFF_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"not a known format: expected {WHAT}; the file does not start with UTF-8 text",
                         path, 1) from None
    if "\0" in head:
        raise InputError(f"not a known format: expected {WHAT}; the file is binary", path, 1)
    # strict: an unclosed quote is an error, not a field that swallows every row after it
    reader = csv.reader(_decoded_lines(path), strict=True)
    start = 1  # the line the row being read starts on
    try:
        header = next(reader)
        _check_header(header, path)
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"CSV header must have the columns {','.join(columns)}", path, 1, missing[0])
        start = reader.line_num + 1
        for row in reader:
            if row:  # a blank line
                if len(row) == len(header):
                    yield start, dict(zip(header, row))
                else:
                    yield start, _invalid("bad CSV row", f"invalid CSV: {len(row)} fields, the header has "
                                          f"{len(header)}", path, start)
            start = reader.line_num + 1
    except csv.Error as err:
        what = "a quoted field is never closed" if "unexpected end of data" in str(err) else str(err)
        if reader.line_num > start and "never closed" not in what:
            what += f" (the row runs on to line {reader.line_num}: is a closing quote missing?)"
        raise InputError(f"invalid CSV: {what}", path, start) from None
