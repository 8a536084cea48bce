#!/usr/bin/env bash
# Yubico's own YubiHSM 2 device tests against the software YubiHSM 2.
#
# The suite is the `tests/device/` directory of python-yubihsm 3.1.2's source distribution
# on PyPI, run unmodified: pip fetches the sdist, its hash is checked against the pin below,
# and each test file gets a fresh `ksm emulate --hsm2` of its own (the suite's session
# fixture resets the device, and files leave objects behind). Tests that need what the
# emulator does not model (asymmetric keys, attestation, FIPS mode) are deselected by
# `deselect.txt`, one node id (or prefix) per line with its reason.
#
# Usage: run.sh KSM_BINARY WORK_DIR
# Prints one summary line per file and a total; exits non-zero when any selected test fails
# or errors, or when fewer tests ran than the file names as the expected count.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ksm=$(realpath "${1:?usage: run.sh KSM_BINARY WORK_DIR}")
work=${2:?usage: run.sh KSM_BINARY WORK_DIR}
mkdir -p "$work"
work=$(realpath "$work")

version=3.1.2
sdist=yubihsm-$version.tar.gz
sdist_sha256=a2c93c487d40a16f4fb57ef56fa699eab8fbc60f37371143cf1946fbf4670d97
pytest_pin=pytest==8.4.2

python=${PYTHON:-python3}
if [ ! -x "$work/venv/bin/pytest" ]; then
  "$python" -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check \
    "yubihsm[http]==$version" "$pytest_pin"
fi
if [ ! -f "$work/$sdist" ]; then
  "$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: -d "$work" "yubihsm==$version"
fi
echo "$sdist_sha256  $work/$sdist" | sha256sum --check --quiet
rm -rf "$work/src"
mkdir "$work/src"
tar -xzf "$work/$sdist" -C "$work/src"
suite="$work/src/yubihsm-$version"


# The deselect list: blank lines and comments skipped, the node id is the first word.
deselect=()
while read -r node _; do
  case "$node" in "" | "#"*) continue ;; esac
  deselect+=(--deselect "$node")
done <"$here/deselect.txt"

emulator_pid=""
stop_emulator() {
  if [ -n "$emulator_pid" ]; then
    kill "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
    emulator_pid=""
  fi
}
trap stop_emulator EXIT

failed=0
total_passed=0
total_deselected=0
for file in "$suite"/tests/device/test_*.py; do
  name=$(basename "$file")
  # A fresh device per file, on a free port: the emulator prints the URL it serves.
  out="$work/emulator-$name.log"
  "$ksm" emulate --hsm2 --listen 127.0.0.1:0 >"$out" 2>&1 &
  emulator_pid=$!
  url=""
  for _ in $(seq 100); do
    url=$(sed -n 's/^emulated YubiHSM 2 at \(http[^ ]*\).*/\1/p' "$out")
    [ -n "$url" ] && break
    kill -0 "$emulator_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "$name: the emulator did not start:" >&2
    cat "$out" >&2
    exit 1
  fi
  junit="$work/junit-$name.xml"
  set +e
  (cd "$suite" && timeout 600 "$work/venv/bin/pytest" -q -p no:cacheprovider \
    "tests/device/$name" --backend "$url" --junitxml "$junit" "${deselect[@]}") \
    >"$work/pytest-$name.log" 2>&1
  rc=$?
  set -e
  stop_emulator
  # pytest: 0 all passed, 5 nothing selected (a file wholly deselected); anything else fails.
  summary=$(tail -n 1 "$work/pytest-$name.log")
  echo "$name: $summary"
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
    failed=1
    sed -n '/= FAILURES =\|= ERRORS =/,$p' "$work/pytest-$name.log" | sed -n 1,80p >&2 || true
  fi
  passed=$(echo "$summary" | sed -n 's/.*\b\([0-9][0-9]*\) passed.*/\1/p')
  desel=$(echo "$summary" | sed -n 's/.*\b\([0-9][0-9]*\) deselected.*/\1/p')
  total_passed=$((total_passed + ${passed:-0}))
  total_deselected=$((total_deselected + ${desel:-0}))
done

echo "Yubico device tests (python-yubihsm $version): $total_passed passed, $total_deselected deselected"
expected=$(sed -n 's/^# expected passed: \([0-9]*\)$/\1/p' "$here/deselect.txt")
if [ -n "$expected" ] && [ "$total_passed" -lt "$expected" ]; then
  echo "fewer tests passed than deselect.txt expects ($expected)" >&2
  failed=1
fi
exit "$failed"
