"""Bad input never crashes a tool: the corpus in tests/bad_inputs/ through the real CLIs (subprocesses),
and properties of the ShareGPT and RPG converters (any valid record converts and keeps its text).

The corpus table and the checks are in tests/bad_inputs/corpus.py; `python -m tests.bad_inputs.report`
prints the same per-tool counts as test_no_tool_crashed_and_counts_per_tool.
"""
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools import _chat, rpg, sharegpt
from tests.bad_inputs import corpus

JSONL_TOOLS = ("alpaca", "sharegpt", "qa", "rpg", "filter", "stats")
COMMON = {"invalid-syntax", "invalid-utf8", "missing-field", "wrong-type", "empty-file"}
# what the issue asks of every tool; roles and turn order only where the input has them
REQUIRED = {
    **{tool: COMMON | {"huge", "empty-value"} for tool in ("alpaca", "qa", "rpg")},
    "sharegpt": COMMON | {"huge", "empty-conversation", "unknown-role", "non-alternating", "empty-value"},
    "filter": COMMON | {"huge", "empty-conversation", "unknown-role", "non-alternating", "mixed"},
    "stats": COMMON | {"huge", "empty-conversation", "unknown-role", "non-alternating", "mixed"},
    "discord-json": COMMON | {"huge", "out-of-order", "bad-structure"},
    "discord-csv": COMMON | {"huge", "huge-invalid", "out-of-order"},
    "cpu_run": COMMON | {"typo-key", "bad-structure", "huge-invalid"},
    "check_recipes": COMMON | {"typo-key", "bad-structure", "huge-invalid"},
}


@pytest.fixture(scope="module")
def results():
    """Every case, run once (in parallel): {case id: [strict result, --skip-invalid result]}. The work
    folder (~1 GB of 50 MB inputs and outputs) is removed at once, not kept with pytest's tmp dirs."""
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as work:
        return corpus.run_all(corpus.CASES, work)


def test_corpus_covers_what_the_issue_asks_of_every_tool():
    assert set(REQUIRED) == set(corpus.TOOLS)
    for tool, kinds in REQUIRED.items():
        have = {c.kind for c in corpus.CASES if c.tool == tool}
        assert kinds <= have, f"{tool} lacks {sorted(kinds - have)}"
    assert {c.kind for c in corpus.CASES} <= set(corpus.KINDS)
    assert len({c.id for c in corpus.CASES}) == len(corpus.CASES)
    for case in corpus.CASES:  # committed inputs exist and stay small
        if ":" not in case.src:
            path = corpus.HERE / case.src
            assert path.is_file() and path.stat().st_size < 4096, case.src


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly_or_skipped_and_counted(case, results):
    runs = results[case.id]
    assert [r.mode for r in runs] == corpus.modes(case)
    for run in runs:
        assert not run.problems, f"{case.id} [{run.mode}] {run.outcome}: {run.problems}\n{run.output[-2000:]}"


def test_no_tool_crashed_and_counts_per_tool(results):
    rows = corpus.summary(results)
    print("\n" + corpus.format_summary(rows))
    for tool, row in rows.items():
        assert row["crash"] == 0, f"{tool} crashed"
        assert row["inputs"] >= 8, f"{tool}: only {row['inputs']} bad inputs"
        if tool in JSONL_TOOLS or tool.startswith("discord"):
            assert row["skipped"] >= 1, f"{tool}: nothing was skipped and counted"
    assert sum(row["runs"] for row in rows.values()) == sum(len(corpus.modes(c)) for c in corpus.CASES)


# --- properties: any valid ShareGPT / RPG record converts and keeps its text ------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
NONBLANK = TEXT.filter(lambda s: s.strip())
USER_NAMES = st.sampled_from(["human", "user", "Human", " USER "])
ASSISTANT_NAMES = st.sampled_from(["gpt", "assistant", "bot", "model", "chatgpt", "GPT"])


def roundtrip(convert, record):
    """Write one record as JSONL, convert the file, read the one record written back."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text(json.dumps(record) + "\n", encoding="utf-8")
        tally = _chat.convert_records(src, dst, convert)
        assert (tally.kept, dict(tally.dropped)) == (1, {})
        with open(dst, encoding="utf-8") as fh:
            (line,) = fh.read().split("\n")[:-1]  # newlines only: U+2028 inside a text is no line break
    return json.loads(line)["messages"]


@settings(max_examples=60, deadline=None, database=None)
@given(system=st.one_of(st.none(), NONBLANK),
       turns=st.lists(st.tuples(USER_NAMES, NONBLANK, ASSISTANT_NAMES, NONBLANK), min_size=1, max_size=4),
       keys=st.sampled_from([("conversations", "from", "value"), ("messages", "role", "content"),
                             ("conversations", "role", "content")]),
       default_system=st.one_of(st.none(), NONBLANK))
def test_any_valid_sharegpt_record_round_trips(system, turns, keys, default_system):
    list_key, role_key, text_key = keys
    raw = ([{role_key: "system", text_key: system}] if system is not None else []) + [
        t for user, question, bot, answer in turns
        for t in ({role_key: user, text_key: question}, {role_key: bot, text_key: answer})]
    messages = roundtrip(lambda r, f, n: sharegpt.to_messages(r, default_system, f, n), {list_key: raw})
    expected = [{"role": "user" if i % 2 == 0 else "assistant", "content": text}
                for i, text in enumerate(t for _, question, _, answer in turns for t in (question, answer))]
    head = system if system is not None else default_system
    assert messages == ([{"role": "system", "content": head}] if head else []) + expected


@settings(max_examples=60, deadline=None, database=None)
@given(task=NONBLANK, output=st.one_of(NONBLANK, st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_any_valid_rpg_record_round_trips(task, output):
    messages = roundtrip(lambda r, f, n: rpg.to_messages(r, f, n), {"task": task, "output": output})
    assert messages == [{"role": "system", "content": rpg.SYSTEM_PROMPT}, {"role": "user", "content": task},
                        {"role": "assistant", "content": output if isinstance(output, str) else str(output)}]
