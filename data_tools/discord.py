"""Turn a Discord channel's messages into persona chat windows (messages JSONL).

Input, told from the content:
  a DiscordChatExporter JSON export: {"guild", "channel", "messages": [{"id", "type", "timestamp",
      "content", "author": {"id", "name", "nickname", "isBot"}, ...}, ...]}, read one message at a time
      (ijson), so memory does not grow with its size; errors name "record N" (from 1) and messages[N-1];
  a table of messages, one per row, as CSV (a header row), Parquet, JSONL or a JSON array, with the
      columns author,timestamp,content (others are ignored; a row may also be a DiscordChatExporter
      message object); rows in time order; timestamps in ISO 8601 (2024-03-01T18:02:11+00:00; without a
      zone it is taken as UTC). A table has no bot or message-type information: every row counts as a
      chat message.

What is changed, and nothing else (a message with none of these is kept byte for byte):
  removed:   messages of bot authors; system messages (any type but Default/Reply); user, role and
             channel mentions (<@1>, <@!1>, <@&1>, <#1>); URLs (http://, https://, www.); e-mail
             addresses; messages that are empty (or blank) once those are removed
  replaced:  custom emoji <:name:123> and <a:name:123> -> :name:
  tidied:    only where something was removed: the spaces around it (one space between words, none
             before punctuation or at a line's ends), a ',', ';' or ':' it leaves at a line's start,
             lines it leaves empty, and blank lines it leaves at the message's start or end
  joined:    consecutive messages of one side become one turn, joined with a newline

Conversations: split where the gap between messages exceeds --gap-minutes; the --persona (author name,
nickname or id, any case) becomes "assistant", everyone else "user"; each conversation is cut into
windows of at most --max-turns turns that start with a user turn and end with a persona turn.
A persona who speaks first in a conversation (an opener) is kept: the window starts with the user turn
--opener-prompt (default "(you start the conversation)"); --drop-openers drops those messages instead,
as older versions did. The report counts kept messages (and how many were openers) and dropped ones
per reason.

  python -m data_tools.discord export.json --persona Vex -o train.jsonl [--system TEXT]
      [--gap-minutes 30] [--max-turns 8] [--opener-prompt TEXT | --drop-openers] [--force] [--skip-invalid]
"""
import contextlib
import re
import sys
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common.errors import InputError, cli
from common.io import Tally, decode_json, write_jsonl
from data_tools import _formats
from data_tools._chat import ASSISTANT, USER, invalid, messages_record, parser, shown

CHAT_TYPES = {"Default", "Reply"}
COLUMNS = ("author", "timestamp", "content")
OPENER_PROMPT = "(you start the conversation)"
MENTION = re.compile(r"<(?:@[!&]?|#)\d+>")
CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PUNCTUATION = "!?.,;:"
LEADING_PUNCT = re.compile(r"^[,;:][ \t]*")  # what "<@1>, hi" leaves
FIRST_LINE_LIMIT = 1 << 24  # bytes of a '{' file's first line read to tell JSONL from an export

# one message as read: names = (name, nickname, id) to match the persona against
Raw = namedtuple("Raw", "line field names bot type timestamp content")
Turn = namedtuple("Turn", "role texts count")


def _may_need_removal(text):
    """False when none of MENTION, CUSTOM_EMOJI, URL, EMAIL can match (most messages)."""
    return "<" in text or "@" in text or "://" in text or "www." in text.lower()


def clean(text):
    """Remove mentions, URLs and e-mail addresses, custom emoji -> :name:; tidy spaces only where
    something was removed (see the module docstring). Anything else is returned unchanged."""
    if not _may_need_removal(text):
        return text
    text = CUSTOM_EMOJI.sub(r":\1:", text)
    mark = next(c for c in "\0\ufffe\uffff\U0010fffe" if c not in text)  # stands for a removed element
    marked = EMAIL.sub(mark, URL.sub(mark, MENTION.sub(mark, text)))
    if mark not in marked:
        return text
    gap = re.compile(rf"[ \t]*{mark}(?:[ \t]*{mark})*[ \t]*")
    lines = []
    for line in marked.split("\n"):
        if mark not in line:
            lines.append(line)
            continue
        starts = gap.match(line) is not None
        line = gap.sub(lambda m: "" if m.start() == 0 or m.end() == len(m.string) or m.string[m.end()] in PUNCTUATION
                       else " ", line)
        if starts:
            line = LEADING_PUNCT.sub("", line)
        if line.strip():
            lines.append(line)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _is_export(path):
    """True for a DiscordChatExporter export (a JSON document with 'messages'), False for JSONL: a first
    line that is a whole JSON object without a 'messages' key."""
    with open(path, "rb") as fh:
        first = fh.readline(FIRST_LINE_LIMIT)
    try:
        record = decode_json(first.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return True
    return not isinstance(record, dict) or bool({"messages", "guild", "channel"} & set(record))


def _export_messages(path):
    """Yield (index, message) for each element of an export's top-level "messages" list, one at a time."""
    count = 0
    for count, message in enumerate((m for _, m in _formats.json_items(path, "messages.item")), 1):
        yield count - 1, message
    if not count:
        import ijson

        with open(path, "rb") as fh:
            if any(p == "messages" and e == "start_array" for p, e, _ in ijson.parse(fh)):
                raise InputError("no records: the export's 'messages' list is empty", path, None, "messages")
        raise InputError("no 'messages' list: not a DiscordChatExporter JSON export (a JSON object with a "
                         "'messages' list) nor a table of messages (author,timestamp,content)", path, None, "messages")


def _raw(where, field, message):
    """A Raw from a DiscordChatExporter message object or a table row (author a name)."""
    author = message.get("author") if isinstance(message, dict) else None
    if isinstance(author, dict):
        return Raw(where, field, (author.get("name"), author.get("nickname"), author.get("id")),
                   bool(author.get("isBot")), message.get("type", "Default"), message.get("timestamp"),
                   message.get("content"))
    if isinstance(author, str) and author.strip() and field is None:  # a table row; an export has objects
        return Raw(where, field, (author,), False, "Default", message.get("timestamp"), message.get("content"))
    return Raw(where, field, None, False, "Default", None, None)  # reported (or skipped) by conversations()


def read_messages(path, tally=None):
    """Yield a Raw per message of an export or a table of messages (format told from the content)."""
    path = Path(path)
    if _formats.detect(path) == "jsonl" and _is_export(path):
        for i, message in _export_messages(path):
            yield _raw(f"record {i + 1}", f"messages[{i}]", message)
        return
    for where, record in _formats.read_records(path, tally, COLUMNS):
        yield _raw(where, None, record)


class MessageTally(Tally):
    """Tally of messages that also counts the persona openers among the kept ones."""

    def __init__(self):
        super().__init__()
        self.openers = 0

    def report(self, name, stream=sys.stderr):
        total = self.kept + sum(self.dropped.values())
        print(f"{name}: kept {self.kept} of {total}", file=stream)
        print(f"  kept as opener {self.openers}: persona messages that start a conversation", file=stream)
        for reason, n in self.dropped.most_common():
            print(f"  dropped {n}: {reason}", file=stream)


def _timestamp(raw, path):
    if isinstance(raw.timestamp, datetime):  # a Parquet timestamp column
        when = raw.timestamp
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
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
                raise invalid("invalid message", "expected a message object with an 'author' object (or an "
                              "author name)", path, line, f"{field}.author" if field else "author")
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
            if not text.strip():
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


def windows(turns, max_turns, tally, opener=OPENER_PROMPT):
    """Cut alternating turns into runs of <= max_turns that start with user and end with assistant.
    A persona turn that opens the conversation gets the user turn `opener` before it (None: dropped)."""
    if all(turn.role == USER for turn in turns):
        tally.drop("conversation without persona", sum(turn.count for turn in turns))
        return
    i = 0
    while i < len(turns):
        head = []
        if turns[i].role == ASSISTANT:
            if opener is None:
                tally.drop("persona speaks first (no user turn before it; --drop-openers)", turns[i].count)
                i += 1
                continue
            tally.openers += turns[i].count
            head = [Turn(USER, [opener], 0)]
        end = min(i + max_turns - len(head), len(turns)) - 1
        end -= turns[end].role != ASSISTANT
        if end < i or (end == i and not head):
            tally.drop("no persona reply after it", sum(turn.count for turn in turns[i:]))
            return
        tally.keep(sum(turn.count for turn in turns[i:end + 1]))
        yield head + turns[i:end + 1]
        i = end + 1


def convert(src, dst, persona, system=None, gap_minutes=30.0, max_turns=8, force=False, skip_invalid=False,
            opener=OPENER_PROMPT):
    """Write persona windows from Discord messages to dst; returns (MessageTally, windows written).
    opener: the user turn before a persona opener (None: drop openers)."""
    if max_turns < 2:
        raise InputError("must be at least 2 (a user and a persona turn)", None, None, "--max-turns")
    if opener is not None and not opener.strip():
        raise InputError("must not be blank (use --drop-openers to drop openers)", None, None, "--opener-prompt")
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    tally = MessageTally()
    raws = read_messages(path, tally if skip_invalid else None)

    def records():
        for conversation in conversations(raws, path, persona, timedelta(minutes=gap_minutes), tally, skip_invalid):
            for window in windows(conversation, max_turns, tally, opener):
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
    openers = p.add_mutually_exclusive_group()
    openers.add_argument("--opener-prompt", default=OPENER_PROMPT,
                         help=f"user turn put before a persona message that opens a conversation "
                              f"(default {OPENER_PROMPT!r})")
    openers.add_argument("--drop-openers", action="store_true",
                         help="drop persona messages that open a conversation (the behaviour before openers were kept)")
    args = p.parse_args(argv)
    tally, written = convert(args.src, args.output, args.persona, args.system, args.gap_minutes, args.max_turns,
                             args.force, args.skip_invalid, None if args.drop_openers else args.opener_prompt)
    tally.report(f"discord messages -> {args.output}", sys.stderr)
    print(f"discord: wrote {written} windows to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
