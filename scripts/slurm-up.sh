#!/usr/bin/env bash
# Bring up a single-node Slurm on this machine (slurmctld + slurmd as root on its own host name,
# munge for authentication, slurmdbd on a private MariaDB so that `sacct` works), for
# `adalora sweep --executor slurm` and its end-to-end tests. Everything lives in
# $ADALORA_SLURM_DIR (default /tmp/adalora-slurm): slurm.conf, slurmdbd.conf, the munge key and
# socket, the database, the daemons' state, pid files and logs. Idempotent: a running cluster
# is left as is. Waits until `sinfo` shows the node idle and `sacct` answers; on failure prints
# the daemons' logs and exits 1.
# Use it with:  export SLURM_CONF=$ADALORA_SLURM_DIR/slurm.conf   (printed at the end)
# Stop it with: scripts/slurm-down.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/slurm-env.sh"
D="$ADALORA_SLURM_DIR"
MUNGE_SOCKET="$D/munge/munge.socket.2"
NODE="$(hostname -s)"
DB_PORT=6830   # MariaDB of the accounting database
DBD_PORT=6819  # slurmdbd

fail() {
  echo "slurm-up: $*" >&2
  for log in "$D"/log/*.log; do
    [ -f "$log" ] || continue
    echo "---- last lines of $log" >&2
    tail -n 25 "$log" >&2
  done
  exit 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs="$1" what="$2"; shift 2
  for _ in $(seq "$secs"); do "$@" && return 0; sleep 1; done
  fail "$what did not happen within ${secs}s"
}

[ "$(id -u)" -eq 0 ] || { echo "slurm-up: run as root (slurmd must start jobs as their users)" >&2; exit 1; }
"$ROOT/scripts/setup-system.sh" slurm-wlm munge slurmdbd mariadb-server

if alive "$D/slurmdbd.pid" && alive "$D/slurmctld.pid" && alive "$D/slurmd.pid" \
  && [ "$(node_state)" = idle ]; then
  echo "slurm-up: already running ($SLURM_CONF)"
  exit 0
fi
"$ROOT/scripts/slurm-down.sh" >/dev/null 2>&1 || true
mkdir -p "$D/munge" "$D/log" "$D/ctld" "$D/spool" "$D/db"
chmod 700 "$D/munge"

# munge refuses to start without a key, so create ours first (per cluster: a fresh random key).
[ -f "$D/munge/munge.key" ] || mungekey --create --keyfile="$D/munge/munge.key"
chmod 600 "$D/munge/munge.key"
munged --force --key-file="$D/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$D/munge/munged.pid" --log-file="$D/log/munged.log" --seed-file="$D/munge/seed" \
  || fail "munged did not start"
wait_for 10 "munge answering on $MUNGE_SOCKET" \
  sh -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET' >/dev/null 2>&1"

# Job accounting (sacct) goes through slurmdbd into a MariaDB of our own: TCP on localhost only,
# a port of its own so a system database is never touched.
mariadb-install-db --user=root --datadir="$D/db/data" --auth-root-authentication-method=socket \
  --skip-test-db >"$D/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
mariadbd --user=root --datadir="$D/db/data" --socket="$D/db/mariadb.sock" \
  --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$D/db/mariadb.pid" \
  --log-error="$D/log/mariadb.log" --innodb-buffer-pool-size=32M >/dev/null 2>&1 &
wait_for 60 "MariaDB answering" sh -c "mariadb -S '$D/db/mariadb.sock' -e 'SELECT 1' >/dev/null 2>&1"
DB_PASS="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mariadb -S "$D/db/mariadb.sock" -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "creating the accounting database user failed"

# The node as this machine sees it; a little memory is kept back so slurmd never reports less
# than configured (which would drain the node).
CPUS="$(nproc)"
MEM_MB="$(free -m | awk '/^Mem:/ { print int($2 * 0.95) }')"
cat > "$SLURM_CONF" <<CONF
# Written by scripts/slurm-up.sh: a single-node cluster for adalora sweeps.
ClusterName=adalora
# Addresses are given so that the host name need not resolve (not every CI box lists it).
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
# No cgroups in containers: track processes through /proc and bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((MEM_MB / CPUS))
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
# Finished jobs stay visible to scontrol for 10 minutes (sacct keeps them for good).
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# (with munge, the "password" is the munge socket to use)
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

# slurmdbd reads slurmdbd.conf beside slurm.conf; it holds the database password, so 0600.
(umask 077; cat > "$D/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
CONF
)
slurmdbd || fail "slurmdbd did not start"
wait_for 60 "slurmdbd listening on port $DBD_PORT" sh -c "grep -q 'slurmdbd version .* started' '$D/log/slurmdbd.log'"
slurmctld -c -f "$SLURM_CONF" || fail "slurmctld did not start"
wait_for 20 "slurmctld answering" sh -c "scontrol ping >/dev/null 2>&1"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
wait_for 60 "sacct answering" sh -c "sacct --noheader >/dev/null 2>&1"
wait_for 60 "node $NODE idle in sinfo" sh -c "[ \"\$(sinfo -h -N -n '$NODE' -o %T 2>/dev/null | head -n 1)\" = idle ]"
echo "slurm-up: node $NODE idle ($CPUS CPUs, $MEM_MB MB)"
echo "export SLURM_CONF=$SLURM_CONF"
