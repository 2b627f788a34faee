#!/usr/bin/env bash
# The core suite of tb-cnnviz on another Keras backend: bash scripts/test_backend.sh jax|torch
#
# The core suite (scripts/core_tests.txt) is what draws and writes: the callbacks in real fit()
# calls (one read back through the real plugin), the summary functions, heads, activation
# maximization and attribution, with their doctests.
# Tests that need TensorFlow itself (tf.function, tf.summary writers, Keras' TensorBoard
# callback) are marked `tensorflow` and skip. TensorFlow stays hidden from the run
# (TB_CNNVIZ_HIDE_TENSORFLOW, tests/conftest.py), so anything that still needs it fails.
#
#   jax    runs in .venv (which `scripts/test.sh` makes), adding JAX to it if missing.
#   torch  runs in .venv-torch, made here with PyTorch's CPU build (scripts/torch_spec.sh: a
#          CPU wheel pip finds on the machine, or TORCH_SPEC, for example
#          "torch --index-url https://download.pytorch.org/whl/cpu"), then the `torch` and
#          `test` extras. scripts/test.sh runs the same in the background wherever it can.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:?usage: scripts/test_backend.sh jax|torch [pytest args]}
shift
python=${PYTHON:-python3}
case "$backend" in
  jax)
    venv=.venv
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -c "import jax" 2>/dev/null ||
      "$venv/bin/python" -m pip install --quiet -e ".[tensorflow-cpu,jax,test]"
    ;;
  torch)
    venv=.venv-torch
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
      spec=$(bash scripts/torch_spec.sh) || {
        echo "cannot install PyTorch's CPU build: $spec" >&2
        exit 2
      }
      # shellcheck disable=SC2086  # the spec may hold options
      "$venv/bin/python" -m pip install --quiet $spec
    fi
    "$venv/bin/python" -m pip install --quiet -e ".[torch,test]"
    ;;
  *)
    echo "unknown backend: $backend (jax or torch; TensorFlow runs in scripts/test.sh)" >&2
    exit 2
    ;;
esac

mapfile -t core < scripts/core_tests.txt # the core suite, also run on JAX by scripts/test.sh
KERAS_BACKEND=$backend TB_CNNVIZ_HIDE_TENSORFLOW=1 "$venv/bin/python" -m pytest \
  --doctest-modules -p no:cacheprovider "${core[@]}" "$@"
