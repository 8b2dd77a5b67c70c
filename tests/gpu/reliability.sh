#!/usr/bin/env bash
# GPU check (issue 5), for a CUDA machine with no network, after tests/gpu/check.sh:
#   1. a real --vram capped OOM (run check.sh first, or see its table);
#   2. SIGTERM to the launcher in the middle of an epoch: exit 143, then `run` again resumes;
#   3. SIGKILL to the launcher: after 10 s NVML shows no process of the run holding GPU memory.
# Prints what it saw. Under 8 minutes.   bash tests/gpu/reliability.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 YOLO_CONFIG_DIR="$OUT/yolo"
mkdir -p "$YOLO_CONFIG_DIR"
sed -e 's/"rtdetr-l.pt"/"rtdetr-l.yaml"/' -e 's/^pretrained = true/pretrained = false/' \
    ladders/default.toml > "$OUT/default-offline.toml"
python -c "
from pathlib import Path
from launcher.demo import make_dataset
make_dataset(Path('$OUT/shapes640'), train=64, val=16, size=640, max_boxes=40)"
RUN=(python -m launcher run --ladder "$OUT/default-offline.toml" --data "$OUT/shapes640/shapes.yaml" --epochs 3
     --start-rung optimal-b4)

mid_epoch() {  # wait until the newest attempt's heartbeat shows batch >= 3 of a training epoch
  local name=$1
  for _ in $(seq 1 600); do
    hb=$(ls -t logs/"$name"/attempt-*/heartbeat.json 2>/dev/null | head -1)
    if [ -n "$hb" ] && python -c "import json,sys; b=json.load(open('$hb')); sys.exit(0 if b['phase']=='train' and b['batch']>=3 else 1)" 2>/dev/null; then
      echo "$hb"; return 0
    fi
    sleep 0.5
  done
  return 1
}

echo "== SIGTERM in the middle of an epoch, then run again"
NAME=gpu-sigterm-$(date +%H%M%S)
"${RUN[@]}" --name "$NAME" > "$OUT/sigterm.log" 2>&1 &
pid=$!
hb=$(mid_epoch "$NAME") && echo "heartbeat: $(cat "$hb" | tr -d '\n ')"
kill -TERM "$pid"; wait "$pid"; echo "launcher exit code after SIGTERM: $? (want 143)"
python -c "import json; s=json.load(open('logs/$NAME/state.json')); print('state:', s['status'], s['rung'])"
"${RUN[@]}" --name "$NAME" > "$OUT/again.log" 2>&1; echo "second run exit code: $? (want 0)"
grep '^launcher: \(continuing\|summary\|  attempt\|  model\|trained\)' "$OUT/again.log"

echo "== SIGKILL to the launcher: no process left holding GPU memory"
NAME=gpu-sigkill-$(date +%H%M%S)
"${RUN[@]}" --name "$NAME" > "$OUT/sigkill.log" 2>&1 &
pid=$!
hb=$(mid_epoch "$NAME")
child=$(python -c "import json; print(json.load(open('$hb'))['pid'])")
echo "child pid $child; GPU processes before:"; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
kill -KILL "$pid"; sleep 10
python - "$child" <<'PY'
import sys, pynvml, psutil
pynvml.nvmlInit()
held = [(p.pid, p.usedGpuMemory) for i in range(pynvml.nvmlDeviceGetCount())
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i))]
print("GPU processes 10 s after SIGKILL:", held or "none")
print("child alive:", psutil.pid_exists(int(sys.argv[1])))
PY
