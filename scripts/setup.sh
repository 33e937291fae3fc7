#!/usr/bin/env bash
# Set up pixelgen for development on a fresh machine: PyTorch, the package with its
# built-in plugins, the test and docs tools, the example third-party plugin, and
# (where apt is available and we are root) Debian's Fashion-MNIST for the real-data checks.
# Nothing else comes from apt: the docs' intersphinx inventories are committed under
# docs/_inventories/, so a virtual environment's system Python is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if [ ! -d /usr/share/datasets/fashion-mnist ]; then
        apt-get update -q && apt-get install -y -q dataset-fashion-mnist
    fi
fi

# The PyTorch pair this project is tested with (on Python 3.11 these install from local files here).
"$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$PYTHON" -m pip install -q -e ".[test,docs]"
if [ -d examples/pixelgen-gated ]; then
    "$PYTHON" -m pip install -q -e examples/pixelgen-gated
fi
"$PYTHON" -m pixelgen.cli plugins >/dev/null
echo "pixelgen is set up: run the tests with 'python3 -m pytest'"
