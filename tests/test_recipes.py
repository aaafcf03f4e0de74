"""Every recipe, for real: Axolotl trains it on CPU (stand-in model, the recipe's own sample data) and
trains only what it should: the assistant turns (chat recipes) or the response (Alpaca).

The base recipe of each folder runs fully (2 steps) through scripts.cpu_run; its variants (QLoRA,
DeepSpeed ZeRO-2/3, FSDP, and the quickstart recipe, which test_cpu_run trains) are checked to
produce the same CPU configuration as a recipe that does run, apart from what only a GPU can do, and
to pass Axolotl's validation on CPU. The converted training files are regenerated with their data
tools and compared byte for byte, with the exact commands the READMEs show.
"""
import copy
import glob
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from common import ROOT
from common.io import read_jsonl
from scripts import cpu_run

RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("**/*.yml"))
# base variant of each folder: trained for real
RUN = [
    "recipes/tinyllama-qa/lora-1.1b.yml",
    "recipes/tinyllama-rpg/lora-1.1b.yml",
    "recipes/tinyllama-discord-persona/qlora-1.1b.yml",
    "recipes/tinyllama-alpaca/lora-8bit-1.1b.yml",
    "recipes/llama3-character-chat/lora-8b.yml",
]
# variant -> (recipe that runs, keys allowed to differ in the CPU config besides the output paths)
VARIANTS = {
    "recipes/tinyllama-qa/qlora-1.1b.yml": ("recipes/tinyllama-qa/lora-1.1b.yml", {"load_in_4bit"}),
    "recipes/llama3-character-chat/qlora-8b.yml": ("recipes/llama3-character-chat/lora-8b.yml", {"load_in_4bit"}),
    "recipes/llama3-character-chat/lora-8b-zero2.yml": ("recipes/llama3-character-chat/lora-8b.yml",
                                                        {"gradient_accumulation_steps"}),
    "recipes/llama3-character-chat/lora-8b-zero3.yml": ("recipes/llama3-character-chat/lora-8b.yml",
                                                        {"gradient_accumulation_steps"}),
    "recipes/llama3-character-chat/lora-8b-fsdp.yml": ("recipes/llama3-character-chat/lora-8b.yml",
                                                       {"gradient_accumulation_steps", "gradient_checkpointing"}),
}
QUICKSTART = "recipes/quickstart/lora-135m.yml"   # trained by tests/test_cpu_run.py and scripts/quickstart.py
# CPU forms on the embedded model: trained in full by tests/test_use_cases.py (conftest.use_case_adapters)
CPU_FORMS = {"recipes/tinyllama-rpg/lora-135m.yml", "recipes/llama3-character-chat/lora-135m.yml",
             "recipes/tinyllama-discord-persona/lora-135m.yml", "recipes/tinyllama-alpaca/lora-135m.yml"}
# converted training file -> the `recipe convert` command that makes it (as the README shows it)
CONVERTED = {
    "recipes/tinyllama-qa/data/train.messages.jsonl":
        "recipe convert qa recipes/tinyllama-qa/data/qa_train.jsonl "
        "-o recipes/tinyllama-qa/data/train.messages.jsonl",
    "recipes/tinyllama-rpg/data/train.messages.jsonl":
        "recipe convert rpg recipes/tinyllama-rpg/data/rpg_train.jsonl "
        "-o recipes/tinyllama-rpg/data/train.messages.jsonl",
    "recipes/tinyllama-rpg/data/val.messages.jsonl":
        "recipe convert rpg recipes/tinyllama-rpg/data/rpg_val.jsonl "
        "-o recipes/tinyllama-rpg/data/val.messages.jsonl",
    "recipes/tinyllama-discord-persona/data/train.messages.jsonl":
        "recipe convert discord recipes/tinyllama-discord-persona/data/discord_export.json --persona Vex "
        "-o recipes/tinyllama-discord-persona/data/train.messages.jsonl",
    "recipes/tinyllama-discord-persona/data/galley.messages.jsonl":
        "recipe convert discord recipes/tinyllama-discord-persona/data/galley_export.json --persona Vex "
        "-o recipes/tinyllama-discord-persona/data/galley.messages.jsonl",
}
OUTPUT_KEYS = {"output_dir", "dataset_prepared_path"}


def test_every_recipe_is_covered():
    assert set(RECIPES) == set(RUN) | set(VARIANTS) | {QUICKSTART} | CPU_FORMS


# --- real CPU training runs ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Train every RUN recipe for 2 steps, two at a time (a run spends much of its time starting up)."""
    base = tmp_path_factory.mktemp("recipe_runs")

    def one(recipe):
        out = base / Path(recipe).parent.name / Path(recipe).stem
        try:
            return cpu_run.run_recipe(ROOT / recipe, max_steps=2, output_dir=out)
        except BaseException as err:  # run_recipe raises StepError naming the log
            return err

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(RUN, pool.map(one, RUN)))


def _run(runs, recipe):
    out = runs[recipe]
    if isinstance(out, BaseException):
        pytest.fail(f"{recipe}: {out}")
    return Path(out)


def _prepared(out):
    """The tokenized dataset Axolotl saved under dataset_prepared_path (a datasets.save_to_disk dir)."""
    import datasets

    dirs = [Path(p).parent for p in glob.glob(str(out / "prepared" / "*" / "dataset_info.json"))]
    assert len(dirs) == 1, f"expected one prepared dataset under {out / 'prepared'}, found {dirs}"
    return datasets.load_from_disk(str(dirs[0]))


def _trained_spans(example):
    """Token id runs whose labels are not -100; every such label must equal its input id."""
    spans, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label == -100:
            if current:
                spans.append(current)
                current = []
        else:
            assert label == token, "a trained label differs from its input id"
            current.append(token)
    if current:
        spans.append(current)
    return spans


def _source_chats(cfg):
    """The recipe's records as [(role, content)], through its own field/role mappings."""
    ds = cfg["datasets"][0]
    field = ds.get("field_messages", "messages")
    props = ds.get("message_property_mappings") or {"role": "role", "content": "content"}
    roles = {src: dst for dst, srcs in (ds.get("roles") or {}).items() for src in srcs} or \
        {"human": "user", "gpt": "assistant"}
    chats = []
    for _, record in read_jsonl(ROOT / ds["path"]):
        turns = record[field]
        chats.append([(roles.get(t[props["role"]], t[props["role"]]), t[props["content"]]) for t in turns])
    return chats


def _alpaca_prompt(record):
    """The instruct part of Axolotl's Alpaca prompt (axolotl.prompters.AlpacaPrompter) for one record."""
    if record.get("input"):
        return f"### Instruction:\n{record['instruction']}\n\n### Input:\n{record['input']}\n\n### Response:\n"
    return f"### Instruction:\n{record['instruction']}\n\n### Response:\n"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RUN)
def test_recipe_trains_on_cpu_and_masks_all_but_the_answers(runs, recipe):
    from transformers import AutoTokenizer

    out = _run(runs, recipe)
    adapter = json.loads((out / "adapter_config.json").read_text())
    cfg = yaml.safe_load((ROOT / recipe).read_text())
    assert adapter["r"] == cfg["lora_r"] and adapter["lora_alpha"] == cfg["lora_alpha"]
    assert set(adapter["target_modules"]) == set(cfg["lora_target_modules"])
    assert not adapter.get("modules_to_save") and not adapter.get("use_dora")
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    try:  # the adapter Axolotl wrote passes the vLLM rules deploy.vllm checks (against the stand-in base)
        from deploy.vllm import check_adapter
    except ImportError:
        pass
    else:
        verdict = check_adapter(out, base=cpu_run.stand_in_for(cfg["base_model"]))
        assert verdict["problems"] == [], verdict["problems"]

    tokenizer = AutoTokenizer.from_pretrained(str(cpu_run.stand_in_for(cfg["base_model"])))
    eos = tokenizer.eos_token
    prepared = _prepared(out)
    assert len(prepared) > 0
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    checked = 0
    if cfg["datasets"][0]["type"] == "alpaca":
        records = [record for _, record in read_jsonl(ROOT / cfg["datasets"][0]["path"])]
        for example in list(prepared)[:5]:
            text = decode(example["input_ids"])
            matches = [r for r in records if _alpaca_prompt(r) in text]
            assert len(matches) == 1, f"{len(matches)} source records match a prepared example"
            record = matches[0]
            assert [decode(s) for s in _trained_spans(example)] == [record["output"] + eos]
            masked = decode([t for t, l in zip(example["input_ids"], example["labels"]) if l == -100])
            assert record["instruction"] in masked and "### Response:" in masked  # the prompt is not trained
            checked += 1
    else:
        chats = _source_chats(cfg)
        for example in list(prepared)[:5]:
            text = decode(example["input_ids"])
            matches = [c for c in chats if all(content.strip() in text for _, content in c)]
            assert matches, f"no source conversation matches a prepared example of {recipe}"
            chat = max(matches, key=lambda c: sum(len(content) for _, content in c))
            expected = [content.strip() + eos for role, content in chat if role == "assistant"]
            assert [decode(s) for s in _trained_spans(example)] == expected
            checked += 1
    assert checked


# --- variants: same CPU run as a recipe that runs, and valid for Axolotl ---------------------------

def _cpu_cfg(recipe, tmp_path):
    cfg, _ = cpu_run.cpu_config(ROOT / recipe, max_steps=2, output_dir=tmp_path / Path(recipe).stem)
    return cfg


def _axolotl_validates(cfg):
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    caps = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
    return validate_config(DictDefault(copy.deepcopy(cfg)), capabilities=caps,
                           env_capabilities={"torch_version": "2.8.0"})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_runs_as_its_base_on_cpu(variant, tmp_path):
    base, allowed = VARIANTS[variant]
    mine, theirs = _cpu_cfg(variant, tmp_path), _cpu_cfg(base, tmp_path)
    differing = {k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)} - OUTPUT_KEYS
    assert differing <= allowed, f"{variant} differs from {base} in {differing - allowed}"
    assert "deepspeed" not in mine and "fsdp_config" not in mine and mine["adapter"] == "lora"
    valid = _axolotl_validates(mine)
    assert valid.adapter == "lora" and valid.lora_r == mine["lora_r"]


def test_quickstart_recipe_is_valid_on_cpu(tmp_path):
    data = ROOT / "recipes/tinyllama-qa/data/train.messages.jsonl"  # outputs/quickstart/data is made by the run
    cfg, _ = cpu_run.cpu_config(ROOT / QUICKSTART, dataset=data, eval_dataset=data, max_steps=2,
                                output_dir=tmp_path / "quickstart")
    assert _axolotl_validates(cfg).datasets[0]["type"] == "chat_template"


# --- converted data and READMEs --------------------------------------------------------------------

def test_every_converted_file_has_its_command():
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("*/data/*.messages.jsonl")}
    generated = {f"recipes/{use_case}/data/general.messages.jsonl"  # replay: tests/test_samples.py regenerates it
                 for use_case in ("tinyllama-rpg", "tinyllama-discord-persona")}
    assert shipped == set(CONVERTED) | generated


@pytest.mark.parametrize("target", sorted(CONVERTED))
def test_converted_data_is_reproduced_by_its_data_tool(target, tmp_path):
    from common import cli

    argv = shlex.split(CONVERTED[target])
    assert argv[:2] == ["recipe", "convert"]
    out = tmp_path / "regenerated.jsonl"
    args = argv[1:]
    args[args.index("-o") + 1] = str(out)
    args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
    cli.main(args)  # data_tools.<kind>
    assert out.read_bytes() == (ROOT / target).read_bytes(), f"{target} is stale: rerun `{CONVERTED[target]}`"
    readme = (ROOT / Path(target).parent.parent / "README.md").read_text()
    assert " ".join(CONVERTED[target].split()) in " ".join(readme.replace("\\\n", " ").split())


DEPLOYED = {"tinyllama-qa": "qlora-1.1b.yml", "tinyllama-rpg": "lora-1.1b.yml",  # the recipe each README deploys
            "tinyllama-discord-persona": "qlora-1.1b.yml", "tinyllama-alpaca": "lora-8bit-1.1b.yml",
            "llama3-character-chat": "lora-8b.yml"}


@pytest.mark.parametrize("recipe", RUN + sorted(VARIANTS))
def test_readme_shows_the_commands(recipe):
    """The recipe CLI's commands (issue 14); DeepSpeed/FSDP recipes keep `accelerate launch` with its
    options, which `recipe train` does not pass. tests/test_readme_commands.py runs or parses them."""
    readme = (ROOT / Path(recipe).parent / "README.md").read_text()
    flat = " ".join(readme.replace("\\\n", " ").split())
    cfg = yaml.safe_load((ROOT / recipe).read_text())
    if cfg.get("deepspeed") or cfg.get("fsdp_config"):
        assert re.search(rf"accelerate launch --\S+ \S+ -m axolotl\.cli\.train {re.escape(recipe)}", flat)
    else:
        assert f"recipe train {recipe}" in flat
    assert f"recipe check recipes/{Path(recipe).parent.name}/" in flat
    assert re.search(rf"recipe memory recipes/{Path(recipe).parent.name}/\S+\.yml --(gpu|num-gpus)", flat)
    if recipe in RUN:
        assert f"recipe train {recipe} --cpu --max-steps 5" in flat
    served = f"recipes/{Path(recipe).parent.name}/{DEPLOYED[Path(recipe).parent.name]}"
    for tool in ("merge", "gguf", "ollama", "vllm check", "vllm serve-command"):
        if tool == "ollama" and "alpaca" in recipe:  # the Alpaca prompt: a hand-written Modelfile instead
            assert "do not use `recipe ollama`" in flat
            continue
        assert f"recipe {tool} {served}" in flat
    assert not re.search(r"python -m (deploy\.(merge|gguf|ollama|hub|vllm (check|serve))|eval\.|data_tools\.)", flat)


def test_rpg_deploy_json_serves_with_the_training_system_prompt():
    from data_tools.rpg import SYSTEM_PROMPT

    deploy = json.loads((ROOT / "recipes/tinyllama-rpg/deploy.json").read_text(encoding="utf-8"))
    assert deploy == {"system": SYSTEM_PROMPT, "temperature": 0.7, "top_p": 0.9, "stop": ["USER:", "ASSISTANT:"]}
    _, first = next(read_jsonl(ROOT / "recipes/tinyllama-rpg/data/train.messages.jsonl"))
    assert first["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
