#!/usr/bin/env bash
# Pretraining on a Cloud TPU pod slice: the same command on every worker VM, one process per VM.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b REPO_DIR='~/dos_jax' \
#     bash launch/tpu_pod.sh --config configs/scannet.py --workdir gs://my-bucket/dos_scannet \
#     --config.data.root=/mnt/data/scannet
#
# Before: create the slice (`gcloud compute tpus tpu-vm create $TPU_NAME --zone $ZONE --accelerator-type v4-32
# --version tpu-ubuntu2204-base`), copy the repo to every worker (`gcloud compute tpus tpu-vm scp --recurse . \
# $TPU_NAME:~/dos_jax --zone $ZONE --worker=all`) and install `pip install -r requirements-tpu.txt` on all of them
# (DOS_SETUP=1 below does it). --workdir must be visible to every worker (a GCS bucket path works with orbax) and
# each worker must see the data (it builds its 1/P slice of every step's global batch). config.batch_size is GLOBAL: a multiple of the chip count.
#
# With DOS_MULTIHOST=1 each worker calls jax.distributed.initialize(), which discovers the slice's workers on
# Cloud TPU by itself. Preemption / maintenance: the coordination service announces it, all workers save the
# same step and exit 0; rerun this script to resume from the latest checkpoint. pipefail: a worker's exit code is
# launch.train's, not tee's.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM / pod slice name}"
: "${ZONE:?set ZONE (e.g. us-central2-b)}"
REPO_DIR=${REPO_DIR:-'~/dos_jax'}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

SETUP=""
if [[ "${DOS_SETUP:-0}" == "1" ]]; then
  SETUP="pip install -q -r requirements-tpu.txt && "
fi
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" $PROJECT_FLAG --worker=all \
  --command "set -o pipefail; cd $REPO_DIR && ${SETUP}DOS_MULTIHOST=1 python3 -m launch.train${ARGS} 2>&1 | tee -a ~/dos_train.log"
