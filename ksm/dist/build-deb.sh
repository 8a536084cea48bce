#!/usr/bin/env bash
# Builds target/debian/ksm_<version>_<arch>.deb: a release build, the manual pages and shell
# completions generated from it and the copyright file (cargo-about) into target/deb-assets,
# then cargo-deb packs them with the assets of [package.metadata.deb] in ksm/Cargo.toml.
# Prints the package's path.
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
# cargo-about writes the copyright file from the crates' metadata and license files.
CARGO_ABOUT_VERSION=0.9.3
if [ "$(cargo about --version 2>/dev/null || true)" != "cargo-about $CARGO_ABOUT_VERSION" ]; then
  cargo install --locked cargo-about --version "$CARGO_ABOUT_VERSION" --features cli >&2
fi

profile="${KSM_DEB_PROFILE:-release}"
# Where cargo builds (CARGO_TARGET_DIR, else target/); the packaged assets it generates
# below go to target/deb-assets of this tree whatever it is (ksm/Cargo.toml names them).
built="${CARGO_TARGET_DIR:-target}"
case "$profile" in
  release) out="$built/release" ;;
  dev) out="$built/debug" ;;
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
ksm (${version}-${KSM_DEB_REVISION:-1}) unstable; urgency=medium

  * ksm ${version}, packaged from its source tree by ksm/dist/build-deb.sh.

 -- ksm maintainers <ksm-maintainers@example.org>  ${when}
END
# The crates linked into /usr/bin/ksm, their licenses and the license texts (about.toml says
# which crates and licenses; copyright.hbs the layout). Reading every license file takes
# a minute: the result is kept until the lock file or the inputs change.
inputs="$(cat Cargo.lock ksm/Cargo.toml ksm/dist/about.toml ksm/dist/copyright.hbs | sha256sum | cut -d' ' -f1)"
kept=target/deb-copyright
if [ "$(cat "$kept/inputs" 2>/dev/null || true)" != "$inputs" ]; then
  mkdir -p "$kept"
  rm -f "$kept/inputs"
  # cargo-about reads the metadata of every crate in the lock file, those of other
  # platforms too, which a build never downloads: fetch them first (it reads offline).
  cargo fetch --locked >&2
  cargo about generate --frozen --fail -m ksm/Cargo.toml -c ksm/dist/about.toml \
    -o "$kept/copyright" ksm/dist/copyright.hbs >&2
  echo "$inputs" >"$kept/inputs"
fi
cp "$kept/copyright" target/deb-assets/copyright
# KSM_DEB_REVISION: the Debian revision (default 1), for a rebuilt package of the same
# version (the upgrade test installs one over the other).
revision="${KSM_DEB_REVISION:-1}"
cargo deb -p ksm --profile "$profile" --no-build --locked --strip --deb-revision "$revision" 2>&1 | tail -n 1
