#!/bin/bash
# Install bulletd on Raspberry Pi OS / Debian (arm64 or x86-64) as a systemd service.
#
#   sudo deploy/install.sh                    # install or upgrade from this checkout
#   sudo deploy/install.sh --with-mosquitto   # ... and a local Mosquitto broker
#   sudo deploy/install.sh --uninstall        # remove the program; keep config, models, user
#   sudo deploy/install.sh --uninstall --purge  # remove everything, the user and group too
#   deploy/install.sh --root DIR              # lay the whole install out under DIR (an image,
#                                             # a test); touches nothing outside DIR
#   sudo deploy/install.sh --root DIR --owner-ids 990:990   # ... owned by the image's bulletd ids
#
# Layout (docs/DEPLOY.md explains each piece):
#   /opt/bulletd/venv/                    Python venv with the project (bulletd, bulletd-cli, bullet)
#   /usr/local/bin/bulletd-cli, bullet    links into the venv
#   /etc/bulletd/bulletd.yaml             config, written only when absent (upgrades keep yours)
#   /etc/bulletd/bulletd.yaml.example     the current default config, refreshed on every install
#   /etc/bulletd/trusted_keys/*.pem       public keys the daemon trusts (the shipped release key)
#   /var/lib/bulletd/models/              the shipped children (+ .sig), only those not there yet
#   /etc/systemd/system/bulletd.service   the hardened unit (deploy/bulletd.service)
#   user and group "bulletd"              the service runs as bulletd; group members may use the
#                                         control socket /run/bulletd/bulletd.sock
#
# Options:
#   --root DIR               install under DIR; implies --no-apt --no-user --no-systemd (the
#                            commands that would have run are printed and logged instead, and
#                            those the first boot must run are written to opt/bulletd/first-boot.sh)
#   --owner-ids UID:GID      with --root or --no-user: the numeric ids bulletd's user and group
#                            have (or will get) in the image; files are given to them (needs root)
#   --no-apt                 do not apt-get install anything (refuse if something is missing)
#   --no-user                do not create the bulletd user and group
#   --no-systemd             do not run systemctl (the unit file is still installed)
#   --no-start               enable the service but do not (re)start it
#   --with-mosquitto         also install mosquitto and mosquitto-clients
#   --python PATH            Python used for the venv (default: python3; must be >= 3.10)
#   --source DIR             checkout to install (default: the folder above this script); its
#                            child_models/ (*.bullet + .sig, *.pem public keys) and unit are used
#   --wheel FILE             install this prebuilt bullet-os wheel instead of building the source
#   --system-site-packages   the venv also sees the system's packages (e.g. Debian's python3-numpy)
#   --no-build-isolation     build with the build tools already installed (no downloads for them)
#   --uninstall [--purge]    remove the install (see above)
#
# Safety: every check runs before anything is changed. The program, config, keys, models and unit
# are first built in a staging folder next to their destination; only when all of that worked
# are they moved into place (the old venv is swapped out in one rename). A failure, or Ctrl-C,
# before that removes the staging folder and leaves the machine as it was. Re-running is safe.
set -euo pipefail

PROG="bulletd-install"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/.." && pwd)"
DEST=""
NO_APT=0
NO_USER=0
NO_SYSTEMD=0
NO_START=0
WITH_MOSQUITTO=0
PYTHON="python3"
WHEEL=""
SYSTEM_SITE=0
NO_BUILD_ISOLATION=0
UNINSTALL=0
PURGE=0
OWNER_IDS=""
MIN_PY="3.10"
# Test hooks, documented in tests/test_deploy_install.py: another os-release file, another
# machine name, and a forced failure after a named step (to prove nothing half-made stays).
OS_RELEASE="${BULLETD_OS_RELEASE:-/etc/os-release}"
MACHINE="${BULLETD_MACHINE:-$(uname -m)}"
FAIL_AFTER="${BULLETD_INSTALL_FAIL_AFTER:-}"

say() { echo "$PROG: $*"; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
usage() { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) DEST="${2:?--root needs a folder}"; shift 2 ;;
        --root=*) DEST="${1#--root=}"; shift ;;
        --owner-ids) OWNER_IDS="${2:?--owner-ids needs UID:GID}"; shift 2 ;;
        --no-apt) NO_APT=1; shift ;;
        --no-user) NO_USER=1; shift ;;
        --no-systemd) NO_SYSTEMD=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --with-mosquitto) WITH_MOSQUITTO=1; shift ;;
        --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
        --source) SRC="${2:?--source needs a folder}"; shift 2 ;;
        --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
        --system-site-packages) SYSTEM_SITE=1; shift ;;
        --no-build-isolation) NO_BUILD_ISOLATION=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see $0 --help)" ;;
    esac
done

if [ -n "$DEST" ]; then
    mkdir -p "$DEST" || die "cannot create the root folder $DEST"
    DEST="$(cd "$DEST" && pwd)"
    [ "$DEST" != "/" ] || DEST=""
fi
if [ -n "$DEST" ]; then
    NO_APT=1
    NO_USER=1
    NO_SYSTEMD=1
fi
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
OWN_UID=""
OWN_GID=""
if [ -n "$OWNER_IDS" ]; then
    if ! [[ "$OWNER_IDS" =~ ^[0-9]+:[0-9]+$ ]]; then
        die "--owner-ids $OWNER_IDS: expected UID:GID, two numbers (e.g. 990:990)"
    fi
    OWN_UID="${OWNER_IDS%%:*}"
    OWN_GID="${OWNER_IDS##*:}"
    [ "$NO_USER" = 1 ] || die "--owner-ids goes with --root or --no-user (otherwise the installer creates bulletd itself)"
    [ "$UNINSTALL" = 0 ] || die "--owner-ids is for installing, not --uninstall"
    [ "$(id -u)" = 0 ] || die "--owner-ids needs root: giving files to other ids takes chown (sudo $0 ...)"
fi

OPT="$DEST/opt/bulletd"
ETC="$DEST/etc/bulletd"
STATE="$DEST/var/lib/bulletd"
UNIT_DIR="$DEST/etc/systemd/system"
BIN_DIR="$DEST/usr/local/bin"
LOG_LINES=()

# Things skipped because of --root / --no-*: printed now, and kept in /opt/bulletd/install.log.
skipped() {
    say "skipped ($1): $2"
    LOG_LINES+=("skipped ($1): $2")
}
note() {
    say "$*"
    LOG_LINES+=("$*")
}

systemd_running() { [ -d /run/systemd/system ]; }

# ------------------------------------------------------------------------------------------------
# uninstall
# ------------------------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
    if [ -z "$DEST" ] && [ "$(id -u)" != 0 ]; then die "uninstall needs root (sudo $0 --uninstall)"; fi
    if [ "$NO_SYSTEMD" = 0 ] && systemd_running; then
        systemctl disable --now bulletd.service 2>/dev/null || true
    elif [ "$NO_SYSTEMD" = 0 ]; then
        skipped "systemd is not PID 1" "systemctl disable --now bulletd.service"
    else
        skipped "--no-systemd" "systemctl disable --now bulletd.service"
    fi
    rm -f "$UNIT_DIR/bulletd.service" "$DEST/etc/systemd/system/multi-user.target.wants/bulletd.service"
    for tool in bulletd bulletd-cli bullet; do
        link="$BIN_DIR/$tool"
        if [ -L "$link" ] && [ "$(readlink "$link")" = "/opt/bulletd/venv/bin/$tool" ]; then rm -f "$link"; fi
    done
    rm -rf "$OPT" "$DEST/opt/.bulletd.new" "$DEST/opt/.bulletd.old"
    if [ "$NO_SYSTEMD" = 0 ] && systemd_running; then systemctl daemon-reload; fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if [ "$NO_USER" = 0 ]; then
            if getent passwd bulletd >/dev/null; then userdel bulletd; fi
            if getent group bulletd >/dev/null; then groupdel bulletd; fi
        else
            skipped "--no-user" "userdel bulletd; groupdel bulletd"
        fi
        say "purged: program, unit, config ($ETC), models and state ($STATE)"
    else
        say "removed the program and the unit; kept $ETC and $STATE (--purge removes them)"
    fi
    exit 0
fi

# ------------------------------------------------------------------------------------------------
# checks (nothing is changed before they all pass)
# ------------------------------------------------------------------------------------------------
if [ -z "$DEST" ] && [ "$(id -u)" != 0 ]; then
    die "installing into / needs root: sudo $0 (or --root DIR to lay it out in a folder)"
fi

[ -r "$OS_RELEASE" ] || die "cannot read $OS_RELEASE: this installer supports Debian and Raspberry Pi OS only"
# Read os-release as data (KEY=value, optionally quoted), without executing it.
os_field() { sed -n "s/^$1=//p" "$OS_RELEASE" | head -n1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"; }
os_id="$(os_field ID)"
os_like="$(os_field ID_LIKE)"
os_name="$(os_field PRETTY_NAME)"
os_name="${os_name:-${os_id:-unknown}}"
case " $os_id $os_like " in
    *" debian "*|*" raspbian "*) ;;
    *) die "unsupported system '$os_name' (from $OS_RELEASE): expected Debian or Raspberry Pi OS (ID=debian/raspbian or ID_LIKE=debian)" ;;
esac

case "$MACHINE" in
    aarch64|arm64|x86_64|amd64) ;;
    armv6l|armv7l|armhf)
        die "unsupported machine '$MACHINE': 32-bit ARM is not supported; install the 64-bit (arm64) Raspberry Pi OS" ;;
    *) die "unsupported machine '$MACHINE': expected aarch64 (arm64) or x86_64" ;;
esac

if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die "--wheel $WHEEL: no such file"
    case "$WHEEL" in *.whl) ;; *) die "--wheel $WHEEL: expected a .whl file" ;; esac
    WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
fi
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/bulletd" ]; then
    die "$SRC is not a Bullet OS checkout (expected pyproject.toml and bulletd/ there; use --source DIR)"
fi
[ -f "$SRC/deploy/bulletd.service" ] || die "$SRC/deploy/bulletd.service is missing"

# Shipped children and keys: public keys only, and every child with its signature.
shopt -s nullglob
SHIPPED_KEYS=("$SRC"/child_models/keys/*.pem "$SRC"/child_models/*.pem)
SHIPPED_MODELS=("$SRC"/child_models/*.bullet)
shopt -u nullglob
for key in "${SHIPPED_KEYS[@]}"; do
    if grep -q "PRIVATE KEY" "$key"; then
        die "$key holds a PRIVATE key; only public keys may go into the trust store (remove it from child_models/)"
    fi
    grep -q "BEGIN PUBLIC KEY" "$key" || die "$key is not a PEM public key (expected a BEGIN PUBLIC KEY block)"
done
for model in "${SHIPPED_MODELS[@]}"; do
    [ -f "$model.sig" ] || die "$model has no signature $model.sig: shipped children must be signed"
done
if [ "${#SHIPPED_MODELS[@]}" -gt 0 ] && [ "${#SHIPPED_KEYS[@]}" = 0 ]; then
    die "$SRC/child_models has children but no public key (*.pem) to trust them with"
fi

# apt: what is missing, installed before the Python check so that a fresh Pi gets python3-venv.
APT_PKGS=(python3 python3-venv python3-dev python3-pip build-essential cmake)
[ "$WITH_MOSQUITTO" = 0 ] || APT_PKGS+=(mosquitto mosquitto-clients)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$NO_APT" = 1 ]; then
        skipped "$([ -n "$DEST" ] && echo --root || echo --no-apt)" "apt-get install -y --no-install-recommends ${missing[*]}"
    else
        command -v apt-get >/dev/null || die "apt-get not found, cannot install ${missing[*]}"
        say "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
            || die "apt-get install ${missing[*]} failed"
    fi
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "Python '$PYTHON' not found (apt-get install python3, or --python PATH)"
PYTHON="$(command -v "$PYTHON")"
py_ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
    || die "'$PYTHON' does not run as a Python interpreter"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' \
    || die "Python $py_ver found at $PYTHON, but bulletd needs Python >= $MIN_PY (Debian 12 / Raspberry Pi OS bookworm ship 3.11)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "Python $py_ver at $PYTHON has no venv/ensurepip module (apt-get install python3-venv)"

# ------------------------------------------------------------------------------------------------
# stage: build everything beside its destination; nothing in place changes yet
# ------------------------------------------------------------------------------------------------
mkdir -p "$DEST/opt"
NEW="$DEST/opt/.bulletd.new"
STAGE_ETC=""
# shellcheck disable=SC2317  # reached through the traps
cleanup() {
    rc=$?
    rm -rf "$NEW" "$DEST/opt/.bulletd.old" "$DEST/opt/.bulletd.lock"
    [ -z "$STAGE_ETC" ] || rm -rf "$STAGE_ETC"
    if [ "$rc" != 0 ]; then
        echo "$PROG: failed (exit $rc); removed the staging folders, the previous state is unchanged" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_point() {
    if [ "$FAIL_AFTER" = "$1" ]; then
        die "forced failure after step '$1' (BULLETD_INSTALL_FAIL_AFTER)"
    fi
}

# One install at a time (the staging folders have fixed names).
exec 9>"$DEST/opt/.bulletd.lock"
flock -n 9 || die "another install.sh is running on ${DEST:-/} (lock $DEST/opt/.bulletd.lock)"
rm -rf "$NEW"
mkdir -p "$NEW"
note "python $py_ver at $PYTHON; system '$os_name' on $MACHINE; source $SRC"

# 1. the venv with the project
venv_args=()
[ "$SYSTEM_SITE" = 0 ] || venv_args+=(--system-site-packages)
"$PYTHON" -m venv "${venv_args[@]}" "$NEW/venv" || die "python -m venv failed"
pip_args=(-q --disable-pip-version-check --no-input)
[ "$NO_BUILD_ISOLATION" = 0 ] || pip_args+=(--no-build-isolation)
if [ -n "$WHEEL" ]; then
    target="$WHEEL"
else
    target="$SRC"
fi
say "pip install $target (building the native module can take a few minutes on a Pi)"
"$NEW/venv/bin/python" -m pip install "${pip_args[@]}" "$target" \
    || die "pip install $target failed (see the messages above)"
# The venv was built at the staging path; scripts and pyvenv.cfg name it. Point them at the
# final path (/opt/bulletd inside the root) before the move.
stage_path="$NEW"
grep -rlF --null "$stage_path" "$NEW/venv/bin" "$NEW/venv/pyvenv.cfg" 2>/dev/null \
    | xargs -0 -r sed -i "s|$stage_path|/opt/bulletd|g"
kernel="$("$NEW/venv/bin/python" -I -c 'import bulletd._native as n; print(n.kernel_path() if hasattr(n, "kernel_path") else "native")')" \
    || die "the installed package does not import (bulletd._native)"
note "installed bullet-os into /opt/bulletd/venv (native kernels: $kernel)"
fail_point venv

# 2. config, keys, models and the unit, staged under /etc/.bulletd.new (same file system as /etc)
mkdir -p "$DEST/etc"
STAGE_ETC="$(mktemp -d "$DEST/etc/.bulletd.stage.XXXXXX")"
mkdir -p "$STAGE_ETC/etc/trusted_keys" "$STAGE_ETC/models" "$STAGE_ETC/unit"
cat >"$STAGE_ETC/etc/bulletd.yaml" <<'EOF'
# bulletd configuration, written by deploy/install.sh when no config existed (later installs keep
# this file; the current defaults are in bulletd.yaml.example). Every key: docs/DAEMON.md.
# Check it with:  /opt/bulletd/venv/bin/bulletd --check-config --config /etc/bulletd/bulletd.yaml
# Apply it with:  systemctl reload bulletd   (or restart for socket and MQTT changes)

device_id: ""                        # "" -> this machine's host name
model_dir: /var/lib/bulletd/models   # children (.bullet + .sig) and the mother
log_level: info

socket:
  path: /run/bulletd/bulletd.sock    # systemd's RuntimeDirectory; bulletd-cli finds it there
  mode: "0660"                       # owner bulletd, group bulletd: add users with
                                     #   usermod -aG bulletd NAME   (then log in again)
  admin_groups: []                   # groups allowed load/unload (root always is), e.g. [bulletd]

trust:
  keys: [/etc/bulletd/trusted_keys]  # PEM public keys; children signed by others are refused
  allow_unsigned: false

mqtt:
  host: ""                           # "" = MQTT off (socket only); e.g. 127.0.0.1 or broker.lan
  port: 1883                         # 8883 for TLS
  username: ""                       # with the ACL in deploy/mosquitto/acl: the device id
  password_file: ""                  # e.g. /etc/bulletd/mqtt.password (chmod 0640, group bulletd)
  tls:
    enabled: false
    ca_file: ""                      # e.g. /etc/bulletd/broker-ca.crt

tools:
  home:
    file: ""                         # the home file for agent children, e.g. /etc/bulletd/home.yaml
    act: false                       # true lets requests with act: true switch devices over MQTT
EOF
cp "$STAGE_ETC/etc/bulletd.yaml" "$STAGE_ETC/etc/bulletd.yaml.example"

for key in "${SHIPPED_KEYS[@]}"; do
    cp "$key" "$STAGE_ETC/etc/trusted_keys/"
done
for model in "${SHIPPED_MODELS[@]}"; do
    cp "$model" "$model.sig" "$STAGE_ETC/models/"
    # The shipped keys must vouch for every shipped child (the daemon would refuse it otherwise).
    "$NEW/venv/bin/python" -I -m bulletd.cli_bullet verify "$model" --trust "$STAGE_ETC/etc/trusted_keys" >/dev/null \
        || die "$model: its signature does not verify against the shipped keys (bullet verify)"
done
nkeys=${#SHIPPED_KEYS[@]}
nmodels=${#SHIPPED_MODELS[@]}
cp "$SRC/deploy/bulletd.service" "$STAGE_ETC/unit/bulletd.service"
chmod 0644 "$STAGE_ETC/unit/bulletd.service"
# The daemon itself must accept the config and find the keys (run from the staged venv).
"$NEW/venv/bin/python" -I -m bulletd.daemon.main --check-config --config "$STAGE_ETC/etc/bulletd.yaml" >/dev/null \
    || die "the new venv's bulletd rejects the default config (bulletd --check-config)"
fail_point stage

# ------------------------------------------------------------------------------------------------
# commit: moves and small copies only
# ------------------------------------------------------------------------------------------------
# user and group first: the files below are given to the group.
# Ownership (docs/DEPLOY.md): /etc/bulletd, its trusted_keys/ and bulletd.yaml root:bulletd,
# /var/lib/bulletd bulletd:bulletd. Set here by name (bulletd created above), or by the numeric
# ids of --owner-ids (an image); otherwise (--root, --no-user) the first boot must do it: those
# commands are printed, logged and written to /opt/bulletd/first-boot.sh.
FIRST_BOOT=()
if [ "$NO_USER" = 0 ]; then
    if ! getent group bulletd >/dev/null; then groupadd --system bulletd; note "created group bulletd"; fi
    if ! getent passwd bulletd >/dev/null; then
        useradd --system --gid bulletd --home-dir /var/lib/bulletd --no-create-home \
            --shell /usr/sbin/nologin --comment "Bullet OS daemon" bulletd
        note "created system user bulletd"
    fi
    OWN_USER=bulletd
    OWN_GROUP=bulletd
else
    FIRST_BOOT+=("getent group bulletd >/dev/null || groupadd --system${OWN_GID:+ --gid $OWN_GID} bulletd")
    FIRST_BOOT+=("getent passwd bulletd >/dev/null || useradd --system${OWN_UID:+ --uid $OWN_UID} --gid bulletd --home-dir /var/lib/bulletd --no-create-home --shell /usr/sbin/nologin --comment 'Bullet OS daemon' bulletd")
    if [ -n "$OWNER_IDS" ]; then
        OWN_USER="$OWN_UID"
        OWN_GROUP="$OWN_GID"
    else
        OWN_USER=""
        OWN_GROUP=""
        FIRST_BOOT+=("chown root:bulletd /etc/bulletd /etc/bulletd/trusted_keys /etc/bulletd/bulletd.yaml")
        FIRST_BOOT+=("chown -R bulletd:bulletd /var/lib/bulletd")
    fi
    why="$([ -n "$DEST" ] && echo --root || echo --no-user)"
    skipped "$why" "$(printf '%s; ' "${FIRST_BOOT[@]}" | sed 's/; $//') (all in /opt/bulletd/first-boot.sh)"
fi
group_owns() {   # root:bulletd, by name or by --owner-ids; nothing when left to the first boot
    if [ -n "$OWN_GROUP" ]; then chown "0:$OWN_GROUP" "$@"; fi
}

# /etc/bulletd: config only if absent; example, keys and unit refreshed
install -d -m 0750 "$ETC" "$ETC/trusted_keys"
group_owns "$ETC" "$ETC/trusted_keys"
if [ -e "$ETC/bulletd.yaml" ]; then
    note "kept the existing $ETC/bulletd.yaml (the new defaults are in bulletd.yaml.example)"
else
    install -m 0640 "$STAGE_ETC/etc/bulletd.yaml" "$ETC/.bulletd.yaml.tmp"
    mv "$ETC/.bulletd.yaml.tmp" "$ETC/bulletd.yaml"
    note "wrote $ETC/bulletd.yaml"
fi
group_owns "$ETC/bulletd.yaml"   # the daemon reads it as group bulletd, kept or new
install -m 0644 "$STAGE_ETC/etc/bulletd.yaml.example" "$ETC/bulletd.yaml.example"
for key in "$STAGE_ETC"/etc/trusted_keys/*.pem; do
    [ -e "$key" ] || continue
    install -m 0644 "$key" "$ETC/trusted_keys/"
done
note "trust store $ETC/trusted_keys: $nkeys shipped public key(s)"

# models: only those not there yet (OTA may have installed newer ones under the same name)
install -d -m 0750 "$STATE" "$STATE/models"
added=0
for f in "$STAGE_ETC"/models/*; do
    [ -e "$f" ] || continue
    name="$(basename "$f")"
    if [ ! -e "$STATE/models/$name" ]; then
        install -m 0644 "$f" "$STATE/models/.$name.tmp"
        mv "$STATE/models/.$name.tmp" "$STATE/models/$name"
        added=$((added + 1))
    fi
done
note "models in $STATE/models: $nmodels shipped, $added file(s) added"
# The daemon owns its state (OTA replaces files there). systemd's StateDirectory= would chown it
# at the first start, but not files added by a later install.
if [ -n "$OWN_USER" ]; then chown -R "$OWN_USER:$OWN_GROUP" "$STATE"; fi

# the unit
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$STAGE_ETC/unit/bulletd.service" "$UNIT_DIR/.bulletd.service.tmp"
mv "$UNIT_DIR/.bulletd.service.tmp" "$UNIT_DIR/bulletd.service"

# the program: swap the whole /opt/bulletd in two renames
if [ -e "$OPT" ]; then mv "$OPT" "$DEST/opt/.bulletd.old"; fi
mv "$NEW" "$OPT"
rm -rf "$DEST/opt/.bulletd.old"
install -d -m 0755 "$BIN_DIR"
for tool in bulletd-cli bullet; do
    ln -sfn "/opt/bulletd/venv/bin/$tool" "$BIN_DIR/$tool"
done

# systemd
if [ "$NO_SYSTEMD" = 1 ]; then
    skipped "$([ -n "$DEST" ] && echo --root || echo --no-systemd)" "systemctl daemon-reload; systemctl enable bulletd.service; systemctl restart bulletd.service"
    if [ -n "$DEST" ]; then   # what `systemctl enable` would do, so the image boots with it
        install -d -m 0755 "$UNIT_DIR/multi-user.target.wants"
        ln -sfn /etc/systemd/system/bulletd.service "$UNIT_DIR/multi-user.target.wants/bulletd.service"
    fi
elif systemd_running; then
    systemctl daemon-reload
    systemctl enable bulletd.service
    if [ "$NO_START" = 0 ]; then
        systemctl restart bulletd.service
        say "started bulletd (systemctl status bulletd; journalctl -u bulletd -f)"
    fi
else
    skipped "systemd is not PID 1 here" "systemctl daemon-reload; systemctl enable --now bulletd.service"
fi
{ printf '%s\n' "${LOG_LINES[@]}"; echo "installed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $SRC"; } >"$OPT/install.log"
if [ "${#FIRST_BOOT[@]}" -gt 0 ]; then
    {
        echo "#!/bin/sh"
        echo "# Written by deploy/install.sh $([ -n "$DEST" ] && echo "--root" || echo "--no-user"): run once as root on the"
        echo "# installed system (its first boot) before bulletd starts. Safe to run again."
        echo "set -e"
        printf '%s\n' "${FIRST_BOOT[@]}"
    } >"$OPT/first-boot.sh"
    chmod 0755 "$OPT/first-boot.sh"
fi
say "done: ${DEST:-/} now has /opt/bulletd, /etc/bulletd, /var/lib/bulletd/models and the bulletd unit"
