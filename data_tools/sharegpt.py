"""Convert ShareGPT records ({"conversations": [{"from", "value"}, ...]}) to chat messages JSONL.

Input: JSONL, a JSON array (most ShareGPT dumps; read one record at a time) or Parquet, told from the
content; errors name the line (JSONL) or "record N" (array, Parquet).

Also accepted: the key "messages" instead of "conversations", and "role"/"content" instead of
"from"/"value". Role names are normalized: human/user -> user; gpt/assistant/bot/model/chatgpt ->
assistant; system -> system. A conversation must be: optional system first, then user/assistant
alternating, ending with assistant. --system adds a system prompt where a conversation has none.

Nothing else is changed: every text is copied as it is (no stripping, no re-spacing).

  python -m data_tools.sharegpt sharegpt.jsonl -o train.jsonl [--system TEXT] [--force] [--skip-invalid]
"""
import sys

from common.errors import cli
from data_tools._chat import SYSTEM, check_messages, convert_records, invalid, missing, normalize_role, parser


def _pick(mapping, keys):
    """(key, value) of the first of `keys` present in mapping, or (keys[0], None)."""
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return keys[0], None


def to_messages(record, system=None, file=None, line=None, need_reply=True):
    """One ShareGPT record -> {"messages": [...]}, or InputError naming the field; need_reply=False
    also takes a prompt (ending on a user turn)."""
    key, turns = _pick(record, ("conversations", "messages"))
    if turns is None:
        raise missing(record, key, file, line, this="data_tools.sharegpt", list_keys=True)
    if not isinstance(turns, list):
        raise invalid(f"bad {key}", f"expected a list of turns, got {type(turns).__name__}", file, line, key)
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise invalid("bad turn", f"expected an object, got {type(turn).__name__}", file, line, f"{key}[{i}]")
        role_key, role = _pick(turn, ("from", "role"))
        if role is None:
            raise invalid("missing role", "missing role ('from' or 'role')", file, line, f"{key}[{i}].{role_key}")
        content_key, content = _pick(turn, ("value", "content"))
        if not isinstance(content, str):
            raise invalid("bad content", f"expected a string, got {type(content).__name__}",
                          file, line, f"{key}[{i}].{content_key}")
        messages.append({"role": normalize_role(role, file, line, f"{key}[{i}].{role_key}"), "content": content})
    check_messages(messages, file, line, key, need_reply=need_reply)
    if system and messages[0]["role"] != SYSTEM:
        messages.insert(0, {"role": SYSTEM, "content": system})
    return {"messages": messages}


@cli
def main(argv=None):
    p = parser("data_tools.sharegpt", __doc__)
    p.add_argument("--system", help="system prompt added to conversations that have none")
    args = p.parse_args(argv)
    tally = convert_records(args.src, args.output, lambda rec, file, line: to_messages(rec, args.system, file, line),
                          force=args.force, skip_invalid=args.skip_invalid)
    tally.report(f"sharegpt -> {args.output}", sys.stderr)


if __name__ == "__main__":
    main()
