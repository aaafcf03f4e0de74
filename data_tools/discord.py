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

  python -m data_tools.discord export.json --persona Vex -o train.jsonl [--system TEXT]
      [--gap-minutes 30] [--max-turns 8] [--format json|csv] [--force] [--skip-invalid]
"""
import csv
import json
import re
import sys
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common.errors import InputError, cli
from common.io import Tally, write_jsonl
from data_tools._chat import ASSISTANT, USER, invalid, messages_record, parser

CHAT_TYPES = {"Default", "Reply"}
CSV_COLUMNS = ("author", "timestamp", "content")
MENTION = re.compile(r"<(?:@[!&]?|#)\d+>")
CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([!?.,;]|:(?!\w))")
LEADING_PUNCT = re.compile(r"^(?:[,;]|:(?=\s))\s*")  # what "<@1>, hi" leaves; keeps ":emoji:"

# one message as read: names = (name, nickname, id) to match the persona against
Raw = namedtuple("Raw", "line field names bot type timestamp content")
Turn = namedtuple("Turn", "role texts count")


def clean(text):
    """Remove mentions, URLs and e-mail addresses; tidy the spaces they leave."""
    text = CUSTOM_EMOJI.sub(r":\1:", MENTION.sub("", text))
    text = EMAIL.sub("", URL.sub("", text))
    lines = (" ".join(line.split()) for line in text.splitlines())
    lines = (LEADING_PUNCT.sub("", SPACE_BEFORE_PUNCT.sub(r"\1", line)) for line in lines)
    return "\n".join(line for line in lines if line).strip()


def read_json(path):
    """Yield a Raw per message of a DiscordChatExporter JSON export (loaded whole; processed as a stream)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except UnicodeDecodeError as err:
        raise InputError(f"invalid UTF-8 at byte {err.start}", path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"invalid JSON: {err.msg} (column {err.colno})", path, err.lineno) from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        raise InputError("not a DiscordChatExporter JSON export: no 'messages' list", path, None, "messages")
    for i, message in enumerate(messages):
        author = message.get("author") if isinstance(message, dict) else None
        if not isinstance(author, dict):  # reported (or skipped) by conversations()
            yield Raw(None, f"messages[{i}]", None, False, "Default", None, None)
            continue
        yield Raw(None, f"messages[{i}]", (author.get("name"), author.get("nickname"), author.get("id")),
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
    reader = csv.DictReader(_decoded_lines(path))
    missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        raise InputError(f"CSV header must have the columns {','.join(CSV_COLUMNS)}", path, 1, missing[0])
    for row in reader:
        yield Raw(reader.line_num, None, (row["author"],), False, "Default", row["timestamp"], row["content"])


def _timestamp(raw, path):
    try:
        when = datetime.fromisoformat(raw.timestamp)
    except (TypeError, ValueError):
        raise invalid("invalid message", f"expected an ISO 8601 timestamp, got {raw.timestamp!r}", path,
                      raw.line, f"{raw.field}.timestamp" if raw.field else "timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def conversations(raws, path, persona, gap, tally, skip_invalid):
    """Yield each conversation as a list of alternating Turns; count dropped messages in tally."""
    persona = persona.lower()
    turns, last = [], None
    for raw in raws:
        try:
            if raw.names is None:
                raise invalid("invalid message", "expected a message object with an 'author' object", path,
                              None, f"{raw.field}.author")
            if raw.bot:
                tally.drop("bot")
                continue
            if raw.type not in CHAT_TYPES:
                tally.drop("system message")
                continue
            if not isinstance(raw.content, str):
                raise invalid("invalid message", "expected a string", path, raw.line,
                              f"{raw.field}.content" if raw.field else "content")
            text = clean(raw.content)
            if not text:
                tally.drop("empty after cleaning")
                continue
            when = _timestamp(raw, path)
            if last and when < last:
                raise invalid("timestamp out of order", f"{raw.timestamp} is earlier than the message before it",
                              path, raw.line, f"{raw.field}.timestamp" if raw.field else "timestamp")
        except InputError as err:
            if not skip_invalid:
                raise
            tally.drop(getattr(err, "reason", "invalid message"))
            continue
        if last and when - last > gap and turns:
            yield turns
            turns = []
        last = when
        role = ASSISTANT if persona in {str(n).lower() for n in raw.names if n} else USER
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, turns[-1].texts + [text], turns[-1].count + 1)
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
