"""data_tools.discord: persona windows from a DiscordChatExporter JSON export or a simple CSV."""
import csv
import json
import random
import re
import tracemalloc
import subprocess
import sys

import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import common.io
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
    # the persona opens the second conversation: kept, after the opener prompt
    assert second["messages"][1:] == [{"role": "user", "content": discord.OPENER_PROMPT},
                                      {"role": "assistant", "content": "Ahoy, new crew!"},
                                      {"role": "user", "content": "hi all"},
                                      {"role": "assistant", "content": "Welcome aboard, Carol."}]
    err = capsys.readouterr().err
    assert "kept 9 of 17" in err and "kept as opener 1:" in err and "wrote 2 windows" in err
    for n, reason in ((1, "bot"), (2, "system message"), (2, "empty after cleaning"), (1, "no persona reply after it"),
                      (2, "conversation without persona")):
        assert f"dropped {n}: {reason}\n" in err
    assert "speaks first" not in err


def test_drop_openers_keeps_the_old_behaviour_and_opener_prompt_is_used(tmp_path, capsys):
    src = str(FIXTURES / "discord_small.json")
    discord.main([src, "--persona", "vex", "-o", str(tmp_path / "a.jsonl"), "--drop-openers"])
    err = capsys.readouterr().err
    assert "kept 8 of 17" in err and "kept as opener 0:" in err
    assert "dropped 1: persona speaks first (no user turn before it; --drop-openers)" in err
    assert [r["messages"][0]["content"] for r in read(tmp_path / "a.jsonl")] == [
        "hey are you around?\nfound this for the trip", "hi all"]
    discord.main([src, "--persona", "vex", "-o", str(tmp_path / "b.jsonl"), "--opener-prompt", "*walks in*"])
    assert read(tmp_path / "b.jsonl")[1]["messages"][0] == {"role": "user", "content": "*walks in*"}
    with pytest.raises(SystemExit):  # one or the other
        discord.main([src, "--persona", "vex", "-o", str(tmp_path / "c.jsonl"), "--drop-openers",
                      "--opener-prompt", "x"])
    help_text = subprocess.run([sys.executable, "-m", "data_tools.discord", "--help"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    for documented in ("--drop-openers", "--opener-prompt", "(you start the conversation)", "-> :name:",
                       "e-mail", "byte for byte", "mentions"):
        assert documented in help_text


def test_persona_matches_name_nickname_or_id_in_any_case(tmp_path):
    for persona in ("Captain Vex", "VEX", "999"):
        tally, written = discord.convert(FIXTURES / "discord_small.json", tmp_path / f"{persona}.jsonl", persona)
        assert written == 2 and tally.kept == 9 and tally.openers == 1


def test_max_turns_and_gap_shape_the_windows(tmp_path):
    src = FIXTURES / "discord_small.json"
    _, written = discord.convert(src, tmp_path / "a.jsonl", "vex", max_turns=2)
    records = read(tmp_path / "a.jsonl")
    assert written == 4 and all(roles(r) == ["user", "assistant"] for r in records)
    assert records[2]["messages"][0]["content"] == discord.OPENER_PROMPT
    # one long conversation (no gap over 10 hours): a single window of 8 turns, the trailing users dropped
    tally, written = discord.convert(src, tmp_path / "b.jsonl", "vex", gap_minutes=600)
    (record,) = read(tmp_path / "b.jsonl")
    assert len(record["messages"]) == 8 and roles(record)[-1] == "assistant"
    assert tally.dropped["no persona reply after it"] == 2 and tally.openers == 0


def test_csv_input(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    discord.main([str(FIXTURES / "discord_small.csv"), "--persona", "Vex", "-o", str(dst)])
    (record,) = read(dst)
    assert record["messages"] == [
        {"role": "user", "content": "hey, are you around?"},
        {"role": "assistant", "content": "Aye.\r\nWhat do ye need?"},  # the file's newline, kept as written
        {"role": "user", "content": "a map, from"},
        {"role": "assistant", "content": "Ask, he has one."},
    ]
    assert "dropped 1: conversation without persona" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["jsonl", "array", "parquet", "csv"])
def test_a_table_of_messages_in_any_format_gives_the_same_windows(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"author": a, "timestamp": t, "content": c} for a, t, c in (
        ("alice", "2024-03-01T10:00:00+00:00", "hey <@999>, are you around?"),
        ("Vex", "2024-03-01T10:01:00+00:00", "Aye.\nWhat do ye need ?"),
        ("Vex", "2024-03-01T12:00:00+00:00", "Morning , crew…  "),
        ("bob", "2024-03-01T12:01:00+00:00", "morning"),
        ("Vex", "2024-03-01T12:02:00+00:00", "ça marche ?"))]
    src = tmp_path / f"messages.{fmt}"
    if fmt == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "array":
        src.write_text(json.dumps(rows, indent=2))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), src)
    else:
        with open(src, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    tally, written = discord.convert(src, tmp_path / "o.jsonl", "vex")
    assert [r["messages"] for r in read(tmp_path / "o.jsonl")] == [
        [{"role": "user", "content": "hey, are you around?"},
         {"role": "assistant", "content": "Aye.\nWhat do ye need ?"}],
        [{"role": "user", "content": discord.OPENER_PROMPT}, {"role": "assistant", "content": "Morning , crew…  "},
         {"role": "user", "content": "morning"}, {"role": "assistant", "content": "ça marche ?"}],
    ]
    assert (tally.kept, tally.openers, written) == (5, 1, 2)


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
    with pytest.raises(InputError, match="no persona windows"):  # ann skipped, vex's opener dropped
        discord.convert(src, tmp_path / "o.jsonl", "vex", skip_invalid=True, opener=None)
    tally, written = discord.convert(src, tmp_path / "o.jsonl", "vex", skip_invalid=True)
    assert (tally.kept, tally.openers, dict(tally.dropped), written) == (1, 1, {"invalid message": 1}, 1)


def test_json_message_errors_name_the_record(tmp_path):
    export = json.loads((FIXTURES / "discord_small.json").read_text(encoding="utf-8"))
    export["messages"][3]["timestamp"] = "2024-03-01T09:00:00+00:00"
    src = tmp_path / "x.json"
    src.write_text(json.dumps(export, indent=2))
    with pytest.raises(InputError) as info:
        discord.convert(src, tmp_path / "o.jsonl", "vex")
    assert (info.value.file, info.value.line, info.value.field) == (src, "record 4", "messages[3].timestamp")
    assert "earlier" in info.value.message
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
    assert discord.clean("x\n<@1>\n\ny <#2> ,z") == "x\n\ny,z"  # tidied only where something went


@pytest.mark.parametrize("text", [
    "that patch nerfed everything I liked :(", "wait ... what", "ça marche ?", "Quoi ?! Non !",
    "two  spaces\tand a tab", "  leading and trailing  ", "line\r\nwindows\rmac\u2028sep", "\n\nblank lines\n\n",
    "a @ sign and <3", "email-ish a@b but no dot", "www", ":custom: but not <:custom>", "🏴‍☠️ , 👍🏽 ;",
])
def test_clean_keeps_text_without_removable_elements_as_it_is(text):
    assert discord.clean(text) == text


# any character (surrogates aside), weighted towards the ones a tidy-up would touch
TEXT = st.lists(st.one_of(st.characters(blacklist_categories=("Cs",)),
                          st.sampled_from(list(" \t\n\r.,;:!?…()<>@#&*_~`'\"-") + ["😀", "🏴‍☠️", "👍🏽", "ç", "  ", "\r\n"])),
               min_size=1, max_size=60).map("".join)


def _removable(text):
    return any(p.search(text) for p in (discord.MENTION, discord.CUSTOM_EMOJI, discord.URL, discord.EMAIL))


@settings(max_examples=150, deadline=None, database=None)
@given(text=TEXT, other=TEXT)
def test_any_message_without_removable_elements_comes_out_byte_for_byte(text, other):
    """Through the whole converter (export file in, messages JSONL out), not only clean()."""
    assume(text.strip() and other.strip() and not _removable(text) and not _removable(other))
    export = {"messages": [
        {"id": "1", "type": "Default", "timestamp": "2024-03-01T10:00:00+00:00", "content": other,
         "author": {"id": "1", "name": "ann", "isBot": False}},
        {"id": "2", "type": "Default", "timestamp": "2024-03-01T10:01:00+00:00", "content": text,
         "author": {"id": "2", "name": "Vex", "isBot": False}}]}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "x.json", Path(tmp) / "o.jsonl"
        src.write_text(json.dumps(export, ensure_ascii=False, indent=2), encoding="utf-8")
        discord.convert(src, dst, "vex")
        (record,) = read(dst)
    assert record["messages"] == [{"role": "user", "content": other}, {"role": "assistant", "content": text}]
    assert record["messages"][1]["content"].encode() == text.encode()


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

def test_json_export_is_read_as_json_load_does(tmp_path):
    export = json.loads(EXPORT.read_text(encoding="utf-8"))
    src = tmp_path / "x.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(export, ensure_ascii=False).encode("utf-8"))  # one line, a BOM
    assert [m for _, m in discord._export_messages(src)] == export["messages"]
    discord.convert(src, tmp_path / "a.jsonl", "Vex")
    discord.convert(EXPORT, tmp_path / "b.jsonl", "Vex")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize("damage, message, where", [
    (lambda t: t.replace('[]\n    },\n    {', '[]\n    }\n    {', 1), "parse error", "record 2"),
    (lambda t: t[:len(t) // 2], "premature EOF", "record 8"),
    (lambda t: t.replace('"type": "Default"', '"type": Default', 1), "invalid", "record 1"),
    (lambda t: t.rstrip() + " {}", "trailing garbage", None),
    (lambda t: t.replace('"mentions": []\n    }\n  ]', '"mentions": []\n    },\n  ]', 1), "parse error",
     "record 18"),
])
def test_malformed_json_is_a_clear_error_naming_the_record(tmp_path, capsys, damage, message, where):
    text = damage((FIXTURES / "discord_small.json").read_text(encoding="utf-8"))
    src = tmp_path / "x.json"
    src.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(SystemExit):
        discord.main([str(src), "--persona", "vex", "-o", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {src}{':' + where if where else ''}: invalid JSON: ") and message in err, err
    assert "\n" not in err and not (tmp_path / "o.jsonl").exists()


def test_streamed_json_agrees_with_json_loads_on_damaged_files(tmp_path):
    """Random cuts, insertions and deletions: the streamed read fails when json.loads does (with one
    clear InputError), and otherwise gives the same messages."""
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
        try:
            expected = json.loads(data.decode("utf-8"))
        except json.JSONDecodeError:
            with pytest.raises(InputError) as info:
                list(discord.read_messages(src))
            assert "\n" not in str(info.value), str(info.value)
            continue
        if isinstance(expected, dict) and isinstance(expected.get("messages"), list) and expected["messages"]:
            assert [m for _, m in discord._export_messages(src)] == expected["messages"]
        else:
            with pytest.raises(InputError):
                list(discord.read_messages(src))


def test_not_an_export_and_bad_bytes(tmp_path):
    src = tmp_path / "x.json"
    for text in ('{"guild": {}, "messages": {"0": {}}}', '{\n"guild": {}\n}'):
        src.write_text(text)
        with pytest.raises(InputError, match="not a DiscordChatExporter JSON export") as info:
            list(discord.read_messages(src))
        assert info.value.field == "messages"
    src.write_text('{\n"guild": {},\n"messages": []\n}')
    with pytest.raises(InputError, match="'messages' list is empty"):
        list(discord.read_messages(src))
    for text in ("", '""'):
        src.write_text(text)
        with pytest.raises(InputError, match="no records|not a known format"):
            list(discord.read_messages(src))
    src.write_bytes(b'{"messages": [\n  {"content": "ok"},\n  {"content": "caf\xc3"}\n]}')
    with pytest.raises(InputError) as info:
        list(discord.read_messages(src))
    assert (info.value.line, info.value.message) == ("record 2", "invalid UTF-8 in a string")


def test_large_export_is_converted_in_constant_memory(tmp_path, monkeypatch):
    """5k and 20k messages (about 5 and 20 MiB of JSON): the converter's peak Python memory is the same at
    both sizes and far below the file. Output batches of 100 records keep the plateau low enough to see at
    these sizes, as do reads of 64 KiB (1 MiB by default); scripts.bench.data_tools measures RSS at 1M
    messages with the defaults."""
    from data_tools import _formats
    from scripts.bench.data_tools import generate_discord

    monkeypatch.setattr(common.io, "WRITE_BATCH", 100)
    monkeypatch.setattr(_formats, "READ_BYTES", 1 << 16)
    peaks = []
    for n in (5_000, 20_000):
        src = generate_discord(tmp_path / f"{n}.json", n)
        tracemalloc.start()
        try:
            tally, written = discord.convert(src, tmp_path / f"{n}.jsonl", "Vex")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert tally.kept + sum(tally.dropped.values()) == n and written > n // 30
    size = src.stat().st_size
    assert peaks[1] < 1.15 * peaks[0] and peaks[1] < size / 10, (peaks, size)
