"""Ollama's prompt for a chat request, rendered by Go's real text/template: the oracle for every test
that checks what a Modelfile TEMPLATE renders.

tests/ollama_template/main.go executes a TEMPLATE the way Ollama's server does (its template package:
missingkey=zero, its template functions, messages collated, .System/.Messages/... as values); it is
built once with Debian's golang-go (offline: standard library only; about 0.4 s with Go 1.19, whose
standard library comes compiled) and the binary is kept under .cache/ollama-template/<hash of the source
and the Go version>/ (Go's build cache beside it), so later sessions reuse it.
"""
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import CACHE
from deploy import ollama
from tests.tools import require

SOURCE = Path(__file__).parent / "ollama_template"


def available():
    return shutil.which("go") is not None


@functools.cache
def binary():
    """The harness binary; skips or fails (tests.tools.require) where Go is not installed."""
    go = require("go", "golang-go")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    for name in ("go.mod", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    folder = CACHE / "ollama-template" / digest.hexdigest()[:16]
    path = folder / "ollama-template"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
               "GO111MODULE": "on", "GOCACHE": str(folder.parent / "go-build"), "GOPATH": str(Path(tmp) / "gopath")}
        build = subprocess.run([go, "build", "-o", str(Path(tmp) / "bin"), "."], cwd=SOURCE, env=env,
                               capture_output=True, text=True, timeout=600)
        if build.returncode:
            raise RuntimeError(f"go build of {SOURCE} failed:\n{build.stderr[-2000:]}")
        os.replace(Path(tmp) / "bin", path)  # atomic: a concurrent session sees all of it or nothing
    return path


def execute(cases):
    """[{"out": prompt} or {"err": Go's error}] for [(TEMPLATE text, messages handed to it)]."""
    payload = [{"template": t, "messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
               for t, msgs in cases]
    result = subprocess.run([str(binary())], input=json.dumps(payload), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"the Go template harness failed:\n{result.stderr[-2000:]}"
    outputs = json.loads(result.stdout)
    assert len(outputs) == len(cases)
    return outputs


def render(template, messages):
    """The prompt Go's text/template renders from `template` for these messages (after Ollama's request
    handling: see deploy.ollama.chat_messages)."""
    (result,) = execute([(template, messages)])
    if "err" in result:
        raise ValueError(f"Go's text/template: {result['err']}")
    return result["out"]


def render_modelfile(modelfile_text, messages):
    """What Ollama's /api/chat feeds a model created from this Modelfile, for the request `messages`."""
    return render(*ollama.modelfile_chat(modelfile_text, messages))
