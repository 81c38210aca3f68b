#!/usr/bin/env bash
# Run any per-item zodi command as a Slurm job array, then merge the shards in a dependent job.
#
#   recipes/slurm/array.sh 8 out/syn.h5 translate --src gta --prompt "snowy street"
#   SBATCH_ARGS="--gres=gpu:1 --partition=gpu --time=04:00:00" recipes/slurm/array.sh 8 out/syn.h5 translate ...
#
# Each task writes out/syn.shard-<i>-of-8.h5 (--shard auto reads SLURM_ARRAY_TASK_ID/COUNT); a task
# that was pre-empted resumes where it stopped when resubmitted with the same arguments. Arguments
# reach zodi exactly as given here (each quoted with printf %q), spaces and quotes included.
# SBATCH_ARGS (word-split) goes to both sbatch calls; SBATCH_MERGE_ARGS only to the merge's.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 N OUT.h5 ZODI_COMMAND [ARGS...]" >&2
  exit 2
fi
N=$1; OUT=$2; shift 2
read -r -a extra <<< "${SBATCH_ARGS:-}"
read -r -a merge_extra <<< "${SBATCH_MERGE_ARGS:-}"
cmd=$(printf '%q ' zodi "$@" --out "$OUT" --shard auto)
jid=$(sbatch --parsable --array=0-$((N - 1)) --job-name=zodi-shards "${extra[@]}" --wrap="$cmd")
sbatch --dependency=afterok:"$jid" --job-name=zodi-merge "${extra[@]}" "${merge_extra[@]}" \
  --wrap="$(printf '%q ' zodi merge "$OUT")"
