#!/usr/bin/env bash
# Builds target/debian/ksm_<version>_<arch>.deb: a release build, the manual pages and shell
# completions generated from it into target/deb-assets, then cargo-deb packs them with the
# assets of [package.metadata.deb] in ksm/Cargo.toml. Prints the package's path.
#
# KSM_DEB_PROFILE=dev packs the debug build instead (stripped). CI does that: the test suite
# has just built it, and the package test is about the package, not the optimiser; a release
# build would add several minutes on CI's two cores. Packages for machines are release ones.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi

profile="${KSM_DEB_PROFILE:-release}"
case "$profile" in
  release) out=target/release ;;
  dev) out=target/debug ;;
  *) echo "KSM_DEB_PROFILE must be release or dev" >&2; exit 2 ;;
esac
cargo build --profile "$profile" --locked -p ksm >&2
rm -rf target/deb-assets
"$out/ksm" generate-man target/deb-assets/man
"$out/ksm" generate-completions target/deb-assets/completions
# Debian wants a changelog in every package: one entry, for this version, dated by the
# commit it is built from.
version="$("$out/ksm" --version | cut -d' ' -f2)"
when="$(git log -1 --format=%aD 2>/dev/null || date -R)"
cat >target/deb-assets/changelog <<END
ksm (${version}-1) unstable; urgency=medium

  * ksm ${version}, packaged from its source tree by ksm/dist/build-deb.sh.

 -- ksm maintainers <ksm-maintainers@example.org>  ${when}
END
cargo deb -p ksm --profile "$profile" --no-build --locked --strip 2>&1 | tail -n 1
