#!/usr/bin/env bash
# A real single-node Slurm cluster (munged + slurmctld + slurmd) for CI and developers.
#
#   scripts/ci/slurm_local.sh [--install] up|down|status|env
#
# One node named `hostname -s` at 127.0.0.1 with 16 declared CPUs and 8 fake GPUs
# (character devices under $SLURM_LOCAL_DIR/fakegpu), partition `debug`. Everything the
# cluster writes lives under $SLURM_LOCAL_DIR (default /tmp/dualfocus-slurm), except munged's
# socket in /run/munge. Client commands need SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf:
#   eval "$(scripts/ci/slurm_local.sh env)"
#
# Environment: SLURM_LOCAL_DIR, SLURM_INSTALL=1 (same as --install), SLURM_LOCAL_CPUS (16),
# SLURM_LOCAL_GPUS (8), SLURM_LOCAL_CTLD_PORT (6817), SLURM_LOCAL_SLURMD_PORT (6818),
# SLURM_LOCAL_TIMEOUT (seconds to wait for the node to be idle, 30).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/dualfocus-slurm}"
CPUS="${SLURM_LOCAL_CPUS:-16}"
GPUS="${SLURM_LOCAL_GPUS:-8}"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-6818}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-30}"
INSTALL="${SLURM_INSTALL:-0}"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_local: SLURM_LOCAL_GPUS must be >= 1" >&2; exit 2; }
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_local: SLURM_LOCAL_CPUS must be >= 1" >&2; exit 2; }
NODE="$(hostname -s 2>/dev/null || uname -n | cut -d. -f1)"
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF="$DIR/etc/slurm.conf"

die() { echo "slurm_local: $*" >&2; exit 1; }
say() { echo "slurm_local: $*" >&2; }

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

alive() {  # alive PID: a running process, not a zombie (PID 1 in containers may reap late or never)
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

pid_alive() {  # pid_alive FILE: the PID in FILE names a live process
  [[ -s "$1" ]] && alive "$(cat "$1")"
}

munge_works() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

install_packages() {
  [[ "$(id -u)" == 0 ]] || die "--install needs root"
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; } \
    || die "apt-get install slurm-wlm munge failed"
}

check_tools() {
  local missing=()
  for tool in munged munge unmunge slurmctld slurmd sinfo srun sbatch scontrol runuser mknod; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}; rerun with --install (or SLURM_INSTALL=1)"
  [[ "$(id -u)" == 0 ]] || die "must run as root (slurmd runs jobs as their submitting user)"
}

write_config() {
  local mem_mb
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  mkdir -p "$DIR"/{etc,state,spool,log,run,fakegpu}
  # Fake GPUs must be character devices or slurmd drops the gres.conf entries and the
  # node goes INVAL; these are copies of /dev/null kept outside /dev.
  for ((i = 0; i < GPUS; i++)); do
    [[ -c "$DIR/fakegpu/nvidia$i" ]] || { rm -f "$DIR/fakegpu/nvidia$i"; mknod "$DIR/fakegpu/nvidia$i" c 1 3; }
  done
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/ci/slurm_local.sh; rewritten on every 'up'.
ClusterName=dualfocus
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCKET}
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${DIR}/run/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parent PID, do not bind tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Trust the CPU count declared below, not the hardware (else the node goes INVAL).
SlurmdParameters=config_overrides
# An impossible request fails at submission instead of pending forever.
EnforcePartLimits=ALL
# Finished jobs vanish after ~5 s; sbatch --wait then polls every 2 s.
MinJobAge=5
KillWait=5
ReturnToService=2
InactiveLimit=0
MailProg=/bin/true
PlugStackConfig=${DIR}/etc/plugstack.conf
GresTypes=gpu
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${mem_mb} Gres=gpu:${GPUS} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=${NODE} Name=gpu File=${DIR}/fakegpu/nvidia[0-$((GPUS - 1))]
EOF
  # An empty plugstack keeps site SPANK plugins of /etc/slurm out of our cluster.
  : >"$DIR/etc/plugstack.conf"
}

start_munge() {
  if munge_works; then
    say "munged already answers on $MUNGE_SOCKET; using it"
    return
  fi
  local key=/etc/munge/munge.key
  mkdir -p "$DIR/munge"
  chown munge:munge "$DIR/munge"
  chmod 0700 "$DIR/munge"
  if [[ ! -s "$key" ]]; then
    key="$DIR/munge/munge.key"
    if [[ ! -s "$key" ]]; then
      say "no /etc/munge/munge.key; creating $key"
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
      chown munge:munge "$key"
      chmod 0400 "$key"
    fi
  fi
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 0755 /run/munge
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$DIR/munge/munged.log"
  start_daemon "$DIR/munge/munged.pid" runuser -u munge -- munged --key-file="$key" --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || { cat "$DIR/munge/munged.log" >&2 2>/dev/null || true; die "munged failed to start"; }
  for _ in $(seq 50); do munge_works && return; sleep 0.1; done
  cat "$DIR/munge/munged.log" >&2 2>/dev/null || true
  die "munged started but does not answer on $MUNGE_SOCKET"
}

start_daemon() {  # start_daemon PIDFILE CMD...: run a self-daemonizing CMD, wait for its PID file
  local pidfile=$1
  shift
  rm -f "$pidfile"
  "$@" || return 1
  # The daemon writes its PID file after the launcher returns; until then `down` cannot find it.
  for _ in $(seq 100); do pid_alive "$pidfile" && return 0; sleep 0.05; done
  return 1
}

print_logs() {
  local f
  for f in "$DIR/munge/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
    [[ -f "$f" ]] || continue
    echo "----- $f (last 40 lines) -----" >&2
    tail -n 40 "$f" >&2
  done
}

wait_idle() {
  local start=$SECONDS state=""
  while ((SECONDS - start < TIMEOUT)); do
    state="$(node_state)"
    [[ "$state" == idle ]] && return 0
    pid_alive "$DIR/run/slurmctld.pid" || break
    pid_alive "$DIR/run/slurmd.pid" || break
    sleep 0.2
  done
  say "node $NODE is not idle after $((SECONDS - start)) s (state: '${state:-no answer}')"
  scontrol show node "$NODE" >&2 2>/dev/null || true
  print_logs
  cmd_down
  exit 1
}

is_up() {
  pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" && munge_works \
    && [[ "$(node_state)" =~ ^(idle|mixed|allocated)$ ]]
}

cmd_up() {
  if [[ "$INSTALL" == 1 ]]; then install_packages; fi
  check_tools
  if is_up; then
    say "already up (node $NODE: $(node_state)); SLURM_CONF=$SLURM_CONF"
    return
  fi
  if compgen -G "$DIR/run/*.pid" >/dev/null || [[ -e "$DIR/munge/munged.pid" ]]; then cmd_down; fi
  local t0=$SECONDS
  # Stale controller state keeps the node drained or down: always start clean.
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  write_config
  start_munge
  start_daemon "$DIR/run/slurmctld.pid" slurmctld -c || { print_logs; cmd_down; die "slurmctld failed to start"; }
  start_daemon "$DIR/run/slurmd.pid" slurmd -N "$NODE" || { print_logs; cmd_down; die "slurmd failed to start"; }
  wait_idle
  say "up in $((SECONDS - t0)) s: node $NODE idle, partition debug, ${CPUS} CPUs, gpu:${GPUS}"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pidfiles() {  # stop_pidfiles FILE...: SIGTERM each PID in FILEs, wait until all are gone
  local file pid pids=() waited
  for file in "$@"; do
    [[ -s "$file" ]] || continue
    pid="$(cat "$file")"
    rm -f "$file"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  # All at once: each daemon takes ~2 s to notice SIGTERM and exit.
  for ((waited = 0; waited < 100; waited++)); do
    local left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    pids=("${left[@]}")
    ((${#pids[@]} == 0)) && return 0
    sleep 0.1
  done
  say "pids ${pids[*]} ignored SIGTERM for 10 s; sending SIGKILL"
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

cancel_jobs() {  # leave no job steps behind the daemons we stop
  pid_alive "$DIR/run/slurmctld.pid" || return 0
  [[ -n "$(squeue -h -o %i 2>/dev/null)" ]] || return 0
  say "cancelling running jobs"
  scancel -p debug 2>/dev/null || true
  for _ in $(seq 50); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && return; sleep 0.2; done
}

cmd_down() {
  cancel_jobs
  # Only a munged we started has its PID file here; a system munged is left alone.
  stop_pidfiles "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$DIR/munge/munged.pid"
  say "down"
}

cmd_status() {
  local name file
  for name in munged slurmctld slurmd; do
    file="$DIR/run/$name.pid"
    [[ $name == munged ]] && file="$DIR/munge/munged.pid"
    if pid_alive "$file"; then echo "$name: running (pid $(cat "$file"))"; else echo "$name: not running"; fi
  done
  echo "SLURM_CONF=$SLURM_CONF"
  if is_up; then
    sinfo -N -o '%N %P %T %c %G'
    return 0
  fi
  echo "cluster: down"
  return 1
}

ACTION=""
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    up | down | status | env) [[ -z "$ACTION" ]] || usage; ACTION=$arg ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
done
case "$ACTION" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) usage ;;
esac
