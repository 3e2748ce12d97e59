#!/usr/bin/env bash
# Build .venv-dassl: a separate virtual environment with Dassl, for the plugin path and its tests.
#
#   git clone https://github.com/KaiyangZhou/Dassl.pytorch /path/to/Dassl.pytorch
#   bash scripts/setup_dassl_venv.sh /path/to/Dassl.pytorch [VENV]      (VENV defaults to .venv-dassl)
#   VENV/bin/python -m pytest tests/test_dassl_plugin.py -q
#
# Why not `pip install -r <Dassl>/requirements.txt` + `python setup.py develop` (Dassl's README):
# its setup.py imports numpy, so an isolated build fails; its requirements pin old linters and
# wilds, which pulls whatever torch/torchvision pair it likes. Here the project's own pins come
# first, Dassl's import-time needs are added by name, wilds without its dependencies (which would
# also start a thread asking PyPI for updates at import), and Dassl itself in editable mode
# without dependencies or build isolation.
set -euo pipefail
cd "$(dirname "$0")/.."

dassl_src=${1:-}
venv=${2:-.venv-dassl}
if [ -z "$dassl_src" ] || [ ! -f "$dassl_src/dassl/__init__.py" ]; then
  echo "usage: bash scripts/setup_dassl_venv.sh /path/to/Dassl.pytorch [VENV]" >&2
  echo "       (a checkout of https://github.com/KaiyangZhou/Dassl.pytorch: the folder holding dassl/)" >&2
  exit 2
fi
dassl_src=$(cd "$dassl_src" && pwd)
if [ "$dassl_src" = "$(pwd)" ] || [ "$(basename "$dassl_src")" = "dassl" ]; then
  # A folder named dassl on sys.path (or the repo root) would shadow the installed package.
  echo "error: keep the Dassl checkout outside this repository and do not name its folder 'dassl'" >&2
  exit 2
fi

python3 -m venv "$venv"
"$venv/bin/pip" install -r requirements.txt
"$venv/bin/pip" install gdown tabulate tensorboard pandas
"$venv/bin/pip" install --no-deps wilds==1.2.2
"$venv/bin/pip" install --no-deps --no-build-isolation -e "$dassl_src"

"$venv/bin/python" - <<'EOF'
import dassl
import dassl.config, dassl.data, dassl.engine  # noqa: E401 - what the plugin needs
print(f"Dassl {dassl.__version__} importable from {dassl.__file__}")
EOF
if git -C "$dassl_src" rev-parse HEAD >/dev/null 2>&1; then
  echo "Dassl commit: $(git -C "$dassl_src" rev-parse HEAD)"
fi
echo "done: $venv/bin/python train.py ... now runs the Dassl path (--engine core forces the core runner)"
