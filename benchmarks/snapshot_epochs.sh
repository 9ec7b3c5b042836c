#!/usr/bin/env bash
# Keep a copy of a plain run's checkpoint after each epoch from FROM on, while the run lasts, for
# benchmarks/weight_averaging.py: RUN_DIR/snapshots/epoch_NNN.pt (NNN: the 1-based epoch, as the training log counts).
# The training writes checkpoint_latest/state.pt, then history.json; this loop copies the state once history.json
# has grown to the epoch. It never touches what the training reads. It stops when RUN_DIR/DONE exists, or when killed.
#
#   bash benchmarks/snapshot_epochs.sh ~/.cache/fer_ray/runs/ae_v2_e300 170 &
set -u
RUN=${1:?usage: snapshot_epochs.sh RUN_DIR [FROM]}
FROM=${2:-1}
mkdir -p "$RUN/snapshots"
while [ ! -e "$RUN/DONE" ]; do
  n=$(grep -o '"epoch":' "$RUN/history.json" 2>/dev/null | wc -l)
  f=$(printf '%s/snapshots/epoch_%03d.pt' "$RUN" "$n")
  if [ "$n" -ge "$FROM" ] && [ ! -e "$f" ]; then
    cp "$RUN/checkpoint_latest/state.pt" "$f.tmp" && mv "$f.tmp" "$f"
  fi
  sleep 20
done
