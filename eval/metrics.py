"""Text metrics for evaluating generations: keyword recall, ROUGE-L, BLEU, exact match, break rate.

Pure functions, no model. All scores are on a 0-1 scale (BLEU is sacrebleu's corpus score / 100).
The CLI scores a batch report (eval.batch output) or any JSONL with prediction/reference fields.
"""
import argparse
import json
import re
import unicodedata

from common.errors import InputError, cli
from common.io import read_jsonl

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201c": '"',
                         "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u00a0": " "})
# a word: a number with its decimal point or thousands commas kept (1.8, 1,000), or letters/digits
# with inner apostrophes kept (don't); everything else is a separator
_WORD = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:'\w+)*")


def normalize(text):
    """Unicode-normalised, lower-case text with typographic quotes and dashes made plain."""
    return unicodedata.normalize("NFKC", str(text)).translate(_QUOTES).casefold()


def words(text):
    """Lower-case words with punctuation dropped (numbers like 1.8 and words like don't kept whole)."""
    return _WORD.findall(normalize(text))


def _contains(haystack, needle):
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def keyword_recall(answer, keywords):
    """Share of `keywords` that occur in `answer` (case-insensitive, whole words, punctuation ignored).

    "water tank" matches "The Water-Tank is empty." but "tank" does not match "tanks" or "tankard".
    Raises ValueError for an empty keyword list (recall of nothing is undefined).
    """
    keywords = [k for k in keywords if words(k)]
    if not keywords:
        raise ValueError("keyword_recall needs at least one keyword")
    answer_words = words(answer)
    return sum(_contains(answer_words, words(k)) for k in keywords) / len(keywords)


_ROUGE = None


def rouge_l(pred, ref):
    """ROUGE-L F-measure of a prediction against a reference (rouge_score, Porter stemming)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _ROUGE.score(ref, pred)["rougeL"].fmeasure


def bleu(preds, refs):
    """Corpus BLEU (sacrebleu, one reference per prediction) on a 0-1 scale."""
    import sacrebleu

    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"bleu: {len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("bleu needs at least one prediction")
    return sacrebleu.corpus_bleu(preds, [refs]).score / 100.0


def exact_match(pred, ref, casefold=False):
    """1.0 if prediction and reference are equal after stripping surrounding whitespace (optionally case-folded)."""
    pred, ref = str(pred).strip(), str(ref).strip()
    if casefold:
        pred, ref = pred.casefold(), ref.casefold()
    return float(pred == ref)


def markers_found(output, markers):
    """The markers that occur in `output` as whole words (case-insensitive, punctuation and typographic
    quotes normalised): "as an ai" matches "As an AI," but "llm" does not match "smallmouth"."""
    output_words = words(output)
    return [m for m in markers if _contains(output_words, words(m))]


def break_rate(outputs, markers):
    """Share of outputs containing at least one break marker (see markers_found)."""
    outputs = list(outputs)
    if not outputs:
        raise ValueError("break_rate needs at least one output")
    return sum(bool(markers_found(o, markers)) for o in outputs) / len(outputs)


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def score_pair(pred, ref, keywords=None):
    """The per-item metrics for one prediction with a reference (and keywords when known)."""
    scores = {"exact_match": exact_match(pred, ref), "exact_match_ci": exact_match(pred, ref, casefold=True),
              "rouge_l": rouge_l(pred, ref)}
    if keywords:
        scores["keyword_recall"] = keyword_recall(pred, keywords)
    return scores


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.metrics", description=__doc__)
    parser.add_argument("report", help="JSONL with a prediction and a reference per line (eval.batch writes one)")
    parser.add_argument("--pred-field", default="output", help="prediction field (default: output)")
    parser.add_argument("--ref-field", default="reference", help="reference field (default: reference)")
    parser.add_argument("--keywords-field", default="keywords", help="keyword list field (default: keywords)")
    args = parser.parse_args(argv)
    preds, refs, items = [], [], []
    for line, record in read_jsonl(args.report):
        pred, ref = record.get(args.pred_field), record.get(args.ref_field)
        if ref is None:
            continue
        if not isinstance(pred, str) or not isinstance(ref, str):
            raise InputError("expected strings", args.report, line, f"{args.pred_field}/{args.ref_field}")
        preds.append(pred)
        refs.append(ref)
        items.append(score_pair(pred, ref, record.get(args.keywords_field)))
    if not items:
        raise InputError(f"no line has a '{args.ref_field}' to score against", args.report)
    summary = {"n": len(items), "bleu": bleu(preds, refs)}
    for key in ("exact_match", "exact_match_ci", "rouge_l", "keyword_recall"):
        summary[key] = mean(i.get(key) for i in items)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
