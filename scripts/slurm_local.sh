#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and for trying grids: munge, MariaDB, slurmdbd
# (accounting, so that `sacct`, submitit and Dora see job states), slurmctld and slurmd.
#
#   scripts/slurm_local.sh start [--gpus N]   # idempotent; installs the Debian packages if missing
#   scripts/slurm_local.sh status             # daemons and `sinfo`
#   scripts/slurm_local.sh stop               # stops the daemons through their pid files
#   export SLURM_CONF=${SLURM_LOCAL_DIR:-/tmp/audiogen_lab_slurm}/etc/slurm.conf   # then sbatch, sinfo, dora grid
#
# Every daemon listens on 127.0.0.1 only. Config, state, spool, logs, sockets and pid files live under
# $SLURM_LOCAL_DIR (default /tmp/audiogen_lab_slurm). `--gpus N` declares N fake GPUs (character devices
# under that folder) so that `--gres=gpu:N` jobs can be scheduled on a CPU node.
# Ports: $SLURM_LOCAL_PORT (slurmctld, default 6817), +1 slurmd, +2 slurmdbd, +3 MariaDB.
# Needs root (the daemons switch users). Exit status: 0 done, 1 failed, 2 SLURM cannot run here (not root,
# packages missing and not installable, host name not resolvable), 3 `status` found the cluster down.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # the daemons and runuser live there; login shells of non-root users omit it

DIR=${SLURM_LOCAL_DIR:-/tmp/audiogen_lab_slurm}
PORT=${SLURM_LOCAL_PORT:-6817}
CLUSTER=audiogenlab
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop goes backwards
WAIT=${SLURM_LOCAL_TIMEOUT:-60}                       # seconds to wait for each daemon

die() { echo "slurm_local: $1" >&2; exit "${2:-1}"; }
log() { echo "slurm_local: $*"; }

pidfile() {
  case $1 in
    munged) echo "$DIR/run/munge/munged.pid" ;;
    mariadbd) echo "$DIR/run/mysql/mariadbd.pid" ;;
    *) echo "$DIR/run/$1.pid" ;;
  esac
}

# The pid of daemon $1 if its pid file names a live process running that program, else nothing.
daemon_pid() {
  local file pid
  file=$(pidfile "$1")
  [ -r "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 1
  echo "$pid"
}

# Wait until command "$@" succeeds, at most $WAIT seconds.
wait_for() {
  local what=$1 end=$((SECONDS + WAIT))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "$what did not come up within ${WAIT}s (see $DIR/log/)"
    sleep 0.2
  done
}

install_packages() {
  local missing=() prog
  for prog in slurmctld slurmd sinfo sbatch sacct munged slurmdbd mariadbd mariadb-install-db; do
    command -v "$prog" >/dev/null 2>&1 || missing+=("$prog")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 \
    || die "SLURM is not installed (${missing[*]} missing) and apt-get is not available: install ${PACKAGES[*]}" 2
  log "installing ${PACKAGES[*]} with apt-get (missing: ${missing[*]})"
  # Keep the packages' init scripts from starting system-wide daemons.
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  local ok=1
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${PACKAGES[@]}" >"$DIR/log/apt.log" 2>&1; } || ok=0
  [ "$added" -eq 1 ] && rm -f "$policy"
  [ "$ok" -eq 1 ] || die "apt-get could not install ${PACKAGES[*]} (see $DIR/log/apt.log)" 2
  for prog in "${missing[@]}"; do
    command -v "$prog" >/dev/null 2>&1 || die "$prog is still missing after installing ${PACKAGES[*]}" 2
  done
}

write_config() {
  local node=$1 gpus=$2 cpus mem gres="" i
  cpus=$(nproc)
  mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  [ "$gpus" -gt 0 ] && gres=" Gres=gpu:$gpus"
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh start --gpus $gpus
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$DIR/run/munge/munge.socket
$( [ "$gpus" -gt 0 ] && printf 'GresTypes=gpu\nAccountingStorageTRES=gres/gpu' )
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$DIR/etc/gres.conf"
  for ((i = 0; i < gpus; i++)); do
    [ -c "$DIR/dev/gpu$i" ] || mknod "$DIR/dev/gpu$i" c 195 "$i" || die "cannot create the fake GPU device $DIR/dev/gpu$i"
    echo "NodeName=$node Name=gpu File=$DIR/dev/gpu$i" >>"$DIR/etc/gres.conf"
  done
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge/munge.socket
DbdHost=$node
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munged() {
  daemon_pid munged >/dev/null && return 0
  id munge >/dev/null 2>&1 || die "user munge does not exist (is the munge package installed?)" 2
  mkdir -p /run/munge "$DIR/munge" "$DIR/run/munge"
  chown munge: /run/munge "$DIR/munge" "$DIR/run/munge"
  chmod 700 "$DIR/munge"
  chmod 755 "$DIR/run/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  fi
  chown munge: "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
  touch "$DIR/log/munged.log" && chown munge: "$DIR/log/munged.log"
  runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$DIR/run/munge/munge.socket" \
    --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged failed to start (see $DIR/log/munged.log)"
  wait_for munged daemon_pid munged
}

mysql_root() { mariadb --no-defaults --socket="$DIR/run/mysql/mysqld.sock" -u root "$@"; }

start_mariadbd() {
  daemon_pid mariadbd >/dev/null && return 0
  id mysql >/dev/null 2>&1 || die "user mysql does not exist (is mariadb-server installed?)" 2
  mkdir -p "$DIR/mysql" "$DIR/run/mysql"
  chown mysql: "$DIR/mysql" "$DIR/run/mysql"
  touch "$DIR/log/mariadb.log" && chown mysql: "$DIR/log/mariadb.log"
  if [ ! -d "$DIR/mysql/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
  fi
  setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql/data" --bind-address=127.0.0.1 \
    --port=$((PORT + 3)) --socket="$DIR/run/mysql/mysqld.sock" --pid-file="$(pidfile mariadbd)" \
    --log-error="$DIR/log/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=32M \
    </dev/null >>"$DIR/log/mariadb.log" 2>&1 &
  wait_for mariadbd mysql_root -e "SELECT 1"
  mysql_root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || die "could not create the MariaDB user for slurmdbd (see $DIR/log/mariadb.log)"
}

start_slurm_daemon() {
  local name=$1
  shift
  daemon_pid "$name" >/dev/null && return 0
  "$name" "$@" >>"$DIR/log/$name.out" 2>&1 || die "$name failed to start (see $DIR/log/$name.log)"
  wait_for "$name" daemon_pid "$name"
}

node_idle() { sinfo -h -N -o '%T' | grep -qx 'idle'; }

cmd_start() {
  local gpus=0 node t0=$SECONDS
  while [ $# -gt 0 ]; do
    case $1 in
      --gpus) gpus=${2:-}; shift 2 ;;
      --gpus=*) gpus=${1#--gpus=}; shift ;;
      *) die "unknown option $1 (start takes --gpus N)" ;;
    esac
  done
  [[ $gpus =~ ^[0-9]+$ ]] || die "--gpus needs a number, got '$gpus'"
  [ "$(id -u)" -eq 0 ] || die "needs root (the SLURM daemons and munged switch users)" 2
  node=$(hostname -s)
  getent hosts "$node" >/dev/null || die "host name $node does not resolve: add '127.0.0.1 $node' to /etc/hosts" 2
  mkdir -p "$DIR"/{etc,log,run,state,spool,dev}
  install_packages
  if daemon_pid slurmd >/dev/null || daemon_pid slurmctld >/dev/null; then
    grep -q "^# Written by scripts/slurm_local.sh start --gpus $gpus\$" "$DIR/etc/slurm.conf" \
      || die "the cluster in $DIR is running with another --gpus: run 'scripts/slurm_local.sh stop' first"
  else
    write_config "$node" "$gpus"
  fi
  export SLURM_CONF="$DIR/etc/slurm.conf"
  start_munged
  start_mariadbd
  start_slurm_daemon slurmdbd   # reads slurmdbd.conf next to $SLURM_CONF
  wait_for "slurmdbd (accounting)" sacctmgr -n show cluster
  start_slurm_daemon slurmctld -i -f "$SLURM_CONF"
  start_slurm_daemon slurmd -f "$SLURM_CONF"
  wait_for "node $node (idle in sinfo)" node_idle
  wait_for "cluster $CLUSTER in accounting" bash -c "sacctmgr -n -P show cluster format=cluster | grep -qx $CLUSTER"
  log "up in $((SECONDS - t0))s: node $node, $gpus fake GPU(s); export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
  local name pid i end job_pids=""
  export SLURM_CONF="$DIR/etc/slurm.conf"
  # End the jobs first, so that no job step outlives its slurmd (submitit ignores SIGTERM, so a step
  # ends at the SIGKILL sent KillWait seconds later); kill what slurmd still lists after that.
  if daemon_pid slurmctld >/dev/null; then
    squeue -h -o %A 2>/dev/null | xargs -r scancel --full >/dev/null 2>&1
    end=$((SECONDS + 30))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
  fi
  if daemon_pid slurmd >/dev/null; then
    end=$((SECONDS + 15))
    while job_pids=$(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}') \
          && [ -n "$job_pids" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
    [ -n "${job_pids:-}" ] && { log "killing leftover job processes $(echo $job_pids)"; kill -KILL $job_pids 2>/dev/null; }
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${DAEMONS[i]}
    pid=$(daemon_pid "$name") || continue
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + 30))
    while [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; do
      if [ "$SECONDS" -ge "$end" ]; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; break; fi
      sleep 0.1
    done
    rm -f "$(pidfile "$name")"
    log "stopped $name ($pid)"
  done
}

cmd_status() {
  local name pid up=0
  export SLURM_CONF="$DIR/etc/slurm.conf"
  for name in "${DAEMONS[@]}"; do
    if pid=$(daemon_pid "$name"); then
      echo "$name: running (pid $pid)"
      up=$((up + 1))
    else
      echo "$name: stopped"
    fi
  done
  echo "SLURM_CONF=$SLURM_CONF"
  if daemon_pid slurmctld >/dev/null; then sinfo -N -l; fi
  [ "$up" -eq ${#DAEMONS[@]} ] || exit 3
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) die "usage: $0 start [--gpus N] | stop | status" ;;
esac
