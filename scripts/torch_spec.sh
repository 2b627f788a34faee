#!/usr/bin/env bash
# Prints what to `pip install` for PyTorch's CPU build, and exits 0; or, where none is at hand,
# prints why and exits 1. Used by scripts/test.sh and scripts/test_backend.sh.
#
# PyTorch's PyPI wheel for Linux is its CUDA build: several GB of libraries, more than a test
# run should download. Its CPU build comes from TORCH_SPEC when set (for example
# "torch --index-url https://download.pytorch.org/whl/cpu", or a path to a wheel), or from a
# CPU wheel pip already finds without an index (a find-links folder of the machine's pip
# configuration, such as /opt/wheels), which `pip install --dry-run --no-index` tells.
set -euo pipefail
python=${PYTHON:-python3}

if [ -n "${TORCH_SPEC:-}" ]; then
  echo "$TORCH_SPEC"
  exit 0
fi
version=$("$python" -m pip install --dry-run --no-index --no-deps --ignore-installed --quiet \
  --report - torch 2>/dev/null |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
    2>/dev/null) || version=
case "$version" in
  *+cpu*)
    echo "torch==$version"
    ;;
  "")
    echo "no CPU wheel of torch on this machine and TORCH_SPEC is not set (PyPI's torch is its CUDA build, several GB)"
    exit 1
    ;;
  *)
    echo "the torch wheel on this machine ($version) is not a CPU build and TORCH_SPEC is not set"
    exit 1
    ;;
esac
