"""data_tools.filter: character breaks, empty/short/long turns, exact and near duplicates, length buckets."""
import json

import pytest

from common import ROOT
from data_tools import filter as quality

FIXTURES = ROOT / "tests" / "fixtures" / "data_tools"
SRC = FIXTURES / "filter_input.jsonl"


def read(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def conv(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def test_filter_fixture_drops_each_kind_and_reports_counts(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    quality.main([str(SRC), "-o", str(dst)])
    kept = [r["messages"][-1]["content"] for r in read(dst)]
    source = read(SRC)
    assert read(dst) == [source[i] for i in (0, 5, 7, 8, 9)]  # kept records are written unchanged
    assert kept[1].startswith("As the captain") and kept[2].startswith("She worked as an aide")
    err = capsys.readouterr().err
    assert "kept 5 of 10" in err
    for n, reason in ((2, "character-breaking phrase"), (1, "exact duplicate"), (1, "near duplicate"),
                      (1, "empty turn")):
        assert f"dropped {n}: {reason}" in err


def test_near_duplicates_can_be_turned_off(tmp_path):
    tally = quality.filter_file(SRC, tmp_path / "o.jsonl", quality.Filters(near_dup_threshold=0))
    assert tally.kept == 6 and "near duplicate" not in tally.dropped and tally.dropped["exact duplicate"] == 1


def test_extra_phrase_and_length_limits():
    filters = quality.Filters(quality.BREAKING_PHRASES + ("matey",), min_chars=3, max_chars=40)
    assert filters.drop_reason(conv("Hi", "Ahoy, MATEY!")) == "character-breaking phrase"
    assert filters.drop_reason(conv("Hi", "Ahoy there, sailor.")) == "turn shorter than 3 chars"
    assert filters.drop_reason(conv("Hello", "x" * 41)) == "turn longer than 40 chars"
    assert filters.drop_reason(conv("Hello", "Ahoy there, sailor.")) is None
    # whole words only: "as an aide" is not "as an AI"; user turns are not checked
    assert filters.drop_reason(conv("Speak as an AI.", "She was hired as an aide.")) is None
    assert filters.drop_reason(conv("Hello", "Our galley has an AI-free kitchen.")) is None  # not "as an AI"


def test_near_duplicate_detection_measures_similarity():
    near = quality.NearDuplicates(0.8)
    base = " ".join(f"word{i}" for i in range(60))
    assert near.similarity(base, base + " extra") > 0.9
    assert near.similarity(base, " ".join(f"other{i}" for i in range(60))) < 0.1
    assert near.check_and_add(base) is False
    assert near.check_and_add(base.replace("word59", "changed")) is True
    assert near.check_and_add(" ".join(f"word{i}" for i in range(30, 90))) is False  # about a third in common


def test_length_buckets_cap_records_per_bucket(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [{"messages": conv(f"Question number {i}?", f"Short answer {i}.")} for i in range(5)]
    lines += [{"messages": conv(f"Long question {i}: " + "tell me more " * 20, "Long answer " * 10 + str(i))}
              for i in range(3)]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    quality.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--max-per-length-bucket", "2",
                  "--near-dup-threshold", "0"])
    assert [r["messages"][0]["content"][:6] for r in read(tmp_path / "o.jsonl")] == ["Questi"] * 2 + ["Long q"] * 2
    assert "dropped 4: length bucket full" in capsys.readouterr().err


def test_invalid_records_error_or_are_counted(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": conv("Hi", "Hello")}) + "\n"
                   + json.dumps({"messages": [{"role": "assistant", "content": "Hi"}]}) + "\n"
                   + json.dumps({"text": "not chat"}) + "\n")
    with pytest.raises(SystemExit):
        quality.main([str(src), "-o", str(tmp_path / "o.jsonl")])
    assert f"error: {src}:2: field 'messages[0]': expected user here, got assistant" in capsys.readouterr().err
    quality.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    err = capsys.readouterr().err
    assert "kept 1 of 3" in err and "dropped 1: non-alternating turns" in err and "dropped 1: missing messages" in err


@pytest.mark.parametrize("path", ["tinyllama-discord-persona/data/discord_heldout.jsonl"])
def test_shipped_messages_data_passes_the_filter(path, tmp_path):
    tally = quality.filter_file(ROOT / "recipes" / path, tmp_path / "o.jsonl", quality.Filters())
    assert tally.kept == 15 and not tally.dropped


@pytest.mark.parametrize("module, path", [("rpg", "tinyllama-rpg/data/rpg_train.jsonl"),
                                          ("qa", "tinyllama-qa/data/qa_train.jsonl"),
                                          ("sharegpt", "llama3-character-chat/data/sharegpt_train.jsonl")])
def test_shipped_samples_have_no_false_positives(module, path, tmp_path):
    """Templated tasks (rpg) and a character whose system prompt says 'never say you are an AI' stay in."""
    import importlib

    converted = tmp_path / "c.jsonl"
    importlib.import_module(f"data_tools.{module}").main([str(ROOT / "recipes" / path), "-o", str(converted)])
    tally = quality.filter_file(converted, tmp_path / "o.jsonl", quality.Filters())
    assert not tally.dropped and tally.kept == len(read(converted))
