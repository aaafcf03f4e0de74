"""The recipe command line and the run object: paths derive from the recipe as the READMEs write them,
`recipe cp` makes a copy that checks clean, errors name file and line, every subcommand has --help."""
import json
import re

import pytest
import yaml

from common import ROOT
from common import cli
from common.errors import InputError
from common.models import EMBEDDED, TINYLLAMA, local_model
from common.run import Run
from scripts.check_recipes import check_recipe
from tests.helpers import make_adapter

RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("*/*.yml"))


def _readme_pairs(pattern):
    """(recipe, path) pairs a README comment gives, e.g. `recipe train RECIPE   # -> outputs/...`."""
    pairs = []
    for readme in sorted((ROOT / "recipes").glob("*/README.md")):
        pairs += re.findall(pattern, readme.read_text(encoding="utf-8"))
    return pairs


TRAIN_OUTPUTS = _readme_pairs(r"recipe train (recipes/\S+\.yml)\s+# -> (outputs/\S+)")
CPU_OUTPUTS = _readme_pairs(r"recipe train (recipes/\S+\.yml) --cpu[^#\n]*# -> (outputs/\S+)")


def test_the_readmes_give_paths_to_compare():
    assert len(TRAIN_OUTPUTS) >= 6 and len(CPU_OUTPUTS) >= 3


@pytest.mark.parametrize("recipe,adapter", TRAIN_OUTPUTS)
def test_run_adapter_dir_is_the_readme_path(recipe, adapter):
    run = Run.load(ROOT / recipe)
    assert run.adapter_dir == ROOT / adapter
    assert run.merged_dir == ROOT / adapter.rsplit("/", 1)[0] / "merged"


@pytest.mark.parametrize("recipe,adapter", CPU_OUTPUTS)
def test_cpu_run_adapter_dir_is_the_readme_path(recipe, adapter):
    assert Run.load(ROOT / recipe, cpu=True).adapter_dir == ROOT / adapter


def test_qa_readme_deploy_paths():
    """recipes/tinyllama-qa/README.md's recipe commands say where merge, GGUF and Modelfile go and which
    system prompt is served; the run gives the same."""
    text = (ROOT / "recipes/tinyllama-qa/README.md").read_text(encoding="utf-8")
    recipe = "recipes/tinyllama-qa/qlora-1.1b.yml"
    adapter = re.search(rf"recipe train {recipe}\s+# -> (\S+)", text).group(1)
    merged = re.search(rf"recipe merge {recipe}\s+# -> (\S+)", text).group(1)
    gguf = re.search(rf"recipe gguf {recipe} --outtype q8_0\s+# -> (\S+)", text).group(1)
    modelfile = re.search(rf"recipe ollama {recipe} --outtype q8_0 --create tinyllama-qa\s+# -> (\S+/Modelfile)",
                          text).group(1)
    system = re.search(r'training data \("([^"]+)"\) into the Modelfile', text).group(1)
    run = Run.load(ROOT / recipe)
    assert (run.adapter_dir, run.merged_dir) == (ROOT / adapter, ROOT / merged)
    assert run.gguf_path("q8_0") == ROOT / gguf and run.modelfile == ROOT / modelfile
    assert run.system_prompt() == system  # from the training data, as the README types it
    argv = cli.ollama_argv(run, ["--outtype", "q8_0"])
    assert argv[argv.index("--gguf") + 1] == str(ROOT / gguf) and argv[argv.index("--system") + 1] == system


def test_deploy_section_beside_the_recipe(tmp_path):
    run = Run.load(ROOT / "recipes/tinyllama-rpg/lora-135m.yml")
    deploy = json.loads((ROOT / "recipes/tinyllama-rpg/deploy.json").read_text(encoding="utf-8"))
    assert run.system_prompt() == deploy["system"] and run.stop_strings() == deploy["stop"]
    recipe = tmp_path / "r.yml"
    recipe.write_text("base_model: x\n")
    (tmp_path / "deploy.json").write_text('{"system": "folder"}')
    assert Run.load(recipe).system_prompt() == "folder"
    (tmp_path / "r.deploy.json").write_text('{"system": "this recipe", "stop": "END"}')
    assert Run.load(recipe).system_prompt() == "this recipe" and Run.load(recipe).stop_strings() == ["END"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_resolves(recipe):
    run = Run.load(ROOT / recipe)
    cfg = yaml.safe_load((ROOT / recipe).read_text())
    assert run.adapter_dir == ROOT / cfg["output_dir"] and run.name == recipe.split("/")[1]
    assert run.chat_template["chat_template"] == (cfg["datasets"][0].get("chat_template") or cfg.get("chat_template"))


def test_parse_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("base_model: x\noutput_dir: outputs/x/adapter\ndatasets: [unclosed\n")
    with pytest.raises(InputError) as info:
        Run.load(bad)
    assert (info.value.file, info.value.line) == (bad, 4) and "invalid YAML" in info.value.message
    with pytest.raises(SystemExit) as exit_:
        cli.main(["merge", str(bad)])
    assert exit_.value.code == 2 and f"{bad}:4: invalid YAML" in capsys.readouterr().err
    typed = tmp_path / "typed.yml"
    typed.write_text("# a comment\nsequence_len: 64\nbase_model: [1, 2]\n")
    with pytest.raises(InputError) as info:
        Run.load(typed).base_model
    assert (info.value.file, info.value.line, info.value.field) == (typed, 3, "base_model")
    missing = tmp_path / "missing.yml"
    missing.write_text("base_model: some-org/not-downloaded-model\noutput_dir: outputs/x/adapter\n")
    with pytest.raises(SystemExit):
        cli.main(["merge", str(missing)])
    assert f"{missing}:1: field 'base_model'" in capsys.readouterr().err


HELP = [(["check"], "scripts.check_recipes"), (["memory"], "scripts.memory"), (["convert", "qa"], "data_tools.qa"),
        (["train"], "scripts.cpu_run"), (["merge"], "deploy.merge"), (["gguf"], "deploy.gguf"),
        (["ollama"], "deploy.ollama"), (["vllm"], "deploy.vllm"), (["eval", "task"], "eval.task"),
        (["eval", "curves"], "eval.curves"), (["hub"], "deploy.hub"),
        (["gpu-check"], "scripts.gpu_check")]


@pytest.mark.parametrize("words,module", HELP, ids=[" ".join(w) for w, _ in HELP])
def test_subcommand_help(words, module, capsys):
    assert cli.main(words + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: recipe {words[0]}") and f"usage: python -m {module}" in out


def test_top_and_cp_help(capsys):
    for argv in (["--help"], ["cp", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0
    assert "recipe cp RECIPE DEST" in capsys.readouterr().out


def test_merge_derives_base_adapter_and_output():
    run = Run.load(ROOT / "recipes/tinyllama-rpg/lora-135m.yml")
    out = ROOT / "outputs/tinyllama-rpg/lora-135m"
    assert cli.merge_argv(run) == ["--base", str(local_model(EMBEDDED)), "--adapter", str(out / "adapter"),
                                   "-o", str(out / "merged")]
    assert cli.merge_argv(run, ["--base", "B", "--output=M"]) == ["--adapter", str(out / "adapter"),
                                                                  "--base", "B", "--output=M"]
    cpu = Run.load(ROOT / "recipes/tinyllama-qa/qlora-1.1b.yml", cpu=True)
    assert cli.merge_argv(cpu)[:2] == ["--base", str(local_model(TINYLLAMA))]
    serve = cli.vllm_argv(Run.load(ROOT / "recipes/tinyllama-qa/qlora-1.1b.yml"), "serve-command")
    assert serve[serve.index("--adapter") + 1] == f"tinyllama-qa={ROOT}/outputs/tinyllama-qa/qlora-1.1b/adapter"
    assert serve[serve.index("--base") + 1] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def test_merge_and_gguf_from_the_recipe_alone(tmp_path, tinyllama, capsys):
    """A recipe naming a local base and an output_dir: `recipe merge` and `recipe gguf` need nothing else."""
    recipe = tmp_path / "mine" / "lora.yml"
    recipe.parent.mkdir()
    recipe.write_text(f"base_model: {tinyllama}\noutput_dir: {tmp_path}/run/adapter\n")
    make_adapter(tinyllama, tmp_path / "run" / "adapter", targets=("q_proj", "v_proj"))
    cli.main(["merge", str(recipe), "--no-verify"])
    info = json.loads((tmp_path / "run" / "merged" / "merge_info.json").read_text())
    assert (info["base_model"], info["adapter"]) == (str(tinyllama), str(tmp_path / "run" / "adapter"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["merge", str(recipe)])  # the merged model exists: --force needed
    assert exit_.value.code == 2 and "--force" in capsys.readouterr().err
    cli.main(["gguf", str(recipe), "--outtype", "f32"])
    assert (tmp_path / "run" / "model-f32.gguf").stat().st_size > 0


def test_cp_then_check_passes(tmp_path, capsys):
    dest = tmp_path / "my-qa"
    assert cli.main(["cp", "recipes/tinyllama-qa/qlora-1.1b.yml", str(dest)]) == 0
    copy = dest / "qlora-1.1b.yml"
    cfg = yaml.safe_load(copy.read_text())
    data = (ROOT / cfg["datasets"][0]["path"]).resolve()
    assert data == dest / "data" / "train.messages.jsonl" and data.read_bytes() == \
        (ROOT / "recipes/tinyllama-qa/data/train.messages.jsonl").read_bytes()
    assert cfg["output_dir"] == "outputs/my-qa/qlora-1.1b/adapter"
    assert "# python -m data_tools.qa (see README)" in copy.read_text()  # comments stay
    assert "outputs/my-qa/qlora-1.1b/adapter" in (dest / "README.md").read_text()
    report = check_recipe(copy)
    assert report.ok, [str(e) for e in report.errors]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cp", "recipes/tinyllama-qa/qlora-1.1b.yml", str(dest)])
    assert exit_.value.code == 2 and "--force" in capsys.readouterr().err
    assert cli.main(["cp", "recipes/tinyllama-qa/qlora-1.1b.yml", str(dest), "--force"]) == 0


def test_cp_takes_deepspeed_and_the_deploy_section(tmp_path):
    cli.main(["cp", "recipes/llama3-character-chat/lora-8b-zero2.yml", str(tmp_path / "z")])
    cfg = yaml.safe_load((tmp_path / "z" / "lora-8b-zero2.yml").read_text())
    assert (ROOT / cfg["deepspeed"]).resolve() == tmp_path / "z" / "deepspeed" / "zero2.json"
    cli.main(["cp", "recipes/tinyllama-rpg/lora-135m.yml", str(tmp_path / "rpg")])
    copy = Run.load(tmp_path / "rpg" / "lora-135m.yml")
    assert copy.system_prompt() == Run.load(ROOT / "recipes/tinyllama-rpg/lora-135m.yml").system_prompt()
    assert copy.deploy_file() == tmp_path / "rpg" / "deploy.json"
