"""data_tools converters (alpaca, sharegpt, qa, rpg) and their shared helpers: real files in, real files out."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import ROOT
from common.errors import InputError
from data_tools import _chat, alpaca, qa, rpg, sharegpt

FIXTURES = ROOT / "tests" / "fixtures" / "data_tools"
DATA = ROOT / "recipes"
TOOLS = ["alpaca", "sharegpt", "qa", "rpg", "discord", "filter", "stats"]


def read(path):
    """JSONL records, split on newlines only (str.splitlines would also split inside U+2028 or U+0085)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def fails(main, argv, capsys):
    """Run a CLI that must exit 2; return its one-line stderr message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# --- every tool: --help, output rules -------------------------------------------------------------

@pytest.mark.parametrize("tool", TOOLS)
def test_help_runs_as_module(tool):
    out = subprocess.run([sys.executable, "-m", f"data_tools.{tool}", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"python -m data_tools.{tool}" in out.stdout


def test_existing_output_is_refused_without_force(tmp_path, capsys):
    dst = tmp_path / "train.jsonl"
    dst.write_text("keep me\n")
    err = fails(alpaca.main, [str(FIXTURES / "alpaca_valid.jsonl"), "-o", str(dst)], capsys)
    assert str(dst) in err and "--force" in err
    assert dst.read_text() == "keep me\n"
    alpaca.main([str(FIXTURES / "alpaca_valid.jsonl"), "-o", str(dst), "--force"])
    assert len(read(dst)) == 4


def test_failed_run_leaves_no_output(tmp_path, capsys):
    dst = tmp_path / "out.jsonl"
    fails(alpaca.main, [str(FIXTURES / "alpaca_malformed.jsonl"), "-o", str(dst)], capsys)
    assert not dst.exists() and list(tmp_path.iterdir()) == []


# --- alpaca -------------------------------------------------------------------------------------

def test_alpaca_converts_with_and_without_input(tmp_path, capsys):
    dst = tmp_path / "out.jsonl"
    alpaca.main([str(FIXTURES / "alpaca_valid.jsonl"), "-o", str(dst), "--system", "Be concise."])
    records = read(dst)
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][1]["content"] == ("Rewrite the sentence in the passive voice.\n\n"
                                                    "The cat chased the mouse.")
    assert records[1]["messages"][1]["content"] == "Name three primary colors."
    assert records[2]["messages"][1]["content"] == 'Give a synonym for "happy".'  # empty input
    assert records[3]["messages"][1]["content"] == "Übersetze ins Englische:\nGuten Morgen!"  # blank input
    assert records[3]["messages"][2]["content"] == "Good morning! 🌅"
    assert "kept 4 of 4" in capsys.readouterr().err


def test_alpaca_missing_field_names_file_line_field(tmp_path, capsys):
    src = FIXTURES / "alpaca_malformed.jsonl"
    err = fails(alpaca.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err == f"error: {src}:2: field 'output': missing required field (keys: instruction, input)"


def test_alpaca_suggests_the_mapping_a_record_looks_like():
    with pytest.raises(InputError) as info:
        alpaca.to_messages({"prompt": "Write a haiku.", "response": "Rain..."}, file="x.jsonl", line=4)
    assert (info.value.file, info.value.line, info.value.field) == ("x.jsonl", 4, "instruction")
    assert "--instruction-key prompt" in str(info.value)
    with pytest.raises(InputError, match="data_tools.sharegpt"):
        alpaca.to_messages({"conversations": []})
    with pytest.raises(InputError, match="--output-key answer"):
        alpaca.to_messages({"instruction": "What is 2+2?", "answer": "4"})


def test_alpaca_key_options_map_other_names(tmp_path):
    src = tmp_path / "pr.jsonl"
    src.write_text(json.dumps({"prompt": "Write a haiku.", "response": "Rain on the roof."}) + "\n")
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--instruction-key", "prompt", "--output-key", "response"])
    assert read(tmp_path / "o.jsonl")[0]["messages"][1]["content"] == "Rain on the roof."


def test_alpaca_skip_invalid_counts_each_reason(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    alpaca.main([str(FIXTURES / "alpaca_malformed.jsonl"), "-o", str(dst), "--skip-invalid"])
    assert [r["messages"][1]["content"] for r in read(dst)] == ["Bees help flowers make fruit.", "4"]
    err = capsys.readouterr().err
    assert "kept 2 of 7" in err
    for reason in ("missing output", "invalid JSON", "missing instruction", "not a JSON object", "bad output"):
        assert f"dropped 1: {reason}" in err


# --- malformed files, shared by every converter ---------------------------------------------------

@pytest.mark.parametrize("module", [alpaca, qa, rpg, sharegpt])
def test_empty_file_is_an_error(module, tmp_path, capsys):
    src = FIXTURES / "empty.jsonl"
    err = fails(module.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err == f"error: {src}: no records: the file is empty"
    assert not (tmp_path / "o.jsonl").exists()


def test_invalid_utf8_names_line(tmp_path, capsys):
    src = FIXTURES / "invalid_utf8.jsonl"
    err = fails(alpaca.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err.startswith(f"error: {src}:2: invalid UTF-8 at byte")
    alpaca.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    assert "dropped 1: invalid UTF-8" in capsys.readouterr().err


def test_invalid_json_names_line(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"question": "Q?", "answer": "A."}\n\n{"question": "Q2?", "answer": \n')
    err = fails(qa.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err.startswith(f"error: {src}:3: invalid JSON")


def test_lone_surrogate_is_an_input_error_not_a_crash(tmp_path, capsys):
    src = tmp_path / "s.jsonl"
    src.write_text('{"instruction": "Say \\ud83d", "output": "ok"}\n')
    err = fails(alpaca.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert f"{src}:1: field 'instruction': lone surrogate" in err


def test_everything_dropped_writes_nothing(tmp_path, capsys):
    src = tmp_path / "none.jsonl"
    src.write_text('{"prompt": "x", "response": "y"}\n')
    err = fails(alpaca.main, [str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"], capsys)
    assert "no records left" in err and not (tmp_path / "o.jsonl").exists()


# --- sharegpt -----------------------------------------------------------------------------------

def test_sharegpt_accepts_key_and_role_variants(tmp_path):
    dst = tmp_path / "o.jsonl"
    sharegpt.main([str(FIXTURES / "sharegpt_valid.jsonl"), "-o", str(dst)])
    records = read(dst)
    assert [[m["role"] for m in r["messages"]] for r in records] == [
        ["system", "user", "assistant"],
        ["user", "assistant", "user", "assistant"],
        ["user", "assistant", "user", "assistant"],
        ["user", "assistant"],
    ]
    assert records[1]["messages"][3]["content"] == "Brighter, if the tide agrees."
    assert set(records[3]) == {"messages"}


def test_sharegpt_system_option_only_where_missing(tmp_path):
    dst = tmp_path / "o.jsonl"
    sharegpt.main([str(FIXTURES / "sharegpt_valid.jsonl"), "-o", str(dst), "--system", "Stay in character."])
    systems = [r["messages"][0]["content"] for r in read(dst)]
    assert systems == ["You are Mira, a lighthouse keeper."] + ["Stay in character."] * 3


@pytest.mark.parametrize("record, field, message", [
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "narrator", "value": "..."}]},
     "conversations[1].from", "unknown role 'narrator'"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "human", "value": "?"},
                        {"from": "gpt", "value": "Y"}]},
     "conversations[1]", "expected assistant here, got user"),
    ({"conversations": []}, "conversations", "empty conversation"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                   {"role": "user", "content": "Bye"}]}, "messages[2]", "must end with an assistant turn"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "   "}]},
     "conversations[1].content", "empty content"),
    ({"conversations": [{"from": "human"}]}, "conversations[0].value", "expected a string"),
    ({"chat": []}, "conversations", "missing required field"),
])
def test_sharegpt_errors_name_the_field(record, field, message):
    with pytest.raises(InputError) as info:
        sharegpt.to_messages(record, file="d.jsonl", line=7)
    assert (info.value.file, info.value.line, info.value.field) == ("d.jsonl", 7, field)
    assert message in info.value.message


def test_sharegpt_malformed_file_strict_and_skipped(tmp_path, capsys):
    src = FIXTURES / "sharegpt_malformed.jsonl"
    err = fails(sharegpt.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err.startswith(f"error: {src}:2: field 'conversations[1].from': unknown role 'narrator'")
    sharegpt.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    err = capsys.readouterr().err
    assert "kept 2 of 7" in err
    for n, reason in ((2, "non-alternating turns"), (1, "unknown role"), (1, "empty conversation"),
                      (1, "does not end with assistant")):
        assert f"dropped {n}: {reason}" in err
    assert len(read(tmp_path / "o.jsonl")) == 2


# --- qa and rpg ---------------------------------------------------------------------------------

def test_qa_answer_or_joined_keywords(tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    tally = qa.convert_file(FIXTURES / "qa_malformed.jsonl", dst, skip_invalid=True)
    assert tally.kept == 2
    assert tally.dropped == {"missing question": 1, "bad answer_keywords": 1, "missing answer": 1}
    first, second = read(dst)
    assert first["messages"] == [
        {"role": "system", "content": qa.SYSTEM_PROMPT},
        {"role": "user", "content": "What does error E12 mean?"},
        {"role": "assistant", "content": "The water tank is empty."},
    ]
    assert second["messages"][2]["content"] == "E07, grinder"
    err = fails(qa.main, [str(FIXTURES / "qa_malformed.jsonl"), "-o", str(tmp_path / "x.jsonl")], capsys)
    assert err == f"error: {FIXTURES / 'qa_malformed.jsonl'}:2: field 'question': missing required field"


def test_qa_empty_system_means_none(tmp_path):
    qa.main([str(DATA / "tinyllama-qa/data/qa_heldout.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--system", ""])
    assert all(r["messages"][0]["role"] == "user" for r in read(tmp_path / "o.jsonl"))


def test_rpg_fixed_system_prompt_and_numeric_output(tmp_path, capsys):
    src = FIXTURES / "rpg_malformed.jsonl"
    err = fails(rpg.main, [str(src), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert err == f"error: {src}:2: field 'task': missing required field"
    rpg.main([str(src), "-o", str(tmp_path / "o.jsonl"), "--skip-invalid"])
    (record,) = read(tmp_path / "o.jsonl")
    assert record["messages"][0] == {"role": "system", "content": rpg.SYSTEM_PROMPT}
    assert record["messages"][2] == {"role": "assistant", "content": "6"}
    assert rpg.SYSTEM_PROMPT.endswith("Do not include explanations, code, or extra text\u2014only the result.")


# --- the shipped sample datasets ----------------------------------------------------------------

SAMPLES = [(alpaca, "tinyllama-alpaca/data/alpaca_train.jsonl", 60),
           (alpaca, "tinyllama-alpaca/data/alpaca_heldout.jsonl", 15),
           (qa, "tinyllama-qa/data/qa_train.jsonl", 176),
           (qa, "tinyllama-qa/data/qa_heldout.jsonl", 26),
           (rpg, "tinyllama-rpg/data/rpg_train.jsonl", 290),
           (rpg, "tinyllama-rpg/data/rpg_heldout.jsonl", 60),
           (sharegpt, "llama3-character-chat/data/sharegpt_train.jsonl", 50),
           (sharegpt, "llama3-character-chat/data/sharegpt_heldout.jsonl", 12)]


@pytest.mark.parametrize("module, path, count", SAMPLES, ids=[p for _, p, _ in SAMPLES])
def test_shipped_samples_convert_completely(module, path, count, tmp_path, capsys):
    dst = tmp_path / "o.jsonl"
    module.main([str(DATA / path), "-o", str(dst)])
    records = read(dst)
    assert len(records) == count
    for record in records:
        assert set(record) == {"messages"}
        _chat.check_messages(record["messages"])
    assert f"kept {count} of {count}" in capsys.readouterr().err
    sources = read(DATA / path)
    if module is qa:
        assert [r["messages"][2]["content"] for r in records] == [s["answer"] for s in sources]
    if module is rpg:
        assert [r["messages"][1:] for r in records] == [
            [{"role": "user", "content": s["task"]}, {"role": "assistant", "content": s["output"]}] for s in sources]


def test_qa_cli_is_what_the_quickstart_runs(tmp_path):
    src, dst = DATA / "tinyllama-qa/data/qa_train.jsonl", tmp_path / "data" / "train.jsonl"
    out = subprocess.run([sys.executable, "-m", "data_tools.qa", str(src), "-o", str(dst)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "qa -> " in out.stderr and "kept 176 of 176" in out.stderr
    assert len(read(dst)) == 176


def test_messages_record_rejects_bad_structures():
    with pytest.raises(InputError, match="expected user here, got assistant"):
        _chat.messages_record([(_chat.ASSISTANT, "Hello")])
    with pytest.raises(InputError, match="expected assistant here, got system"):
        _chat.check_messages([{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                              {"role": "assistant", "content": "c"}])
    assert _chat.normalize_role(" GPT ") == "assistant" and _chat.normalize_role("Human") == "user"


# --- properties: any valid record converts and its text survives the round trip ----------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
NONBLANK = TEXT.filter(lambda s: s.strip())


def roundtrip(convert, record):
    """Write one record to a JSONL file, convert it with the real file path, read the result back."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text(json.dumps(record) + "\n", encoding="utf-8")
        _chat.convert_records(src, dst, convert)
        (out,) = read(dst)
    return out["messages"]


@settings(max_examples=60, deadline=None, database=None)
@given(instruction=NONBLANK, extra=st.one_of(st.none(), TEXT), output=NONBLANK, system=st.one_of(st.none(), NONBLANK))
def test_any_valid_alpaca_record_round_trips(instruction, extra, output, system):
    record = {"instruction": instruction, "output": output}
    if extra is not None:
        record["input"] = extra
    messages = roundtrip(lambda r, f, n: alpaca.to_messages(r, system, f, n), record)
    expected_user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    assert messages == ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": expected_user}, {"role": "assistant", "content": output}]


@settings(max_examples=60, deadline=None, database=None)
@given(question=NONBLANK, keywords=st.lists(NONBLANK, min_size=1, max_size=4), answer=st.one_of(st.none(), NONBLANK))
def test_any_valid_qa_record_round_trips(question, keywords, answer):
    record = {"question": question, "answer_keywords": keywords}
    if answer is not None:
        record["answer"] = answer
    messages = roundtrip(lambda r, f, n: qa.to_messages(r, qa.SYSTEM_PROMPT, f, n), record)
    assert messages == [{"role": "system", "content": qa.SYSTEM_PROMPT}, {"role": "user", "content": question},
                        {"role": "assistant", "content": answer if answer is not None else ", ".join(keywords)}]
