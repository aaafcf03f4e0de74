"""Small builders shared by tests: a real PEFT LoRA adapter with non-zero weights on a local model, a
running llama_cpp.server."""
import contextlib
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def make_adapter(base, out, r=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), **extra):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False,
                        task_type="CAUSAL_LM", **extra)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # make the update large enough to change predictions
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out)
    return out


# the first line vLLM 0.32 logs on a requested (SIGTERM) shutdown: the API server's, or the engine core's
GRACEFUL_SHUTDOWN = ("[shutdown] API server: shutdown triggered", "[shutdown] EngineCore: trigger received signal")


def vllm_log_tracebacks(text):
    """The tracebacks in a vLLM server log, less the one of vLLM 0.32's own shutdown race
    (vllm-project/vllm#48745: during a graceful SIGTERM shutdown AsyncLLM's output handler may log an
    EngineDeadError with its traceback). Before the shutdown was requested every traceback counts, and
    an engine core that exited unexpectedly counts as one wherever it is logged."""
    cut = min((text.find(m) for m in GRACEFUL_SHUTDOWN if m in text), default=len(text))
    serving, stopping = text[:cut], text[cut:]
    race = [line for line in stopping.splitlines() if "ERROR" in line and "[async_llm.py:" in line]
    if not any("EngineDeadError" in line for line in race):
        race = []
    rest = [line for line in stopping.splitlines() if line not in race]
    return (serving.count("Traceback") + sum(line.count("Traceback") for line in rest)
            + text.count("engine core exited unexpectedly"))


@contextlib.contextmanager
def llama_cpp_server(gguf, log_path, alias="smollm2", api_key=None, n_ctx=512, timeout=90):
    """llama_cpp.server (an OpenAI-compatible server) on 127.0.0.1 serving `gguf` as `alias`; yields its
    base URL (without /v1) once /v1/models answers, and stops it on exit."""
    from deploy.vllm_server import free_port

    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
            "--port", str(port), "--model_alias", alias, "--n_ctx", str(n_ctx)]
    headers = {}
    if api_key:
        argv += ["--api_key", api_key]
        headers["Authorization"] = f"Bearer {api_key}"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=headers),
                                           timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"llama_cpp.server did not start:\n{log.read()[-2000:]}")
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
