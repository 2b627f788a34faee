#!/usr/bin/env bash
# The whole tb-cnnviz test suite, installing what it needs first:
#   a virtual environment in .venv with the package and its test extras (TensorFlow CPU build
#   and JAX), Debian's chromium, nodejs and npm (when run as root and missing),
# then node's built-in test runner for the dashboard logic, Biome (format and lint, a pinned npm
# dev dependency, installed with `npm ci`) for the dashboard's JavaScript and CSS, ruff (lint and
# format) for the Python, and pytest for everything else (unit, training, plugin, doctests and
# headless-browser end-to-end tests).
#
# The core suite (scripts/core_tests.txt) also runs on Keras' JAX backend in .venv-jax, which
# has no TensorFlow, in the background beside the main run (artifacts/test-logs/jax.log), and on
# PyTorch in .venv-torch (artifacts/test-logs/torch.log) wherever PyTorch's CPU build installs
# without gigabytes of CUDA libraries: a CPU wheel pip finds on the machine (its find-links), or
# TORCH_SPEC (for example "torch --index-url https://download.pytorch.org/whl/cpu"). Elsewhere
# the command says once that PyTorch was skipped, and why.
# With CI=true (or OLDEST=1) the suite also runs on the oldest versions tb-cnnviz supports
# (scripts/oldest.txt: TensorFlow 2.16, Keras 3.6, TensorBoard 2.16, NumPy 1.26, ...) in
# .venv-oldest, without the browser tests, those marked slow (the keras.applications models
# of test_models: the smaller models take the same paths) and those marked timing (niced in the
# background, its own time is inflated by the main run). That run goes on in the background
# while the main one runs; its output is in artifacts/test-logs/oldest.log, and its failure
# fails this command.
# Extra arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
logs=artifacts/test-logs
mkdir -p "$logs"
# Prints a line with the time since the start, so that the log shows where the time goes.
say() { printf '[%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# ---------------------------------------------------------------------------------------------
# Other environments, each tested in the background beside the main run:
#
#   test_env NAME [VAR=value ...] -- PIP ARGS ... -- PYTEST ARGS ...
#
# starts a background job that makes .venv-NAME, installs PIP ARGS into it (a ";" among them
# starts another `pip install`, run after the one before) and runs pytest there with PYTEST ARGS
# and the VAR=value settings, all its output in $logs/NAME.log. `collect_envs` waits for every
# job and fails if any failed; leaving early stops them. The jobs run at a lower
# priority (nice): the main run's browser and TensorBoard tests wait on timeouts, the background
# suites only take the CPU time the main run leaves.
env_names=()
env_pids=()
# pip builds this package in the source tree (tb_cnnviz.egg-info): one install at a time.
lock=$logs/.pip-lock
rmdir "$lock" 2>/dev/null || true # left by a run that was stopped while installing

test_env() {
  local name=$1 settings=() pip_args=() pytest_args=()
  shift
  while [ "$1" != -- ]; do settings+=("$1") && shift; done
  shift
  while [ "$1" != -- ]; do pip_args+=("$1") && shift; done
  shift
  pytest_args=("$@")
  (
    venv=.venv-$name
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    until mkdir "$lock" 2>/dev/null; do sleep 1; done
    local group=() arg
    for arg in "${pip_args[@]}" ";"; do
      if [ "$arg" != ";" ]; then
        group+=("$arg")
        continue
      fi
      "$venv/bin/python" -m pip install --quiet "${group[@]}" || {
        rmdir "$lock"
        exit 1
      }
      group=()
    done
    rmdir "$lock"
    say "$name: installed; pytest ${pytest_args[*]}"
    env ${settings[@]+"${settings[@]}"} nice -n 10 "$venv/bin/python" -m pytest \
      -p no:cacheprovider "${pytest_args[@]}"
  ) >"$logs/$name.log" 2>&1 &
  env_names+=("$name")
  env_pids+=($!)
  say "$name: installing and testing in .venv-$name in the background ($logs/$name.log)"
}

collect_envs() {
  local failed=() i
  for i in "${!env_pids[@]}"; do
    if wait "${env_pids[$i]}"; then
      say "${env_names[$i]}: $(tail -n 1 "$logs/${env_names[$i]}.log")"
      summary+=("${env_names[$i]}: $(tail -n 1 "$logs/${env_names[$i]}.log" | tr -d '=' | xargs)")
    else
      summary+=("${env_names[$i]}: FAILED (see $logs/${env_names[$i]}.log)")
      say "${env_names[$i]}: FAILED; the end of $logs/${env_names[$i]}.log:"
      tail -n 80 "$logs/${env_names[$i]}.log"
      failed+=("${env_names[$i]}")
    fi
  done
  env_pids=()
  if [ ${#failed[@]} -gt 0 ]; then
    say "failed in other environments: ${failed[*]}"
    return 1
  fi
}

stop_envs() {
  local pid
  for pid in ${env_pids[@]+"${env_pids[@]}"}; do
    # pytest tears down (stopping the TensorBoard servers it started) on an interrupt.
    pkill -INT -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
}
trap stop_envs EXIT

# ---------------------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
say "installing into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
# JAX beside TensorFlow: the tests that compare the two backends' pictures need both.
.venv/bin/python -m pip install --quiet -e ".[tensorflow-cpu,jax,test]"

# The core suite on JAX and on PyTorch, in environments without TensorFlow
# (scripts/core_tests.txt, the same suite scripts/test_backend.sh runs).
mapfile -t core < scripts/core_tests.txt
summary=()
# Tests marked `timing` compare own time with training time: niced beside the main run, a
# background suite's own time is inflated by the others (scripts/test_backend.sh runs them).
test_env jax KERAS_BACKEND=jax -- -e ".[jax,test]" -- --doctest-modules -m "not timing" \
  "${core[@]}"

# PyTorch's PyPI wheel pulls gigabytes of CUDA libraries: its suite runs only where the CPU
# build is at hand (scripts/torch_spec.sh says which, or why not).
if torch_spec=$(bash scripts/torch_spec.sh); then
  # shellcheck disable=SC2086  # the spec may hold options (--index-url ...)
  test_env torch KERAS_BACKEND=torch TB_CNNVIZ_HIDE_TENSORFLOW=1 -- $torch_spec ";" \
    -e ".[torch,test]" -- --doctest-modules -m "not timing" "${core[@]}"
else
  say "torch: SKIPPED, $torch_spec"
  summary+=("torch: skipped ($torch_spec)")
fi

if [ "${CI:-}" = true ] || [ "${OLDEST:-}" = 1 ]; then
  test_env oldest -- -e ".[tensorflow-cpu,test]" -c scripts/oldest.txt -- \
    --doctest-modules tb_cnnviz callbacks demo tests -m "not browser and not slow and not timing"
fi

# Debian packages the tests need: chromium for the browser tests, nodejs for the dashboard's
# logic tests, npm for its formatter and linter. Installed when run as root and missing.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: missing ${missing[*]}: install Debian's packages (browser tests skip without chromium)."
  fi
fi

say "dashboard logic, formatting and lint"
node --test tests/js/
if [ ! -x node_modules/.bin/biome ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --silent
fi
npx --no-install biome ci frontend tests/js
.venv/bin/ruff check .
.venv/bin/ruff format --check .

say "pytest"
status=0
.venv/bin/python -m pytest --doctest-modules tb_cnnviz callbacks demo tests "$@" |
  tee "$logs/tensorflow.log" || status=$?
summary=("tensorflow: $(tail -n 1 "$logs/tensorflow.log" | tr -d '=' | xargs)" "${summary[@]}")
collect_envs || status=1
say "suites:"
printf '  %s\n' "${summary[@]}"
say "done, exit status $status"
exit "$status"
