"""Convert Alpaca records ({"instruction", "input"?, "output"}) to chat messages JSONL.

Input: JSONL, a JSON array (Stanford's alpaca_data.json; read one record at a time), Parquet or CSV with
a header row, told from the content; errors name the line (JSONL, CSV) or "record N" (array, Parquet).

The user turn is the instruction, followed by a blank line and the input when there is one;
the assistant turn is the output. --system adds a system prompt to every record. Records that use
other key names can be mapped with --instruction-key / --input-key / --output-key.

Nothing else is changed: every text is copied as it is (no stripping, no re-spacing).

  python -m data_tools.alpaca alpaca.jsonl -o train.jsonl [--system TEXT] [--force] [--skip-invalid]
"""
import sys

from common.errors import cli
from data_tools._chat import ASSISTANT, USER, convert_records, invalid, messages_record, parser, text_field

# keys that hold the same thing under another name -> which option maps them
SYNONYMS = {
    "instruction": ("prompt", "question", "query", "task"),
    "output": ("response", "answer", "completion", "chosen"),
}
# keys that mean the record is another format this package converts
OTHER_FORMATS = {
    "conversations": "ShareGPT: use python -m data_tools.sharegpt",
    "messages": "already messages JSONL (or ShareGPT: python -m data_tools.sharegpt)",
    "answer_keywords": "QA: use python -m data_tools.qa",
}


def _missing(record, key, kind, option, file, line):
    """InputError for the missing field `key` (an instruction or output) that says what the record looks like."""
    hints = [hint for other, hint in OTHER_FORMATS.items() if other in record]
    hints += [f"it has '{alt}': try {option} {alt}" for alt in SYNONYMS[kind] if alt in record]
    message = "missing required field" + (f"; {hints[0]}" if hints else f" (keys: {', '.join(record) or 'none'})")
    return invalid(f"missing {key}", message, file, line, key)


def to_messages(record, system=None, file=None, line=None, keys=("instruction", "input", "output"),
                need_reply=True):
    """One Alpaca record -> {"messages": [...]}, or InputError naming the field; need_reply=False: the
    output is optional (without it, a prompt)."""
    instruction_key, input_key, output_key = keys
    required = ((instruction_key, "instruction"), (output_key, "output"))
    for key, kind in required if need_reply else required[:1]:
        if record.get(key) is None:
            raise _missing(record, key, kind, f"--{kind}-key", file, line)
    instruction = text_field(record, instruction_key, file, line)
    extra = text_field(record, input_key, file, line, required=False)
    output = text_field(record, output_key, file, line, required=need_reply)
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    reply = [(ASSISTANT, output)] if output is not None else []
    return messages_record([(USER, user)] + reply, system, file, line, need_reply)


@cli
def main(argv=None):
    p = parser("data_tools.alpaca", __doc__)
    p.add_argument("--system", help="system prompt added to every record")
    p.add_argument("--instruction-key", default="instruction")
    p.add_argument("--input-key", default="input")
    p.add_argument("--output-key", default="output")
    args = p.parse_args(argv)
    keys = (args.instruction_key, args.input_key, args.output_key)
    tally = convert_records(args.src, args.output,
                          lambda rec, file, line: to_messages(rec, args.system, file, line, keys),
                          force=args.force, skip_invalid=args.skip_invalid)
    tally.report(f"alpaca -> {args.output}", sys.stderr)


if __name__ == "__main__":
    main()
