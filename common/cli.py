"""recipe: one command line for every stage, driven by the recipe.

  recipe check RECIPE...                 recipe memory RECIPE --gpu t4
  recipe convert KIND ARGS...            recipe train RECIPE [--cpu]
  recipe merge RECIPE                    recipe gguf RECIPE --outtype q8_0
  recipe ollama RECIPE                   recipe vllm check|serve|serve-command RECIPE
  recipe eval KIND RECIPE ...            recipe hub upload RECIPE --repo-id user/name
  recipe cp RECIPE DEST                  recipe gpu-check RECIPE [--steps 20] [--random-weights]

Each subcommand runs the repo's own module (`recipe merge` is `python -m deploy.merge`, and so on)
with the paths the recipe gives (common.run.Run): base model, adapter (output_dir), merged model
(<run>/merged), GGUF (<run>/model-<outtype>.gguf), Modelfile, system prompt. Every option of the
module stays available, and one given on the command line replaces the derived value.
--cpu: the CPU run of `recipe train --cpu` (outputs/cpu_runs/..., the base model's local stand-in).
`recipe SUBCOMMAND --help` shows what is derived and the module's own options.
"""
import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from common import ROOT
from common.errors import cli
from common.run import Run

CONVERTERS = ("alpaca", "sharegpt", "qa", "rpg", "discord", "filter", "stats")
EVALS = ("task", "perplexity", "redteam", "chat", "batch", "curves")  # the ones that take the trained model


def _given(args, *flags):
    """Whether the user's arguments set one of these flags (--flag VALUE or --flag=VALUE)."""
    return any(a == f or a.startswith(f + "=") for a in args for f in flags)


def _derive(args, pairs):
    """Derived (flags, value) pairs as argv, each left out when the user gave one of its flags."""
    out = []
    for flags, value in pairs:
        flags = (flags,) if isinstance(flags, str) else flags
        if value is not None and not _given(args, *flags):
            out += [flags[0], str(value)]
    return out


def _pop(args, flag, default):
    """The value of `flag VALUE` taken out of args (a list), else default."""
    if flag in args[:-1]:
        i = args.index(flag)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


def _outtype(args, default="f16"):
    for i, a in enumerate(args):
        if a == "--outtype" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--outtype="):
            return a.split("=", 1)[1]
    return default


# ---------------------------------------------------------------- argv of each stage

def merge_argv(run, args=()):
    """python -m deploy.merge's arguments for the run: base, adapter and merged dirs."""
    pairs = [("--adapter", run.adapter_dir), (("-o", "--output"), run.merged_dir)]
    if not _given(args, "--base"):
        pairs.insert(0, ("--base", run.base_dir()))
    return _derive(args, pairs) + list(args)


def gguf_argv(run, args=()):
    """python -m deploy.gguf's arguments: the merged dir (or --model DIR) to <run>/model-<outtype>.gguf."""
    args = list(args)
    model = _pop(args, "--model", run.merged_dir)
    return [str(model)] + _derive(args, [(("-o", "--output"), run.gguf_path(_outtype(args)))]) + args


def ollama_argv(run, args=()):
    """python -m deploy.ollama's arguments: the GGUF, the merged dir's chat template, the deploy section
    (or the training data's system prompt), the Modelfile beside them."""
    pairs = [] if _given(args, "--base") else [("--gguf", run.gguf_path(_outtype(args)))]
    args = [a for i, a in enumerate(args) if not (a == "--outtype" or a.startswith("--outtype=")
                                                  or (i and args[i - 1] == "--outtype"))]
    pairs += [("--model", run.merged_dir), (("-o", "--output"), run.modelfile)]
    deploy_file = run.deploy_file()
    if deploy_file:
        pairs.append(("--recipe-dir", deploy_file))
    if not (deploy_file and "system" in run.deploy()):
        pairs.append(("--system", run.system_prompt()))
    return _derive(args, pairs) + args


def vllm_argv(run, action, args=()):
    """python -m deploy.vllm's arguments: check the adapter, or serve base + adapter (named after the
    recipe's folder) with the recipe's sequence_len."""
    if action == "check":
        return ["check", str(run.adapter_dir)] + _derive(args, [("--base", run.base_dir() if run.cpu else None)]) \
            + list(args)
    pairs = [("--recipe", run.path)]
    if not _given(args, "--merged"):
        base = run.base_dir() if run.cpu else run.base_model
        pairs += [("--base", base), ("--adapter", f"{run.name}={run.adapter_dir}")]
    return [action] + _derive(args, pairs) + list(args)


def eval_argv(run, kind, args=()):
    """eval.<kind>'s arguments: the base model and adapter, the output under <run>/eval/, the system
    prompt for chat and redteam."""
    if kind == "curves":
        return [str(run.adapter_dir)] + _derive(args, [("--out", run.eval_dir / "curves")]) + list(args)
    pairs = []
    if not _given(args, "--model", "--adapter", "--base-url"):
        pairs += [("--model", run.base_dir()), ("--adapter", run.adapter_dir)]
    if kind in ("task", "perplexity", "redteam"):
        pairs.append(("--out", run.eval_dir / kind))
    if kind == "batch":
        pairs.append(("--out", run.eval_dir / "batch.jsonl"))
    if kind in ("chat", "redteam") and not _given(args, "--system", "--system-file", "--persona-from"):
        pairs.append(("--system", run.system_prompt()))
    return _derive(args, pairs) + list(args)


def hub_argv(run, args=()):
    """python -m deploy.hub upload's arguments: the adapter (or --path: merged dir, .gguf) with the recipe."""
    args = list(args)
    path = _pop(args, "--path", run.adapter_dir)
    return ["upload", str(path)] + _derive(args, [("--recipe", run.path)]) + args


def train(run, args=()):
    """Train: on CPU with scripts.cpu_run (--cpu), else Axolotl's own `accelerate launch -m
    axolotl.cli.train RECIPE` as the READMEs type it; returns the exit status."""
    if run.cpu:
        from scripts import cpu_run

        return cpu_run.main([str(run.path)] + list(args))
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "-m", "axolotl.cli.train",
               str(run.path.resolve()), *args]
    print("+ " + " ".join(command[1:]), file=sys.stderr)
    return subprocess.run(command, cwd=ROOT).returncode  # from the repo root, as the recipe's paths are


# ---------------------------------------------------------------- the command line

STAGES = {  # subcommand -> (module, what the recipe gives it)
    "check": ("scripts.check_recipes", "the recipe files to check"),
    "memory": ("scripts.memory", "the recipe"),
    "gpu-check": ("scripts.gpu_check", "the recipe"),
    "train": ("scripts.cpu_run", "--cpu: python -m scripts.cpu_run RECIPE; else accelerate launch -m "
              "axolotl.cli.train RECIPE (extra arguments go to it)"),
    "merge": ("deploy.merge", "--base (base_model's local dir), --adapter (output_dir), -o (<run>/merged)"),
    "gguf": ("deploy.gguf", "MODEL (<run>/merged; --model DIR replaces it), -o (<run>/model-<outtype>.gguf)"),
    "ollama": ("deploy.ollama", "--gguf (<run>/model-<outtype>.gguf; --outtype picks it), --model (<run>/merged), "
               "-o (<run>/Modelfile), --recipe-dir (the deploy section beside the recipe), --system "
               "(the training data's system prompt when the deploy section has none)"),
    "vllm": ("deploy.vllm", "check: ADAPTER (output_dir); serve / serve-command: --base (base_model), "
             "--adapter <recipe folder>=<output_dir>, --recipe"),
    "hub": ("deploy.hub", "upload: PATH (output_dir; --path replaces it), --recipe"),
}


def _sub_help(parser, module, derived):
    parser.print_help()
    print(f"\nderived from the recipe: {derived}\n\noptions of python -m {module} (given here, they replace "
          "the derived values):\n")
    sys.stdout.flush()
    try:
        importlib.import_module(module).main(["--help"])
    except SystemExit:
        pass
    return 0


def _parser():
    parser = argparse.ArgumentParser(prog="recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name, help_, kinds=None, recipe=True):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("-h", "--help", action="store_true", help="show this help and the module's options")
        if kinds:
            p.add_argument("kind", choices=kinds, nargs="?")  # checked after --help
        if recipe:
            p.add_argument("recipe", nargs="?", help="the recipe YAML (recipes/<name>/<file>.yml)")
            p.add_argument("--cpu", action="store_true", help="the CPU run (outputs/cpu_runs/..., local stand-in)")
        return p

    add("check", "check recipes offline (scripts.check_recipes)", recipe=False).add_argument("recipes", nargs="*")
    add("memory", "estimate GPU memory (scripts.memory)")
    add("gpu-check", "run a few measured training steps on this GPU (scripts.gpu_check)")
    add("convert", "convert data to messages JSONL (data_tools.<kind>)", CONVERTERS, recipe=False)
    add("train", "train the recipe (--cpu: on this machine)")
    add("merge", "merge the adapter into the base (deploy.merge)")
    add("gguf", "export the merged model to GGUF (deploy.gguf)")
    add("ollama", "write an Ollama Modelfile (deploy.ollama)")
    add("vllm", "check or serve the adapter with vLLM (deploy.vllm)", ("check", "serve", "serve-command"))
    add("eval", "evaluate (eval.<kind>)", EVALS)
    add("hub", "upload to the Hugging Face Hub (deploy.hub)", ("upload",))
    cp = sub.add_parser("cp", help="copy a recipe with its data and README into your own folder")
    cp.add_argument("recipe")
    cp.add_argument("dest", help="folder to create (or fill) with the copy")
    cp.add_argument("--force", action="store_true", help="overwrite files already there")
    return parser


@cli
def main(argv=None):
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    command = args.command
    if command == "cp":
        from common.recipe_copy import copy_recipe

        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        yml = copy_recipe(args.recipe, args.dest, args.force)
        print(f"copied {args.recipe} -> {yml}")
        return 0
    sub = parser._subparsers._group_actions[0].choices[command]
    kind = getattr(args, "kind", None)
    if command == "convert":
        module, derived = f"data_tools.{kind or 'qa'}", "nothing (a data file is not a recipe)"
    elif command == "eval":
        module, derived = f"eval.{kind or 'task'}", ("--model (base_model's local dir), --adapter (output_dir), "
                                                      "--out (<run>/eval/<kind>), --system for chat and redteam")
    else:
        module, derived = STAGES[command]
    if args.help:
        return _sub_help(sub, module, derived)
    if command in ("convert", "check"):
        if command == "convert" and not kind:
            sub.error("which converter? " + ", ".join(CONVERTERS))
        return importlib.import_module(module).main((args.recipes if command == "check" else []) + rest)
    if kind is None and command in ("vllm", "eval", "hub"):
        sub.error("the kind of " + command + " is missing")
    if not args.recipe:
        sub.error("the recipe is missing")
    run = Run.load(args.recipe, cpu=args.cpu)
    if command == "memory":
        return importlib.import_module(module).main([str(run.path)] + rest)
    if command == "gpu-check":
        return importlib.import_module(module).main([str(run.path)] + ["--cpu"] * args.cpu + rest)
    if command == "train":
        return train(run, rest)
    argv = {"merge": lambda: merge_argv(run, rest), "gguf": lambda: gguf_argv(run, rest),
            "ollama": lambda: ollama_argv(run, rest), "vllm": lambda: vllm_argv(run, kind, rest),
            "eval": lambda: eval_argv(run, kind, rest), "hub": lambda: hub_argv(run, rest)}[command]()
    return importlib.import_module(module).main(argv)


if __name__ == "__main__":
    sys.exit(main())
