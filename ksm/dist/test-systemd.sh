#!/usr/bin/env bash
# Proves the Debian package where systemd runs its units (as root; `.ci/run` runs it): a
# minimal Debian 12 root (debootstrap, kept in target/systemd-root for the next run) is
# booted with systemd-nspawn, the package installed in it, and then, under systemd:
# ksm.socket and ksm.service start (the service only once the daemon says READY=1), a
# decode is answered on the port systemd holds, `sudo ksm keystore-unlock` (the README's
# line) reaches the daemon that runs as ksm, the port stays held while the daemon is
# stopped, a reload keeps the daemon, and an upgrade to a rebuilt package leaves the
# running daemon alone. The service runs the demo (a drop-in swaps ExecStart), everything
# else is the package's. Takes the two packages as $1 and $2 (the same version, revisions 1
# and 2), or builds them.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "test-systemd: FAIL: $*" >&2
  if [ -n "${LEADER:-}" ]; then
    echo "--- the container's ksm units:" >&2
    in_ct systemctl --no-pager status ksm.socket ksm.service >&2 2>&1 || true
    in_ct journalctl --no-pager -n 40 -u ksm.socket -u ksm.service >&2 2>&1 || true
  fi
  exit 1
}
step() { echo "test-systemd: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (it boots a container)"
for tool in debootstrap systemd-nspawn nsenter; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install debootstrap systemd-container util-linux)"
done

ROOT="$PWD/target/systemd-root"
WORK="$(mktemp -d)"
NSPAWN=""
LEADER=""
cleanup() {
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    # SIGTERM: nspawn halts the container's systemd; a second one ends it at once.
    kill "$NSPAWN" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.5; done
    kill "$NSPAWN" 2>/dev/null || true
    wait "$NSPAWN" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A command inside the booted container (all its namespaces, as its root).
in_ct() { nsenter --target "$LEADER" --all -- "$@"; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local secs="$1"
  shift
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

deb1="${1:-}"
deb2="${2:-}"
if [ -z "$deb1" ]; then
  step "building the packages (revisions 1 and 2)"
  deb1="$(ksm/dist/build-deb.sh | tail -n 1)"
  cp "$deb1" "$WORK/"
  deb1="$WORK/$(basename "$deb1")"
  deb2="$(KSM_DEB_REVISION=2 ksm/dist/build-deb.sh | tail -n 1)"
fi
[ -f "$deb1" ] && [ -f "$deb2" ] || fail "no packages at '$deb1' and '$deb2'"
v1="$(dpkg-deb -f "$deb1" Version)"
v2="$(dpkg-deb -f "$deb2" Version)"
dpkg --compare-versions "$v2" gt "$v1" || fail "$deb2 ($v2) is no upgrade of $deb1 ($v1)"

if [ ! -f "$ROOT/.ksm-test-root" ]; then
  step "making a Debian 12 root with debootstrap"
  # From the Debian mirror apt already uses here.
  mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '!found && $2 == "bookworm" { print $1; found = 1 }')"
  rm -rf "$ROOT"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser,sudo,curl \
    bookworm "$ROOT" ${mirror:+"$mirror"} >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  touch "$ROOT/.ksm-test-root"
fi
# A clean start: what an earlier run installed goes (the root is kept only for its packages).
rm -rf "$ROOT/etc/systemd/system/ksm.service.d"
chroot "$ROOT" sh -c 'dpkg --purge ksm >/dev/null 2>&1 || true; userdel ksm >/dev/null 2>&1 || true; groupdel ksm >/dev/null 2>&1 || true; rm -rf /var/cache/yubikey-ksm /etc/ksm'
cp "$deb1" "$ROOT/root/ksm-1.deb"
cp "$deb2" "$ROOT/root/ksm-2.deb"

step "booting it with systemd-nspawn"
# Its own network namespace: port 8002 in there is nobody else's.
systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$ROOT" -b \
  --console=pipe >"$WORK/boot.log" 2>&1 </dev/null &
NSPAWN=$!
find_leader() { LEADER="$(pgrep -P "$NSPAWN" -x systemd)"; }
wait_for 30 find_leader || { cat "$WORK/boot.log" >&2; fail "no systemd in the container within 30 s"; }
state="$(in_ct timeout 120 systemctl is-system-running --wait 2>/dev/null || true)"
case "$state" in
  running | degraded) step "systemd is $state" ;;
  *) cat "$WORK/boot.log" >&2; fail "the container's systemd is '$state'" ;;
esac

step "install: units there, neither enabled nor started"
in_ct dpkg -i /root/ksm-1.deb >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "dpkg -i"; }
[ "$(in_ct systemctl is-enabled ksm.socket || true)" = disabled ] || fail "ksm.socket enabled on install"
[ "$(in_ct systemctl is-enabled ksm.service || true)" = disabled ] || fail "ksm.service enabled on install"
! in_ct systemctl --quiet is-active ksm.socket || fail "ksm.socket started on install"
! in_ct systemctl --quiet is-active ksm.service || fail "ksm.service started on install"

step "start: the demo under the packaged units"
mkdir -p "$ROOT/etc/systemd/system/ksm.service.d"
cat >"$ROOT/etc/systemd/system/ksm.service.d/demo.conf" <<'END'
[Service]
ExecStart=
ExecStart=/usr/bin/ksm serve --demo --socket /run/ksm/ksm.sock
END
in_ct systemctl daemon-reload
# Type=notify: start returns once the daemon has said READY=1, and fails if it never does.
in_ct timeout 90 systemctl start ksm.service || fail "systemctl start ksm.service"
in_ct systemctl --quiet is-active ksm.socket || fail "ksm.socket is not active with the service"
[ "$(in_ct systemctl show -P Type ksm.service)" = notify ] || fail "ksm.service is not Type=notify"
pid="$(in_ct systemctl show -P MainPID ksm.service)"
[ "$(in_ct stat -c %U "/proc/$pid")" = ksm ] || fail "the daemon does not run as ksm"
# The daemon serves on the very socket systemd holds: its descriptor 3 (LISTEN_FDS) is
# one of PID 1's.
sock="$(in_ct readlink "/proc/$pid/fd/3" || true)"
[[ "$sock" == socket:* ]] || fail "the daemon's descriptor 3 is '$sock', not ksm.socket's socket"
ls_fd="$(in_ct ls -l /proc/1/fd)"
grep -qF -- "-> $sock" <<<"$ls_fd" || fail "the daemon's $sock is not systemd's ksm.socket"
url="$(in_ct journalctl --no-pager -u ksm.service -o cat | sed -n "s/^try: *curl '\(.*\)'$/\1/p" | tail -n 1)"
[[ "$url" == http://127.0.0.1:8002/* ]] || fail "the demo's curl line is '$url'"
decode() { in_ct curl -sS --max-time 10 "$url"; }
answer="$(decode)"
[[ "$answer" == "OK counter="* ]] || fail "the decode answered '$answer'"
step "decoded through ksm.socket: $answer"

step "sudo ksm keystore-unlock reaches the daemon of the ksm user"
in_ct sudo ksm keystore-unlock --stdin --no-otp </dev/null >"$WORK/unlock.out" 2>&1 ||
  { cat "$WORK/unlock.out" >&2; fail "sudo ksm keystore-unlock"; }
grep -q 'already unlocked' "$WORK/unlock.out" || fail "keystore-unlock said: $(cat "$WORK/unlock.out")"

step "the port stays held while the daemon is stopped"
in_ct systemctl stop ksm.service
! in_ct systemctl --quiet is-active ksm.service || fail "ksm.service still active after stop"
in_ct systemctl --quiet is-active ksm.socket || fail "ksm.socket went with the service"
# A client now is queued on systemd's socket, which starts the daemon to answer it.
answer="$(decode)"
[[ "$answer" == "OK counter="* ]] || fail "a decode while the daemon was stopped answered '$answer'"
wait_for 30 in_ct systemctl --quiet is-active ksm.service || fail "the socket did not start the daemon"

step "reload keeps the daemon"
pid="$(in_ct systemctl show -P MainPID ksm.service)"
in_ct timeout 60 systemctl reload ksm.service || fail "systemctl reload ksm.service"
[ "$(in_ct systemctl show -P MainPID ksm.service)" = "$pid" ] || fail "reload replaced the daemon"
[[ "$(decode)" == "OK counter="* ]] || fail "no decode after the reload"

step "upgrade $v1 -> $v2 leaves the running daemon alone"
in_ct dpkg -i /root/ksm-2.deb >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log" >&2; fail "the upgrade"; }
[ "$(in_ct dpkg-query -W -f='${Version}' ksm)" = "$v2" ] || fail "the upgrade did not install $v2"
[ "$(in_ct systemctl show -P MainPID ksm.service)" = "$pid" ] || fail "the upgrade restarted the daemon"
in_ct systemctl --quiet is-active ksm.service || fail "the upgrade stopped the daemon"
grep -q "ksm.service was not restarted and still runs version $v1" "$WORK/upgrade.log" ||
  fail "the upgrade did not tell the operator: $(cat "$WORK/upgrade.log")"
[[ "$(decode)" == "OK counter="* ]] || fail "no decode after the upgrade"

step "purge stops both units"
in_ct dpkg --purge ksm >/dev/null 2>&1 || fail "dpkg --purge ksm"
! in_ct systemctl --quiet is-active ksm.service || fail "ksm.service runs after purge"
! in_ct systemctl --quiet is-active ksm.socket || fail "ksm.socket listens after purge"
rm -rf "$ROOT/etc/systemd/system/ksm.service.d"

step "ok"
