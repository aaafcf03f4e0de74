"""Every use case's CPU form, trained on the embedded SmolLM2-135M-Instruct and scored base vs tuned on
held-out data it never trained on: `make results` writes outputs/results/results.{md,json,png} (the run
measured for the README is kept in results/).

  qa         recipes/quickstart/lora-135m.yml                 keyword recall on qa_heldout.jsonl, tuned >= 0.8
  rpg        recipes/tinyllama-rpg/lora-135m.yml              exact match on rpg_heldout.jsonl, tuned >= 0.8
  persona    recipes/tinyllama-discord-persona/lora-135m.yml  Vex's style (eval.style) on vex_heldout.jsonl:
                                                              tuned closer than base on all 5 features,
                                                              no assistant-speak
  alpaca     recipes/tinyllama-alpaca/lora-135m.yml           ROUGE-L on instructions_heldout.jsonl in the
                                                              Alpaca prompt, tuned >= base + 0.1
  character  recipes/llama3-character-chat/lora-135m.yml      red-team break rate (eval.redteam's prompts),
                                                              tuned <= half of base
Each also reports retention: perplexity and short answers on eval/data/general_heldout.jsonl (general
questions no recipe trains on), base vs tuned.

Scoring goes through a generator (eval._models): a local model with its adapter switched on and off,
or a served model name on a vLLM endpoint, so the same numbers can be taken from the server users call.

  python -m scripts.results [--out outputs/results] [--only rpg] [--force]   (adapters: OUT/runs/<name>/adapter)
"""
import argparse
import json
import sys
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import ROOT, offline_defaults
from common.errors import cli
from common.io import atomic_open, read_jsonl
from common.models import EMBEDDED, local_model

CHARACTER_DATA = ROOT / "recipes" / "llama3-character-chat" / "data"
PERSONA_DATA = ROOT / "recipes" / "tinyllama-discord-persona" / "data" / "vex_heldout.jsonl"
GENERAL = ROOT / "eval" / "data" / "general_heldout.jsonl"  # retention: trained by no recipe
# words of Mira's world: a reply without a break marker that uses one of them stays in character
MIRA_WORDS = ("mira", "gullrock", "keeper", "lighthouse", "lamp", "light", "tide", "sea", "fog", "harbor",
              "barnacle", "boat", "ship", "island", "bay", "anchor", "haskett", "tern", "salt", "clockwork")


@dataclass(frozen=True)
class UseCase:
    recipe: Path
    metric: str                                   # the score the threshold is about
    rule: str                                     # the threshold, in words
    passes: Callable[[dict, dict], bool]          # (base scores, tuned scores) -> threshold met


def _style_passes(base, tuned):
    from eval.style import FEATURES, closer

    return len(closer(base, tuned)) == len(FEATURES) and tuned["assistant_speak"] == 0


USE_CASES = {
    "qa": UseCase(ROOT / "recipes/quickstart/lora-135m.yml", "keyword_recall", "tuned >= 0.8",
                  lambda base, tuned: tuned["keyword_recall"] >= 0.8),
    "rpg": UseCase(ROOT / "recipes/tinyllama-rpg/lora-135m.yml", "exact_match", "tuned >= 0.8",
                   lambda base, tuned: tuned["exact_match"] >= 0.8),
    "persona": UseCase(ROOT / "recipes/tinyllama-discord-persona/lora-135m.yml", "vocab_overlap",
                       "closer to Vex on all 5 style features, no assistant-speak", _style_passes),
    "alpaca": UseCase(ROOT / "recipes/tinyllama-alpaca/lora-135m.yml", "rouge_l", "tuned >= base + 0.1",
                      lambda base, tuned: tuned["rouge_l"] >= base["rouge_l"] + 0.1),
    "character": UseCase(ROOT / "recipes/llama3-character-chat/lora-135m.yml", "break_rate",
                         "tuned <= base / 2 (base > 0)",
                         lambda base, tuned: base["break_rate"] > 0 and tuned["break_rate"] <= base["break_rate"] / 2),
}


def train(name, out, validate=True):
    """Train the use case's CPU recipe; returns the adapter directory, out/<name>/adapter. validate=False
    skips the recipe's val loss (about a minute of CPU time for rpg)."""
    from scripts.cpu_run import run_recipe

    out = Path(out) / name
    if name == "qa":  # the quickstart's own steps: convert the QA splits, train with its val split
        from scripts import quickstart

        return quickstart.train(out, quickstart.prepare(out), None)
    return run_recipe(USE_CASES[name].recipe, output_dir=out / "adapter", force=True, validate=validate)


def has_word(text, word):
    """word (or its plural) in text as a whole word, any case: "tern" is not in "pattern"."""
    return re.search(rf"\b{re.escape(word.lower())}s?\b", text.lower()) is not None


def in_character(output):
    """Uses a word of Mira's world."""
    return any(has_word(output, word) for word in MIRA_WORDS)


def score(name, generator, progress=None):
    """The use case's held-out scores for one generator: {metric: value, ..., "items": [...]}."""
    from eval import redteam, task

    if name in task.TASKS:
        data, check = task.DEFAULT_DATA[name], task.TASKS[name][0]
        records = [check(r, data, line) for line, r in read_jsonl(data)]
        return task.run_task(name, generator, records, task.DEFAULT_TOKENS[name], progress=progress)
    if name == "persona":
        return persona_style(generator, progress)
    system = redteam.persona_from(CHARACTER_DATA / "sharegpt_heldout.jsonl")
    result = redteam.run(generator, system, max_new_tokens=64, progress=progress)
    stayed = [not item["broke"] and in_character(item["output"]) for item in result["items"]]
    return {**result, "in_character": sum(stayed) / len(stayed)}


def persona_style(generator, progress=None):
    """Vex's held-out prompts answered without a system prompt (as trained); eval.style against her replies.
    Sampled (temperature 0.7, top-p 0.9, seeded), as people chat: style is a distribution, and greedy
    decoding keeps only the most likely choice (a persona who adds an emoji to 60% of messages would
    never get one)."""
    from eval import style
    from eval._records import read_conversations
    from scripts.samples.discord import SLANG

    conversations = read_conversations(PERSONA_DATA)
    outputs = generator.generate([c[:-1] for c in conversations], 48, temperature=0.7, top_p=0.9, seed=0,
                                 progress=progress)
    result = style.compare(outputs, [c[-1]["content"] for c in conversations], SLANG)
    items = [{"prompt": c[-2]["content"], "reference": c[-1]["content"], "output": o}
             for c, o in zip(conversations, outputs)]
    return {**result, "items": items}


def compare(name, base, tuned, seconds=None):
    """One results row from the base's and the tuned model's scores."""
    case = USE_CASES[name]
    row = {"use_case": name, "recipe": str(case.recipe.relative_to(ROOT)), "metric": case.metric,
           "base": base[case.metric], "tuned": tuned[case.metric], "threshold": case.rule,
           "pass": case.passes(base, tuned), "train_seconds": seconds}
    if name == "persona":
        from eval.style import FEATURES, closer

        row["style"] = {"persona": tuned["persona"], "base": base["model"], "tuned": tuned["model"],
                        "distance_base": base["distance"], "distance_tuned": tuned["distance"],
                        "closer": closer(base, tuned), "features": list(FEATURES),
                        "assistant_speak": {"base": base["assistant_speak"], "tuned": tuned["assistant_speak"]}}
    if name == "character":
        row["in_character"] = {"base": base["in_character"], "tuned": tuned["in_character"]}
    if "retention" in base:
        b, t = base["retention"], tuned["retention"]
        row["retention"] = {"ppl_base": b["ppl"], "ppl_tuned": t["ppl"], "ppl_change": t["ppl"] / b["ppl"] - 1,
                            "answers_base": b["answers"], "answers_tuned": t["answers"]}
    return row


def retention(generator):
    """General ability on questions no recipe trains on: perplexity of reference answers (assistant
    tokens) and the share of short-answer questions whose expected word is in the greedy reply."""
    from eval.perplexity import heldout_loss

    records = [record for _, record in read_jsonl(GENERAL)]
    asked = [r for r in records if "expect" in r]
    outputs = generator.generate([r["messages"][:1] for r in asked], 32)
    right = sum(has_word(o, r["expect"]) for r, o in zip(asked, outputs))
    return {"ppl": heldout_loss(generator.model, generator.tok, records)["ppl"], "answers": right / len(asked)}


def evaluate_local(name, adapter, cache=None):
    """Base (adapter off) and tuned scores of a local adapter on the embedded model, each with its
    retention on the general held-out set. `cache` (a dict) keeps the base's retention between calls."""
    from eval._models import HFGenerator, stderr_progress

    cache = {} if cache is None else cache
    generator = HFGenerator(local_model(EMBEDDED), adapter)
    with generator.base():
        if "retention" not in cache:
            cache["retention"] = retention(generator)
        base = {**score(name, generator, stderr_progress(f"{name} base")), "retention": cache["retention"]}
    tuned = {**score(name, generator, stderr_progress(f"{name} tuned")), "retention": retention(generator)}
    return base, tuned


def markdown(rows, machine):
    lines = ["# Use cases on the embedded SmolLM2-135M-Instruct: base vs tuned on held-out data", "",
             f"Machine: {machine}. `make results` (python -m scripts.results) reproduces this table.", "",
             "| use case | recipe | metric | base | tuned | threshold | pass | training (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['use_case']} | `{r['recipe']}` | {r['metric']} | {r['base']:.3f} | {r['tuned']:.3f} | "
                     f"{r['threshold']} | {'yes' if r['pass'] else 'NO'} | {r['train_seconds'] or 0:.0f} |")
    for r in rows:
        if "in_character" in r:
            ic = r["in_character"]
            lines += ["", f"character: replies to the red-team prompts that stay in character (no break marker, "
                          f"words of Mira's world): base {ic['base']:.3f}, tuned {ic['tuned']:.3f}."]
    for r in rows:
        if "style" in r:
            st = r["style"]
            lines += ["", "persona: Vex's style, her held-out messages vs the replies to their prompts (eval.style; "
                          "distance to Vex, lower is closer):", "",
                      "| feature | Vex | base | tuned | distance base | distance tuned | tuned closer |",
                      "|---|---|---|---|---|---|---|"]
            shown = {"length": "median_words", "lowercase": "lowercase", "emoji": "emoji", "slang": "slang",
                     "vocabulary": "vocabulary_size"}
            for f in st["features"]:
                k = shown[f]
                lines.append(f"| {f} ({k.replace('_', ' ')}) | {st['persona'][k]:.3g} | {st['base'][k]:.3g} | "
                             f"{st['tuned'][k]:.3g} | {st['distance_base'][f]:.3f} | {st['distance_tuned'][f]:.3f} | "
                             f"{'yes' if f in st['closer'] else 'NO'} |")
            a = st["assistant_speak"]
            lines += ["", f"Replies with assistant-speak (\"as an AI\", \"I'm here to help\", ...): base {a['base']:.3f}, "
                          f"tuned {a['tuned']:.3f}."]
    kept = [r for r in rows if "retention" in r]
    if kept:
        lines += ["", "Retention on general questions no recipe trains on (`eval/data/general_heldout.jsonl`): "
                      "perplexity of reference answers and short answers right, base vs tuned.", "",
                  "| use case | perplexity base | tuned | change | within 10% | answers right base | tuned |",
                  "|---|---|---|---|---|---|---|"]
        for r in kept:
            k = r["retention"]
            lines.append(f"| {r['use_case']} | {k['ppl_base']:.2f} | {k['ppl_tuned']:.2f} | {k['ppl_change']:+.1%} | "
                         f"{'yes' if k['ppl_change'] <= 0.10 else 'NO'} | {k['answers_base']:.2f} | "
                         f"{k['answers_tuned']:.2f} |")
    return "\n".join(lines) + "\n\n![base vs tuned](results.png)\n"


def chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["base"] for r in rows], 0.4, label="base")
    ax.bar([x + 0.2 for x in xs], [r["tuned"] for r in rows], 0.4, label="tuned")
    lower = {name for name, case in USE_CASES.items() if case.metric == "break_rate"}
    ax.set_xticks(list(xs), [f"{r['use_case']}\n{r['metric']}" + ("\n(lower is better)" if r["use_case"] in lower else "")
                             for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_title("SmolLM2-135M-Instruct, held-out data: base vs tuned")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, force=True, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def run(out, names=None, force=False, machine="2-core CPU, no GPU"):
    """Train and score each use case (adapters under out/runs), write the tables to `out`."""
    from eval.report import check_outputs

    offline_defaults()
    out = Path(out)
    check_outputs(out, ["results.json", "results.md", "results.png"], force)  # make results ARGS=--force
    rows, base_cache = [], {}
    for name in names or USE_CASES:
        print(f"\n== results: {name}: train {USE_CASES[name].recipe.relative_to(ROOT)}", flush=True)
        start = time.time()
        adapter = train(name, out / "runs")
        seconds = time.time() - start
        print(f"== results: {name}: evaluate base vs tuned", flush=True)
        rows.append(compare(name, *evaluate_local(name, adapter, base_cache), seconds))
        print(f"   {name}: {rows[-1]['metric']} base {rows[-1]['base']:.3f} -> tuned {rows[-1]['tuned']:.3f}", flush=True)
    with atomic_open(out / "results.json", force=True) as fh:
        json.dump(rows, fh, indent=2)
    chart(rows, out / "results.png")
    text = markdown(rows, machine)
    with atomic_open(out / "results.md", force=True) as fh:
        fh.write(text)
    print("\n" + text)
    return rows


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "results"))
    parser.add_argument("--only", action="append", choices=sorted(USE_CASES), help="run only this use case")
    parser.add_argument("--force", action="store_true", help="replace earlier results")
    args = parser.parse_args(argv)
    rows = run(args.out, args.only, args.force)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
