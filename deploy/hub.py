"""Upload an adapter, a merged model or a GGUF file to the Hugging Face Hub with a generated model card.

  python -m deploy.hub upload PATH --repo-id user/name [--private] [--recipe recipes/x/y.yml]
      [--eval-report report.json] [--base-model ORG/NAME] [--license ID] [--dry-run] [--stage-dir DIR]

PATH is a PEFT adapter dir (adapter_config.json), a merged HF model dir (config.json) or a .gguf file.
The upload is staged first: the files to publish (top-level files only; checkpoint-* and other
sub-folders are left out) plus a README.md model card built with huggingface_hub's ModelCard /
ModelCardData: YAML metadata (base_model, library_name peft for adapters, tags, license when known,
datasets when they are Hub ids) and a body with the recipe used (secrets redacted), the data, the
eval figures (numbers found in --eval-report) and how to use the result.

Pickle files (.bin, .pt, .pth, .pkl, .ckpt: loading them can run code) are left out unless
--allow-pickle; if that leaves no weights, nothing is uploaded. The token comes only from the
HF_TOKEN environment variable or the saved login (`hf auth login`), never from the command line,
and a staged file containing it is refused. --dry-run prints the file list and the card and,
with --stage-dir, writes the staged folder there; it needs no network and no token.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from common.errors import InputError, cli
from common.io import atomic_path, check_output, read_json
from common.run import Run

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".gguf") + PICKLE_SUFFIXES
# Hub ids of the models this repo builds locally (only the embedded SmolLM2 has the real weights;
# the stand-ins have random weights and no Hub counterpart)
LOCAL_MODEL_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
KNOWN_LICENSES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "apache-2.0",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": "apache-2.0",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "apache-2.0",
    "TinyLlama/TinyLlama_v1.1": "apache-2.0",
    "meta-llama/Meta-Llama-3-8B": "llama3",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama3",
    "meta-llama/Llama-3.1-8B": "llama3.1",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama3.1",
}
SECRET_KEY = re.compile(r"(token|secret|password|api[_-]?key|credential)", re.IGNORECASE)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def hub_id(name):
    """`name` if it reads as a Hub repo id (org/name) and is not a local path, else None."""
    if not name:
        return None
    name = str(name)
    local = LOCAL_MODEL_IDS.get(Path(name).name)
    if local:
        return local
    if HUB_ID.match(name) and not Path(name).exists():
        return name
    return None


def read_recipe(path):
    """(recipe mapping, its text); an empty file reads as an empty recipe."""
    run = Run.read(path)
    data = run.cfg or {}
    if not isinstance(data, dict):
        raise InputError("expected a YAML mapping", path)
    return data, run.text


def redact(text):
    """Recipe text with the values of secret-looking keys replaced."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*-?\s*)([A-Za-z0-9_.-]+)(\s*:\s*)(.+)$", line)
        if m and SECRET_KEY.search(m.group(2)) and m.group(4).strip() not in ("", "null", "~", "false", "true"):
            line = f"{m.group(1)}{m.group(2)}{m.group(3)}<redacted>"
        out.append(line)
    return "\n".join(out)


def eval_rows(report, limit=50):
    """(metric path, value) for the numbers in an eval report (dicts, and lists of labelled dicts)."""
    rows = []

    def walk(value, path):
        if len(rows) >= limit:
            return
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            rows.append((".".join(path), value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + [str(key)])
        elif isinstance(value, list) and len(value) <= 20:
            for i, item in enumerate(value):
                label = None
                if isinstance(item, dict):
                    label = next((str(item[k]) for k in ("label", "name", "model", "task") if
                                  isinstance(item.get(k), str)), None)
                walk(item, path + [label or str(i)])

    walk(report, [])
    return rows


def detect_kind(path):
    path = Path(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError("expected an adapter dir, a merged model dir or a .gguf file", path)
        return "gguf"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if (path / "adapter_config.json").exists():
        return "adapter"
    if (path / "config.json").exists():
        return "model"
    if list(path.glob("*.gguf")):
        return "gguf"
    raise InputError("no adapter_config.json, config.json or .gguf file here", path)


def select_files(path, kind, allow_pickle=False):
    """(files to stage, [(name, reason) left out])."""
    path = Path(path)
    if kind == "gguf" and path.is_file():
        return [path], []
    chosen, skipped = [], []
    for item in sorted(path.iterdir()):
        name = item.name
        if name.startswith("."):
            skipped.append((name, "hidden"))
        elif item.is_dir():
            skipped.append((name + "/", "sub-folder (checkpoints, logs) not uploaded"))
        elif name == "README.md":
            skipped.append((name, "replaced by the generated model card"))
        elif name.endswith(PICKLE_SUFFIXES) and not allow_pickle:
            skipped.append((name, "pickle file (loading it can run code); --allow-pickle to include"))
        elif item.is_file():
            chosen.append(item)
    weights = [f for f in chosen if f.name.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        pickled = [n for n, why in skipped if why.startswith("pickle")]
        hint = f" (only pickle weights: {', '.join(pickled)}; convert them to safetensors)" if pickled else ""
        raise InputError(f"no weights to upload{hint}", path)
    return chosen, skipped


def describe(kind, base):
    link = f"[{base}](https://huggingface.co/{base})" if base else "its base model"
    return {"adapter": f"a LoRA adapter for {link}",
            "model": f"{link} fine-tuned with LoRA and merged into full weights",
            "gguf": f"a GGUF export (for llama.cpp / Ollama) of a LoRA fine-tune of {link}"}[kind]


def usage(kind, repo_id, base, files):
    if kind == "adapter":
        return ("```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f"model = AutoPeftModelForCausalLM.from_pretrained(\"{repo_id}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{base or repo_id}\")\n"
                "messages = [{\"role\": \"user\", \"content\": \"Hello!\"}]\n"
                "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\","
                " return_dict=True)\n"
                "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0]))\n```\n\n"
                "vLLM (check it first with `python -m deploy.vllm check`):\n\n"
                f"```bash\nvllm serve {base or 'BASE_MODEL'} --enable-lora --lora-modules "
                f"'{{\"name\": \"adapter\", \"path\": \"{repo_id}\"}}'\n```")
    if kind == "model":
        return ("```python\nfrom transformers import pipeline\n\n"
                f"chat = pipeline(\"text-generation\", model=\"{repo_id}\")\n"
                "print(chat([{\"role\": \"user\", \"content\": \"Hello!\"}], max_new_tokens=128))\n```")
    gguf = next((f.name for f in files if f.name.endswith(".gguf")), "model.gguf")
    return (f"```bash\n# llama.cpp\nllama-cli -hf {repo_id} -cnv\n# Ollama (a Modelfile with the chat template: python -m deploy.ollama)\n"
            f"ollama run hf.co/{repo_id}\n```\n\nFile: `{gguf}`")


def build_card(kind, repo_id, base, license_, recipe=None, recipe_text=None, recipe_path=None,
               report=None, report_path=None, files=()):
    from huggingface_hub import ModelCard, ModelCardData

    tags = ["axolotl", "lora", "fine-tuned"]
    if kind == "adapter":
        tags.append("peft")
    elif kind == "gguf":
        tags.append("gguf")
    datasets, data_lines = [], []
    for entry in (recipe or {}).get("datasets") or []:
        if not isinstance(entry, dict):
            continue
        path = entry.get("path")
        if hub_id(path) and path not in datasets:
            datasets.append(path)
        data_lines.append(f"- `{path}` (type `{entry.get('type', '?')}`)")
    data = ModelCardData(
        base_model=base,
        library_name={"adapter": "peft", "model": "transformers"}.get(kind),
        license=license_,
        tags=tags,
        datasets=datasets or None,
        pipeline_tag="text-generation",
    )
    name = repo_id.split("/", 1)[1]
    body = [f"# {name}", "", f"This is {describe(kind, base)}, trained with "
            "[Axolotl](https://github.com/axolotl-ai-cloud/axolotl).", ""]
    if not base:
        body += ["The base model is not a Hub model (a local model was used); see the recipe below.", ""]
    if recipe is not None:
        keys = [k for k in ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "sequence_len",
                            "num_epochs", "learning_rate", "micro_batch_size", "gradient_accumulation_steps",
                            "optimizer", "lr_scheduler") if k in recipe]
        body += ["## Training recipe", "", f"Recipe: `{recipe_path}`", ""]
        body += [f"- **{k}**: {recipe[k]}" for k in keys] + [""]
        body += ["<details><summary>Full recipe</summary>", "", "```yaml", redact(recipe_text).rstrip(), "```", "",
                 "</details>", ""]
        body += ["## Data", ""] + (data_lines or ["(no datasets listed in the recipe)"]) + [""]
    if report is not None:
        rows = eval_rows(report)
        body += ["## Evaluation", "", f"From `{report_path}`:", ""]
        if rows:
            body += ["| metric | value |", "|---|---|"]
            body += [f"| {m.replace('|', '/')} | {v:.4g} |" if isinstance(v, float) else f"| {m} | {v} |"
                     for m, v in rows]
        else:
            body.append("(no numeric results found in the report)")
        body.append("")
    body += ["## How to use", "", usage(kind, repo_id, base, files), ""]
    body += ["## Files", ""] + [f"- `{f.name}`" for f in files] + [""]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    return ModelCard(content)


def stage(path, repo_id, out_dir, recipe_path=None, report_path=None, base_model=None, license_=None,
          allow_pickle=False):
    """Write the staged folder (files + README.md) into out_dir (which must not exist). Returns info."""
    kind = detect_kind(path)
    files, skipped = select_files(path, kind, allow_pickle)
    recipe, recipe_text = read_recipe(recipe_path) if recipe_path else (None, None)
    report = read_json(report_path) if report_path else None

    base = hub_id(base_model) if base_model else None
    if base_model and not base:
        raise InputError(f"{base_model!r} is not a Hub model id (org/name)", field="base-model")
    if not base and recipe:
        base = hub_id(recipe.get("base_model"))
    if not base and kind == "adapter":
        base = hub_id(read_json(Path(path) / "adapter_config.json").get("base_model_name_or_path"))
    license_ = license_ or KNOWN_LICENSES.get(base)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    notes = []
    for f in files:
        shutil.copy2(f, out_dir / f.name)
    config_path = out_dir / "adapter_config.json"
    if kind == "adapter" and config_path.exists():
        config = read_json(config_path)
        original = config.get("base_model_name_or_path")
        if base and original != base:
            # a local path here would make AutoPeftModel look for the base on the user's disk
            config["base_model_name_or_path"] = base
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            notes.append(f"adapter_config.json: base_model_name_or_path {original!r} -> {base!r}")
        elif not base:
            notes.append(f"base model {original!r} is not a Hub id: give --base-model ORG/NAME so that users "
                         "can load the adapter")
    card = build_card(kind, repo_id, base, license_, recipe, recipe_text, recipe_path, report, report_path, files)
    card.save(out_dir / "README.md")
    check_no_token(out_dir)
    return {"kind": kind, "base_model": base, "license": license_,
            "files": sorted(p.name for p in out_dir.iterdir()), "skipped": skipped, "notes": notes}


def check_no_token(folder):
    """Refuse a staged folder in which the Hugging Face token appears."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token or len(token) < 8:
        return
    needle = token.encode()
    for f in Path(folder).iterdir():
        with open(f, "rb") as fh:
            tail = b""
            while chunk := fh.read(1 << 20):
                if needle in tail + chunk:
                    raise InputError("the Hugging Face token appears in this file; refusing to upload it", f)
                tail = chunk[-len(needle):]


def upload(folder, repo_id, private=False, commit_message=None):
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise InputError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                             commit_message=commit_message or "Upload with deploy.hub")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("upload", help="stage PATH with a model card and upload it")
    p.add_argument("path", help="adapter dir, merged model dir or .gguf file")
    p.add_argument("--repo-id", required=True, help="user/name on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--recipe", help="the Axolotl recipe YAML used for training")
    p.add_argument("--eval-report", help="JSON results of an eval helper; its numbers go in the card")
    p.add_argument("--base-model", help="Hub id of the base model (default: from the recipe or adapter config)")
    p.add_argument("--license", help="license id for the card (default: the base model's, when known)")
    p.add_argument("--allow-pickle", action="store_true", help="also stage pickle files (.bin, .pt, ...)")
    p.add_argument("--dry-run", action="store_true", help="stage and print, do not upload")
    p.add_argument("--stage-dir", help="write the staged folder here (kept after the run)")
    p.add_argument("--commit-message")
    p.add_argument("--force", action="store_true", help="overwrite an existing --stage-dir")
    args = parser.parse_args(argv)

    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as err:
        raise InputError(str(err), field="repo-id") from None
    if "/" not in args.repo_id:
        raise InputError("expected user/name or org/name", field="repo-id")
    if not args.dry_run and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise InputError("HF_HUB_OFFLINE is set: unset it to upload, or use --dry-run")
    if args.stage_dir:
        check_output(args.stage_dir, args.force)

    def run(folder):
        info = stage(args.path, args.repo_id, folder, args.recipe, args.eval_report, args.base_model,
                     args.license, args.allow_pickle)
        print(f"staged {info['kind']} for {args.repo_id} (base_model: {info['base_model'] or 'unknown'}, "
              f"license: {info['license'] or 'unknown'}):")
        for name in info["files"]:
            size = (Path(folder) / name).stat().st_size
            print(f"  {name}  ({size:,} bytes)")
        for name, why in info["skipped"]:
            print(f"  left out {name}: {why}")
        for note in info["notes"]:
            print(f"  note: {note}")
        if args.dry_run:
            print("dry run: nothing uploaded" + (f"; staged folder: {args.stage_dir}" if args.stage_dir else ""))
            return
        result = upload(folder, args.repo_id, args.private, args.commit_message)
        print(f"uploaded: {getattr(result, 'commit_url', result)}")

    if args.stage_dir:
        with atomic_path(args.stage_dir, force=args.force) as tmp:
            run(tmp)
    else:
        with tempfile.TemporaryDirectory(prefix="deploy-hub-") as tmp:
            run(Path(tmp) / "stage")
    return 0


main = cli(main)

if __name__ == "__main__":
    sys.exit(main())
