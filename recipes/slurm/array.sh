#!/usr/bin/env bash
# Run any per-item zodi command as a Slurm job array, then merge the shards in a dependent job.
#
#   recipes/slurm/array.sh 8 out/preds.h5 baseline predict --model bl.npz --src cs:val
#
# Each task writes out/preds.shard-<i>-of-8.h5 (--shard auto reads SLURM_ARRAY_TASK_ID/COUNT);
# a task that was pre-empted resumes where it stopped when resubmitted with the same arguments.
set -euo pipefail
N=$1; OUT=$2; shift 2
jid=$(sbatch --parsable --array=0-$((N - 1)) --job-name=zodi-shards \
      --wrap="zodi $* --out $OUT --shard auto")
sbatch --dependency=afterok:"$jid" --job-name=zodi-merge --wrap="zodi merge $OUT"
