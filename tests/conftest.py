"""Shared test set-up: offline, repo root importable, paths to the locally built models."""
import shutil
import sys

import pytest

from common import ROOT, offline_defaults
from common.models import EMBEDDED, LLAMA31, TINYLLAMA, local_model

offline_defaults()
sys.path.insert(0, str(ROOT))


def _model(name):
    path = local_model(name)
    if not (path / "config.json").exists():
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (make test does it)")
    return path


@pytest.fixture(scope="session")
def smollm2():
    return _model(EMBEDDED)


@pytest.fixture(scope="session")
def tinyllama():
    return _model(TINYLLAMA)


@pytest.fixture(scope="session")
def llama31():
    return _model(LLAMA31)


@pytest.fixture(scope="session")
def sharded_base(tmp_path_factory, tinyllama):
    """The TinyLlama stand-in saved in f32 shards of 4 MB with its tokenizer (read-only: copy to change it)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("base") / "tinyllama-sharded"
    AutoModelForCausalLM.from_pretrained(tinyllama, dtype=torch.float32).save_pretrained(out, max_shard_size="4MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tinyllama / name).exists():
            shutil.copy2(tinyllama / name, out / name)
    assert len(list(out.glob("model-*.safetensors"))) >= 3
    return out


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """One real quickstart run per session, through its CLI as `make quickstart` runs it:
    (out, report, llama.cpp answer, vLLM answers). Its terminal output is kept in out/terminal.txt."""
    import json
    import os
    import subprocess

    out = tmp_path_factory.mktemp("quickstart") / "qs"
    env = {**{k: v for k, v in os.environ.items() if k != "RECIPES_VERBOSE"}, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "scripts.quickstart", "--output-dir", str(out)], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.is_dir():
        (out / "terminal.txt").write_text(proc.stdout, encoding="utf-8")
    if proc.returncode != 0:
        pytest.fail(f"the quickstart failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    answers = json.loads((out / "answers.json").read_text())
    return out, json.loads((out / "eval.json").read_text()), answers["llama_cpp"], answers["vllm"]


@pytest.fixture(scope="session")
def use_case_adapters(tmp_path_factory, quickstart_run):
    """name -> adapter dir: every use case's CPU recipe trained once per session on the embedded model
    (qa is the quickstart's adapter), without the val loss (training time)."""
    from scripts.results import train

    root = tmp_path_factory.mktemp("use-cases")
    trained = {name: train(name, root, validate=False) for name in ("rpg", "persona", "alpaca", "character")}
    return {"qa": quickstart_run[0] / "adapter", **trained}
