"""Shared pieces of the data tools: role names, messages records, and the read-convert-write loop."""
import argparse

from common.errors import InputError
from common.io import Tally, write_jsonl
from data_tools._formats import read_records

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"

# lower-cased role name as found in the wild -> role in messages JSONL
ROLE_ALIASES = {
    "system": SYSTEM,
    "human": USER,
    "user": USER,
    "gpt": ASSISTANT,
    "assistant": ASSISTANT,
    "bot": ASSISTANT,
    "model": ASSISTANT,
    "chatgpt": ASSISTANT,
}


# a key that shows the record is in another format -> (format, the converter for it)
FORMAT_KEYS = (
    ("conversations", "ShareGPT", "data_tools.sharegpt"),
    ("messages", "messages JSONL", None),
    ("instruction", "Alpaca", "data_tools.alpaca"),
    ("answer_keywords", "QA", "data_tools.qa"),
    ("question", "QA", "data_tools.qa"),
    ("task", "RPG task", "data_tools.rpg"),
)


def shown(value, limit=80):
    """repr(value) cut to `limit` characters: error messages stay one short line whatever the input holds."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def format_hint(record, this=None, list_keys=False):
    """"; it has 'k', so it looks like <format>: use python -m <converter>" for a record in another format
    than the converter `this` reads, else ' (keys: ...)' with list_keys, else ''; appended to a
    missing-field message."""
    for key, name, module in FORMAT_KEYS:
        if key in record and module != this:
            use = f"use python -m {module}" if module else "it needs no conversion"
            return f"; it has '{key}', so it looks like {name}: {use}"
    if not list_keys:
        return ""
    keys = [shown(k, 30)[1:-1] for k in list(record)[:10]]
    return f" (keys: {', '.join(keys) + (', ...' if len(record) > 10 else '') or 'none'})"


def missing(record, key, file=None, line=None, this=None, list_keys=False):
    """InputError for the missing required field `key`, saying what the record looks like."""
    return invalid(f"missing {key}", "missing required field" + format_hint(record, this, list_keys),
                   file, line, key)


def invalid(reason, message, file=None, line=None, field=None):
    """An InputError that also carries a short `reason`, the key it is counted under when skipped."""
    return InputError(message, file, line, field, reason)


def normalize_role(name, file=None, line=None, field="role"):
    """'human' -> 'user', 'gpt' -> 'assistant', ...; an unknown name raises InputError."""
    role = ROLE_ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if role is None:
        known = ", ".join(sorted(ROLE_ALIASES))
        raise invalid("unknown role", f"unknown role {shown(name)} (known: {known})", file, line, field)
    return role


def text_field(record, key, file=None, line=None, required=True, numbers=False):
    """record[key] as a string: missing, blank or non-string values raise InputError (None if optional)."""
    value = record.get(key)
    if value is None:
        if required:
            raise invalid(f"missing {key}", "missing required field", file, line, key)
        return None
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise invalid(f"bad {key}", f"expected a string, got {type(value).__name__}", file, line, key)
    check_encodable(value, file, line, key)
    if required and not value.strip():
        raise invalid(f"empty {key}", "is empty", file, line, key)
    return value


def check_encodable(text, file=None, line=None, field=None):
    """Text that cannot be written as UTF-8 (a lone surrogate from a '\\ud83d' escape) raises InputError."""
    if text.isascii():  # O(1), and ASCII is always encodable
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise invalid("invalid unicode", f"lone surrogate at character {err.start}", file, line, field) from None


def check_messages(messages, file=None, line=None, key="messages", allow_empty=False, need_reply=True):
    """Enforce the messages JSONL rules: one optional system first, then user/assistant alternating,
    ending with assistant (need_reply=False: or on user, a prompt); every content a non-empty string."""
    if messages is None:
        raise invalid(f"missing {key}", "missing required field", file, line, key)
    if not isinstance(messages, list):
        raise invalid(f"bad {key}", f"expected a list, got {type(messages).__name__}", file, line, key)
    if not messages:
        raise invalid("empty conversation", "empty conversation", file, line, key)
    for i, message in enumerate(messages):
        if isinstance(message, dict) and "role" in message and message["role"] not in (SYSTEM, USER, ASSISTANT):
            raise invalid("unknown role", f"unknown role {shown(message['role'])}: expected system, user or "
                          "assistant (convert other role names with python -m data_tools.sharegpt)",
                          file, line, f"{key}[{i}].role")
        if not isinstance(message, dict) or message.get("role") not in (SYSTEM, USER, ASSISTANT):
            raise invalid("bad message", "expected {'role': system|user|assistant, 'content': ...}",
                          file, line, f"{key}[{i}]")
        content = message.get("content")
        if not isinstance(content, str):
            raise invalid("bad content", f"expected a string, got {type(content).__name__}",
                          file, line, f"{key}[{i}].content")
        if not content.isascii():
            check_encodable(content, file, line, f"{key}[{i}].content")
        if not allow_empty and not content.strip():
            raise invalid("empty turn", "empty content", file, line, f"{key}[{i}].content")
    start = 1 if messages[0]["role"] == SYSTEM else 0
    for i in range(start, len(messages)):
        expected = USER if (i - start) % 2 == 0 else ASSISTANT
        if messages[i]["role"] != expected:
            got = messages[i]["role"]
            raise invalid("non-alternating turns", f"expected {expected} here, got {got} "
                          "(system first, then user/assistant alternating)", file, line, f"{key}[{i}]")
    if need_reply and messages[-1]["role"] != ASSISTANT:
        raise invalid("does not end with assistant", "conversation must end with an assistant turn",
                      file, line, f"{key}[{len(messages) - 1}]")
    return messages


def record_messages(record, file=None, line=None, allow_empty=False):
    """The checked messages of a messages JSONL record; a record in another format gets a hint."""
    if record.get("messages") is None:
        raise missing(record, "messages", file, line, this=None)
    return check_messages(record["messages"], file, line, allow_empty=allow_empty)


def messages_record(turns, system=None, file=None, line=None, need_reply=True):
    """[(role, content), ...] plus an optional system prompt -> a checked {"messages": [...]} record."""
    messages = [{"role": SYSTEM, "content": system}] if system else []
    messages += [{"role": role, "content": content} for role, content in turns]
    return {"messages": check_messages(messages, file, line, need_reply=need_reply)}


class Drop(Exception):
    """Raised by a convert function for a valid record it leaves out (always counted, by reason)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def convert_records(src, dst, convert, force=False, skip_invalid=False):
    """Stream the records of src (JSONL, JSON array, Parquet or CSV: data_tools._formats) through
    convert(record, file, where) -> record and write dst (messages JSONL) atomically.

    A record that raises InputError stops the run, or with skip_invalid is counted as dropped;
    one that raises Drop is counted as dropped by its reason. Returns the Tally; nothing is
    written when no record is left.
    """
    tally = Tally()

    def converted():
        for number, record in read_records(src, tally if skip_invalid else None):
            try:
                out = convert(record, src, number)
            except Drop as drop:
                tally.drop(drop.reason)
                continue
            except InputError as err:
                if not skip_invalid:
                    raise
                tally.drop(err.reason or "invalid record")
                continue
            tally.keep()
            yield out
        if not tally.kept:
            raise InputError(f"no records left to write (dropped: {dict(tally.dropped)})", src)

    write_jsonl(dst, converted(), force)
    return tally


def parser(module, doc, output_help="messages JSONL to write"):
    """The argparse parser every converter starts from: SRC, -o/--output, --force, --skip-invalid."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="input file: JSONL, a JSON array, Parquet or CSV with a header row (told from "
                   "the content; a JSON array is read one record at a time)")
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--skip-invalid", action="store_true",
                   help="count invalid records as dropped instead of stopping at the first one")
    return p
