"""How close a model's replies are to a persona's own way of writing.

The persona's held-out messages give its profile; the replies of a model (to the prompts those
messages answered) give the model's. Compared feature by feature:

  length       words per message: Wasserstein-1 distance between the two distributions (in words)
  lowercase    share of messages with letters and no capital letter
  emoji        emoji per message
  slang        slang words per word (chat slang, plus the persona's own words when given)
  vocabulary   Jaccard overlap of the two vocabularies (distance: 1 - overlap)

and assistant-speak ("as an AI", "I'm here to help", ...): the share of replies that sound like a
generic assistant rather than the persona (a persona model should have none).

  python -m eval.style --persona HELDOUT.jsonl --replies REPLIES.jsonl [--slang arr,aye,...]
  (REPLIES: JSONL with an "output" field, as eval.batch writes; HELDOUT: messages JSONL whose last
  assistant message is the persona's)
"""
import argparse
import json
import re
import sys

from common.errors import cli
from common.io import read_jsonl

CHAT_SLANG = ("lol", "lmao", "lmfao", "rofl", "ngl", "tbh", "idk", "imo", "imho", "rn", "omg", "pls", "plz", "fr",
              "btw", "brb", "afk", "gg", "ikr", "smh", "ya", "yeah", "nah", "yep", "nope", "gonna", "wanna",
              "gotta", "kinda", "sorta", "dunno", "lemme", "u", "ur", "thx", "ty", "np")
ASSISTANT_SPEAK = ("as an ai", "language model", "i'm an ai", "i am an ai", "ai assistant", "i'm here to help",
                   "i am here to help", "how can i assist", "how can i help", "i'm sorry, but", "i cannot",
                   "i can't provide", "feel free to", "i hope this helps", "here are some", "certainly!",
                   "great question", "it's important to note", "as a helpful")
_PICTO = "\U0001F000-\U0001FAFF\u2600-\u27BF\u2300-\u23FF\u2B00-\u2BFF"
EMOJI = re.compile(f"[{_PICTO}](?:[\uFE0F\u200D]+[{_PICTO}])*\uFE0F?")  # a ZWJ sequence counts once
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
FEATURES = ("length", "lowercase", "emoji", "slang", "vocabulary")


def words(text):
    return [w.lower() for w in WORD.findall(text)]


def is_lowercase(text):
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and not any(c.isupper() for c in letters)


def profile(texts, slang=()):
    """Per-message lengths and the rates of one set of messages."""
    lexicon = set(CHAT_SLANG) | {s.lower() for s in slang}
    tokens = [words(t) for t in texts]
    n_words = sum(map(len, tokens)) or 1
    return {"lengths": [len(t) for t in tokens],
            "lowercase": sum(map(is_lowercase, texts)) / len(texts),
            "emoji": sum(len(EMOJI.findall(t)) for t in texts) / len(texts),
            "slang": sum(w in lexicon for t in tokens for w in t) / n_words,
            "vocabulary": {w for t in tokens for w in t}}


def wasserstein(a, b):
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def distances(model, persona):
    """Feature -> distance between two profiles (0 = the same)."""
    union = model["vocabulary"] | persona["vocabulary"]
    return {"length": wasserstein(model["lengths"], persona["lengths"]),
            **{f: abs(model[f] - persona[f]) for f in ("lowercase", "emoji", "slang")},
            "vocabulary": 1 - len(model["vocabulary"] & persona["vocabulary"]) / (len(union) or 1)}


def assistant_speak(text):
    lowered = text.lower().replace("\u2019", "'")
    return [m for m in ASSISTANT_SPEAK if m in lowered]


def summary(p):
    """The numbers of a profile, for reports."""
    lengths = sorted(p["lengths"])
    return {"median_words": lengths[len(lengths) // 2], **{f: p[f] for f in ("lowercase", "emoji", "slang")},
            "vocabulary_size": len(p["vocabulary"])}


def compare(outputs, persona_texts, slang=()):
    """Style scores of a model's replies against the persona's held-out messages."""
    mine, theirs = profile(outputs, slang), profile(persona_texts, slang)
    speak = [assistant_speak(o) for o in outputs]
    dist = distances(mine, theirs)
    return {"distance": dist, "vocab_overlap": 1 - dist["vocabulary"], "model": summary(mine),
            "persona": summary(theirs), "assistant_speak": sum(map(bool, speak)) / len(outputs),
            "assistant_speak_examples": [o for o, s in zip(outputs, speak) if s][:5]}


def closer(base, tuned):
    """Features on which the tuned replies are closer to the persona than the base's."""
    return [f for f in FEATURES if tuned["distance"][f] < base["distance"][f]]


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.style", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", required=True, help="messages JSONL: the last assistant message is the persona's")
    parser.add_argument("--replies", required=True, help="JSONL with an 'output' field per reply")
    parser.add_argument("--slang", default="", help="the persona's own slang words, comma-separated")
    args = parser.parse_args(argv)
    from eval._records import read_conversations

    persona = [conv[-1]["content"] for conv in read_conversations(args.persona)]
    replies = [record["output"] for _, record in read_jsonl(args.replies)]
    result = compare(replies, persona, [s for s in args.slang.split(",") if s])
    print(json.dumps({k: v for k, v in result.items()}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
