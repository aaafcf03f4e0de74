"""Task metrics on a held-out set: generate an answer per record and score it.

  --task qa   records {question, answer, answer_keywords}; prompt = the QA converter's system prompt
              + the question; scores keyword recall, ROUGE-L and corpus BLEU (all 0-1).
  --task rpg  records {task, output}; prompt = the RPG system prompt + the task; scores exact match
              (after stripping whitespace; also case-insensitive).
  --task alpaca  records {instruction, input, output}; prompt = Axolotl's Alpaca prompt (what `type:
              alpaca` trains; no chat template); scores ROUGE-L and exact match.

Several --model (each with an optional --adapter) are scored side by side; --compare-base adds each
adapter's base model (adapter disabled). Greedy decoding by default.

  python -m eval.task --task qa --model BASE --adapter RUN/adapter --compare-base --out DIR

Writes DIR/<task>.json and DIR/<task>.md.
"""
import argparse
import sys

from common import ROOT
from common.errors import InputError, cli
from eval import _models, report
from data_tools.qa import SYSTEM_PROMPT as QA_SYSTEM
from data_tools.rpg import SYSTEM_PROMPT as RPG_SYSTEM
from eval._records import read_records
from eval.metrics import bleu, exact_match, keyword_recall, mean, rouge_l

DEFAULT_DATA = {"qa": ROOT / "recipes/tinyllama-qa/data/qa_heldout.jsonl",
                "rpg": ROOT / "recipes/tinyllama-rpg/data/rpg_heldout.jsonl",
                "alpaca": ROOT / "recipes/tinyllama-alpaca/data/instructions_heldout.jsonl"}
DEFAULT_TOKENS = {"qa": 48, "rpg": 32, "alpaca": 48}
SUMMARY_KEYS = {"qa": ["keyword_recall", "rouge_l", "bleu"], "rpg": ["exact_match", "exact_match_ci"],
                "alpaca": ["rouge_l", "exact_match"]}


# ---------------------------------------------------------------- records and prompts

def check_qa(record, file=None, line=None):
    for key in ("question", "answer"):
        if not isinstance(record.get(key), str):
            raise InputError("expected a string", file, line, key)
    keywords = record.get("answer_keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise InputError("expected a list of strings", file, line, "answer_keywords")
    return record


def check_rpg(record, file=None, line=None):
    for key in ("task", "output"):
        if not isinstance(record.get(key), str):
            raise InputError("expected a string", file, line, key)
    return record


def check_alpaca(record, file=None, line=None):
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise InputError("expected a string", file, line, key)
    if not isinstance(record.get("input", ""), str):
        raise InputError("expected a string", file, line, "input")
    return record


def qa_prompt(record, system=None):
    return [{"role": "system", "content": system or QA_SYSTEM}, {"role": "user", "content": record["question"]}]


def rpg_prompt(record, system=None):
    return [{"role": "system", "content": system or RPG_SYSTEM}, {"role": "user", "content": record["task"]}]


def alpaca_prompt(record, system=None):
    """The prompt text Axolotl's `type: alpaca` trains, up to "### Response:\n" (system: unused)."""
    from axolotl.prompters import AlpacaPrompter

    return next(AlpacaPrompter().build_prompt(record["instruction"], record.get("input") or None))


# ---------------------------------------------------------------- scoring

def score_qa(records, outputs):
    """Keyword recall and ROUGE-L per item and on average, corpus BLEU, all on a 0-1 scale."""
    items = []
    for record, output in zip(records, outputs):
        keywords = [k for k in record.get("answer_keywords") or [] if k.strip()]
        items.append({"question": record["question"], "reference": record["answer"], "output": output,
                      "keywords": keywords,
                      "keyword_recall": keyword_recall(output, keywords) if keywords else None,
                      "rouge_l": rouge_l(output, record["answer"])})
    return {"n": len(items), "keyword_recall": mean(i["keyword_recall"] for i in items),
            "rouge_l": mean(i["rouge_l"] for i in items),
            "bleu": bleu(outputs, [r["answer"] for r in records]), "items": items}


def score_rpg(records, outputs):
    """Exact match (whitespace stripped) and its case-insensitive variant, per item and on average."""
    items = [{"task": r["task"], "reference": r["output"], "output": o,
              "exact_match": exact_match(o, r["output"]), "exact_match_ci": exact_match(o, r["output"], True)}
             for r, o in zip(records, outputs)]
    return {"n": len(items), "exact_match": mean(i["exact_match"] for i in items),
            "exact_match_ci": mean(i["exact_match_ci"] for i in items), "items": items}


def score_alpaca(records, outputs):
    """ROUGE-L and exact match (whitespace stripped) against the reference outputs."""
    items = [{"instruction": r["instruction"], "input": r.get("input", ""), "reference": r["output"], "output": o,
              "rouge_l": rouge_l(o, r["output"]), "exact_match": exact_match(o, r["output"])}
             for r, o in zip(records, outputs)]
    return {"n": len(items), "rouge_l": mean(i["rouge_l"] for i in items),
            "exact_match": mean(i["exact_match"] for i in items), "items": items}


def evaluate_qa(model, tok, records, max_new_tokens=48, system=None, batch_size=8, progress=None):
    """Generate answers (greedy) for QA records {question, answer, answer_keywords} and score them.

    Returns {"n", "keyword_recall", "rouge_l", "bleu", "items": [...]}, metrics on a 0-1 scale.
    """
    records = [check_qa(r) for r in records]
    outputs = _models.generate_batch(model, tok, [qa_prompt(r, system) for r in records], max_new_tokens,
                                     batch_size=batch_size, progress=progress)
    return score_qa(records, outputs)


TASKS = {"qa": (check_qa, qa_prompt, score_qa), "rpg": (check_rpg, rpg_prompt, score_rpg),
         "alpaca": (check_alpaca, alpaca_prompt, score_alpaca)}
RAW_PROMPT = {"alpaca"}  # prompts are text continued as they are, not chat messages


def run_task(task, generator, records, max_new_tokens, system=None, progress=None):
    """Score one generator (HF, GGUF or endpoint) on already-checked records."""
    _, prompt, score = TASKS[task]
    prompts = [prompt(r, system) for r in records]
    if task in RAW_PROMPT:
        if not hasattr(generator, "complete"):
            raise InputError(f"--task {task} needs raw-prompt completion: use an HF model or a served endpoint",
                             field="model")
        outputs = generator.complete(prompts, max_new_tokens, progress=progress)
    else:
        outputs = generator.generate(prompts, max_new_tokens, progress=progress)
    return score(records, outputs)


# ---------------------------------------------------------------- report

def markdown(result):
    task, runs = result["task"], result["runs"]
    rep = report.Report(f"Task evaluation: {task}")
    rep.kv({"data": result["data"], "records": result["records"], "max_new_tokens": result["max_new_tokens"],
            "decoding": "greedy", "system prompt": result["system"]})
    keys = SUMMARY_KEYS[task]
    rep.heading("Summary")
    rep.table(["model"] + keys, [[run["name"]] + [run["scores"][k] for k in keys] for run in runs])
    rep.heading("Per item")
    first = {"qa": "question", "rpg": "task", "alpaca": "instruction"}[task]
    score_key = {"qa": "keyword_recall", "rpg": "exact_match", "alpaca": "rouge_l"}[task]
    headers = ["#", first, "reference"]
    for run in runs:
        headers += [f"{run['label']}: output", f"{run['label']}: {score_key}"]
    rows = []
    for n, item in enumerate(runs[0]["scores"]["items"]):
        row = [n + 1, item[first], item["reference"]]
        for run in runs:
            other = run["scores"]["items"][n]
            row += [other["output"], other[score_key]]
        rows.append(row)
    rep.table(headers, rows)
    return rep.render()


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.task", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--data", help="held-out JSONL (default: the recipe sample for the task)")
    _models.add_model_args(parser, multi=True)
    parser.add_argument("--compare-base", action="store_true",
                        help="also evaluate each adapter's base model (adapter disabled), side by side")
    parser.add_argument("--system", help="override the system prompt")
    parser.add_argument("--max-new-tokens", type=int, help="default: 48 for qa and alpaca, 32 for rpg")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--out", required=True, help="output directory for <task>.json and <task>.md")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args(argv)
    specs = _models.model_specs(args)
    names = [f"{args.task}.json", f"{args.task}.md"]
    report.check_outputs(args.out, names, args.force)
    data = args.data or DEFAULT_DATA[args.task]
    check = TASKS[args.task][0]
    records = [check(r, data, line) for line, r in read_records(data, args.limit)]
    max_new = args.max_new_tokens or DEFAULT_TOKENS[args.task]

    runs = []
    for model_dir, adapter in specs:
        gen = _models.open_generator(model_dir, adapter, args.allow_pickle, args.device, args.batch_size,
                                     base_url=args.base_url)
        if args.compare_base and adapter:
            with gen.base():
                runs.append({"label": "base", "name": gen.name, "model": str(model_dir), "adapter": None,
                             "scores": run_task(args.task, gen, records, max_new, args.system,
                                                _models.stderr_progress(f"{args.task} base"))})
        label = "tuned" if adapter else (str(model_dir) if args.base_url else "model")
        if any(r["label"] == label for r in runs):
            label = f"{label}{len(runs) + 1}"
        runs.append({"label": label, "name": gen.name, "model": str(model_dir), "adapter": adapter,
                     "scores": run_task(args.task, gen, records, max_new, args.system,
                                        _models.stderr_progress(f"{args.task} {label}"))})
        del gen
    result = {"task": args.task, "data": str(data), "records": len(records), "max_new_tokens": max_new,
              "system": None if args.task in RAW_PROMPT else args.system or (QA_SYSTEM if args.task == "qa" else RPG_SYSTEM),
              "runs": runs}
    md = markdown(result)
    report.write_outputs(args.out, {names[0]: report.dumps(result), names[1]: md}, args.force)
    for run in runs:
        scores = ", ".join(f"{k} {report.fmt(run['scores'][k])}" for k in SUMMARY_KEYS[args.task])
        print(f"{run['label']}: {run['name']}: {scores}")
    print(f"report: {args.out}/{names[1]}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
