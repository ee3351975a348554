#!/usr/bin/env bash
# Install cifarlab (editable) with optional extras: bash scripts/install.sh [test,export,...]
# torch comes first and only when none is importable: the CPU build 2.13.0, which pip
# finds on these machines; an installed torch (a CUDA build, say) is kept as it is.
# The pseudo-extra `browser` installs Debian's chromium (apt-get, needs root) for the
# test that renders the study report in a headless browser.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=""
browser=no
IFS=',' read -ra wanted <<< "${1:-}"
for e in "${wanted[@]}"; do
    case "$e" in
        browser) browser=yes ;;
        "") ;;
        *) extras="${extras:+$extras,}$e" ;;
    esac
done
if [ "$browser" = yes ] && ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
"$PY" -m pip install --quiet -e ".${extras:+[$extras]}"
