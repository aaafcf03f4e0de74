"""The whole life of a fine-tune on CPU, on the embedded SmolLM2-135M-Instruct, in about 10 minutes.

prepare data (data_tools.qa) -> train the quickstart recipe (Axolotl) -> merge (deploy.merge) ->
evaluate base vs tuned on held-out questions (eval) -> export GGUF (deploy.gguf) -> answer through
llama.cpp -> write an Ollama Modelfile (deploy.ollama) -> print the vLLM serve command (deploy.vllm).
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import ROOT, offline_defaults
from common.errors import cli
from common.io import atomic_open, read_jsonl
from common.models import EMBEDDED, local_model
from common.quiet import quiet, set_verbose

RECIPE = ROOT / "recipes" / "quickstart" / "lora-135m.yml"
QA_DATA = ROOT / "recipes" / "tinyllama-qa" / "data"


class Steps:
    """Runs named steps, printing progress and keeping their timings."""

    def __init__(self, total):
        self.total, self.done, self.times = total, 0, {}

    def __call__(self, name, fn, *args, **kwargs):
        self.done += 1
        print(f"\n== quickstart [{self.done}/{self.total}] {name}", flush=True)
        start = time.time()
        result = fn(*args, **kwargs)
        self.times[name] = round(time.time() - start, 1)
        print(f"   done in {self.times[name]} s", flush=True)
        return result


def prepare(out):
    from data_tools.qa import convert_file

    for split in ("train", "val", "heldout"):
        tally = convert_file(QA_DATA / f"qa_{split}.jsonl", out / "data" / f"{split}.jsonl", force=True)
        tally.report(f"data_tools.qa {split}")
    return out / "data" / "train.jsonl"


def train(out, train_file, max_steps):
    from scripts.cpu_run import run_recipe

    return run_recipe(RECIPE, dataset=train_file, eval_dataset=train_file.with_name("val.jsonl"),
                      max_steps=max_steps, output_dir=out / "adapter", force=True)


def evaluate(base, merged, out):
    from eval._models import load, stderr_progress
    from eval.perplexity import heldout_loss
    from eval.task import evaluate_qa

    qa = [record for _, record in read_jsonl(QA_DATA / "qa_heldout.jsonl")]
    chats = [record for _, record in read_jsonl(out / "data" / "heldout.jsonl")]
    report = {}
    for name, path in (("base", base), ("tuned", merged)):
        print(f"   {name}: held-out loss on {len(chats)} conversations, then answers to {len(qa)} questions",
              flush=True)
        model, tok = load(path)
        report[name] = {**heldout_loss(model, tok, chats),
                        **evaluate_qa(model, tok, qa, max_new_tokens=40, progress=stderr_progress(f"   {name} answers"))}
        del model
    with atomic_open(out / "eval.json", force=True) as fh:
        json.dump(report, fh, indent=2)
    return report


def llama_cpp_answer(gguf_path, question):
    from llama_cpp import Llama

    from data_tools.qa import SYSTEM_PROMPT

    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=2, verbose=False)
    reply = llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
        max_tokens=48, temperature=0.0)
    return reply["choices"][0]["message"]["content"].strip()


def vllm_answers(out, base, adapter, question):
    """Serve base + adapter from one vLLM server, ask both the question, stop the server.
    Returns {"base": text, "quickstart": text}, or None (with one line said) when vLLM is missing."""
    from data_tools.qa import SYSTEM_PROMPT
    from deploy import vllm
    from deploy.vllm_server import Server, free_port, vllm_python

    if vllm_python() is None:
        print("   vLLM is not installed (scripts/setup.sh puts it in .cache/vllm): skipping this step")
        return None
    port = free_port()
    argv, _, _ = vllm.serve_argv(base, [f"quickstart={adapter}"], port=port, served_model_name="base",
                                 extra=["--max-model-len", "2048", "--enforce-eager"])
    with Server(argv, out / "vllm" / "server.log", port=port) as server:
        return {name: vllm.chat(server.base_url, name, question, SYSTEM_PROMPT, max_tokens=48, temperature=0.0)
                .strip() for name in ("base", "quickstart")}


def modelfile(out, gguf_path, merged):
    from data_tools.qa import SYSTEM_PROMPT
    from deploy.ollama import write_modelfile

    path = out / "Modelfile"
    write_modelfile(path, merged, gguf=gguf_path, system=SYSTEM_PROMPT, force=True)
    return path


def vllm_command(out, merged, adapter):
    from deploy.vllm import recipe_sequence_len, serve_argv, write_serve_script

    context = ["--max-model-len", str(recipe_sequence_len(RECIPE))]  # the length it trained on
    merged_argv, _, _ = serve_argv(merged=str(merged), extra=context)
    lora_argv, _, _ = serve_argv("HuggingFaceTB/SmolLM2-135M-Instruct", [f"quickstart={adapter}"], extra=context)
    return (write_serve_script(out / "serve-merged.sh", merged_argv, force=True),
            write_serve_script(out / "serve-lora.sh", lora_argv, force=True))


def summary_table(report, times, probe, answer, artifacts, served=None):
    rows = [("metric", "base", "tuned")]
    for key, label in (("loss", "held-out loss (assistant tokens)"), ("ppl", "held-out perplexity"),
                       ("keyword_recall", "keyword recall"), ("rouge_l", "ROUGE-L"), ("bleu", "BLEU")):
        if key in report["base"]:
            rows.append((label, f"{report['base'][key]:.3f}", f"{report['tuned'][key]:.3f}"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, width)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    lines += ["", f"probe (held out): {probe!r}", f"  llama.cpp, tuned GGUF:  {answer}"]
    if served:
        lines += [f"  vLLM, base:             {served['base']}", f"  vLLM, LoRA quickstart:  {served['quickstart']}"]
    else:
        lines += ["  vLLM: not installed, not asked"]
    lines += ["", "artifacts:"]
    lines += [f"  {name:<16} {path}" for name, path in artifacts.items()]
    lines += ["", "step times (s): " + ", ".join(f"{k} {v}" for k, v in times.items())]
    return "\n".join(lines)


def run(out, force=False, max_steps=None):
    offline_defaults()
    quiet()
    out = Path(out)
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} exists from an earlier run; pass --force "
                                  "(make quickstart ARGS=--force) to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = local_model(EMBEDDED)
    steps = Steps(10)
    train_file = steps("prepare data with data_tools.qa", prepare, out)
    adapter = steps("train recipes/quickstart/lora-135m.yml with Axolotl on CPU", train, out, train_file, max_steps)
    steps("draw the training curves (eval.curves)", curves, adapter, out / "curves")
    merged = out / "merged"
    steps("merge the adapter (deploy.merge, verified against PEFT)", merge_adapter, base, adapter, merged)
    report = steps("evaluate base vs tuned on held-out questions", evaluate, base, merged, out)
    gguf_path = steps("export GGUF f16 (deploy.gguf)", export_gguf, merged, out / "gguf" / "quickstart-f16.gguf")
    probe = next(read_jsonl(QA_DATA / "qa_heldout.jsonl"))[1]["question"]
    answer = steps("answer a held-out question through llama.cpp", llama_cpp_answer, gguf_path, probe)
    served = steps("serve base + adapter with vLLM and ask both the same question", vllm_answers, out, base,
                   adapter, probe)
    model_file = steps("write an Ollama Modelfile", modelfile, out, gguf_path, merged)
    serve = steps("write the vLLM serve commands", vllm_command, out, merged, adapter)
    artifacts = {"data": out / "data", "adapter": adapter, "loss curve": out / "curves" / "loss.png",
                 "merged model": merged,
                 "eval report": out / "eval.json", "GGUF": gguf_path, "Modelfile": model_file,
                 "vLLM (merged)": serve[0], "vLLM (LoRA)": serve[1]}
    text = summary_table(report, steps.times, probe, answer, artifacts, served)
    with atomic_open(out / "answers.json", force=True) as fh:
        json.dump({"probe": probe, "llama_cpp": answer, "vllm": served}, fh, indent=2)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    (out / "summary.md").write_text(f"# Quickstart run\n\n```\n{text}\n```\n\n![training loss](curves/loss.png)\n",
                                    encoding="utf-8")
    print("\n" + text)
    command = [line for line in serve[1].read_text().splitlines() if line and not line.startswith(("#", "set "))]
    print("\nvLLM multi-LoRA serve command (GPU machine; also in serve-lora.sh):\n" + "\n".join(command))
    return report, answer, served


def curves(adapter, target):
    from eval.curves import draw

    draw(adapter, target, "quickstart")
    return target / "loss.png"


def merge_adapter(base, adapter, merged):
    from deploy.merge import merge

    return merge(base, adapter, merged, verify=True)


def export_gguf(merged, path):
    from deploy.gguf import export_model

    return export_model(merged, path, "f16")


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=str(ROOT / "outputs" / "quickstart"))
    parser.add_argument("--force", action="store_true", help="replace an earlier quickstart run")
    parser.add_argument("--max-steps", type=int, help="cap training steps (default: the recipe's epochs)")
    parser.add_argument("--verbose", action="store_true",
                        help="show every library message and metric (RECIPES_VERBOSE=1 does the same)")
    args = parser.parse_args(argv)
    set_verbose(args.verbose)
    run(args.output_dir, args.force, args.max_steps)


if __name__ == "__main__":
    sys.exit(main())
