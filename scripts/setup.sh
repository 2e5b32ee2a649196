#!/usr/bin/env bash
# Create .venv at the repository root and install memguard with its dev tools into it.
#
# torch: an already installed torch is kept (in .venv, or the system one when
# MEMGUARD_SYSTEM_SITE=1 makes the venv see system packages). Otherwise MEMGUARD_TORCH picks the
# build to install; its default, torch==2.13.0, is the local CPU build that CI uses. Set it to e.g.
# "torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" for a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if [ "${MEMGUARD_SYSTEM_SITE:-0}" = "1" ]; then
        "$PYTHON" -m venv --system-site-packages .venv
    else
        "$PYTHON" -m venv .venv
    fi
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: keeping the installed torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
else
    # shellcheck disable=SC2086  # MEMGUARD_TORCH may carry pip options such as --index-url
    "${PIP[@]}" install ${MEMGUARD_TORCH:-torch==2.13.0}
fi
# The project's torch requirement is a range, so this installs no second torch.
"${PIP[@]}" install -e ".[dev]"
