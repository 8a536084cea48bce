#!/usr/bin/env bash
# Proves the Debian package on this machine (as root; `.ci/run` runs it): builds it (or
# takes the .deb given as $1), lints it, installs it with dpkg, checks what it put where
# with which owner and mode, verifies the systemd units and that an upgrade would not
# restart the daemon, runs the installed binary (the version, and `ksm serve --demo`
# answering a real decode), then removes and purges it and checks that purge took away what
# install made but kept the AEADs, and that install refuses a ksm account that is not a
# system user's. Leaves the machine as it found it; refuses to start where a ksm package,
# user or AEAD directory already exists. (ksm/dist/test-systemd.sh runs the units under
# systemd.)
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "test-package: FAIL: $*" >&2
  exit 1
}
step() { echo "test-package: $*"; }
# Whether TEXT (all of a command's output, captured first) matches grep's arguments. Never
# `cmd | grep -q`: under pipefail the pipeline fails when grep has its match and stops
# reading while cmd is still writing (cmd dies of SIGPIPE), a race that fails a good package.
matches() {
  local text="$1"
  shift
  grep -q "$@" <<<"$text"
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
if matches "$(dpkg-query -W -f='${Status}' ksm 2>/dev/null || true)" installed; then
  fail "a ksm package is installed already; purge it first"
fi
getent passwd ksm >/dev/null && fail "a user ksm exists already"
[ -e /var/cache/yubikey-ksm ] && fail "/var/cache/yubikey-ksm exists already"
[ -e /etc/ksm ] && fail "/etc/ksm exists already"

DEMO_PID=""
WORK="$(mktemp -d)"
cleanup() {
  if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; fi
  if matches "$(dpkg-query -W -f='${Status}' ksm 2>/dev/null || true)" -e installed -e config-files; then
    dpkg --purge ksm >/dev/null 2>&1 || true
  fi
  # None of these existed when the script started (it refuses to start otherwise): whatever
  # a failed step left of them (the test's AEAD, the user a purge keeps with it) goes.
  rm -rf /var/cache/yubikey-ksm
  if getent passwd ksm >/dev/null; then deluser --quiet --system ksm >/dev/null 2>&1 || true; fi
  # The test's own non-system ksm account, which deluser --system leaves.
  if getent passwd ksm >/dev/null; then userdel ksm >/dev/null 2>&1 || true; fi
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

step "description and copyright"
summary="$(dpkg-deb -f "$deb" Description | sed -n 1p)"
matches "$summary" 'YubiHSM 1 or YubiHSM 2' || fail "the description does not name both YubiHSMs: $summary"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/ksm/copyright >"$WORK/copyright"
# Every crate linked in, with its license, and the license texts with the crates they cover.
grep -q '^ksm [0-9.]*: BSD-2-Clause$' "$WORK/copyright" || fail "copyright lacks ksm's own license"
grep -q '^sqlx [0-9.]*: MIT OR Apache-2.0 ' "$WORK/copyright" || fail "copyright lacks sqlx and its license"
grep -q '^hyper [0-9.]*: MIT ' "$WORK/copyright" || fail "copyright lacks hyper and its license"
grep -q '^=== MIT License (MIT), used by: .*hyper [0-9]' "$WORK/copyright" || fail "copyright lacks the MIT text hyper is under"
grep -q 'Permission is hereby granted, free of charge' "$WORK/copyright" || fail "copyright has no MIT license text"
grep -q '^=== BSD 2-Clause .*used by: .*ksm [0-9]' "$WORK/copyright" || fail "copyright lacks ksm's license text"

step "an upgrade neither stops nor restarts the daemon"
# A running daemon may hold a YubiHSM 2 password only in memory (keystore-unlock): the
# maintainer scripts stop the units only on remove, and never restart them.
dpkg-deb -e "$deb" "$WORK/control"
for script in preinst postinst prerm postrm; do
  [ -f "$WORK/control/$script" ] || continue
  # Commands only: comments and the operator's messages may name systemctl restart.
  if grep -vE '^[[:space:]]*(#|echo )' "$WORK/control/$script" |
    grep -E 'deb-systemd-invoke.*(restart|start)|systemctl.*(restart|start) '; then
    fail "$script starts or restarts the service"
  fi
done
grep -q 'deb-systemd-invoke stop' "$WORK/control/prerm" || fail "prerm does not stop the service on remove"
matches "$(grep -B1 'deb-systemd-invoke stop' "$WORK/control/prerm")" '"$1" = remove' ||
  fail "prerm stops the service on more than remove: $(cat "$WORK/control/prerm")"

step "install"
dpkg -i "$deb"

step "files, owners and modes"
expect_stat /usr/bin/ksm "root:root 755"
expect_stat /etc/ksm/ksm.toml "root:root 644"
matches "$(dpkg-query -W -f='${Conffiles}\n' ksm)" '^ /etc/ksm/ksm.toml ' || fail "/etc/ksm/ksm.toml is not a conffile"
unit=/usr/lib/systemd/system/ksm.service
[ -f "$unit" ] || unit=/lib/systemd/system/ksm.service
expect_stat "$unit" "root:root 644"
grep -qx 'ExecStart=/usr/bin/ksm serve --config /etc/ksm/ksm.toml' "$unit" || fail "the unit does not start /usr/bin/ksm"
grep -qx 'RuntimeDirectory=ksm' "$unit" || fail "the unit does not make /run/ksm"
grep -qx 'Type=notify' "$unit" || fail "the unit does not wait for the daemon's READY=1"
grep -qx 'Requires=ksm.socket' "$unit" || fail "the unit does not take its port from ksm.socket"
socket_unit="$(dirname "$unit")/ksm.socket"
expect_stat "$socket_unit" "root:root 644"
grep -qx 'ListenStream=127.0.0.1:8002' "$socket_unit" || fail "ksm.socket does not hold 127.0.0.1:8002"
[ ! -e /etc/systemd/system/multi-user.target.wants/ksm.service ] || fail "the service was enabled on install"
[ ! -e /etc/systemd/system/sockets.target.wants/ksm.socket ] || fail "the socket was enabled on install"
# The package has no key handles until the operator gives them.
! grep -q '^key-handles' /etc/ksm/ksm.toml || fail "/etc/ksm/ksm.toml has key handles set"
for page in ksm ksm-serve ksm-keystore-unlock ksm-config-import-pyhsm ksm-store-verify; do
  expect_stat "/usr/share/man/man1/$page.1.gz" "root:root 644"
  matches "$(zcat "/usr/share/man/man1/$page.1.gz")" '^\.TH' || fail "$page.1.gz is not a manual page"
done
matches "$(zcat /usr/share/man/man1/ksm.1.gz | grep -A1 '^\.SH NAME')" 'YubiHSM 1 or YubiHSM 2' ||
  fail "ksm(1)'s NAME line does not name both YubiHSMs"
[ ! -e /usr/share/ksm ] || fail "/usr/share/ksm installed: the demo's AEADs are in the binary"
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
matches "$(id -nG ksm | tr ' ' '\n')" -x dialout || fail "ksm is not in dialout (the group of /dev/ttyACM*)"
expect_stat /var/cache/yubikey-ksm "root:root 755"
# Root's, readable by the daemon's group: the daemon only reads AEADs.
expect_stat /var/cache/yubikey-ksm/aeads "root:ksm 750"

step "systemd-analyze verify"
# Without systemd as PID 1 this still loads the units, checks every setting (an unknown or
# misspelt one is a warning) and that the ExecStart binary exists (an error). Both fail here.
verify_out="$(systemd-analyze verify "$unit" "$socket_unit" 2>&1)" || { echo "$verify_out" >&2; fail "systemd-analyze verify $unit $socket_unit"; }
[ -z "$verify_out" ] || { echo "$verify_out" >&2; fail "systemd-analyze verify warns about $unit or $socket_unit"; }

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
# The AEADs compiled into the binary, written to a private directory of the demo's own.
grep -q 'AEADs in /tmp/ksm-demo-aeads\.' "$WORK/demo.out" || fail "the demo does not serve its compiled-in AEADs: $(head -n 1 "$WORK/demo.out")"
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
getent passwd ksm >/dev/null || fail "purge removed the user whose group reads the kept AEADs"
expect_stat /var/cache/yubikey-ksm/aeads "root:ksm 750"

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

step "install refuses a ksm account that is not a system user's"
useradd --uid 1500 --user-group --no-create-home --shell /usr/sbin/nologin ksm
if dpkg -i "$deb" >"$WORK/nonsystem.out" 2>&1; then
  fail "install took up ksm, uid 1500"
fi
grep -q 'uid 1500, which is not a system user' "$WORK/nonsystem.out" ||
  fail "install failed without saying why: $(cat "$WORK/nonsystem.out")"
! matches "$(id -nG ksm | tr ' ' '\n')" -x dialout || fail "the non-system ksm was put in dialout"
[ ! -e /var/cache/yubikey-ksm ] || fail "install made the AEAD directory for the non-system ksm"
dpkg --purge ksm >/dev/null
[ "$(id -u ksm)" = 1500 ] || fail "purge touched the account it did not make"
userdel ksm

step "ok"
