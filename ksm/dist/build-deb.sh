#!/usr/bin/env bash
# Builds target/debian/ksm_<version>_<arch>.deb: a release build, the manual pages and shell
# completions generated from it into target/deb-assets, then cargo-deb packs them with the
# assets of [package.metadata.deb] in ksm/Cargo.toml. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi

cargo build --release --locked -p ksm >&2
rm -rf target/deb-assets
target/release/ksm generate-man target/deb-assets/man
target/release/ksm generate-completions target/deb-assets/completions
# Debian wants a changelog in every package: one entry, for this version, dated by the
# commit it is built from.
version="$(target/release/ksm --version | cut -d' ' -f2)"
when="$(git log -1 --format=%aD 2>/dev/null || date -R)"
cat >target/deb-assets/changelog <<END
ksm (${version}-1) unstable; urgency=medium

  * ksm ${version}, packaged from its source tree by ksm/dist/build-deb.sh.

 -- ksm maintainers <ksm-maintainers@example.org>  ${when}
END
cargo deb -p ksm --no-build --locked --strip 2>&1 | tail -n 1
