"""data_tools.discord: persona windows from a DiscordChatExporter JSON export or a simple CSV."""
import json
import re

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
