#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time; fails if any crashes.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default: 60 seconds per target, all targets
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer and the
# coverage instrumentation), which RUSTC_BOOTSTRAP=1 lets a stable compiler accept. The
# sanitizer is AddressSanitizer (it works on stable here); FUZZ_SANITIZER=none builds without
# it, faster, at the price of not checking the unsafe code inside our dependencies.
#
# Each target starts from its seeds in fixtures/fuzz/<target>/ (read only) and keeps what
# it learns in fuzz/corpus/<target>/ (ignored by git). A crash leaves its input in
# fuzz/artifacts/<target>/; see fixtures/fuzz/README.md for turning it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

CARGO_FUZZ_VERSION=0.13.2
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "$(cargo fuzz --version), $(rustc --version), sanitizer: $sanitizer"

# cargo fuzz has no --locked; check the fuzz workspace's lock file is current first, so the
# build below resolves exactly the committed versions.
cargo fetch --locked --manifest-path fuzz/Cargo.toml

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build --sanitizer "$sanitizer"
echo "build: $(($(date +%s) - start)) s"

failed=()
for t in "${targets[@]}"; do
    seeds="fixtures/fuzz/$t"
    [ -d "$seeds" ] || {
        echo "no seed corpus at $seeds" >&2
        exit 2
    }
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    echo "=== $t: ${seconds} s"
    t0=$(date +%s)
    if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1; then
        failed+=("$t")
    fi
    echo "=== $t: done in $(($(date +%s) - t0)) s"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "CRASHED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds} s each without a crash"
