#!/usr/bin/env bash
# Install cifarlab (editable) with optional extras: bash scripts/install.sh [test,export,...]
# torch comes first and only when none is importable: the CPU build 2.13.0, which pip
# finds on these machines; an installed torch (a CUDA build, say) is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=${1:-}
"$PY" -m pip install --quiet -e ".${extras:+[$extras]}"
