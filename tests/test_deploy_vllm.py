"""deploy.vllm: adapter checks on real PEFT adapters, the serve command as the shell reads it,
runtime load/unload requests, and the chat client against a real OpenAI-compatible server
(llama-cpp-python's, serving SmolLM2 as GGUF)."""
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import CACHE, ROOT
from deploy import vllm
from deploy.vllm_server import ENTRYPOINT
from tests.helpers import llama_cpp_server

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def make_adapter(tinyllama, tmp_path_factory):
    """Save a real PEFT LoRA adapter of the TinyLlama stand-in with the given LoraConfig settings."""

    def make(name, **settings):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tinyllama))
        config = {"r": 8, "lora_alpha": 16, "target_modules": LLAMA_TARGETS, **settings}
        out = tmp_path_factory.mktemp("adapters") / name
        get_peft_model(model, LoraConfig(**config)).save_pretrained(str(out))
        return out

    return make


@pytest.fixture(scope="module")
def good_adapter(make_adapter):
    return make_adapter("good")


def run_check(capsys, *args):
    code = vllm.main(["check", *map(str, args)])
    return code, capsys.readouterr().out


def test_check_passes_on_a_plain_lora(good_adapter, tinyllama, capsys):
    code, out = run_check(capsys, good_adapter)
    assert code == 0, out
    assert "servable by vLLM" in out and "FAIL" not in out
    result = vllm.check_adapter(good_adapter)
    assert result["rank"] == 8 and result["needed_max_lora_rank"] == 8
    assert result["modules"] == sorted(LLAMA_TARGETS)
    assert result["base"] == str(tinyllama)


@pytest.mark.parametrize("name, settings, message", [
    ("modules_to_save", {"modules_to_save": ["lm_head"]}, "vLLM only supports modules_to_save being None"),
    ("dora", {"use_dora": True}, "vLLM does not support DoRA"),
    ("rank600", {"r": 600}, "rank 600 is greater than the largest --max-lora-rank vLLM accepts (512)"),
    ("bias", {"bias": "all"}, "bias = 'all': vLLM does not support adapter biases"),
])
def test_check_fails_with_the_reason_and_fix(make_adapter, capsys, name, settings, message):
    adapter = make_adapter(name, **settings)
    code, out = run_check(capsys, adapter)
    assert code == 1
    assert "not servable by vLLM" in out
    assert message in out and "Fix:" in out


def test_check_rank_against_the_server_setting(make_adapter, good_adapter, capsys):
    r16 = make_adapter("r16", r=16)
    code, out = run_check(capsys, r16, "--max-lora-rank", "8")
    assert code == 1 and "LoRA rank 16 is greater than max_lora_rank 8" in out and "--max-lora-rank 16" in out
    assert run_check(capsys, r16, "--max-lora-rank", "16")[0] == 0
    assert "needs --max-lora-rank 64" in "\n".join(vllm.check_adapter(make_adapter("r40", r=40))["warnings"])
    with pytest.raises(SystemExit) as exc:  # 12 is not a value vLLM accepts
        vllm.main(["check", str(good_adapter), "--max-lora-rank", "12"])
    assert exc.value.code == 2


def test_check_fails_on_added_tokens(make_adapter, tinyllama, capsys):
    adapter = make_adapter("added-tokens")
    tokenizer = AutoTokenizer.from_pretrained(str(tinyllama))
    tokenizer.add_tokens(["<|new_token|>"])
    tokenizer.save_pretrained(str(adapter))  # what Axolotl does with the tokenizer it trained with
    code, out = run_check(capsys, adapter)
    assert code == 1
    assert "the adapter's tokenizer has 32001 tokens, more than the base vocabulary (32000)" in out
    (adapter / "tokenizer.json").unlink()
    (adapter / "added_tokens.json").write_text(json.dumps({"<|new_token|>": 32000}))  # transformers 4 style
    code, out = run_check(capsys, adapter)
    assert code == 1 and "added_tokens.json adds 1 token(s) ('<|new_token|>'=32000) beyond the base vocabulary" in out


def test_embedding_lora_is_flagged(make_adapter, capsys):
    adapter = make_adapter("embeddings", target_modules=["q_proj", "embed_tokens", "lm_head"])
    code, out = run_check(capsys, adapter)
    assert code == 0 and "warn LoRA on embed_tokens, lm_head" in out
    assert run_check(capsys, adapter, "--strict")[0] == 1


# --- serve command ---

def serve(capsys, *args):
    assert vllm.main(["serve-command", *map(str, args)]) == 0
    return shlex.split(capsys.readouterr().out)


def option(argv, name):
    i = argv.index(name)
    return argv[i + 1]


@pytest.mark.parametrize("rank, expected", [(8, "8"), (12, "16"), (40, "64")])
def test_serve_command_rounds_the_rank(make_adapter, tinyllama, capsys, rank, expected):
    adapter = make_adapter(f"serve-r{rank}", r=rank)
    argv = serve(capsys, "--base", tinyllama, "--adapter", f"mine={adapter}")
    assert argv[1:5] == ["-m", ENTRYPOINT, "--model", str(tinyllama.resolve())]
    assert "--enable-lora" in argv
    assert option(argv, "--max-lora-rank") == expected and option(argv, "--max-loras") == "1"
    assert option(argv, "--host") == "127.0.0.1" and option(argv, "--port") == "8000"
    assert json.loads(option(argv, "--lora-modules")) == {
        "name": "mine", "path": str(adapter.resolve()), "base_model_name": str(tinyllama.resolve())}


def test_serve_command_quotes_hostile_names(make_adapter, good_adapter, tinyllama, capsys):
    r40 = make_adapter("second", r=40)
    argv = serve(capsys, "--base", tinyllama, "--adapter", f"x; rm -rf /={good_adapter}",
                 "--adapter", f"$(touch pwned)`id`={r40}", "--api-key-env", "VLLM_API_KEY", "--port", "8123")
    i = argv.index("--lora-modules")
    modules = [json.loads(a) for a in argv[i + 1:i + 3]]
    assert [m["name"] for m in modules] == ["x; rm -rf /", "$(touch pwned)`id`"]
    assert argv[i + 3] == "--max-lora-rank" and option(argv, "--max-lora-rank") == "64"
    assert option(argv, "--max-loras") == "2"
    assert option(argv, "--api-key") == "$VLLM_API_KEY"  # a reference, expanded by the shell


def test_serve_script_runs_with_the_exact_argv(make_adapter, good_adapter, tinyllama, tmp_path):
    """Run the written script with a stand-in vLLM python that records its argv: nothing is injected."""
    odd = tmp_path / "dir with $(touch pwned) and 'quotes'"
    odd.mkdir()
    for f in good_adapter.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv.json"
    fake = bindir / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'runtime': os.environ.get('VLLM_ALLOW_RUNTIME_LORA_UPDATING')}},"
                    f" open({str(record)!r}, 'w'))\n")
    fake.chmod(0o755)
    script = tmp_path / "serve.sh"
    assert vllm.main(["serve-command", "--base", str(tinyllama), "--adapter", f"a; echo hacked={odd}",
                      "--api-key-env", "MY_KEY", "--allow-runtime-lora", "--python", str(fake),
                      "-o", str(script)]) == 0
    text = script.read_text()
    assert os.access(script, os.X_OK) and "s3cret" not in text
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "MY_KEY": "s3cret"}
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    got = json.loads(record.read_text())
    assert got["runtime"] == "True"
    argv = got["argv"]
    assert argv[:2] == ["-m", ENTRYPOINT] and option(argv, "--api-key") == "s3cret"
    assert json.loads(option(argv, "--lora-modules"))["name"] == "a; echo hacked"
    assert json.loads(option(argv, "--lora-modules"))["path"] == str(odd.resolve())
    assert not (tmp_path / "pwned").exists() and "hacked" not in result.stdout
    # the key must come from the environment: without it the script stops before running vllm
    record.unlink()
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env={"PATH": env["PATH"]}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0 and "MY_KEY" in result.stderr and not record.exists()
    # and an existing script is not overwritten without --force
    with pytest.raises(SystemExit):
        vllm.main(["serve-command", "--base", str(tinyllama), "-o", str(script)])


def test_serve_command_merged_and_refusals(tmp_path, make_adapter, tinyllama, capsys):
    argv = serve(capsys, "--merged", tinyllama, "--served-model-name", "my-model", "--host", "0.0.0.0",
                 "--api-key-env", "K")
    assert argv[3:5] == ["--model", str(tinyllama.resolve())] and "--enable-lora" not in argv
    assert option(argv, "--served-model-name") == "my-model"
    dora = make_adapter("serve-dora", use_dora=True)
    with pytest.raises(SystemExit) as exc:
        vllm.main(["serve-command", "--base", str(tinyllama), "--adapter", f"d={dora}"])
    assert exc.value.code == 2 and "DoRA" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vllm.main(["serve-command", "--base", str(tinyllama), "--api-key-env", "NOT A NAME; rm"])


def test_serve_command_passes_enforce_eager(good_adapter, tinyllama, capsys):
    argv = serve(capsys, "--base", tinyllama, "--adapter", f"mira={good_adapter}", "--enforce-eager")
    assert argv.count("--enforce-eager") == 1
    assert "--enforce-eager" not in serve(capsys, "--base", tinyllama, "--adapter", f"mira={good_adapter}")


def test_serve_command_max_model_len_from_the_recipe(good_adapter, tinyllama, tmp_path, capsys):
    """vLLM's default context for Llama 3.1 (131072) leaves no room for its KV cache on a 24 GB card:
    serve-command takes the recipe's sequence_len, or the flag, and warns when given neither."""
    recipe = "recipes/llama3-character-chat/qlora-8b.yml"
    argv = serve(capsys, "--base", tinyllama, "--adapter", f"mira={good_adapter}", "--recipe", recipe)
    assert option(argv, "--max-model-len") == "2048"
    argv = serve(capsys, "--base", tinyllama, "--adapter", f"mira={good_adapter}", "--recipe", recipe,
                 "--max-model-len", "4096")
    assert option(argv, "--max-model-len") == "4096" and argv.count("--max-model-len") == 1
    assert vllm.main(["serve-command", "--base", str(tinyllama), "--adapter", f"mira={good_adapter}"]) == 0
    out = capsys.readouterr()
    assert "--max-model-len" not in out.out and "131072" in out.err
    bad = tmp_path / "bad.yml"
    bad.write_text("base_model: x\nsequence_len: long\n")
    with pytest.raises(SystemExit) as exc:
        vllm.main(["serve-command", "--base", str(tinyllama), "--recipe", str(bad)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(bad) in err and "sequence_len" in err


# --- runtime load/unload against a local HTTP server ---

class Recorder(http.server.BaseHTTPRequestHandler):
    requests = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.requests.append((self.path, body, self.headers.get("Authorization")))
        reply = b"Success: LoRA adapter loaded" if Recorder.status == 200 else b'{"detail": "Not Found"}'
        self.send_response(Recorder.status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.requests, Recorder.status = [], 200
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_and_unload_post_the_right_bodies(recorder, good_adapter, monkeypatch, capsys):
    monkeypatch.setenv("VLLM_API_KEY", "k-123")
    assert vllm.main(["load", "--base-url", recorder + "/v1", "sql-lora", str(good_adapter)]) == 0
    assert "Success" in capsys.readouterr().out
    monkeypatch.delenv("VLLM_API_KEY")
    assert vllm.main(["unload", "--base-url", recorder, "sql-lora"]) == 0
    assert Recorder.requests == [
        ("/v1/load_lora_adapter", {"lora_name": "sql-lora", "lora_path": str(good_adapter.resolve())}, "Bearer k-123"),
        ("/v1/unload_lora_adapter", {"lora_name": "sql-lora"}, None),
    ]
    Recorder.status = 404
    assert vllm.main(["unload", "--base-url", recorder, "sql-lora"]) == 1
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in capsys.readouterr().err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "deploy.vllm", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serve-command" in result.stdout


# --- chat through the openai client against a real OpenAI-compatible server ---

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_gguf(model_dir, out):
    """SmolLM2 as GGUF: with deploy.gguf when it works, else llama.cpp's own converter."""
    try:
        from deploy.gguf import export_model

        export_model(model_dir, out, "f16")
        return out
    except Exception as err:  # deploy.gguf missing or broken: fall back to the reference converter
        print(f"deploy.gguf unavailable ({err}); using convert_hf_to_gguf.py", file=sys.stderr)
    llama_cpp = sorted(CACHE.glob("sdist/llama_cpp_python-*/vendor/llama.cpp"))[-1]
    env = {**os.environ, "PYTHONPATH": str(llama_cpp / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(out),
                    "--outtype", "f16"], env=env, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def llama_server(smollm2, tmp_path_factory):
    gguf = make_gguf(smollm2, tmp_path_factory.mktemp("gguf") / "smollm2.gguf")
    with llama_cpp_server(gguf, tmp_path_factory.mktemp("log") / "server.log", api_key="test-key") as url:
        yield url


def test_chat_against_a_real_openai_compatible_server(llama_server, monkeypatch, capsys):
    monkeypatch.setenv("VLLM_API_KEY", "test-key")
    code = vllm.main(["chat", "--base-url", llama_server, "--model", "smollm2", "--max-tokens", "24",
                      "--temperature", "0", "What is the capital of France?"])
    out = capsys.readouterr().out
    assert code == 0 and "paris" in out.lower(), out
    reply = vllm.chat(llama_server + "/v1", "smollm2", "Say hello.", system="You are a helpful assistant.",
                      api_key="test-key", max_tokens=8, temperature=0)
    assert reply.strip()
    # the key is really sent: without it the server refuses
    monkeypatch.delenv("VLLM_API_KEY")
    assert vllm.main(["chat", "--base-url", llama_server, "--model", "smollm2", "--max-tokens", "4", "hi"]) == 1
    assert "error:" in capsys.readouterr().err


# --- the server wrapper, with stand-in commands (the real vLLM: tests/test_vllm_server.py) ---

def test_server_wrapper_reports_exit_and_timeout_and_stops_the_whole_tree(tmp_path):
    from deploy.vllm_server import Server, ServerError, _alive, descendants, free_port

    failing = Server(["bash", "-c", "echo boom-in-log; exit 3"], tmp_path / "a.log", port=free_port(), timeout=20,
                     progress=None)
    with pytest.raises(ServerError, match="exited with 3(.|\n)*boom-in-log"):
        failing.start()
    # a server that never answers /health, with a child that leaves its process group
    hanging = Server(["bash", "-c", "setsid sleep 300 & sleep 300"], tmp_path / "b.log", port=free_port(), timeout=4,
                     progress=None)
    real_stop = hanging.stop
    seen = {}

    def stop_and_record(grace=30):
        seen["tree"] = descendants(hanging.proc.pid) | {hanging.proc.pid}
        return real_stop(grace)

    hanging.stop = stop_and_record
    with pytest.raises(ServerError, match="not ready after 4 s"):
        hanging.start()
    assert len(seen["tree"]) >= 2 and not _alive(seen["tree"])


def test_vllm_log_check_forgives_only_the_known_shutdown_race():
    from tests.helpers import vllm_log_tracebacks

    race = ("(APIServer pid=1) ERROR 12-04 [async_llm.py:906] AsyncLLM output_handler failed.\n"
            "(APIServer pid=1) ERROR 12-04 [async_llm.py:906] Traceback (most recent call last):\n"
            "(APIServer pid=1) ERROR 12-04 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: x\n")
    serving = "(APIServer pid=1) INFO [launcher.py:46] Route: /health\n"
    sigterm = "(EngineCore pid=2) INFO 12-04 [core.py:1454] [shutdown] EngineCore: trigger received signal=SIGTERM\n"
    assert vllm_log_tracebacks(serving + sigterm + race) == 0
    assert vllm_log_tracebacks(serving + race + sigterm) == 1
    other = "Traceback (most recent call last):\nValueError: boom\n"
    assert vllm_log_tracebacks(serving + sigterm + race + other) == 1
    assert vllm_log_tracebacks(serving + other) == 1
    crash = "(APIServer pid=1) INFO [core_client.py:818] [shutdown] MPClient: engine core exited unexpectedly; starting cleanup\n"
    assert vllm_log_tracebacks(serving + crash + race + sigterm) >= 2  # a crash while serving is never forgiven


def test_the_server_renders_chat_with_the_template_the_adapters_trained_with(tmp_path, capsys):
    """vLLM renders every chat request with one template, the base's unless --chat-template: an adapter
    trained with another (a recipe's chat_template_jinja, saved beside it by Axolotl) brings its own."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")

    def adapter(name, template):
        path = tmp_path / name
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
        if template is not None:
            (path / "chat_template.jinja").write_text(template)
        return f"{name}={path}"

    def template_of(*adapters):
        argv = vllm.serve_argv(str(base), list(adapters), check=False, python="python3")[0]
        return argv[argv.index("--chat-template") + 1] if "--chat-template" in argv else None

    same = adapter("same", (base / "chat_template.jinja").read_text())
    bos = adapter("bos", "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")
    none = adapter("none", None)
    assert template_of(same) is None and template_of(none) is None
    assert template_of(bos) == str(tmp_path / "bos" / "chat_template.jinja")
    assert template_of(bos, none) == str(tmp_path / "bos" / "chat_template.jinja")
    capsys.readouterr()
    assert template_of(bos, same) is None and "different chat templates" in capsys.readouterr().err


def test_phi3_fused_projections_are_servable(tmp_path, capsys):
    """vLLM's Phi-3 (Llama code with packed qkv_proj / gate_up_proj) serves LoRA on Phi-3's own names."""
    from common.models import PHI35, local_model

    phi3 = local_model(PHI35)
    model = AutoModelForCausalLM.from_pretrained(str(phi3))
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(str(tmp_path / "phi3"))
    result = vllm.check_adapter(tmp_path / "phi3", base=phi3)
    assert not result["problems"] and not result["warnings"], result
    assert result["modules"] == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
