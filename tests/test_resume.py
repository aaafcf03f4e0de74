"""A CPU run killed after its first checkpoint resumes from it and finishes with the same total steps."""
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from common import ROOT
from scripts import cpu_run

pytestmark = pytest.mark.slow


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Say the word number {i}."},
        {"role": "assistant", "content": f"word-{i}"}]}) + "\n" for i in range(16)))
    recipe = yaml.safe_load((ROOT / "recipes/quickstart/lora-135m.yml").read_text())
    recipe.update(save_strategy="steps", save_steps=2, save_total_limit=None, micro_batch_size=2)
    recipe_path = tmp_path / "lora-resume.yml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"

    config = cpu_run.prepare_run(recipe_path, dataset=data, max_steps=6, output_dir=out, eval_dataset=data)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cpu_run.launch_command(config), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while not (out / "checkpoint-2" / "trainer_state.json").exists():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "checkpoint-6").exists() and not (out / "adapter_model.safetensors").exists()

    cpu_run.run_recipe(recipe_path, dataset=data, max_steps=6, output_dir=out, resume=True, eval_dataset=data)
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["max_steps"] == 6
    steps_logged = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps_logged and min(steps_logged) >= 1
    assert f"resume from checkpoint at {out / 'checkpoint-2'}" in (out / "resume.log").read_text()
    assert (out / "adapter_model.safetensors").exists()
