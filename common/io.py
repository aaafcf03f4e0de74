"""Atomic outputs, streaming JSONL with precise errors, and kept/dropped tallies."""
import codecs
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common.errors import InputError


def check_output(path, force=False):
    """Refuse to overwrite an existing output unless force is set."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    return path


@contextlib.contextmanager
def atomic_path(path, force=False):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Works for files and directories. A run killed part way leaves only a `.tmp-*` sibling.
    """
    path = check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(path, force=False, mode="w"):
    """Open a file for writing that appears at `path` only when complete."""
    with atomic_path(path, force) as tmp:
        kwargs = {} if "b" in mode else {"encoding": "utf-8"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def read_json(path, expect=dict):
    """Read a JSON file; errors name the file (and line). `expect`: the type the top level must have."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"invalid UTF-8 at byte {err.start}", path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"invalid JSON: {err.msg} (column {err.colno})", path, err.lineno) from None
    if expect is not None and not isinstance(data, expect):
        raise InputError(f"expected a JSON {'object' if expect is dict else expect.__name__}, "
                         f"got {type(data).__name__}", path)
    return data


def read_text(path):
    """A UTF-8 text file's contents; invalid UTF-8 raises InputError naming the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"invalid UTF-8 at byte {err.start}", path, data.count(b"\n", 0, err.start) + 1) from None


def read_yaml(path, expect=dict):
    """Read a YAML file safely (yaml.safe_load); errors name the file and line.

    `expect`: the type the top level must have (an empty file is reported as such)."""
    import yaml

    path = Path(path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(err, 'problem', None) or err}", path,
                         mark.line + 1 if mark else None) from None
    if expect is not None and not isinstance(data, expect):
        if data is None:
            raise InputError("the file is empty", path)
        raise InputError(f"expected a YAML {'mapping' if expect is dict else expect.__name__}, "
                         f"got {type(data).__name__}", path)
    return data


def read_jsonl(path):
    """Yield (line_number, record) from a JSONL file; blank lines are skipped, a UTF-8 BOM is accepted.

    Invalid UTF-8, invalid JSON and non-object lines raise InputError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    for number, value in jsonl_values(path):
        if isinstance(value, InputError):
            raise value
        if not isinstance(value, dict):
            raise InputError(f"expected a JSON object, got {type(value).__name__}", path, number,
                             reason="not a JSON object")
        yield number, value


def jsonl_values(path):
    """Yield (line_number, value) for each non-blank line of a JSONL file, where a bad line's value is the
    InputError saying what is wrong (with a `reason`), so a caller may count it and go on. A first line
    that is only '{' raises: the file is one JSON document over many lines, not JSONL."""
    with open(path, "rb") as fh:
        first = True
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                value = _jsonl_line(raw, path, number, first)
                if first and isinstance(value, InputError) and raw.strip().removeprefix(codecs.BOM_UTF8) == b"{":
                    raise value
                first = False
                yield number, value


decode_json = json.JSONDecoder().decode  # json.loads(text) without its per-call checks


def _jsonl_line(raw, path, number, first=False):
    """The value on one JSONL line, or the InputError that says what is wrong with it."""
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        return InputError(f"invalid UTF-8 at byte {err.start}", path, number, reason="invalid UTF-8")
    try:
        return decode_json(text)
    except json.JSONDecodeError as err:
        # err.pos, not err.colno: an error at the end of the record is past its newline, on "line 2"
        hint = ""
        if first and text.strip() == "{":
            hint = ("; the file looks like one JSON document spread over lines: expected one object per line "
                    "(JSONL) or a JSON array of objects")
        return InputError(f"invalid JSON: {err.msg} (column {err.pos + 1}){hint}", path, number,
                          reason="invalid JSON")


_encode = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(record, ensure_ascii=False), made once
WRITE_BATCH = 1000  # records joined into one write


def write_jsonl(path, records, force=False):
    """Write records atomically as JSONL, one write per WRITE_BATCH records; returns how many."""
    count = 0
    with atomic_open(path, force) as fh:
        batch = []
        for record in records:
            batch.append(_encode(record))
            if len(batch) >= WRITE_BATCH:
                fh.write("\n".join(batch) + "\n")
                count += len(batch)
                batch = []
        if batch:
            fh.write("\n".join(batch) + "\n")
            count += len(batch)
    return count


class Tally:
    """Counts kept records and dropped ones per reason, and prints them."""

    def __init__(self):
        self.kept = 0
        self.dropped = Counter()

    def keep(self, n=1):
        self.kept += n

    def drop(self, reason, n=1):
        self.dropped[reason] += n

    def report(self, name, stream=sys.stderr):
        total = self.kept + sum(self.dropped.values())
        print(f"{name}: kept {self.kept} of {total}", file=stream)
        for reason, n in self.dropped.most_common():
            print(f"  dropped {n}: {reason}", file=stream)
