"""The bad-input corpus: each converter and each recipe loader against inputs it must refuse clearly.

A case is (tool, input file, expected substring of the error, the line and field the error must name,
what --skip-invalid must do). Every CLI runs as a real subprocess (`python -m ...`) from the repo root.
Without --skip-invalid a bad input must give exactly one line `error: FILE:LINE: field 'F': ...`, exit 2
(scripts.check_recipes: its report line and exit 1, as documented), no "Traceback", and no output file
(nor a `.tmp-*` leftover). With --skip-invalid the bad record must be dropped and counted under its
reason, and kept + dropped must equal the records read (no silent drop); a file-level problem (empty
file, broken JSON document, bad CSV header, invalid UTF-8 in a streamed export) stays an error.

Committed inputs live next to this file (a valid record on lines 1 and 3, the bad one on line 2);
the huge ones (a single 50 MB record) are generated at run time (`huge:NAME`, see HUGE).
Used by tests/test_bad_inputs.py and by `python -m tests.bad_inputs.report`.
"""
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path

from common import ROOT
from common.models import EMBEDDED, local_model

HERE = Path(__file__).resolve().parent
REL = HERE.relative_to(ROOT)

FILE_LEVEL = "file-level"    # with --skip-invalid: the same error (the file as a whole is unusable)
CONVERTS = "converts"        # a valid, extreme input: converts, with and without --skip-invalid
NO_SKIP = None               # not run with --skip-invalid (the tool has no such flag, or the mixed file covers it)
HUGE_BYTES = 50_000_000
STATS_HUGE_BYTES = 1_000_000  # stats tokenizes every record: 50 MB takes ~40 s and ~8 GB of memory


@dataclass(frozen=True)
class Case:
    tool: str
    src: str                  # file under tests/bad_inputs/, or huge:NAME / mixed:NAME made at run time
    kind: str                 # what is wrong (see KINDS)
    expect: str | None        # substring of the error line; None: the input converts
    line: int | str | None = None  # the line the error must name ("record N" for a JSON array or export)
    field: str | None = None  # the field the error must name
    skip: str | None = FILE_LEVEL  # with --skip-invalid: the reason it is counted under, "mixed" (see
    #                                expected_skips), FILE_LEVEL, CONVERTS, or NO_SKIP (not run that way)

    @property
    def id(self):
        return f"{self.tool}:{self.src.split('/')[-1]}"


KINDS = ("invalid-syntax", "invalid-utf8", "not-an-object", "missing-field", "wrong-type", "empty-value",
         "empty-conversation", "unknown-role", "non-alternating", "out-of-order", "lone-surrogate", "empty-file",
         "huge", "huge-invalid", "typo-key", "bad-structure", "mixed")


def _jsonl(tool, name, kind, expect, field=None, skip=None, line=2):
    folder = {"filter": "messages", "stats": "messages"}.get(tool, tool)
    return Case(tool, f"{folder}/{name}.jsonl", kind, expect, line, field, skip)


def _common_jsonl(tool):
    """The cases every JSONL tool shares: broken lines, empty files, a huge record."""
    stats = tool == "stats"
    reason = (lambda r: NO_SKIP) if stats else (lambda r: r)
    cases = [
        _jsonl(tool, "invalid_json", "invalid-syntax", "invalid JSON: ", skip=reason("invalid JSON")),
        _jsonl(tool, "invalid_utf8", "invalid-utf8", "invalid UTF-8 at byte", skip=reason("invalid UTF-8")),
        _jsonl(tool, "not_an_object", "not-an-object", "expected a JSON object", skip=reason("not a JSON object")),
        _jsonl(tool, "lone_surrogate", "lone-surrogate", "lone surrogate", skip=reason("invalid unicode")),
        _jsonl(tool, "empty", "empty-file", "no records: the file is empty", line=None,
               skip=NO_SKIP if stats else FILE_LEVEL),
        Case(tool, f"huge:{'messages' if tool in ('filter', 'stats') else tool}.jsonl", "huge", None, skip=CONVERTS),
    ]
    return [c for c in cases if not (stats and c.kind in ("not-an-object", "lone-surrogate"))]


ALPACA = _common_jsonl("alpaca") + [
    _jsonl("alpaca", "empty_record", "missing-field", "missing required field (keys: none)", "instruction",
           "missing instruction"),
    _jsonl("alpaca", "missing_output", "missing-field", "missing required field", "output", "missing output"),
    _jsonl("alpaca", "prompt_response_keys", "missing-field", "try --instruction-key prompt", "instruction",
           "missing instruction"),
    _jsonl("alpaca", "answer_key", "missing-field", "try --output-key answer", "output", "missing output"),
    _jsonl("alpaca", "sharegpt_record", "missing-field", "use python -m data_tools.sharegpt", "instruction",
           "missing instruction"),
    _jsonl("alpaca", "messages_record", "missing-field", "already messages JSONL", "instruction",
           "missing instruction"),
    _jsonl("alpaca", "instruction_not_string", "wrong-type", "expected a string, got int", "instruction",
           "bad instruction"),
    _jsonl("alpaca", "input_not_string", "wrong-type", "expected a string, got list", "input", "bad input"),
    _jsonl("alpaca", "blank_output", "empty-value", "is empty", "output", "empty output"),
    Case("alpaca", "huge:alpaca_truncated.jsonl", "huge-invalid", "invalid JSON: ", 2, None,
         "invalid JSON"),
    # other formats (told from the content): a JSON array names the record, CSV the line
    Case("alpaca", "alpaca/array_truncated.json", "invalid-syntax", "the array is cut off", "record 3"),
    Case("alpaca", "alpaca/array_not_object.json", "not-an-object", "expected a JSON object, got int", "record 2",
         None, "not a JSON object"),
    Case("alpaca", "alpaca/array_missing_output.json", "missing-field", "missing required field", "record 2",
         "output", "missing output"),
    Case("alpaca", "alpaca/csv_short_row.csv", "invalid-syntax", "invalid CSV: 1 fields, the header has 2", 3,
         None, "bad CSV row"),
    Case("alpaca", "alpaca/mixed_jsonl_array.jsonl", "not-an-object", "expected a JSON object, got list", 2, None,
         "not a JSON object"),
    Case("alpaca", "alpaca/plain.txt", "bad-structure", "not a known format: expected JSONL", 1),
]

SHAREGPT = _common_jsonl("sharegpt") + [
    _jsonl("sharegpt", "alpaca_record", "missing-field", "looks like Alpaca: use python -m data_tools.alpaca",
           "conversations", "missing conversations"),
    _jsonl("sharegpt", "empty_conversation", "empty-conversation", "empty conversation", "conversations",
           "empty conversation"),
    _jsonl("sharegpt", "conversations_not_list", "wrong-type", "expected a list of turns, got str", "conversations",
           "bad conversations"),
    _jsonl("sharegpt", "turn_not_object", "wrong-type", "expected an object, got str", "conversations[0]",
           "bad turn"),
    _jsonl("sharegpt", "value_not_string", "wrong-type", "expected a string, got int", "conversations[0].value",
           "bad content"),
    _jsonl("sharegpt", "unknown_role", "unknown-role", "unknown role 'wizard' (known: assistant, bot",
           "conversations[0].from", "unknown role"),
    _jsonl("sharegpt", "missing_role", "missing-field", "missing role ('from' or 'role')", "conversations[0].from",
           "missing role"),
    _jsonl("sharegpt", "two_user_turns", "non-alternating", "expected assistant here, got user",
           "conversations[1]", "non-alternating turns"),
    _jsonl("sharegpt", "system_not_first", "non-alternating", "expected assistant here, got system",
           "conversations[1]", "non-alternating turns"),
    _jsonl("sharegpt", "starts_with_assistant", "non-alternating", "expected user here, got assistant",
           "conversations[0]", "non-alternating turns"),
    _jsonl("sharegpt", "ends_with_user", "non-alternating", "must end with an assistant turn", "conversations[2]",
           "does not end with assistant"),
    _jsonl("sharegpt", "empty_turn", "empty-value", "empty content", "conversations[1].content", "empty turn"),
    Case("sharegpt", "huge:sharegpt_role.jsonl", "huge-invalid", "unknown role 'xxxxxxxx", 2,
         "conversations[0].from", "unknown role"),
]

QA = _common_jsonl("qa") + [
    _jsonl("qa", "alpaca_record", "missing-field", "looks like Alpaca: use python -m data_tools.alpaca", "question",
           "missing question"),
    _jsonl("qa", "messages_record", "missing-field", "looks like messages JSONL: it needs no conversion",
           "question", "missing question"),
    _jsonl("qa", "missing_question", "missing-field", "missing required field", "question", "missing question"),
    _jsonl("qa", "missing_answer_and_keywords", "missing-field", "missing required field", "answer",
           "missing answer"),
    _jsonl("qa", "keywords_not_list", "wrong-type", "expected a non-empty list of strings", "answer_keywords",
           "bad answer_keywords"),
    _jsonl("qa", "question_not_string", "wrong-type", "expected a string, got list", "question", "bad question"),
    _jsonl("qa", "blank_keyword", "empty-value", "expected a non-empty string, got ' '", "answer_keywords[1]",
           "bad answer_keywords"),
    _jsonl("qa", "blank_question", "empty-value", "is empty", "question", "empty question"),
    Case("qa", "huge:qa_keyword.jsonl", "huge-invalid", "expected a non-empty string, got '    ", 2,
         "answer_keywords[0]", "bad answer_keywords"),
]

RPG = _common_jsonl("rpg") + [
    _jsonl("rpg", "qa_record", "missing-field", "looks like QA: use python -m data_tools.qa", "task", "missing task"),
    _jsonl("rpg", "messages_record", "missing-field", "looks like messages JSONL", "task", "missing task"),
    _jsonl("rpg", "missing_output", "missing-field", "missing required field", "output", "missing output"),
    _jsonl("rpg", "null_output", "missing-field", "missing required field", "output", "missing output"),
    _jsonl("rpg", "output_not_string", "wrong-type", "expected a string, got list", "output", "bad output"),
    _jsonl("rpg", "blank_task", "empty-value", "is empty", "task", "empty task"),
]

# messages JSONL: (file, kind, expected, field, reason) shared by filter and stats
MESSAGES = [
    ("sharegpt_record", "missing-field", "looks like ShareGPT: use python -m data_tools.sharegpt", "messages",
     "missing messages"),
    ("empty_conversation", "empty-conversation", "empty conversation", "messages", "empty conversation"),
    ("messages_not_list", "wrong-type", "expected a list, got dict", "messages", "bad messages"),
    ("content_not_string", "wrong-type", "expected a string, got dict", "messages[0].content", "bad content"),
    ("unknown_role", "unknown-role", "unknown role 'narrator'", "messages[1].role", "unknown role"),
    ("sharegpt_roles", "unknown-role", "convert other role names with python -m data_tools.sharegpt",
     "messages[0].role", "unknown role"),
    ("two_assistant_turns", "non-alternating", "expected user here, got assistant", "messages[2]",
     "non-alternating turns"),
    ("two_system_messages", "non-alternating", "expected user here, got system", "messages[1]",
     "non-alternating turns"),
    ("ends_with_user", "non-alternating", "must end with an assistant turn", "messages[2]",
     "does not end with assistant"),
]
FILTER = _common_jsonl("filter") + [_jsonl("filter", name, kind, expect, fld, reason)
                                    for name, kind, expect, fld, reason in MESSAGES] + [
    _jsonl("filter", "blank_lines", "empty-file", "no records: the file is empty", line=None),
    Case("filter", "mixed:messages.jsonl", "mixed", "expected a string, got dict", 2, "messages[0].content", "mixed"),
]
# stats loads a tokenizer per run (~4 s): the strict runs cover each kind of problem once, and one mixed
# file with every bad line of the messages corpus (not-an-object and lone surrogates included) covers
# --skip-invalid
STATS_ONCE = ("sharegpt_record", "empty_conversation", "content_not_string", "unknown_role", "two_assistant_turns")
STATS = _common_jsonl("stats") + [_jsonl("stats", name, kind, expect, fld, NO_SKIP)
                                  for name, kind, expect, fld, _ in MESSAGES if name in STATS_ONCE] + [
    Case("stats", "mixed:messages.jsonl", "mixed", "expected a string, got dict", 2, "messages[0].content", "mixed"),
]

DISCORD_JSON = [  # an export is read with ijson: errors name the message ("record N", messages[N-1])
    Case("discord-json", "discord/missing_author.json", "missing-field", "expected a message object with an "
         "'author' object", "record 3", "messages[2].author", "invalid message"),
    Case("discord-json", "discord/author_not_object.json", "wrong-type", "with an 'author' object", "record 3",
         "messages[2].author", "invalid message"),
    Case("discord-json", "discord/message_not_object.json", "not-an-object", "expected a message object",
         "record 3", "messages[2].author", "invalid message"),
    Case("discord-json", "discord/content_not_string.json", "wrong-type", "expected a string", "record 3",
         "messages[2].content", "invalid message"),
    Case("discord-json", "discord/bad_timestamp.json", "wrong-type", "expected an ISO 8601 timestamp, got "
         "'yesterday at noon'", "record 3", "messages[2].timestamp", "invalid message"),
    Case("discord-json", "discord/timestamp_out_of_order.json", "out-of-order", "is earlier than the message "
         "before it", "record 3", "messages[2].timestamp", "timestamp out of order"),
    Case("discord-json", "discord/trailing_comma.json", "invalid-syntax", "invalid JSON: parse error", "record 6"),
    Case("discord-json", "discord/unterminated.json", "invalid-syntax", "invalid JSON: ", "record 5"),
    Case("discord-json", "discord/invalid_utf8.json", "invalid-utf8", "invalid UTF-8", "record 3"),
    Case("discord-json", "discord/empty.json", "empty-file", "no records: the file is empty"),
    # a bare JSON array of message objects is a table of messages: here no persona speaks in it
    Case("discord-json", "discord/top_level_list.json", "bad-structure", "no persona windows: is 'Vex' an author"),
    Case("discord-json", "discord/no_messages.json", "missing-field", "no 'messages' list", None, "messages"),
    Case("discord-json", "huge:discord.json", "huge", None, skip=CONVERTS),
]
DISCORD_CSV = [
    Case("discord-csv", "discord/bad_timestamp.csv", "wrong-type", "expected an ISO 8601 timestamp, got "
         "'last tuesday'", 4, "timestamp", "invalid message"),
    Case("discord-csv", "discord/timestamp_out_of_order.csv", "out-of-order", "is earlier than the message "
         "before it", 4, "timestamp", "timestamp out of order"),
    Case("discord-csv", "discord/missing_content.csv", "missing-field", "invalid CSV: 2 fields, the header has 3",
         4, None, "bad CSV row"),
    Case("discord-csv", "discord/missing_column.csv", "missing-field", "CSV header must have the columns "
         "author,timestamp,content", 1, "author"),
    Case("discord-csv", "discord/invalid_utf8.csv", "invalid-utf8", "invalid UTF-8 at byte", 4),
    Case("discord-csv", "discord/unclosed_quote.csv", "invalid-syntax", "is a closing quote missing?", 4),
    Case("discord-csv", "discord/empty.csv", "empty-file", "no records: the file is empty"),
    Case("discord-csv", "discord/header_only.csv", "empty-file", "no records: the CSV has a header row but no rows"),
    Case("discord-csv", "huge:discord.csv", "huge", None, skip=CONVERTS),
    Case("discord-csv", "huge:discord_timestamp.csv", "huge-invalid", "expected an ISO 8601 timestamp, got '2024",
         4, "timestamp", "invalid message"),
]


def _recipe(tool, name, kind, expect, line=None, fld=None):
    return Case(tool, f"{'huge:' if name.startswith('huge:') else 'recipes/'}{name.removeprefix('huge:')}.yml",
                kind, expect, line, fld, NO_SKIP)


RECIPES = {  # name: (kind, line, field, expected from cpu_run, expected from check_recipes)
    "typo_key": ("typo-key", 25, "lora_alhpa", "unknown Axolotl key; did you mean 'lora_alpha'?", None),
    "typo_dataset_key": ("typo-key", 14, "datasets[0].feild_messages",
                         "unknown dataset key; did you mean 'field_messages'?", None),
    "wrong_type": ("wrong-type", 24, "lora_r", "wrong type: Input should be a valid integer",
                   "Axolotl rejects the config: Input should be a valid integer"),
    "dataset_wrong_value": ("wrong-type", 16, "datasets[0].train_on_eos", "Input should be 'all', 'turn', 'last'",
                            None),
    "base_model_not_string": ("wrong-type", 7, "base_model", "wrong type: Input should be a valid string",
                              "expected a model id or path, got float"),
    "datasets_not_list": ("wrong-type", 11, "datasets", "expected a list of datasets", None),
    "missing_base_model": ("missing-field", None, "base_model", "missing", None),
    "invalid_yaml": ("invalid-syntax", 30, None, "invalid YAML: expected ',' or ']'", None),
    "tab_indented": ("invalid-syntax", 13, None, "invalid YAML: found character '\\t'", None),
    "invalid_utf8": ("invalid-utf8", 22, None, "invalid UTF-8 at byte", None),
    "empty": ("empty-file", None, None, "the file is empty", "a recipe must be a YAML mapping"),
    "not_a_mapping": ("bad-structure", None, None, "expected a YAML mapping, got list",
                      "a recipe must be a YAML mapping"),
}
# a 5 MB value on one line (50 MB would take PyYAML's pure-Python safe_load ~10 s to parse, per read)
HUGE_RECIPE = ("huge-invalid", 25, "lora_alhpa", "unknown Axolotl key; did you mean 'lora_alpha'?", None)
CPU_RUN = [_recipe("cpu_run", name, kind, cpu, line, fld)
           for name, (kind, line, fld, cpu, _) in {**RECIPES, "huge:typo_key": HUGE_RECIPE}.items()]
CHECK_RECIPES = [_recipe("check_recipes", name, kind, check or cpu, line, fld)
                 for name, (kind, line, fld, cpu, check) in {**RECIPES, "huge:typo_key": HUGE_RECIPE}.items()]

CASES = ALPACA + SHAREGPT + QA + RPG + FILTER + STATS + DISCORD_JSON + DISCORD_CSV + CPU_RUN + CHECK_RECIPES
TOOLS = ["alpaca", "sharegpt", "qa", "rpg", "discord-json", "discord-csv", "filter", "stats", "cpu_run",
         "check_recipes"]


# --- inputs made at run time --------------------------------------------------------------------

def _big(size):
    unit = "lorem ipsum dolor sit amet, "
    return (unit * (size // len(unit) + 1))[:size]


def _lines(first, middle, last):
    return "\n".join([json.dumps(first), middle, json.dumps(last)]) + "\n"


def _first_and_last(folder):
    lines = (HERE / folder / "invalid_json.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), json.loads(lines[2])


def _huge_jsonl(folder, record, size=HUGE_BYTES):
    first, last = _first_and_last(folder)
    return _lines(first, json.dumps(record(_big(size))), last)


def _huge_discord_json():
    text = (HERE / "discord" / "bad_timestamp.json").read_text(encoding="utf-8")
    export = json.loads(text)
    export["messages"][2].update(timestamp="2024-03-01T18:02:00+00:00", content=_big(HUGE_BYTES))
    return json.dumps(export)


def _huge_discord_csv(column):
    """discord/bad_timestamp.csv with its bad row mended and a 50 MB content, or with a 50 MB timestamp."""
    with open(HERE / "discord" / "bad_timestamp.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if column == "content":
        rows[3][1] = "2024-03-01T18:02:00+00:00"
        rows[1][2] = _big(HUGE_BYTES)
    else:
        rows[3][1] = "2024-03-01T18:02:00+00:00 " + _big(HUGE_BYTES)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _mixed_messages():
    """A valid first and last record around line 2 of every messages case: all the bad lines in one file."""
    first, last = _first_and_last("messages")
    bad = [(HERE / "messages" / f).read_bytes().split(b"\n")[1] for f in sorted(os.listdir(HERE / "messages"))
           if f not in ("empty.jsonl", "blank_lines.jsonl")]
    return b"\n".join([json.dumps(first).encode(), *bad, json.dumps(last).encode()]) + b"\n"


HUGE = {
    "alpaca.jsonl": lambda: _huge_jsonl("alpaca", lambda big: {"instruction": "Summarize this.", "output": big}),
    "alpaca_truncated.jsonl": lambda: _lines(*_first_and_last("alpaca")[:1], json.dumps(
        {"instruction": "Summarize this.", "output": _big(HUGE_BYTES)})[:-2], _first_and_last("alpaca")[1]),
    "sharegpt.jsonl": lambda: _huge_jsonl("sharegpt", lambda big: {"conversations": [
        {"from": "human", "value": "Tell me everything."}, {"from": "gpt", "value": big}]}),
    "sharegpt_role.jsonl": lambda: _huge_jsonl("sharegpt", lambda big: {"conversations": [
        {"from": "x" * len(big), "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}),
    "qa.jsonl": lambda: _huge_jsonl("qa", lambda big: {"question": big, "answer_keywords": ["lorem"]}),
    "qa_keyword.jsonl": lambda: _huge_jsonl("qa", lambda big: {"question": "Why?",
                                                                "answer_keywords": [" " * len(big)]}),
    "rpg.jsonl": lambda: _huge_jsonl("rpg", lambda big: {"task": big, "output": 1}),
    "messages.jsonl": lambda: _huge_jsonl("messages", lambda big: {"messages": [
        {"role": "user", "content": "Tell me everything."}, {"role": "assistant", "content": big}]}),
    "stats:messages.jsonl": lambda: _huge_jsonl("messages", lambda big: {"messages": [
        {"role": "user", "content": "Tell me everything."}, {"role": "assistant", "content": big}]},
        STATS_HUGE_BYTES),
    "discord.json": _huge_discord_json,
    "discord.csv": lambda: _huge_discord_csv("content"),
    "discord_timestamp.csv": lambda: _huge_discord_csv("timestamp"),
    "mixed:messages.jsonl": _mixed_messages,
    "typo_key.yml": lambda: (HERE / "recipes" / "typo_key.yml").read_text(encoding="utf-8").replace(
        "lora_alhpa: 32", f'lora_alhpa: "{"4" * (HUGE_BYTES // 10)}"'),
}


def materialize(case, work):
    """The input path of a case (relative to the repo root for committed files)."""
    prefix, _, name = case.src.partition(":")
    if not name:
        return str(REL / case.src)
    key = f"stats:{name}" if case.tool == "stats" and prefix == "huge" else (
        case.src if prefix == "mixed" else name)
    path = Path(work) / "inputs" / key.replace(":", "-")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = HUGE[key]()
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        tmp.replace(path)
    return str(path)


def expected_skips(case):
    """{reason: n} the --skip-invalid run must report."""
    if case.skip == "mixed":
        return Counter(reason for _, _, _, _, reason in MESSAGES) + Counter(
            {"invalid JSON": 1, "invalid UTF-8": 1, "not a JSON object": 1, "invalid unicode": 1})
    if isinstance(case.skip, str) and case.skip not in (FILE_LEVEL, CONVERTS):
        return Counter({case.skip: 1})
    return Counter()


# --- running --------------------------------------------------------------------------------------

def command(case, src, out):
    smollm2 = str(local_model(EMBEDDED))
    module = {"discord-json": "data_tools.discord", "discord-csv": "data_tools.discord", "cpu_run": "scripts.cpu_run",
              "check_recipes": "scripts.check_recipes"}.get(case.tool, f"data_tools.{case.tool}")
    argv = [sys.executable, "-m", module, src]
    if case.tool.startswith("discord"):
        argv += ["--persona", "Vex", "-o", out]
    elif case.tool == "stats":
        argv += ["--tokenizer", smollm2, "--sequence-len", "256", "--json", out]
    elif case.tool == "cpu_run":
        argv += ["--dry-run"]
    elif case.tool != "check_recipes":
        argv += ["-o", out]
    return argv


@dataclass
class Result:
    case: Case
    mode: str                 # "strict" or "skip"
    rc: int
    output: str               # stdout + stderr
    problems: list = default(default_factory=list)
    outcome: str = ""         # "error", "skipped", "converted", "crash"
    seconds: float = 0.0

    @property
    def crashed(self):
        return self.outcome == "crash"


def records_read(case, src):
    """How many records a tool reads from src (the denominator of kept + dropped)."""
    path = Path(src) if Path(src).is_absolute() else ROOT / src
    if case.tool == "discord-json":
        return len(json.loads(path.read_text(encoding="utf-8"))["messages"])
    if case.tool != "discord-json" and path.suffix == ".json":  # a JSON array: its elements
        return len(json.loads(path.read_text(encoding="utf-8")))
    if case.tool == "discord-csv" or path.suffix == ".csv":
        csv.field_size_limit((1 << 31) - 1)
        with open(path, encoding="utf-8", newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    with open(path, "rb") as fh:
        return sum(1 for raw in fh if raw.strip())


def _error_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("error: ")]


def judge(case, mode, rc, output, src, out):
    """Compare one run with the case's expectations; returns a Result with its problems listed."""
    result = Result(case, mode, rc, output)
    problems = result.problems
    if "Traceback" in output or rc < 0 or rc not in (0, 1, 2):
        result.outcome = "crash"
        last = output.strip().splitlines()[-1][:300] if output.strip() else "no output"
        problems.append(f"crashed (exit {rc}): {last}")
        return result
    out_path = Path(out)
    leftovers = [p.name for p in out_path.parent.glob(f".tmp-{out_path.name}-*")] if out else []
    if leftovers:
        problems.append(f"temporary output left behind: {leftovers}")
    wants_error = case.expect is not None and not (mode == "skip" and case.skip not in (FILE_LEVEL, NO_SKIP))
    if wants_error:
        result.outcome = "error"
        error_rc = 1 if case.tool == "check_recipes" else 2
        if rc != error_rc:
            problems.append(f"exit {rc}, expected {error_rc}")
        lines = _error_lines(output)
        needles = [(src, "the file"), (case.expect, "the expected message")]
        if case.line is not None:
            needles.append((f"{src}:{case.line}: ", f"line {case.line}" if isinstance(case.line, int) else case.line))
        if case.field is not None:
            needles.append((f"field '{case.field}'", f"field {case.field}"))
        # a CLI stops at the first bad input: one error line; scripts.check_recipes reports every problem
        # of a recipe, one line each: one of them must be this one
        if len(lines) != 1 and not (case.tool == "check_recipes" and lines):
            problems.append(f"expected one error line, got {len(lines)}: {lines[:3]}")
            return result
        line = next((ln for ln in lines if all(n in ln for n, _ in needles)), lines[0])
        for needle, what in needles:
            if needle not in line:
                problems.append(f"error line does not name {what} ({needle!r}): {line[:300]}")
        if max(map(len, lines)) > 1000:
            problems.append(f"an error line is {max(map(len, lines))} characters long")
        if out and out_path.exists():
            problems.append(f"an output was written although the run failed: {out}")
        return result
    # the run must succeed: converted, with every record read either kept or counted as dropped
    if rc != 0:
        problems.append(f"exit {rc}, expected 0: {output.strip().splitlines()[-1][:300] if output.strip() else ''}")
        result.outcome = "error"
        return result
    if out and not out_path.exists():
        problems.append("no output written")
    read = records_read(case, src)
    match = re.search(r"kept (\d+) of (\d+)", output)
    dropped = Counter({reason: int(n) for n, reason in re.findall(r"^\s+dropped (\d+): (.+)$", output, re.M)})
    if case.tool == "stats" and out_path.exists():
        kept, total = json.loads(out_path.read_text())["count"], read
        if match:
            kept, total = int(match.group(1)), int(match.group(2))
    elif match:
        kept, total = int(match.group(1)), int(match.group(2))
    else:
        problems.append("no 'kept N of M' line in the report")
        return result
    if total != read:
        problems.append(f"the report counts {total} records, the file has {read}")
    if kept + sum(dropped.values()) != read:
        problems.append(f"silent drop: kept {kept} + dropped {sum(dropped.values())} != {read} records read")
    want = expected_skips(case)
    if dropped != want:
        problems.append(f"dropped {dict(dropped)}, expected {dict(want)}")
    if case.tool in ("alpaca", "sharegpt", "qa", "rpg", "filter") and out_path.exists():
        with open(out_path, "rb") as fh:
            written = sum(1 for _ in fh)
        if written != kept:
            problems.append(f"{written} records written, {kept} kept")
    result.outcome = "skipped" if dropped else "converted"
    if case.kind == "huge" and out_path.exists() and case.tool != "stats":
        size = STATS_HUGE_BYTES if case.tool == "stats" else HUGE_BYTES
        if out_path.stat().st_size < size:
            problems.append(f"the {size}-character record did not survive: output is {out_path.stat().st_size} bytes")
    return result


def modes(case):
    """strict, and --skip-invalid where the tool has it (a valid huge input is converted once; the mixed
    file only with --skip-invalid: strict, it stops at its first line, messages/content_not_string)."""
    if case.kind == "mixed":
        return ["skip"]
    return ["strict"] + ([] if case.skip is NO_SKIP or case.skip == CONVERTS else ["skip"])


def run_one(case, mode, work, env):
    src = materialize(case, work)
    out_dir = Path(work) / "out" / re.sub(r"[^\w.-]", "_", f"{case.id}-{mode}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = "" if case.tool in ("cpu_run", "check_recipes") else str(
        out_dir / ("stats.json" if case.tool == "stats" else "out.jsonl"))
    argv = command(case, src, out) + (["--skip-invalid"] if mode == "skip" else [])
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=300)
    result = judge(case, mode, proc.returncode, proc.stdout + proc.stderr, src, out)
    result.seconds = time.monotonic() - start
    return result


def run_check_recipes(cases, work, env):
    """scripts.check_recipes takes many recipes: one run for all of them (Axolotl loads once); each
    recipe's report lines ('error: RECIPE:...', 'FAILED (...): RECIPE') are judged on their own."""
    srcs = [materialize(case, work) for case in cases]
    argv = [sys.executable, "-m", "scripts.check_recipes", *srcs]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=600)
    output = proc.stdout + proc.stderr
    results = []
    for case, src in zip(cases, srcs):
        lines = output.splitlines()
        failed = f"): {src}" in [ln[ln.find("): "):] for ln in lines if ln.startswith("FAILED (")]
        mine = [ln for ln in lines if ln.startswith(f"error: {src}:") or "Traceback" in ln]
        result = judge(case, "strict", proc.returncode if failed else 0, "\n".join(mine), src, "")
        result.seconds = (time.monotonic() - start) / len(cases)
        results.append(result)
    return results


def run_all(cases, work, workers=None):
    """Run every case (and its --skip-invalid run) in parallel; returns {case.id: [Result, ...]}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    Path(work).mkdir(parents=True, exist_ok=True)
    for case in cases:  # make the big inputs first, one at a time
        if ":" in case.src:
            materialize(case, work)
    results = {case.id: [] for case in cases}
    recipes = [c for c in cases if c.tool == "check_recipes"]
    jobs = [(c, m) for c in cases if c.tool != "check_recipes" for m in modes(c)]
    jobs.sort(key=lambda job: job[0].tool != "stats")  # the slow ones first
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
        recipe_future = pool.submit(run_check_recipes, recipes, work, env) if recipes else None
        futures = [pool.submit(run_one, case, mode, work, env) for case, mode in jobs]
        for future in futures:
            result = future.result()
            results[result.case.id].append(result)
        if recipe_future:
            for result in recipe_future.result():
                results[result.case.id].append(result)
    return results


def summary(results):
    """Per tool: bad inputs tried, runs, clear errors, skipped and counted, converted, crashes, other problems."""
    rows = {tool: Counter() for tool in TOOLS}
    for case_results in results.values():
        for r in case_results:
            row = rows[r.case.tool]
            row["runs"] += 1
            row[r.outcome] += 1
            row["failed"] += bool(r.problems) and not r.crashed
        if case_results:
            rows[case_results[0].case.tool]["inputs"] += 1
    return rows


def format_summary(rows):
    head = f"{'tool':<14}{'bad inputs':>11}{'runs':>6}{'clear error':>13}{'skipped+counted':>17}{'converted':>11}" \
           f"{'crashed':>9}{'failed':>8}"
    lines = [head, "-" * len(head)]
    total = Counter()
    for tool, row in rows.items():
        total.update(row)
        lines.append(f"{tool:<14}{row['inputs']:>11}{row['runs']:>6}{row['error']:>13}{row['skipped']:>17}"
                     f"{row['converted']:>11}{row['crash']:>9}{row['failed']:>8}")
    lines.append(f"{'total':<14}{total['inputs']:>11}{total['runs']:>6}{total['error']:>13}{total['skipped']:>17}"
                 f"{total['converted']:>11}{total['crash']:>9}{total['failed']:>8}")
    return "\n".join(lines)
