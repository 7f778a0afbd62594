# Sourced by slurm-up.sh / slurm-down.sh: where the single-node Slurm of this project keeps its
# configuration, daemons' state and logs. Clients (sbatch, squeue, adalora sweep --executor
# slurm) find it through SLURM_CONF.
ADALORA_SLURM_DIR="${ADALORA_SLURM_DIR:-/tmp/adalora-slurm}"
export SLURM_CONF="$ADALORA_SLURM_DIR/slurm.conf"
