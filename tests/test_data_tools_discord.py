"""data_tools.discord: persona windows from a DiscordChatExporter JSON export or a simple CSV."""
import json
import random
import re
import subprocess
import sys

import pytest

from common import ROOT
from common.errors import InputError
from data_tools import discord
from data_tools._chat import check_messages

FIXTURES = ROOT / "tests" / "fixtures" / "data_tools"
EXPORT = ROOT / "recipes" / "tinyllama-discord-persona" / "data" / "discord_export.json"
LEFTOVERS = re.compile(r"<[@#]|https?://|www\.|\w@\w")


def read(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def roles(record):
    return [m["role"] for m in record["messages"]]


def test_small_export_windows_and_drop_counts(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    discord.main([str(FIXTURES / "discord_small.json"), "--persona", "vex", "-o", str(dst),
                  "--system", "You are Vex."])
    first, second = read(dst)
    assert first["messages"] == [
        {"role": "system", "content": "You are Vex."},
        {"role": "user", "content": "hey are you around?\nfound this for the trip"},
        {"role": "assistant", "content": "Aye, I'm here. Write to\nWhat do ye need?"},
        {"role": "user", "content": "is the channel for that :pog:"},
        {"role": "assistant", "content": "Then I'll sail there."},
    ]
    assert second["messages"][1:] == [{"role": "user", "content": "hi all"},
                                      {"role": "assistant", "content": "Welcome aboard, Carol."}]
    err = capsys.readouterr().err
    assert "kept 8 of 17" in err and "wrote 2 windows" in err
    for n, reason in ((1, "bot"), (2, "system message"), (2, "empty after cleaning"), (1, "no persona reply after it"),
                      (1, "persona speaks first"), (2, "conversation without persona")):
        assert f"dropped {n}: {reason}" in err


def test_persona_matches_name_nickname_or_id_in_any_case(tmp_path):
    for persona in ("Captain Vex", "VEX", "999"):
        tally, written = discord.convert(FIXTURES / "discord_small.json", tmp_path / f"{persona}.jsonl", persona)
        assert written == 2 and tally.kept == 8


def test_max_turns_and_gap_shape_the_windows(tmp_path):
    src = FIXTURES / "discord_small.json"
    _, written = discord.convert(src, tmp_path / "a.jsonl", "vex", max_turns=2)
    assert written == 3 and all(roles(r) == ["user", "assistant"] for r in read(tmp_path / "a.jsonl"))
    # one long conversation (no gap over 10 hours): a single window of 8 turns, the trailing users dropped
    tally, written = discord.convert(src, tmp_path / "b.jsonl", "vex", gap_minutes=600)
    (record,) = read(tmp_path / "b.jsonl")
    assert len(record["messages"]) == 8 and roles(record)[-1] == "assistant"
    assert tally.dropped["no persona reply after it"] == 2
    assert "persona speaks first (no user turn before it)" not in tally.dropped


def test_csv_input(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    discord.main([str(FIXTURES / "discord_small.csv"), "--persona", "Vex", "-o", str(dst)])
    (record,) = read(dst)
    assert record["messages"] == [
        {"role": "user", "content": "hey, are you around?"},
        {"role": "assistant", "content": "Aye.\nWhat do ye need?"},
        {"role": "user", "content": "a map, from"},
        {"role": "assistant", "content": "Ask, he has one."},
    ]
    assert "dropped 1: conversation without persona" in capsys.readouterr().err


def test_csv_missing_column_and_bad_timestamp(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text("author,time,content\nvex,2024-01-01T00:00:00,hi\n")
    with pytest.raises(SystemExit):
        discord.main([str(src), "--persona", "vex", "-o", str(tmp_path / "o.jsonl")])
    assert f"error: {src}:1: field 'timestamp': CSV header must have the columns" in capsys.readouterr().err
    src.write_text("author,timestamp,content\nann,yesterday,hi\nvex,2024-01-01T00:00:00,hello\n")
    with pytest.raises(InputError) as info:
        discord.convert(src, tmp_path / "o.jsonl", "vex")
    assert (info.value.line, info.value.field) == (2, "timestamp") and "'yesterday'" in info.value.message
    with pytest.raises(InputError, match="no persona windows"):  # ann dropped, vex speaks first
        discord.convert(src, tmp_path / "o.jsonl", "vex", skip_invalid=True)


def test_json_message_errors_name_the_message(tmp_path):
    export = json.loads((FIXTURES / "discord_small.json").read_text(encoding="utf-8"))
    export["messages"][3]["timestamp"] = "2024-03-01T09:00:00+00:00"
    src = tmp_path / "x.json"
    src.write_text(json.dumps(export))
    with pytest.raises(InputError) as info:
        discord.convert(src, tmp_path / "o.jsonl", "vex")
    assert info.value.field == "messages[3].timestamp" and "earlier" in info.value.message
    del export["messages"][3]["author"]
    src.write_text(json.dumps(export))
    with pytest.raises(InputError, match="'author' object"):
        discord.convert(src, tmp_path / "o.jsonl", "vex")
    tally, _ = discord.convert(src, tmp_path / "o.jsonl", "vex", skip_invalid=True)
    assert tally.dropped["invalid message"] == 1


def test_unknown_persona_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        discord.main([str(EXPORT), "--persona", "Blackbeard", "-o", str(tmp_path / "o.jsonl")])
    assert "no persona windows: is 'Blackbeard' an author here?" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_clean_strips_mentions_urls_and_emails():
    assert discord.clean("welcome <@1158313672704131084>!") == "welcome!"
    assert discord.clean("<@!12>, <@&34> and <#56>: see https://a.example/x?y=1 or www.b.example") == "and: see or"
    assert discord.clean("mail bookings@saltybarrel.example if anyone wants") == "mail if anyone wants"
    assert discord.clean("**Meetup @ the Salty Barrel**\n\n<@1>") == "**Meetup @ the Salty Barrel**"
    assert discord.clean(":wave: nice <a:party:99>") == ":wave: nice :party:"


def test_shipped_export(tmp_path):
    dst = tmp_path / "o.jsonl"
    tally, written = discord.convert(EXPORT, dst, "Vex")
    export = json.loads(EXPORT.read_text(encoding="utf-8"))["messages"]
    assert tally.kept + sum(tally.dropped.values()) == len(export) == 407
    assert tally.dropped["bot"] == sum(m["author"]["isBot"] for m in export) == 5
    assert tally.dropped["system message"] == sum(m["type"] not in ("Default", "Reply") for m in export) == 3
    assert tally.dropped["empty after cleaning"] == 3  # attachment-only messages
    records = read(dst)
    assert written == len(records) >= 20
    persona_lines = {line for m in export if m["author"]["name"] == "Captain Vex"
                     for line in discord.clean(m["content"]).splitlines()}
    for record in records:
        check_messages(record["messages"])
        assert roles(record)[0] == "user" and roles(record)[-1] == "assistant" and len(record["messages"]) <= 8
        for message in record["messages"]:
            assert not LEFTOVERS.search(message["content"]), message
            assert "advanced to level" not in message["content"] and "Pinned a message." not in message["content"]
            if message["role"] == "assistant":
                assert set(message["content"].splitlines()) <= persona_lines


# --- streaming the JSON export ---------------------------------------------------------------------

@pytest.mark.parametrize("read_bytes", [1, 3, 64, 4096])
def test_json_is_streamed_the_same_at_any_chunk_size(tmp_path, monkeypatch, read_bytes):
    """Messages cut anywhere by the read chunks (also inside a multi-byte character) decode as json.load does."""
    export = json.loads(EXPORT.read_text(encoding="utf-8"))
    src = tmp_path / "x.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(export, ensure_ascii=False).encode("utf-8"))  # with a BOM
    monkeypatch.setattr(discord, "READ_BYTES", read_bytes)
    assert [m for _, _, m in discord._json_messages(src)] == export["messages"]
    discord.convert(src, tmp_path / "a.jsonl", "Vex")
    monkeypatch.setattr(discord, "READ_BYTES", 1 << 16)
    discord.convert(EXPORT, tmp_path / "b.jsonl", "Vex")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_json_message_errors_name_the_line(tmp_path):
    text = (FIXTURES / "discord_small.json").read_text(encoding="utf-8")
    start = text.index('"id": "1004"')
    line = text.count("\n", 0, text.rindex("{", 0, start)) + 1  # the line the message object starts on
    src = tmp_path / "x.json"
    src.write_text(text.replace('"timestamp": "2024-03-01T10:02:00', '"timestamp": "2024-03-01T09:00:00'))
    with pytest.raises(InputError) as info:
        discord.convert(src, tmp_path / "o.jsonl", "vex")
    assert (info.value.file, info.value.line, info.value.field) == (src, line, "messages[3].timestamp")


@pytest.mark.parametrize("read_bytes", [5, 1 << 16])
@pytest.mark.parametrize("damage, message", [
    (lambda t: t.replace('[]\n    },\n    {', '[]\n    }\n    {', 1), "Expecting ',' delimiter"),
    (lambda t: t[:len(t) // 2], "Unterminated string|Expecting"),
    (lambda t: t.replace('"mentions": []\n    }', '"mentions": [],\n    }', 1), "Expecting property name"),
    (lambda t: t.replace('"type": "Default"', '"type": Default', 1), "Expecting value"),
    (lambda t: t.rstrip() + " {}", "Extra data"),
    (lambda t: t.replace('"mentions": []\n    }\n  ]', '"mentions": []\n    },\n  ]', 1), "Expecting value"),
])
def test_malformed_json_is_a_clear_error_with_line_and_column(tmp_path, monkeypatch, capsys, read_bytes,
                                                              damage, message):
    text = damage((FIXTURES / "discord_small.json").read_text(encoding="utf-8"))
    src = tmp_path / "x.json"
    src.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    monkeypatch.setattr(discord, "READ_BYTES", read_bytes)
    with pytest.raises(SystemExit):
        discord.main([str(src), "--persona", "vex", "-o", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: {re.escape(str(src))}:(\d+): invalid JSON: ({message}).* \(column (\d+)\)", err), err
    # the same place json.loads reports
    assert err.startswith(f"error: {src}:{expected.value.lineno}: invalid JSON: {expected.value.msg} "
                          f"(column {expected.value.colno})")
    assert not (tmp_path / "o.jsonl").exists()


def test_streamed_json_agrees_with_json_loads_on_damaged_files(tmp_path, monkeypatch):
    """Random cuts, insertions and deletions at random chunk sizes: the streamed parse fails exactly when
    json.loads does (at the same line and column), and otherwise gives the same messages."""
    rng = random.Random(0)
    original = (FIXTURES / "discord_small.json").read_bytes()
    src = tmp_path / "x.json"
    for _ in range(300):
        data = bytearray(original)
        i = rng.randrange(len(data))
        action = rng.choice(("cut", "insert", "delete"))
        if action == "cut":
            del data[i:]
        elif action == "insert":
            data[i:i] = bytes([rng.choice(b'{}[],:"\\ 0a\n')])
        else:
            del data[i]
        src.write_bytes(data)
        monkeypatch.setattr(discord, "READ_BYTES", rng.choice([1, 2, 7, 100, 1 << 16]))
        try:
            expected = json.loads(data.decode("utf-8"))
        except json.JSONDecodeError as err:
            with pytest.raises(InputError) as info:
                list(discord._json_messages(src))
            assert info.value.line == err.lineno and f"invalid JSON: {err.msg} (column {err.colno})" == \
                info.value.message, (bytes(data[max(i - 20, 0):i + 20]), info.value)
            continue
        if isinstance(expected, dict) and isinstance(expected.get("messages"), list):
            assert [m for _, _, m in discord._json_messages(src)] == expected["messages"]
        else:
            with pytest.raises(InputError, match="not a DiscordChatExporter JSON export"):
                list(discord._json_messages(src))


def test_not_an_export_and_bad_bytes(tmp_path, monkeypatch):
    src = tmp_path / "x.json"
    for text in ('[{"author": {}}]', '{"guild": {}, "messages": {"0": {}}}', '{"guild": {}}', '""'):
        src.write_text(text)
        with pytest.raises(InputError, match="not a DiscordChatExporter JSON export") as info:
            list(discord.read_json(src))
        assert info.value.field == "messages"
    src.write_text("")
    with pytest.raises(InputError, match=r"invalid JSON: Expecting value \(column 1\)"):
        list(discord.read_json(src))
    src.write_bytes(b'{"messages": [\n  {"content": "caf\xc3"}\n]}')
    for read_bytes in (1, 5, 1 << 16):
        monkeypatch.setattr(discord, "READ_BYTES", read_bytes)
        with pytest.raises(InputError) as info:
            list(discord.read_json(src))
        assert (info.value.line, info.value.message) == (2, "invalid UTF-8 at byte 33")


def test_large_export_is_converted_in_constant_memory(tmp_path):
    """200k messages (about 190 MiB of JSON): the converter's peak RSS grows by far less than the file."""
    from scripts.bench.data_tools import generate_discord

    src = generate_discord(tmp_path / "big.json", 200_000)
    size_mb = src.stat().st_size / 2**20
    script = ("import resource, sys\n"
              "from data_tools import discord\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "tally, written = discord.convert(sys.argv[1], sys.argv[2], 'Vex')\n"
              "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "print(tally.kept + sum(tally.dropped.values()), written, (after - before) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "o.jsonl")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    messages, written, growth_mb = out.stdout.split()
    assert int(messages) == 200_000 and int(written) > 10_000
    assert float(growth_mb) < size_mb / 10, (growth_mb, size_mb)
