#!/usr/bin/env bash
# Stop the single-node Slurm started by scripts/slurm-up.sh: cancel its jobs, stop slurmd,
# slurmctld, slurmdbd, MariaDB and munged by their pid files, and remove $ADALORA_SLURM_DIR.
# Safe to run twice.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/slurm-env.sh"
D="$ADALORA_SLURM_DIR"

stop() { # stop PIDFILE NAME: TERM, then KILL after 10 s
  local pidfile="$1" name="$2" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "slurm-down: stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}

if [ -f "$SLURM_CONF" ] && [ -f "$D/slurmctld.pid" ]; then
  scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop "$D/slurmd.pid" slurmd
stop "$D/slurmctld.pid" slurmctld
stop "$D/slurmdbd.pid" slurmdbd
stop "$D/db/mariadb.pid" mariadb
stop "$D/munge/munged.pid" munged
rm -rf "$D"
