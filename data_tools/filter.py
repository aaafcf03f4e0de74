"""Quality filters for messages records; kept records are written unchanged, drops are counted per reason.

Input: messages JSONL, a JSON array or Parquet of {"messages": [...]} records, told from the content;
output: messages JSONL.

Checks, in this order; the first that fails drops the record:
  character-breaking phrase  an assistant turn contains one of BREAKING_PHRASES or a --phrase
                             (any case, whole words)
  empty turn                 a blank user or assistant turn
  turn shorter/longer than   --min-chars / --max-chars on user and assistant turns (off by default)
  exact duplicate            the same conversation, system prompt included, after lower-casing and
                             collapsing whitespace
  near duplicate             user+assistant text with a 5-word-shingle Jaccard similarity (MinHash
                             estimate) of at least --near-dup-threshold to a kept record (default 0.8; 0: off;
                             over the first 100,000 characters of a record)
  length bucket full         with --max-per-length-bucket N, at most N records per length bucket
                             (buckets double in size: 1-1, 2-3, 4-7, ... characters of user+assistant text)

  python -m data_tools.filter train.jsonl -o clean.jsonl [--phrase TEXT ...] [--min-chars N]
      [--max-chars N] [--near-dup-threshold 0.8] [--max-per-length-bucket N] [--force] [--skip-invalid]
"""
import hashlib
import re
import sys
from collections import Counter

import numpy as np

from common.errors import cli
from data_tools._chat import ASSISTANT, SYSTEM, Drop, convert_records, parser, record_messages

BREAKING_PHRASES = (
    "as an AI",
    "I'm an AI",
    "I am an AI",
    "I'm just an AI",
    "I'm an AI language model",
    "as a language model",
    "as an AI language model",
    "as a large language model",
    "I am a language model",
    "I'm a language model",
    "I cannot roleplay",
    "I can't roleplay",
    "I'm not able to roleplay",
    "I don't have personal opinions",
    "I do not have personal opinions",
    "I don't have feelings",
    "I was trained by",
    "my training data",
    "OpenAI",
)
NEAR_DUP_CHARS = 100_000  # MinHash over this much of a record: a 50 MB record would take ~30 s
PRIME = (1 << 31) - 1  # keeps a*x + b inside uint64 for a, b, x < PRIME


def normalize(text):
    return " ".join(text.replace("\u2019", "'").lower().split())


class NearDuplicates:
    """MinHash over word shingles with LSH banding: finds kept texts with Jaccard similarity >= threshold."""

    def __init__(self, threshold, num_perm=128, bands=32, shingle=5, seed=0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, PRIME, num_perm, dtype=np.uint64)[:, None]
        self.b = rng.integers(0, PRIME, num_perm, dtype=np.uint64)[:, None]
        self.threshold, self.shingle, self.rows = threshold, shingle, num_perm // bands
        self.tables = [{} for _ in range(bands)]
        self.signatures = []

    def signature(self, text):
        text = text[:NEAR_DUP_CHARS]
        words = re.findall(r"\w+", text.lower()) or [text]
        n = min(self.shingle, len(words))
        shingles = {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}
        x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % PRIME
                      for s in shingles], dtype=np.uint64)
        return ((self.a * x + self.b) % PRIME).min(axis=1)

    def similarity(self, text_a, text_b):
        """MinHash estimate of the Jaccard similarity of two texts' shingle sets."""
        return float(np.mean(self.signature(text_a) == self.signature(text_b)))

    def check_and_add(self, text):
        """True if text nearly duplicates a text added before; otherwise remember it and return False."""
        signature = self.signature(text)
        keys = [signature[i:i + self.rows].tobytes() for i in range(0, len(signature), self.rows)]
        candidates = {j for table, key in zip(self.tables, keys) for j in table.get(key, ())}
        if any(np.mean(self.signatures[j] == signature) >= self.threshold for j in candidates):
            return True
        for table, key in zip(self.tables, keys):
            table.setdefault(key, []).append(len(self.signatures))
        self.signatures.append(signature)
        return False


class Filters:
    """Decides, record by record, whether to keep it; remembers what was kept for the duplicate checks."""

    def __init__(self, phrases=BREAKING_PHRASES, min_chars=None, max_chars=None, near_dup_threshold=0.8,
                 max_per_length_bucket=None):
        words = sorted({normalize(p) for p in phrases}, key=len, reverse=True)
        self.breaking = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)")
        self.min_chars, self.max_chars = min_chars, max_chars
        self.near = NearDuplicates(near_dup_threshold) if near_dup_threshold else None
        self.max_per_bucket = max_per_length_bucket
        self.hashes, self.buckets = set(), Counter()

    def drop_reason(self, messages):
        """The reason to drop this (checked) conversation, or None to keep it."""
        turns = [m for m in messages if m["role"] != SYSTEM]
        if any(self.breaking.search(normalize(m["content"])) for m in turns if m["role"] == ASSISTANT):
            return "character-breaking phrase"
        lengths = [len(m["content"].strip()) for m in turns]
        if min(lengths) == 0:
            return "empty turn"
        if self.min_chars and min(lengths) < self.min_chars:
            return f"turn shorter than {self.min_chars} chars"
        if self.max_chars and max(lengths) > self.max_chars:
            return f"turn longer than {self.max_chars} chars"
        digest = hashlib.sha256(repr([(m["role"], normalize(m["content"])) for m in messages]).encode()).digest()
        if digest in self.hashes:
            return "exact duplicate"
        if self.near and self.near.check_and_add("\n".join(m["content"] for m in turns)):
            return "near duplicate"
        self.hashes.add(digest)
        if self.max_per_bucket:
            bucket = sum(lengths).bit_length()
            if self.buckets[bucket] >= self.max_per_bucket:
                return "length bucket full"
            self.buckets[bucket] += 1
        return None


def filter_file(src, dst, filters, force=False, skip_invalid=False):
    """Write the records of src that pass `filters` to dst atomically; returns the Tally."""

    def keep(record, file, line):
        reason = filters.drop_reason(record_messages(record, file, line, allow_empty=True))
        if reason:
            raise Drop(reason)
        return record

    return convert_records(src, dst, keep, force, skip_invalid)


@cli
def main(argv=None):
    p = parser("data_tools.filter", __doc__, output_help="messages JSONL of the kept records")
    p.add_argument("--phrase", action="append", default=[], help="another character-breaking phrase (repeatable)")
    p.add_argument("--min-chars", type=int, help="drop records with a user/assistant turn shorter than this")
    p.add_argument("--max-chars", type=int, help="drop records with a user/assistant turn longer than this")
    p.add_argument("--near-dup-threshold", type=float, default=0.8,
                   help="Jaccard similarity at which a record counts as a near duplicate (0: off)")
    p.add_argument("--max-per-length-bucket", type=int, help="keep at most N records per length bucket")
    args = p.parse_args(argv)
    if not 0 <= args.near_dup_threshold <= 1:
        p.error("--near-dup-threshold must be between 0 and 1")
    filters = Filters(BREAKING_PHRASES + tuple(args.phrase), args.min_chars, args.max_chars,
                      args.near_dup_threshold, args.max_per_length_bucket)
    tally = filter_file(args.src, args.output, filters, args.force, args.skip_invalid)
    tally.report(f"filter -> {args.output}", sys.stderr)


if __name__ == "__main__":
    main()
