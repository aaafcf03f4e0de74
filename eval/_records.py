"""Turn the repo's record formats into chat messages for the eval helpers.

Known records (one JSON object a line):
- messages:   {"messages": [{"role", "content"}, ...]}
- ShareGPT:   {"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...]}
- QA:         {"question", "answer", "answer_keywords"}   (system prompt: QA_SYSTEM)
- RPG task:   {"task", "output"}                            (system prompt: RPG_SYSTEM)
- Alpaca:     {"instruction", "input", "output"}
- prompt:     {"prompt", optional "reference", "system"}
"""
from common.errors import InputError
from common.io import read_jsonl

DEFAULT_QA_SYSTEM = "Answer the question briefly, using the key terms."
DEFAULT_RPG_SYSTEM = ("This is a task you must complete by returning only the output. "
                      "Do not include explanations, code, or extra text\u2014only the result.")
SYSTEM_NAMES = ("SYSTEM_PROMPT", "SYSTEM", "DEFAULT_SYSTEM", "QA_SYSTEM", "DEFAULT_QA_SYSTEM")


def converter_system(module, default):
    """The system prompt a data_tools converter trains with, so evaluation prompts match training ones;
    `default` (kept identical to it) when the converter is not there."""
    import importlib

    try:
        mod = importlib.import_module(f"data_tools.{module}")
    except ImportError:
        return default
    for name in SYSTEM_NAMES:
        value = getattr(mod, name, None)
        if isinstance(value, str):
            return value
    return default


QA_SYSTEM = converter_system("qa", DEFAULT_QA_SYSTEM)
RPG_SYSTEM = converter_system("rpg", DEFAULT_RPG_SYSTEM)

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "bot": "assistant"}


def _check_messages(messages, file, line, field="messages"):
    if not isinstance(messages, list) or not messages:
        raise InputError("expected a non-empty list of messages", file, line, field)
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise InputError("each message needs a role (system/user/assistant) and string content",
                             file, line, f"{field}[{n}]")
        if m["role"] == "system" and n != 0:
            raise InputError("a system message may only come first", file, line, f"{field}[{n}]")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _sharegpt(turns, file, line):
    if not isinstance(turns, list):
        raise InputError("expected a list of turns", file, line, "conversations")
    messages = []
    for n, t in enumerate(turns):
        role = SHAREGPT_ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None or not isinstance(t.get("value"), str):
            raise InputError("each turn needs 'from' (system/human/gpt) and a string 'value'",
                             file, line, f"conversations[{n}]")
        messages.append({"role": role, "content": t["value"]})
    return _check_messages(messages, file, line, "conversations")


def _text(record, key, file, line):
    value = record.get(key)
    if not isinstance(value, str):
        raise InputError("expected a string", file, line, key)
    return value


def to_messages(record, file=None, line=None):
    """The full conversation of a record (ending on the reference reply where there is one)."""
    if "messages" in record:
        return _check_messages(record["messages"], file, line)
    if "conversations" in record:
        return _sharegpt(record["conversations"], file, line)
    if "question" in record:
        messages = [{"role": "system", "content": QA_SYSTEM},
                    {"role": "user", "content": _text(record, "question", file, line)}]
        if "answer" in record:
            messages.append({"role": "assistant", "content": _text(record, "answer", file, line)})
        return messages
    if "task" in record:
        messages = [{"role": "system", "content": RPG_SYSTEM},
                    {"role": "user", "content": _text(record, "task", file, line)}]
        if "output" in record:
            messages.append({"role": "assistant", "content": _text(record, "output", file, line)})
        return messages
    if "instruction" in record:
        user = _text(record, "instruction", file, line)
        extra = record.get("input")
        if extra is not None and _text(record, "input", file, line).strip():  # as data_tools.alpaca does
            user += "\n\n" + extra
        messages = [{"role": "user", "content": user}]
        if "output" in record:
            messages.append({"role": "assistant", "content": _text(record, "output", file, line)})
        return messages
    if "prompt" in record:
        messages = [{"role": "user", "content": _text(record, "prompt", file, line)}]
        if isinstance(record.get("system"), str):
            messages.insert(0, {"role": "system", "content": record["system"]})
        if isinstance(record.get("reference"), str):
            messages.append({"role": "assistant", "content": record["reference"]})
        return messages
    raise InputError("unknown record: expected messages, conversations, question, task, instruction or prompt",
                     file, line)


def split_prompt(messages):
    """(prompt messages ending on a user turn, reference reply or None)."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def with_system(messages, system):
    """Messages with `system` as the system prompt (replacing one already there); None keeps them."""
    if system is None:
        return messages
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return [{"role": "system", "content": system}] + rest


def read_records(path, limit=None):
    """[(line, record)] from a JSONL file, at most `limit`."""
    out = []
    for line, record in read_jsonl(path):
        out.append((line, record))
        if limit and len(out) >= limit:
            break
    if not out:
        raise InputError("no records", path)
    return out


def read_conversations(path, limit=None, need_reply=True):
    """[messages] from a JSONL file of any known record format; with need_reply, each must end on assistant."""
    out = []
    for line, record in read_records(path, limit):
        messages = to_messages(record, path, line)
        if need_reply and (messages[-1]["role"] != "assistant"):
            raise InputError("the conversation has no assistant reply to score", path, line)
        out.append(messages)
    return out
