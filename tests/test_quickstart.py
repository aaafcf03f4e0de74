"""The quickstart end to end: data tool, real Axolotl training, merge, eval, GGUF, llama.cpp, a real
vLLM server, Ollama.

Also the proof that the fine-tune learns the QA facts: held-out questions (phrased unlike any training
question) reach keyword recall >= 0.8, and the probe is answered correctly through llama.cpp and vLLM.
"""
import json
import os

import pytest
import yaml

from common import ROOT
from common.run import Run
from deploy._modelfile import parse_modelfile
from eval.curves import read_history
from scripts import check_recipes, quickstart
from tests.helpers import vllm_log_tracebacks
from tests.test_cpu_run import assert_quiet_with_progress

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quickstart_run):
    return quickstart_run


def test_fine_tune_improves_held_out_loss_and_keyword_recall(run):
    out, report, _, _ = run
    base, tuned = report["base"], report["tuned"]
    assert tuned["loss"] < base["loss"] - 0.5
    assert tuned["keyword_recall"] >= 0.8 > base["keyword_recall"]
    assert tuned["rouge_l"] > base["rouge_l"]
    assert json.loads((out / "eval.json").read_text())["tuned"]["loss"] == tuned["loss"]


def test_trains_the_steps_its_recipe_and_readme_state(run, tmp_path):
    """The quickstart's data exists only once it runs (outputs/), so `recipe check` on the shipped recipe
    counts no steps: the run's own trainer state has Axolotl's count for the data it wrote (check_recipes on
    the recipe pointed at that data), above the floor, and the number the recipe and its README give."""
    out = run[0]
    source, _ = read_history(out / "adapter")
    state = json.loads(source.read_text())
    cfg = yaml.safe_load(quickstart.RECIPE.read_text())
    cfg["datasets"][0]["path"] = os.path.relpath(out / "data" / "train.jsonl", ROOT)  # recipes name data from the root
    cfg["test_datasets"][0]["path"] = os.path.relpath(out / "data" / "val.jsonl", ROOT)
    recipe = tmp_path / "quickstart.yml"
    recipe.write_text(yaml.safe_dump(cfg))
    report = check_recipes.check_recipe(recipe)
    assert report.ok, report.errors
    steps = report.steps["optimizer_steps"]
    assert state["global_step"] == state["max_steps"] == steps >= check_recipes.MIN_STEPS
    for doc in (quickstart.RECIPE, ROOT / "recipes/quickstart/README.md"):
        assert f"{steps} steps" in " ".join(doc.read_text().split()), doc


def test_every_held_out_error_code_is_recalled_from_its_code(run):
    """The code -> meaning questions: the meaning is nowhere in the question, only the code."""
    from scripts.samples.qa import ERROR_CODES

    _, report, _, _ = run
    meanings = {code: keywords for code, _, keywords in ERROR_CODES}
    items = [i for i in report["tuned"]["items"] if i["keywords"] in meanings.values()]
    assert len(items) == len(ERROR_CODES)
    wrong = [(i["question"], i["output"]) for i in items if i["keyword_recall"] < 1]
    assert not wrong


def test_probe_is_answered_correctly_by_llama_cpp_and_vllm(run):
    out, _, answer, served = run
    probe = (out / "data" / "heldout.jsonl").read_text().splitlines()[0]
    assert "E12" in probe
    for text in (answer, served["quickstart"]):  # E12: the water tank is empty
        assert "water tank" in text.lower() and "empty" in text.lower(), text
    assert served["base"] != served["quickstart"]
    assert "vLLM, LoRA quickstart" in (out / "summary.txt").read_text()
    assert not vllm_log_tracebacks((out / "vllm" / "server.log").read_text())


def test_every_artifact_is_written(run):
    out, _, answer, _ = run
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "model.safetensors").exists()
    assert (out / "curves" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert answer.strip()
    summary = (out / "summary.txt").read_text()
    assert "keyword recall" in summary and "quickstart-f16.gguf" in summary
    assert not list(out.rglob(".tmp-*"))


def test_modelfile_and_serve_commands(run):
    out, _, _, _ = run
    commands = dict(parse_modelfile((out / "Modelfile").read_text()))
    assert commands["model"] == "./gguf/quickstart-f16.gguf"
    assert "<|im_start|>" in commands["template"] and commands["system"].startswith("Answer the question")
    lora = (out / "serve-lora.sh").read_text()
    assert "--enable-lora" in lora and "--max-lora-rank 16" in lora and "127.0.0.1" in lora
    context = f"--max-model-len {Run.load(quickstart.RECIPE).cfg['sequence_len']}"
    assert context in lora and context in (out / "serve-merged.sh").read_text()  # the length it trained on


def test_quickstart_refuses_to_overwrite_without_force(run):
    out, _, _, _ = run
    with pytest.raises(FileExistsError, match="--force"):
        quickstart.run(out)


def test_terminal_shows_progress_and_no_library_noise(run):
    """What `make quickstart` prints: step, loss and time left while training; none of the known noise."""
    out, _, _, _ = run
    terminal = (out / "terminal.txt").read_text()
    assert_quiet_with_progress(terminal)
    assert terminal.count("== quickstart [") == 10
    others = [line for line in terminal.splitlines() if not line.startswith("step ")]
    assert len(others) < 120, terminal  # was about 360 lines before the progress lines and filters
