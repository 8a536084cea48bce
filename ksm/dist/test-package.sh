#!/usr/bin/env bash
# Proves the Debian package on this machine (as root; `.ci/run` runs it): builds it (or
# takes the .deb given as $1), lints it, installs it with dpkg, checks what it put where
# with which owner and mode, verifies the systemd unit, runs the installed binary (the
# version, and `ksm serve --demo` answering a real decode), then removes and purges it and
# checks that purge took away what install made but kept the AEADs. Leaves the machine as
# it found it; refuses to start where a ksm package, user or AEAD directory already exists.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "test-package: FAIL: $*" >&2
  exit 1
}
step() { echo "test-package: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
if dpkg-query -W -f='${Status}' ksm 2>/dev/null | grep -q installed; then
  fail "a ksm package is installed already; purge it first"
fi
getent passwd ksm >/dev/null && fail "a user ksm exists already"
[ -e /var/cache/yubikey-ksm ] && fail "/var/cache/yubikey-ksm exists already"
[ -e /etc/ksm ] && fail "/etc/ksm exists already"

DEMO_PID=""
WORK="$(mktemp -d)"
cleanup() {
  if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; fi
  if dpkg-query -W -f='${Status}' ksm 2>/dev/null | grep -q -e installed -e config-files; then
    dpkg --purge ksm >/dev/null 2>&1 || true
  fi
  # None of these existed when the script started (it refuses to start otherwise): whatever
  # a failed step left of them (the test's AEAD, the user a purge keeps with it) goes.
  rm -rf /var/cache/yubikey-ksm
  if getent passwd ksm >/dev/null; then deluser --quiet --system ksm >/dev/null 2>&1 || true; fi
  if getent group ksm >/dev/null; then delgroup --quiet --system ksm >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# owner:group and octal mode of a path, or fail.
expect_stat() {
  local path="$1" want="$2" got
  got="$(stat -c '%U:%G %a' "$path" 2>/dev/null)" || fail "$path is missing"
  [ "$got" = "$want" ] || fail "$path is $got, expected $want"
}

deb="${1:-}"
if [ -z "$deb" ]; then
  step "building the package"
  deb="$(ksm/dist/build-deb.sh | tail -n 1)"
fi
[ -f "$deb" ] || fail "no package at '$deb'"
version="$(dpkg-deb -f "$deb" Version)"
arch="$(dpkg-deb -f "$deb" Architecture)"
[ "$(basename "$deb")" = "ksm_${version}_${arch}.deb" ] || fail "package named $(basename "$deb")"
step "package $deb"

step "lintian (errors fail)"
lintian --fail-on error --tag-display-limit 0 "$deb" || fail "lintian found errors"

step "install"
dpkg -i "$deb"

step "files, owners and modes"
expect_stat /usr/bin/ksm "root:root 755"
expect_stat /etc/ksm/ksm.toml "root:root 644"
dpkg-query -W -f='${Conffiles}\n' ksm | grep -q '^ /etc/ksm/ksm.toml ' || fail "/etc/ksm/ksm.toml is not a conffile"
unit=/usr/lib/systemd/system/ksm.service
[ -f "$unit" ] || unit=/lib/systemd/system/ksm.service
expect_stat "$unit" "root:root 644"
grep -qx 'ExecStart=/usr/bin/ksm serve --config /etc/ksm/ksm.toml' "$unit" || fail "the unit does not start /usr/bin/ksm"
grep -qx 'RuntimeDirectory=ksm' "$unit" || fail "the unit does not make /run/ksm"
[ ! -e /etc/systemd/system/multi-user.target.wants/ksm.service ] || fail "the service was enabled on install"
for page in ksm ksm-serve ksm-keystore-unlock ksm-config-import-pyhsm ksm-store-verify; do
  expect_stat "/usr/share/man/man1/$page.1.gz" "root:root 644"
  zcat "/usr/share/man/man1/$page.1.gz" | grep -q '^\.TH' || fail "$page.1.gz is not a manual page"
done
[ ! -e /usr/share/man/man1/ksm-generate-man.1.gz ] || fail "a hidden command has a manual page"
expect_stat /usr/share/bash-completion/completions/ksm "root:root 644"
expect_stat /usr/share/zsh/vendor-completions/_ksm "root:root 644"
expect_stat /usr/share/fish/vendor_completions.d/ksm.fish "root:root 644"
grep -q 'import-pyhsm' /usr/share/bash-completion/completions/ksm || fail "bash completion lacks config import-pyhsm"
expect_stat /usr/share/doc/ksm/copyright "root:root 644"

step "the ksm user, its groups, the AEAD directory"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd ksm)
[ "$uid" -lt 1000 ] || fail "ksm is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "ksm's shell is $shell"
[ "$home" = /nonexistent ] && [ ! -e /nonexistent ] || fail "ksm's home is $home"
id -nG ksm | tr ' ' '\n' | grep -qx dialout || fail "ksm is not in dialout (the group of /dev/ttyACM*)"
expect_stat /var/cache/yubikey-ksm "root:root 755"
expect_stat /var/cache/yubikey-ksm/aeads "ksm:ksm 750"

step "systemd-analyze verify"
# Without systemd as PID 1 this still loads the unit, checks every setting (an unknown or
# misspelt one is a warning) and that the ExecStart binary exists (an error). Both fail here.
verify_out="$(systemd-analyze verify "$unit" 2>&1)" || { echo "$verify_out" >&2; fail "systemd-analyze verify $unit"; }
[ -z "$verify_out" ] || { echo "$verify_out" >&2; fail "systemd-analyze verify warns about $unit"; }

step "the installed binary"
[ "$(/usr/bin/ksm --version)" = "ksm ${version%-*}" ] || fail "ksm --version says $(/usr/bin/ksm --version)"
# The demo as the ksm user, from / (nothing of the source tree reachable by a relative path).
(cd / && exec runuser -u ksm -- /usr/bin/ksm serve --demo --port 0 >"$WORK/demo.out" 2>"$WORK/demo.err") &
DEMO_PID=$!
for _ in $(seq 100); do
  grep -q '^try:' "$WORK/demo.out" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.err" >&2; fail "ksm serve --demo exited"; }
  sleep 0.2
done
grep -q '^try:' "$WORK/demo.out" || fail "ksm serve --demo printed no curl line in 20 s"
grep -q 'AEADs in /usr/share/ksm/demo-aeads' "$WORK/demo.out" || fail "the demo does not serve the packaged AEADs: $(head -n 1 "$WORK/demo.out")"
url="$(sed -n "s/^try: *curl '\(.*\)'$/\1/p" "$WORK/demo.out")"
answer="$(curl -sS --max-time 5 "$url")"
[[ "$answer" == "OK counter="* ]] || fail "the demo answered '$answer'"
kill "$DEMO_PID"
wait "$DEMO_PID" 2>/dev/null || true
DEMO_PID=""
step "demo answered: $answer"

step "remove keeps the configuration and the user"
dpkg -r ksm
[ ! -e /usr/bin/ksm ] || fail "/usr/bin/ksm left after remove"
[ -f /etc/ksm/ksm.toml ] || fail "remove took the conffile"
getent passwd ksm >/dev/null || fail "remove took the user"

step "purge keeps AEADs and the user owning them, removes the rest"
aead=/var/cache/yubikey-ksm/aeads/0x20/cc/cc/cc/cc/cc/cccccccccccb
mkdir -p "$(dirname "$aead")"
echo "an AEAD" >"$aead"
dpkg --purge ksm
[ -f "$aead" ] || fail "purge removed an AEAD"
[ ! -e /etc/ksm ] || fail "/etc/ksm left after purge"
getent passwd ksm >/dev/null || fail "purge removed the user that owns the kept AEADs"
expect_stat /var/cache/yubikey-ksm/aeads "ksm:ksm 750"

step "reinstall takes up the kept AEADs and user; purge with no AEADs leaves nothing"
kept_uid="$(id -u ksm)"
dpkg -i "$deb" >/dev/null
[ "$(id -u ksm)" = "$kept_uid" ] || fail "reinstall made a new ksm user"
rm -r /var/cache/yubikey-ksm/aeads/0x20

dpkg --purge ksm >/dev/null
for path in /var/cache/yubikey-ksm /etc/ksm /usr/bin/ksm "$unit"; do
  [ ! -e "$path" ] || fail "$path left after purge"
done
! getent passwd ksm >/dev/null || fail "user ksm left after purge"
! getent group ksm >/dev/null || fail "group ksm left after purge"

step "ok"
