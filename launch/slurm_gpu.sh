#!/usr/bin/env bash
# Multi-node GPU pretraining under SLURM: one process per GPU, all processes form one JAX job.
#
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 --cpus-per-task=12 --time=48:00:00 \
#     launch/slurm_gpu.sh --config configs/scannet.py --workdir /shared/ckpt/dos_scannet \
#     --config.data.root=/shared/data/scannet
#
# Requirements: `pip install -r requirements-cuda12.txt` in the job's environment (activate it below or before
# sbatch); --workdir and data.root on a filesystem every node sees (checkpoints are written by all processes,
# orbax coordinates them). config.batch_size is GLOBAL and must be a multiple of the total GPU count; each process
# builds its contiguous 1/P slice of every step's global batch (the same batch for any process count, so a
# checkpoint resumes on another node count with the same data).
#
# How the processes find each other: srun starts SLURM_NTASKS copies of launch.train; with DOS_MULTIHOST=1 each
# calls jax.distributed.initialize(), which reads SLURM_* variables. We also pass the coordinator explicitly (first
# node of the allocation, port 12345 unless DOS_COORDINATOR_PORT is set) so it also works where JAX's SLURM
# detection does not. Preemption: SLURM sends SIGTERM before killing (set --signal=TERM@120 to get a 2-minute
# notice); every process saves the checkpoint of the same step and exits 0; resubmit the same command to resume.
#SBATCH --job-name=dos_jax
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

if [[ -z "${SLURM_JOB_NODELIST:-}" ]]; then
  echo "launch/slurm_gpu.sh: run it with sbatch (or inside salloc); SLURM_JOB_NODELIST is not set" >&2
  exit 2
fi
if [[ ! -f launch/train.py ]]; then
  echo "launch/slurm_gpu.sh: $PWD is not the dos_jax repository (no launch/train.py); submit it from the repository root" >&2
  exit 2
fi
# sed, not head: head exits after one line and under pipefail scontrol's SIGPIPE would end the script (exit 141).
COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
export JAX_COORDINATOR_ADDRESS="${COORDINATOR_HOST}:${DOS_COORDINATOR_PORT:-12345}"
export DOS_MULTIHOST=1
# One GPU per process: SLURM's --gpus-per-task / CUDA_VISIBLE_DEVICES binding, or fall back to the local rank.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}

# Every task runs $PYTHON when set (a venv's python; the job need not activate it), else `python` from PATH.
export PYTHON=${PYTHON:-python}

srun --kill-on-bad-exit=1 bash -c '
  export JAX_NUM_PROCESSES=$SLURM_NTASKS
  export JAX_PROCESS_ID=$SLURM_PROCID
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES_OVERRIDE:-$SLURM_LOCALID}
  exec "$PYTHON" -m launch.train "$@"
' _ "$@"
