"""Turn the repo's record formats into chat messages for the eval helpers, through the data_tools converters.

Known records (one JSON object a line), checked as the converters check them:
- messages / ShareGPT: {"messages" | "conversations": [{"role" | "from", "content" | "value"}, ...]}
- QA:         {"question", "answer", "answer_keywords"}   (data_tools.qa's system prompt)
- RPG task:   {"task", "output"}                            (data_tools.rpg's system prompt)
- Alpaca:     {"instruction", "input", "output"}
- prompt:     {"prompt", optional "reference", "system"}   (eval only)
The reply (assistant turn) is optional: without it, a record is a prompt.
"""
from common.errors import InputError
from common.io import read_jsonl
from data_tools import alpaca, qa, rpg, sharegpt
from data_tools._chat import ASSISTANT, USER, messages_record, text_field


def _sharegpt(record, file, line):
    return sharegpt.to_messages(record, None, file, line, need_reply=False)


def _qa(record, file, line):
    return qa.to_messages(record, qa.SYSTEM_PROMPT, file, line, need_reply=False)


def _rpg(record, file, line):
    return rpg.to_messages(record, file, line, need_reply=False)


def _alpaca(record, file, line):
    return alpaca.to_messages(record, None, file, line, need_reply=False)


def _prompt(record, file, line):
    """{"prompt", optional "reference", "system"} -> messages."""
    turns = [(USER, text_field(record, "prompt", file, line))]
    if isinstance(record.get("reference"), str):
        turns.append((ASSISTANT, record["reference"]))
    system = record.get("system") if isinstance(record.get("system"), str) else None
    return messages_record(turns, system, file, line, need_reply=False)


# the key that marks a format -> record to {"messages": [...]}, tried in this order
CONVERTERS = (("messages", _sharegpt), ("conversations", _sharegpt), ("question", _qa), ("task", _rpg),
              ("instruction", _alpaca), ("prompt", _prompt))


def to_messages(record, file=None, line=None):
    """The full conversation of a record (ending on the reference reply where there is one)."""
    for key, convert in CONVERTERS:
        if key in record:
            return convert(record, file, line)["messages"]
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
