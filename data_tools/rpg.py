"""Convert RPG task records ({"task", "output"}) to chat messages JSONL with a fixed system prompt.

Input: JSONL, a JSON array, Parquet or CSV with a header row, told from the content.

The user turn is the task, the assistant turn the output (a number is written as text), and
every record starts with SYSTEM_PROMPT, the prompt the tinyllama-rpg recipe is trained and evaluated with.

Nothing else is changed: every text is copied as it is (no stripping, no re-spacing).

  python -m data_tools.rpg rpg.jsonl -o train.jsonl [--force] [--skip-invalid]
"""
import sys

from common.errors import cli
from data_tools._chat import ASSISTANT, USER, convert_records, messages_record, missing, parser, text_field

SYSTEM_PROMPT = ("This is a task you must complete by returning only the output. "
                 "Do not include explanations, code, or extra text\u2014only the result.")


def to_messages(record, file=None, line=None, need_reply=True):
    """One RPG record -> {"messages": [...]}, or InputError naming the field; need_reply=False: the
    output is optional (without it, a prompt)."""
    for key in ("task", "output") if need_reply else ("task",):
        if record.get(key) is None:
            raise missing(record, key, file, line, this="data_tools.rpg")
    task = text_field(record, "task", file, line)
    output = text_field(record, "output", file, line, required=need_reply, numbers=True)
    reply = [(ASSISTANT, output)] if output is not None else []
    return messages_record([(USER, task)] + reply, SYSTEM_PROMPT, file, line, need_reply)


def convert_file(src, dst, force=False, skip_invalid=False):
    """Convert an RPG task JSONL file to messages JSONL atomically; returns the Tally."""
    return convert_records(src, dst, to_messages, force=force, skip_invalid=skip_invalid)


@cli
def main(argv=None):
    args = parser("data_tools.rpg", __doc__).parse_args(argv)
    tally = convert_file(args.src, args.output, args.force, args.skip_invalid)
    tally.report(f"rpg -> {args.output}", sys.stderr)


if __name__ == "__main__":
    main()
