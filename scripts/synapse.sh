#!/usr/bin/env bash
# Runs throw-away Synapse homeservers for the end-to-end tests, the demo and the benchmarks.
#
#   scripts/synapse.sh start [--name test] [--port 8008] [--server-name localhost]
#                            [--registration FILE]... [--fresh] [--max-upload-size 200M]
#                            [--owner-pid PID]   (stop the instance when that process ends)
#                            [--encrypt-by-default all|invite|off]   (new rooms start encrypted)
#   scripts/synapse.sh stop   [--name test] [--purge]   (--purge also deletes the instance's data)
#   scripts/synapse.sh status [--name test]
#   scripts/synapse.sh logs   [--name test] [--lines 50] [--follow]
#
# Synapse lives in a Debian sid chroot built by scripts/install-synapse.sh (no Debian release
# we can install from ships it). Each instance is a directory $ROOT/srv/<name>/ holding its
# homeserver.yaml, SQLite database, media, keys and logs, so several named instances (tests,
# demo) can run side by side on different ports.
#
# `start` prints human progress on stderr and, on success, machine-readable lines on stdout:
#   SYNAPSE_URL=... SYNAPSE_SERVER_NAME=... SYNAPSE_SHARED_SECRET=... SYNAPSE_DATA=... SYNAPSE_PID=...
# so a caller can `eval "$(scripts/synapse.sh start ...)"`. Test configuration only: rate
# limits are off and secrets sit in plain files.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
READY_TIMEOUT_S="${SYNAPSE_READY_TIMEOUT:-60}"
STOP_GRACE_S=15

say() { echo "[synapse] $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '4,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

COMMAND="${1:-}"
[ -n "$COMMAND" ] || usage
shift

NAME="test"
PORT=""
SERVER_NAME=""
FRESH=0
PURGE=0
MAX_UPLOAD_SIZE="200M"
LOG_LINES=50
FOLLOW=0
OWNER_PID=""
ENCRYPT_BY_DEFAULT="off"
REGISTRATIONS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --port) PORT="${2:?--port needs a value}"; shift 2 ;;
    --server-name) SERVER_NAME="${2:?--server-name needs a value}"; shift 2 ;;
    --registration) REGISTRATIONS+=("${2:?--registration needs a file}"); shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --purge) PURGE=1; shift ;;
    --max-upload-size) MAX_UPLOAD_SIZE="${2:?--max-upload-size needs a value}"; shift 2 ;;
    --owner-pid) OWNER_PID="${2:?--owner-pid needs a value}"; shift 2 ;;
    --encrypt-by-default) ENCRYPT_BY_DEFAULT="${2:?--encrypt-by-default needs all, invite or off}"; shift 2 ;;
    --lines|-n) LOG_LINES="${2:?--lines needs a value}"; shift 2 ;;
    --follow|-f) FOLLOW=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done
[[ "$NAME" =~ ^[A-Za-z0-9_-]+$ ]] || die "--name may only contain letters, digits, '-' and '_'"
[ -z "$PORT" ] || [[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"
[ -z "$OWNER_PID" ] || [[ "$OWNER_PID" =~ ^[0-9]+$ ]] || die "--owner-pid must be a number"
[[ "$ENCRYPT_BY_DEFAULT" =~ ^(all|invite|off)$ ]] || die "--encrypt-by-default must be all, invite or off"

if [ "$COMMAND" = start ]; then
  # install-synapse.sh prints its progress on stderr and the chroot path last on stdout.
  ROOT="$(bash "$SCRIPT_DIR/install-synapse.sh" | tail -n 1)"
else
  # stop/status/logs must not trigger a three-minute install on a machine that never had one.
  ROOT="${SYNAPSE_CHROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/matrix-interop-bridge/sid-synapse-v1}"
fi
[ -d "$ROOT" ] || die "no Synapse chroot at $ROOT (run: scripts/synapse.sh start)"

DATA_IN="/srv/$NAME"          # the instance directory as Synapse (inside the chroot) sees it
DATA="$ROOT$DATA_IN"          # the same directory from the host
CONFIG_IN="$DATA_IN/homeserver.yaml"
MOUNT_LOCK="$ROOT.run.lock"   # serialises /proc mount bookkeeping across instances

# Instance processes are found by what they are (a process rooted in the chroot running this
# instance's config), not only by the pid file, so a lost or stale pid file never leaves a
# stray Synapse behind or makes us kill an unrelated process that reused the pid.
chroot_pids() {
  local root_real p
  root_real="$(readlink -f "$ROOT")"
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root_real" ] && echo "${p#/proc/}"
  done
  return 0
}

instance_pids() {
  local pid
  for pid in $(chroot_pids); do
    # A process may end between the listing and this read: stderr first, so that is silent.
    tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q -- "-c $CONFIG_IN " && echo "$pid"
  done
  return 0
}

read_instance_env() {
  # The last start's SYNAPSE_* lines; stop/status/logs use them to report the URL.
  [ -f "$DATA/instance.env" ] && cat "$DATA/instance.env"
  return 0
}

# Unmounts the chroot's /proc once no process is left inside the chroot. Caller holds MOUNT_LOCK.
release_proc_if_unused() {
  if [ -z "$(chroot_pids)" ] && mountpoint -q "$ROOT/proc"; then
    umount "$ROOT/proc" || umount -l "$ROOT/proc"
  fi
}

kill_instance() {
  local pids waited=0
  pids="$(instance_pids)"
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  while [ -n "$(instance_pids)" ] && [ $waited -lt $((STOP_GRACE_S * 10)) ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  pids="$(instance_pids)"
  if [ -n "$pids" ]; then
    say "'$NAME' ignored SIGTERM for ${STOP_GRACE_S}s; sending SIGKILL"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    while [ -n "$(instance_pids)" ]; do sleep 0.1; done
  fi
}

stop_instance() {
  # Only the /proc bookkeeping needs the lock: waiting for Synapse to exit under it made
  # concurrent stops of other instances queue behind each other (minutes on a loaded machine).
  kill_instance
  exec 9>"$MOUNT_LOCK"
  flock 9
  if [ -f "$DATA/watcher.pid" ]; then
    # The watcher itself runs `stop` in its own pid when the owner is gone.
    local watcher
    watcher="$(cat "$DATA/watcher.pid")"
    [ "$watcher" = $$ ] || kill "$watcher" 2>/dev/null || true
    rm -f "$DATA/watcher.pid"
  fi
  rm -f "$DATA/synapse.pid"
  release_proc_if_unused
  exec 9>&-
}

port_answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# HTTP status line of GET /_matrix/client/versions, using only bash so that no curl is needed.
versions_ok() {
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET /_matrix/client/versions HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
    IFS= read -r status <&3
    case "$status" in "HTTP/1."?" 200"*) exit 0 ;; *) exit 1 ;; esac
  ' _ "$PORT" 2>/dev/null
}

show_log_tail() {
  local n="$1"
  if [ -s "$DATA/homeserver.log" ]; then
    say "last $n lines of $DATA/homeserver.log:"
    tail -n "$n" "$DATA/homeserver.log" >&2
  fi
  # Errors before logging is configured (bad YAML, missing module) only reach the console;
  # a fatal error's summary is at its end, so a few lines suffice.
  if [ -s "$DATA/console.log" ]; then
    say "last 10 lines of $DATA/console.log:"
    tail -n 10 "$DATA/console.log" >&2
  fi
}

secret_file() {
  # Secrets survive restarts (and --fresh) so access tokens and the shared secret a caller
  # already read stay valid while the instance directory exists.
  local file="$DATA/$1"
  [ -s "$file" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file")
  cat "$file"
}

write_config() {
  local shared_secret macaroon form i reg_list=""
  shared_secret="$(secret_file registration_shared_secret)"
  macaroon="$(secret_file macaroon_secret_key)"
  form="$(secret_file form_secret)"

  # Registrations are copied afresh each start, so a restart loads exactly the files given now.
  rm -rf "$DATA/appservices"
  mkdir -p "$DATA/appservices"
  for i in "${!REGISTRATIONS[@]}"; do
    local src="${REGISTRATIONS[$i]}" dest
    [ -f "$src" ] || die "registration file not found: $src"
    dest="$(printf '%02d-%s' "$i" "$(basename "$src")")"
    cp "$src" "$DATA/appservices/$dest"
    reg_list+="  - $DATA_IN/appservices/$dest"$'\n'
  done
  [ -n "$reg_list" ] && reg_list="app_service_config_files:"$'\n'"$reg_list" || reg_list="app_service_config_files: []"$'\n'

  local unlimited="{per_second: 10000, burst_count: 100000}"
  cat > "$DATA/homeserver.yaml" <<EOF
# Written by scripts/synapse.sh on every start; edits are overwritten. Tests only.
server_name: "$SERVER_NAME"
public_baseurl: "http://127.0.0.1:$PORT/"
report_stats: false
listeners:
  - port: $PORT
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: $DATA_IN/homeserver.db
log_config: $DATA_IN/log.yaml
media_store_path: $DATA_IN/media_store
max_upload_size: $MAX_UPLOAD_SIZE
signing_key_path: $DATA_IN/signing.key
enable_registration: false
registration_shared_secret: "$shared_secret"
macaroon_secret_key: "$macaroon"
form_secret: "$form"
${reg_list}trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: false
# Encrypted appservices (issue 14): to-device events, device-list changes and one-time-key
# counts reach the appservice in its transactions (MSC2409, MSC3202).
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
encryption_enabled_by_default_for_room_type: "$ENCRYPT_BY_DEFAULT"
url_preview_enabled: false
enable_metrics: false
# Tests act as real users sending quickly; Synapse's defaults (0.2 messages/s) would throttle them.
rc_message: $unlimited
rc_registration: $unlimited
rc_room_creation: $unlimited
rc_admin_redaction: $unlimited
rc_joins_per_room: $unlimited
rc_media_create: $unlimited
rc_3pid_validation: $unlimited
rc_key_requests: $unlimited
rc_reports: $unlimited
rc_delayed_event_mgmt: $unlimited
rc_presence:
  per_user: $unlimited
rc_login:
  address: $unlimited
  account: $unlimited
  failed_attempts: $unlimited
rc_joins:
  local: $unlimited
  remote: $unlimited
rc_invites:
  per_room: $unlimited
  per_user: $unlimited
  per_issuer: $unlimited
EOF

  cat > "$DATA/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
handlers:
  file:
    class: logging.handlers.WatchedFileHandler
    formatter: precise
    filename: $DATA_IN/homeserver.log
    filters: [context]
    encoding: utf8
loggers:
  twisted:
    level: WARN
  synapse.storage.SQL:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
}

# Runs a command inside the chroot with a clean environment (the host's PYTHONPATH, pyenv
# shims and the like must not leak into the chroot's Python). chroot and env exec, so the
# pid of the started process is Python's own.
in_chroot() {
  local userspec="$1"; shift
  local spec=()
  [ "$userspec" = root ] || spec=(--userspec="$userspec")
  chroot "${spec[@]}" "$ROOT" /usr/bin/env -i HOME="$DATA_IN" LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "running Synapse in its chroot needs root; set MATRIX_HOMESERVER_URL to use an existing homeserver instead"
  PORT="${PORT:-8008}"
  SERVER_NAME="${SERVER_NAME:-localhost}"
  local t0
  t0=$(date +%s%N)

  mkdir -p "$DATA"
  if [ -n "$(instance_pids)" ]; then
    say "'$NAME' is running; restarting it so the new configuration loads"
    stop_instance
  fi
  if port_answers "$PORT"; then
    die "127.0.0.1:$PORT is already in use (another instance? see: scripts/synapse.sh status --name NAME)"
  fi

  if [ $FRESH = 1 ]; then
    rm -rf "$DATA"/homeserver.db* "$DATA/media_store" "$DATA"/homeserver.log* "$DATA/console.log"
  fi
  write_config
  if [ ! -s "$DATA/signing.key" ]; then
    in_chroot root python3 -m synapse.app.homeserver -c "$CONFIG_IN" --generate-keys \
      > "$DATA/console.log" 2>&1 || { show_log_tail 30; die "generating keys failed"; }
  fi

  # Run unprivileged when the chroot's matrix-synapse user works; some container setups
  # refuse setuid in chroot, and then root inside a throw-away chroot is acceptable.
  # chown needs the chroot's numeric ids: the host usually has no matrix-synapse user.
  local user=matrix-synapse:nogroup ids
  ids="$(in_chroot root /usr/bin/id -u matrix-synapse 2>/dev/null):$(in_chroot root /usr/bin/getent group nogroup 2>/dev/null | cut -d: -f3)"
  if ! chown -R "$ids" "$DATA" 2>/dev/null || ! in_chroot "$user" /bin/true 2>/dev/null; then
    say "cannot run as $user here; running Synapse as root inside the chroot"
    user=root
  fi

  exec 9>"$MOUNT_LOCK"
  flock 9
  if ! mountpoint -q "$ROOT/proc"; then
    mount -t proc proc "$ROOT/proc"
  fi
  # setsid: Synapse must outlive this script and not receive signals aimed at the caller's
  # process group (e.g. Ctrl-C in a test run); `stop` ends it. Its stdio must not hold the
  # caller's pipes open, or a caller reading our output would wait forever.
  local spec=()
  [ "$user" = root ] || spec=(--userspec="$user")
  setsid --wait chroot "${spec[@]}" "$ROOT" /usr/bin/env -i HOME="$DATA_IN" LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin python3 -m synapse.app.homeserver -c "$CONFIG_IN" \
    < /dev/null > "$DATA/console.log" 2>&1 9>&- &
  # With --wait, $! lives exactly as long as Synapse even if setsid had to fork.
  local pid=$!
  exec 9>&-

  say "starting '$NAME' (Synapse $(cat "$ROOT/.synapse-version" 2>/dev/null || echo '?'), pid $pid) on 127.0.0.1:$PORT"
  local deadline=$(( $(date +%s) + READY_TIMEOUT_S ))
  until versions_ok; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail 30
      stop_instance
      die "Synapse '$NAME' exited during startup"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      show_log_tail 30
      stop_instance
      die "Synapse '$NAME' was not ready after ${READY_TIMEOUT_S}s"
    fi
    sleep 0.2
  done

  pid="$(instance_pids | head -n 1)"
  echo "$pid" > "$DATA/synapse.pid"
  if [ -n "$OWNER_PID" ]; then
    # A test process killed outright (SIGKILL, a CI timeout) runs no cleanup of its own;
    # this watcher stops the instance when its owner is gone, and ends when Synapse does.
    setsid bash -c '
      owner=$1 synapse=$2; shift 2
      while kill -0 "$owner" 2>/dev/null; do
        kill -0 "$synapse" 2>/dev/null || exit 0
        sleep 1
      done
      kill -0 "$synapse" 2>/dev/null && exec "$@"
    ' _ "$OWNER_PID" "$pid" bash "$SCRIPT_DIR/synapse.sh" stop --name "$NAME" \
      < /dev/null > /dev/null 2>&1 9>&- &
    echo $! > "$DATA/watcher.pid"
  fi
  cat > "$DATA/instance.env" <<EOF
SYNAPSE_URL=http://127.0.0.1:$PORT
SYNAPSE_SERVER_NAME=$SERVER_NAME
SYNAPSE_SHARED_SECRET=$(cat "$DATA/registration_shared_secret")
SYNAPSE_SHARED_SECRET_FILE=$DATA/registration_shared_secret
SYNAPSE_DATA=$DATA
SYNAPSE_LOG=$DATA/homeserver.log
SYNAPSE_PID=$pid
EOF
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  say "'$NAME' ready at http://127.0.0.1:$PORT in $((ms / 1000)).$(printf '%03d' $((ms % 1000)) | cut -c1-1)s (${#REGISTRATIONS[@]} appservice registration(s); logs: scripts/synapse.sh logs --name $NAME)"
  cat "$DATA/instance.env"
}

cmd_stop() {
  if [ -z "$(instance_pids)" ]; then
    say "'$NAME' is not running"
  else
    stop_instance
    say "'$NAME' stopped"
  fi
  # Even with nothing to stop, tidy a /proc mount an interrupted run may have left behind.
  exec 9>"$MOUNT_LOCK"; flock 9; release_proc_if_unused; exec 9>&-
  rm -f "$DATA/synapse.pid"
  if [ "$PURGE" = 1 ] && [ -n "$NAME" ] && [ -d "$DATA" ]; then
    rm -rf "$DATA"
    say "'$NAME' data deleted"
  fi
}

cmd_status() {
  local pids url
  pids="$(instance_pids | tr '\n' ' ')"
  if [ -n "$pids" ]; then
    url="$(read_instance_env | sed -n 's/^SYNAPSE_URL=//p')"
    echo "$NAME: running (pid ${pids% }) at ${url:-?}"
  else
    echo "$NAME: stopped"
    exit 3
  fi
}

cmd_logs() {
  [ -f "$DATA/homeserver.log" ] || die "no log for '$NAME' at $DATA/homeserver.log"
  if [ $FOLLOW = 1 ]; then
    exec tail -n "$LOG_LINES" -F "$DATA/homeserver.log"
  fi
  tail -n "$LOG_LINES" "$DATA/homeserver.log"
}

case "$COMMAND" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  *) usage ;;
esac
