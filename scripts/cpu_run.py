"""Run any recipe on CPU without editing it: real `accelerate launch --cpu`, Axolotl's own train CLI.

Overrides only what a CPU cannot do: the base model becomes the matching embedded or tiny stand-in
model, bf16/fp16/tf32 and 4/8-bit loading are turned off (QLoRA trains as plain LoRA), flash
attention becomes sdpa, Axolotl's Triton LoRA kernels, 8-bit optimizers, DeepSpeed/FSDP and W&B are
dropped. Data format, chat template, LoRA settings and sample packing stay as the recipe wrote them
(with sdpa, Axolotl 0.19 drops the padding mask of packed rows and transformers builds a block-diagonal
mask from their position_ids: packed samples do not see each other; tests/test_packing.py).

The data is checked first (scripts.check_recipes: fields, roles); a problem stops the run with the
file, line and field before training starts. The terminal shows one line per logging step (step,
loss, time left) and Axolotl's warnings; train.log in the output dir holds the terminal's lines and
the Trainer's metrics, debug.log all of Axolotl's log, axolotl_config.json the resolved config.
--verbose (or RECIPES_VERBOSE=1) shows everything.
"""
import argparse
import copy
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import yaml

from common import OFFLINE_ENV, ROOT
from common.errors import InputError, StepError, cli
from common.io import atomic_open, check_output, read_jsonl, read_yaml
from common.models import stand_in_for
from common.quiet import set_verbose, verbose
from common.run import Run

OFF = {
    "bf16": False, "fp16": False, "tf32": False, "bfloat16": False, "float16": False,
    "load_in_4bit": False, "load_in_8bit": False,
    "flash_attention": False, "xformers_attention": False, "flex_attention": False,
    "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False,
    "torch_compile": False,
}
REMOTE = ("wandb_project", "wandb_entity", "wandb_name", "wandb_run_id", "wandb_watch", "wandb_log_model",
          "hub_model_id", "push_dataset_to_hub")  # reporting and uploads: off in local runs
DROP = ("deepspeed", "fsdp", "fsdp_config", "fsdp_version", *REMOTE, "base_model_config", "tokenizer_config",
        "gptq", "bnb_config_kwargs")
GPU_OPTIMIZERS = ("8bit", "bnb", "paged", "apollo", "muon")
PROGRESS_PLUGIN = "common.train_progress.Progress"  # step / loss / time-left lines


def validate_recipe(run):
    """Unknown keys (a typo) and values of the wrong type stop the run here, naming file, line and key,
    instead of surfacing later in Axolotl's traceback (or, for a typo, not at all)."""
    from scripts.recipe_schema import key_and_type_errors

    errors = key_and_type_errors(run)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more: python -m scripts.check_recipes {run.path})" if len(errors) > 1 else ""
        raise InputError(first.message + more, first.file, first.line, first.field)


def _repoint(cfg, key, path, changes):
    """Point every entry of cfg[key] (datasets or test_datasets) at path."""
    put_path = str(Path(path).resolve())
    for ds in cfg.get(key) or []:
        changes.append(f"{key}.path: {ds.get('path')!r} -> {put_path!r}")
        ds["path"] = put_path
        ds.pop("data_files", None)


DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")


def check_local_files(recipe, cfg):
    """A dataset file the recipe names must exist before Axolotl starts (it would fail deep inside)."""
    for key in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(key) or []):
            path = str(ds.get("path", ""))
            if path.endswith(DATA_SUFFIXES) and not Path(path).exists():
                flag = "--dataset" if key == "datasets" else "--eval-dataset"
                raise InputError(f"{path} does not exist (run from the repo root, or pass {flag} FILE)",
                                 recipe, field=f"{key}[{i}].path")


def cpu_config(recipe, dataset=None, max_steps=None, output_dir=None, resume=False, eval_dataset=None,
               validate=True):
    """Return (config, changes): the recipe with CPU overrides, and a list of what changed.
    validate=False drops the recipe's validation set (benchmarks time training alone)."""
    run = recipe if isinstance(recipe, Run) else Run.load(recipe)
    recipe = run.path
    validate_recipe(run)
    cfg = copy.deepcopy(run.cfg)  # the run stays as the recipe says
    changes = []

    def put(key, value):
        if cfg.get(key) != value:
            changes.append(f"{key}: {cfg.get(key)!r} -> {value!r}")
            cfg[key] = value

    local = stand_in_for(cfg["base_model"])
    if local is None and not Path(cfg["base_model"]).is_dir():
        raise InputError(f"no local stand-in for {cfg['base_model']!r} (see common/models.py)",
                         recipe, field="base_model")
    if local is not None:
        put("base_model", str(local))
    for key in DROP:
        if key in cfg:
            changes.append(f"{key}: dropped")
            cfg.pop(key)
    for key, value in OFF.items():
        if key in cfg or key in ("bf16", "fp16", "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"):
            put(key, value)
    if cfg.get("attn_implementation") not in (None, "eager", "sdpa"):
        put("attn_implementation", "sdpa")
    put("dataloader_num_workers", 0)  # worker processes only cost start-up time on 2 cores
    put("dataloader_pin_memory", False)  # no accelerator to pin memory for
    if cfg.get("adapter") == "qlora":
        put("adapter", "lora")
    if any(tag in str(cfg.get("optimizer", "")) for tag in GPU_OPTIMIZERS):
        put("optimizer", "adamw_torch")
    if dataset:
        _repoint(cfg, "datasets", dataset, changes)
    if eval_dataset:
        if not cfg.get("test_datasets"):
            raise InputError("--eval-dataset needs a recipe with test_datasets", recipe, field="test_datasets")
        _repoint(cfg, "test_datasets", eval_dataset, changes)
    if not validate:
        for key in ("test_datasets", "eval_steps"):
            if cfg.pop(key, None) is not None:
                changes.append(f"{key}: dropped")
        put("eval_strategy", "no")
    check_local_files(recipe, cfg)
    if max_steps:
        put("max_steps", int(max_steps))
    if resume:
        put("auto_resume_from_checkpoints", True)
    out = Path(output_dir or ROOT / "outputs" / "cpu_runs" / Path(recipe).parent.name / Path(recipe).stem)
    put("output_dir", str(out))
    put("dataset_prepared_path", str(out / "prepared"))
    if PROGRESS_PLUGIN not in (cfg.get("plugins") or []):
        put("plugins", [*(cfg.get("plugins") or []), PROGRESS_PLUGIN])
    return cfg, changes


def write_config(cfg, path, force=True):
    with atomic_open(path, force=force) as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return Path(path)


def launch_command(config_path):
    import psutil

    accelerate = Path(sys.executable).parent / "accelerate"
    # the thread count accelerate would pick (and warn about when it is not given)
    threads = os.environ.get("OMP_NUM_THREADS") or max(psutil.cpu_count(logical=False) or 1, 1)
    return [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(threads),
            "-m", "common.axolotl_train", str(config_path)]


def metrics_line(line):
    """The Trainer's metric dicts: kept in train.log, on the terminal only when verbose (the progress
    lines say the same)."""
    return line.startswith("{'")


def train(config_path, log_path=None, command=None, offline=True):
    """Run the real Axolotl training (command: the launch command, default the CPU one); stream its
    output (and tee it to log_path). offline: the hub offline unless the user set otherwise (off for a
    GPU run: Axolotl fetches the flash-attention kernel from the hub). Returns rc."""
    env = {**os.environ, **{k: v for k, v in OFFLINE_ENV.items() if offline and k not in os.environ}}
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines as they come
    show_all = verbose()
    log = open(log_path, "w", encoding="utf-8", buffering=1) if log_path else None  # line by line
    try:
        proc = subprocess.Popen(command or launch_command(config_path), cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            if show_all or not metrics_line(line):
                sys.stdout.write(line)
                sys.stdout.flush()
            if log:
                log.write(line)
        return proc.wait()
    finally:
        if log:
            log.close()


def check_data(recipe, cfg):
    """The first records of each local JSONL dataset against its type, field mappings and roles
    (scripts.check_recipes' data check), before Axolotl starts: the first problem raises InputError
    naming the recipe's line and field and the data file's line."""
    from scripts.check_recipes import FIRST_RECORDS, _check_records
    from scripts.recipe_schema import Checker, Report

    lines = Run.read(recipe).lines
    for key in ("datasets", "test_datasets"):
        # _check_records names fields datasets[i]...; test_datasets get their own lines and names
        key_at = lines if key == "datasets" else {k[len("test_"):]: v for k, v in lines.items()
                                                  if k.startswith("test_datasets")}
        for i, ds in enumerate(cfg.get(key) or []):
            path = Path(str(ds.get("path", "")))
            path = path if path.is_absolute() else ROOT / path
            if path.suffix != ".jsonl" or not path.is_file():
                continue
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            records = list(islice(read_jsonl(path), FIRST_RECORDS))
            if not records:
                raise InputError(f"{shown} has no records", recipe, key_at.get(f"datasets[{i}]"),
                                 f"{key}[{i}].path")
            report = Report(recipe)
            _check_records(Checker(recipe, report, key_at), i, ds, records, shown)
            if report.errors:
                err = report.errors[0]
                raise InputError(err.message + "; stopped before training", err.file, err.line,
                                 key + err.field[len("datasets"):])


def prepare_run(recipe, dataset=None, max_steps=None, output_dir=None, force=False, resume=False,
                eval_dataset=None, validate=True):
    """Write the CPU config next to the run's outputs; returns its path."""
    cfg, changes = cpu_config(recipe, dataset, max_steps, output_dir, resume, eval_dataset, validate)
    out = Path(cfg["output_dir"])
    if (out / "adapter_config.json").exists() and not resume:
        check_output(out / "adapter_config.json", force)
    out.mkdir(parents=True, exist_ok=True)
    config_path = write_config(cfg, out / "cpu_config.yml")
    print(f"cpu_run: {recipe} -> {config_path}", file=sys.stderr)
    for change in changes:
        print(f"  {change}", file=sys.stderr)
    return config_path


def run_recipe(recipe, dataset=None, max_steps=None, output_dir=None, force=False, resume=False,
               eval_dataset=None, validate=True):
    """Train the recipe on CPU; returns the output dir holding the adapter. validate=False skips the
    recipe's validation set (training only)."""
    config_path = prepare_run(recipe, dataset, max_steps, output_dir, force, resume, eval_dataset, validate)
    check_data(recipe, read_yaml(config_path))
    out = config_path.parent
    rc = train(config_path, out / ("resume.log" if resume else "train.log"))
    if rc != 0:
        raise StepError(f"cpu_run: axolotl exited with {rc}; see {out / 'train.log'}")
    return out


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.cpu_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>/<file>.yml")
    parser.add_argument("--dataset", help="train on this file instead (same type and field mappings)")
    parser.add_argument("--eval-dataset", help="validate on this file instead (recipes with test_datasets)")
    parser.add_argument("--max-steps", type=int, help="cap the number of optimizer steps")
    parser.add_argument("--output-dir", help="default: outputs/cpu_runs/<recipe>/<file>")
    parser.add_argument("--dry-run", action="store_true", help="print the CPU config and stop")
    parser.add_argument("--force", action="store_true", help="overwrite an earlier adapter")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its last checkpoint in the output dir")
    parser.add_argument("--verbose", action="store_true",
                        help="show every library message and metric (RECIPES_VERBOSE=1 does the same)")
    args = parser.parse_args(argv)
    set_verbose(args.verbose)
    if args.dry_run:
        cfg, changes = cpu_config(args.recipe, args.dataset, args.max_steps, args.output_dir, args.resume,
                                    args.eval_dataset)
        print("\n".join(f"# {c}" for c in changes))
        print(yaml.safe_dump(cfg, sort_keys=False))
        return
    out = run_recipe(args.recipe, args.dataset, args.max_steps, args.output_dir, args.force, args.resume,
                     args.eval_dataset)
    print(f"adapter: {out}")


if __name__ == "__main__":
    main()
