"""Convert QA records ({"question", "answer_keywords": [...], "answer"?}) to chat messages JSONL.

Input: JSONL, a JSON array, Parquet or CSV (answer column only: a CSV cell holds no list), told from the content.

The user turn is the question; the assistant turn is `answer` when present, else the keywords
joined with ", ". Every record gets the system prompt (--system; --system "" for none).

Nothing else is changed: every text is copied as it is (no stripping, no re-spacing).

  python -m data_tools.qa qa.jsonl -o train.jsonl [--system TEXT] [--force] [--skip-invalid]
"""
import sys

from common.errors import cli
from data_tools._chat import (ASSISTANT, USER, check_encodable, convert_records, invalid, messages_record, missing,
                              parser, shown, text_field)

SYSTEM_PROMPT = "Answer the question briefly, using the key terms."


def _keywords(record, file, line):
    keywords = record.get("answer_keywords")
    if keywords is None:
        return None
    if not isinstance(keywords, list) or not keywords:
        raise invalid("bad answer_keywords", "expected a non-empty list of strings", file, line, "answer_keywords")
    for i, keyword in enumerate(keywords):
        if not isinstance(keyword, str) or not keyword.strip():
            raise invalid("bad answer_keywords", f"expected a non-empty string, got {shown(keyword)}",
                          file, line, f"answer_keywords[{i}]")
        check_encodable(keyword, file, line, f"answer_keywords[{i}]")
    return keywords


def to_messages(record, system=SYSTEM_PROMPT, file=None, line=None, need_reply=True):
    """One QA record -> {"messages": [...]}, or InputError naming the field.

    `answer` is required only when there are no answer_keywords; a blank answer falls back to them.
    need_reply=False: a record with neither is a prompt (no assistant turn).
    """
    if record.get("question") is None:
        raise missing(record, "question", file, line, this="data_tools.qa")
    question = text_field(record, "question", file, line)
    keywords = _keywords(record, file, line)
    answer = text_field(record, "answer", file, line, required=need_reply and keywords is None)
    if answer is None or not answer.strip():
        answer = ", ".join(keywords) if keywords else None
    reply = [(ASSISTANT, answer)] if answer is not None else []
    return messages_record([(USER, question)] + reply, system, file, line, need_reply)


def convert_file(src, dst, system=SYSTEM_PROMPT, force=False, skip_invalid=False):
    """Convert a QA JSONL file to messages JSONL atomically; returns the Tally."""
    return convert_records(src, dst, lambda rec, file, line: to_messages(rec, system, file, line),
                         force=force, skip_invalid=skip_invalid)


@cli
def main(argv=None):
    p = parser("data_tools.qa", __doc__)
    p.add_argument("--system", default=SYSTEM_PROMPT, help=f"system prompt (default: {SYSTEM_PROMPT!r})")
    args = p.parse_args(argv)
    tally = convert_file(args.src, args.output, args.system, args.force, args.skip_invalid)
    tally.report(f"qa -> {args.output}", sys.stderr)


if __name__ == "__main__":
    main()
