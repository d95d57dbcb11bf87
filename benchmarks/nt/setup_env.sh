#!/usr/bin/env bash
# Create an isolated virtualenv with neural-tangents 0.6.5 for benchmarking /
# cross-checking tensorprog. Never touches the project's own Python env.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3.11}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup_env] creating venv at $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

# The machine-wide pip config (/etc/xdg/pip) only caps torch/torchvision, which
# this venv does not use. Ignore it anyway so the venv's installs are
# reproducible and independent of the host's pip configuration.
export PIP_CONFIG_FILE=/dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1

"$VENV/bin/python" -m pip install --quiet \
    jax==0.4.23 jaxlib==0.4.23 neural-tangents==0.6.5 tf2jax==0.3.6 \
    "numpy<2" "scipy<1.13"

"$VENV/bin/python" - <<'PY'
import jax, jaxlib, numpy, scipy, neural_tangents
print("[setup_env] ok: jax", jax.__version__, "jaxlib", jaxlib.__version__,
      "neural_tangents", neural_tangents.__version__,
      "numpy", numpy.__version__, "scipy", scipy.__version__)
PY
