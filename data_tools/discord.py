"""Turn a Discord channel export into persona chat windows (messages JSONL).

Input, by extension or --format:
  .json  a DiscordChatExporter JSON export: {"guild", "channel", "messages": [{"id", "type",
         "timestamp", "content", "author": {"id", "name", "nickname", "isBot"}, ...}, ...]}
  .csv   a CSV with a header row and the columns author,timestamp,content (others are ignored);
         timestamp in ISO 8601 (2024-03-01T18:02:11+00:00; without a zone it is taken as UTC),
         rows in time order, one message per row (quoted fields may span lines); a CSV has no bot
         or message-type information, so every row counts as a chat message.

Steps: drop bot authors, system messages (any type but Default/Reply) and messages that are empty
once user/role/channel mentions (<@1>, <@!1>, <@&1>, <#1>), URLs and e-mail addresses are removed;
split into conversations where the gap between messages exceeds --gap-minutes; merge consecutive
messages of a side; the --persona (author name, nickname or id, any case) becomes "assistant",
everyone else "user"; cut each conversation into windows of at most --max-turns turns that start
with a user turn and end with a persona turn. Dropped messages are counted per reason.
A JSON export is decoded one message at a time, so memory does not grow with its size.

  python -m data_tools.discord export.json --persona Vex -o train.jsonl [--system TEXT]
      [--gap-minutes 30] [--max-turns 8] [--format json|csv] [--force] [--skip-invalid]
"""
import codecs
import contextlib
import csv
import json
import operator
import re
import sys
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common.errors import InputError, cli
from common.io import Tally, write_jsonl
from data_tools._chat import ASSISTANT, USER, invalid, messages_record, parser, shown

CHAT_TYPES = {"Default", "Reply"}
CSV_COLUMNS = ("author", "timestamp", "content")
CSV_FIELD_LIMIT = (1 << 31) - 1  # csv.field_size_limit for one cell (a C long on every platform)
MENTION = re.compile(r"<(?:@[!&]?|#)\d+>")
CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([!?.,;]|:(?!\w))")
LEADING_PUNCT = re.compile(r"^(?:[,;]|:(?=\s))\s*")  # what "<@1>, hi" leaves; keeps ":emoji:"
SPACE_THEN_PUNCT = re.compile(r"[ \t][!?.,;:]")  # in every match of SPACE_BEFORE_PUNCT; much faster to search
_GROUP1 = operator.itemgetter(1)

# one message as read: names = (name, nickname, id) to match the persona against
Raw = namedtuple("Raw", "line field names bot type timestamp content")
Turn = namedtuple("Turn", "role texts count")


def _may_need_removal(text):
    """False when none of MENTION, CUSTOM_EMOJI, URL, EMAIL can match (most messages)."""
    return "<" in text or "@" in text or "://" in text or "www." in text.lower()


def clean(text):
    """Remove mentions, URLs and e-mail addresses; tidy the spaces they leave."""
    if _may_need_removal(text):
        text = CUSTOM_EMOJI.sub(r":\1:", MENTION.sub("", text))
        text = EMAIL.sub("", URL.sub("", text))
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if SPACE_THEN_PUNCT.search(line):
            line = SPACE_BEFORE_PUNCT.sub(_GROUP1, line)
        if line and line[0] in ",;:":
            line = LEADING_PUNCT.sub("", line)
        if line:
            lines.append(line)
    return "\n".join(lines).strip()


READ_BYTES = 1 << 16  # bytes read from a JSON export at a time
_WS = re.compile(r"[ \t\n\r]*")
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_DECODE = json.JSONDecoder().raw_decode
_CUT_MARGIN = 16  # a decode error this close to the end of the buffer may just be a value cut by the chunk


class _Window:
    """A sliding window over a UTF-8 file decoded chunk by chunk: buf[pos:] is what is left to parse.

    Knows the line and column of any position still in the window, for error messages.
    """

    def __init__(self, fh, path):
        self.fh, self.path = fh, path
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.mark, self.mark_line = 0, 1  # buf[mark] is on line mark_line
        self.col0 = 1  # column of buf[0]
        self.bytes_read = 0
        self.started = False  # decoded any text yet (a byte order mark is dropped from the first)

    def line(self, p):
        """Line number of buf[p] (p at or after the last position asked about)."""
        self.mark_line += self.buf.count("\n", self.mark, p)
        self.mark = p
        return self.mark_line

    def where(self, p):
        """(line, column) of buf[p]."""
        line = self.line(p) if p >= self.mark else self.mark_line - self.buf.count("\n", p, self.mark)
        k = self.buf.rfind("\n", 0, p)
        return line, (p - k if k >= 0 else self.col0 + p)

    def fill(self, need=0):
        """Drop the parsed part, read until at least `need` characters are left; False at the end of the file."""
        if self.eof:
            return False
        drop = self.pos
        self.line(drop)
        k = self.buf.rfind("\n", 0, drop)
        self.col0 = drop - k if k >= 0 else self.col0 + drop
        pieces = [self.buf[drop:]]
        size = len(pieces[0])
        self.mark, self.pos = 0, 0
        while True:
            text = self._read(pieces)
            pieces.append(text)
            size += len(text)
            if self.eof or size >= need:
                break
        self.buf = "".join(pieces)
        return True

    def _read(self, pieces):
        """Read and decode the next chunk; pieces: the text decoded since buf[mark] (on line mark_line)."""
        raw = self.fh.read(READ_BYTES)
        self.eof = not raw
        pending = self.decoder.getstate()[0]
        try:
            text = self.decoder.decode(raw, final=self.eof)
        except UnicodeDecodeError as err:
            line = self.mark_line + sum(p.count("\n") for p in pieces) + (pending + raw).count(b"\n", 0, err.start)
            offset = self.bytes_read - len(pending) + err.start
            raise invalid("invalid UTF-8", f"invalid UTF-8 at byte {offset}", self.path, line) from None
        if text and not self.started:
            self.started = True
            if text[0] == "\ufeff":
                text = text[1:]  # a byte order mark, as utf-8-sig would drop it
        self.bytes_read += len(raw)
        return text

    def peek(self):
        """Skip whitespace; the next character, or "" at the end of the file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def value(self):
        """Decode the JSON value at pos, reading more of the file while it is cut off by the window."""
        while True:
            try:
                value, end = _DECODE(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number at the very end may go on in the next chunk
                    self.pos = end
                    return value
            except json.JSONDecodeError as err:
                cut = err.msg.startswith("Unterminated string") or err.pos >= len(self.buf) - _CUT_MARGIN
                if self.eof or not cut:
                    raise self.error(err.msg, err.pos) from None
            self.fill(max(READ_BYTES, 2 * (len(self.buf) - self.pos)))

    def expect(self, char, message):
        if self.peek() != char:
            raise self.error(message, self.pos)
        self.pos += 1

    def next_item(self, close, after_comma):
        """After a value in an array or object: skip its ',' and return the next character, which is
        `close` only when no comma came (a ',' right before `close` is the error `after_comma`)."""
        char = self.peek()
        if char == ",":
            self.pos += 1
            char = self.peek()
            if char == close:
                raise self.error(after_comma, self.pos)
        elif char != close:
            raise self.error("Expecting ',' delimiter", self.pos)
        return char

    def error(self, message, p):
        line, column = self.where(p)
        return invalid("invalid JSON", f"invalid JSON: {message} (column {column})", self.path, line)


def _json_messages(path):
    """Yield (index, line, message) for each element of the top-level "messages" array of a JSON file,
    decoding one element at a time; the other top-level values are checked and skipped."""
    with open(path, "rb") as fh:
        win = _Window(fh, path)
        char = win.peek()
        if char != "{":
            if char and char in '["-0123456789tfn':
                raise InputError("not a DiscordChatExporter JSON export: expected a JSON object with a "
                                 "'messages' list", path, None, "messages")
            raise win.error("Expecting value", win.pos)
        win.pos += 1
        found = False
        char = win.peek()
        while char != "}":
            if char != '"':
                raise win.error("Expecting property name enclosed in double quotes", win.pos)
            key = win.value()
            win.expect(":", "Expecting ':' delimiter")
            char = win.peek()
            if key == "messages":
                if char != "[":
                    raise InputError("not a DiscordChatExporter JSON export: no 'messages' list", path,
                                     win.line(win.pos), "messages")
                found = True
                win.pos += 1
                index = 0
                char = win.peek()
                while char != "]":
                    line = win.line(win.pos)
                    yield index, line, win.value()
                    index += 1
                    sep = _COMMA.match(win.buf, win.pos)  # the usual case: a comma, then the next message
                    if sep and sep.end() < len(win.buf) and win.buf[sep.end()] != "]":
                        win.pos = sep.end()
                        continue
                    char = win.next_item("]", "Expecting value")
                win.pos += 1
            else:
                win.value()
            char = win.next_item("}", "Expecting property name enclosed in double quotes")
        win.pos += 1
        if win.peek():
            raise win.error("Extra data", win.pos)
    if not found:
        raise InputError("not a DiscordChatExporter JSON export: no 'messages' list", path, None, "messages")


def read_json(path):
    """Yield a Raw per message of a DiscordChatExporter JSON export, decoding one message at a time
    (memory does not grow with the export). Raw.line is the line the message starts on."""
    for i, line, message in _json_messages(path):
        author = message.get("author") if isinstance(message, dict) else None
        if not isinstance(author, dict):  # reported (or skipped) by conversations()
            yield Raw(line, f"messages[{i}]", None, False, "Default", None, None)
            continue
        yield Raw(line, f"messages[{i}]", (author.get("name"), author.get("nickname"), author.get("id")),
                  bool(author.get("isBot")), message.get("type", "Default"), message.get("timestamp"),
                  message.get("content"))


def _decoded_lines(path):
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"invalid UTF-8 at byte {err.start}", path, number) from None


def read_csv(path):
    """Yield a Raw per row of an author,timestamp,content CSV."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # the default, 128 KiB, would stop at a long message
    # strict: an unclosed quote is an error, not a field that swallows every row after it
    reader = csv.DictReader(_decoded_lines(path), strict=True)
    start = 1  # the line the row being read starts on
    try:
        if reader.fieldnames is None:
            raise InputError("no records: the file is empty", path)
        missing = [column for column in CSV_COLUMNS if column not in reader.fieldnames]
        if missing:
            raise InputError(f"CSV header must have the columns {','.join(CSV_COLUMNS)}", path, 1, missing[0])
        start = reader.line_num + 1
        for row in reader:
            yield Raw(reader.line_num, None, (row["author"],), False, "Default", row["timestamp"], row["content"])
            start = reader.line_num + 1
    except csv.Error as err:
        what = "a quoted field is never closed" if "unexpected end of data" in str(err) else str(err)
        end = reader.reader.line_num  # the csv reader's own count (DictReader's is set per row)
        if end > start and "never closed" not in what:
            what += f" (the row runs on to line {end}: is a closing quote missing?)"
        raise InputError(f"invalid CSV: {what}", path, start) from None


def _timestamp(raw, path):
    try:
        when = datetime.fromisoformat(raw.timestamp)
    except (TypeError, ValueError):
        raise invalid("invalid message", f"expected an ISO 8601 timestamp, got {shown(raw.timestamp)}", path,
                      raw.line, f"{raw.field}.timestamp" if raw.field else "timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def conversations(raws, path, persona, gap, tally, skip_invalid):
    """Yield each conversation as a list of alternating Turns; count dropped messages in tally."""
    persona = persona.lower()
    roles = {}  # (name, nickname, id) -> role, so that each author is matched once
    turns, last = [], None
    for raw in raws:
        line, field, names, bot, kind, timestamp, content = raw
        try:
            if names is None:
                raise invalid("invalid message", "expected a message object with an 'author' object", path,
                              line, f"{field}.author")
            if bot:
                tally.drop("bot")
                continue
            if kind not in CHAT_TYPES:
                tally.drop("system message")
                continue
            if not isinstance(content, str):
                raise invalid("invalid message", "expected a string", path, line,
                              f"{field}.content" if field else "content")
            text = clean(content)
            if not text:
                tally.drop("empty after cleaning")
                continue
            when = _timestamp(raw, path)
            if last and when < last:
                raise invalid("timestamp out of order", f"{timestamp} is earlier than the message before it",
                              path, line, f"{field}.timestamp" if field else "timestamp")
        except InputError as err:
            if not skip_invalid:
                raise
            tally.drop(getattr(err, "reason", "invalid message"))
            continue
        if last and when - last > gap and turns:
            yield turns
            turns = []
        last = when
        try:
            role = roles[names]
        except (KeyError, TypeError):  # TypeError: a name that is not hashable (not a string)
            role = ASSISTANT if persona in {str(n).lower() for n in names if n} else USER
            if len(roles) < 100_000:
                with contextlib.suppress(TypeError):
                    roles[names] = role
        if turns and turns[-1].role == role:
            previous = turns[-1]
            previous.texts.append(text)
            turns[-1] = Turn(role, previous.texts, previous.count + 1)
        else:
            turns.append(Turn(role, [text], 1))
    if turns:
        yield turns


def windows(turns, max_turns, tally):
    """Cut alternating turns into runs of <= max_turns that start with user and end with assistant."""
    if all(turn.role == USER for turn in turns):
        tally.drop("conversation without persona", sum(turn.count for turn in turns))
        return
    i = 0
    while i < len(turns):
        if turns[i].role == ASSISTANT:
            tally.drop("persona speaks first (no user turn before it)", turns[i].count)
            i += 1
            continue
        end = min(i + max_turns, len(turns)) - 1
        end -= turns[end].role != ASSISTANT
        if end <= i:
            tally.drop("no persona reply after it", sum(turn.count for turn in turns[i:]))
            return
        tally.keep(sum(turn.count for turn in turns[i:end + 1]))
        yield turns[i:end + 1]
        i = end + 1


def convert(src, dst, persona, system=None, gap_minutes=30.0, max_turns=8, fmt=None, force=False,
            skip_invalid=False):
    """Write persona windows from a Discord export to dst; returns (message Tally, windows written)."""
    if max_turns < 2:
        raise InputError("must be at least 2 (a user and a persona turn)", None, None, "--max-turns")
    path = Path(src)
    fmt = fmt or path.suffix.lower().lstrip(".")
    if fmt not in ("json", "csv"):
        raise InputError("cannot tell the format from the extension: pass --format json|csv", path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raws = read_json(path) if fmt == "json" else read_csv(path)
    tally = Tally()

    def records():
        for conversation in conversations(raws, path, persona, timedelta(minutes=gap_minutes), tally, skip_invalid):
            for window in windows(conversation, max_turns, tally):
                yield messages_record([(turn.role, "\n".join(turn.texts)) for turn in window], system, path)
        if not tally.kept:
            raise InputError(f"no persona windows: is {persona!r} an author here? "
                             f"(dropped messages: {dict(tally.dropped)})", path)

    written = write_jsonl(dst, records(), force)
    return tally, written


@cli
def main(argv=None):
    p = parser("data_tools.discord", __doc__)
    p.add_argument("--persona", required=True, help="author name, nickname or id that becomes the assistant")
    p.add_argument("--system", help="system prompt added to every window")
    p.add_argument("--gap-minutes", type=float, default=30.0, help="silence that starts a new conversation")
    p.add_argument("--max-turns", type=int, default=8, help="most turns per window (default 8)")
    p.add_argument("--format", choices=("json", "csv"), help="input format (default: from the extension)")
    args = p.parse_args(argv)
    tally, written = convert(args.src, args.output, args.persona, args.system, args.gap_minutes, args.max_turns,
                             args.format, args.force, args.skip_invalid)
    tally.report(f"discord messages -> {args.output}", sys.stderr)
    print(f"discord: wrote {written} windows to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
