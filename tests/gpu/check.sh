#!/usr/bin/env bash
# GPU check (issue 4), for a CUDA machine with no network: real CUDA OOMs under a --vram 8 cap
# walk the default ladder on a 640-px synthetic dataset, and the run still finishes.
# Prints the rungs walked, each attempt's failure and evidence, peak VRAM and it/s. Under 8 min.
#   bash tests/gpu/check.sh            (writes under $OUT, or a temp folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 YOLO_CONFIG_DIR="$OUT/yolo"
mkdir -p "$YOLO_CONFIG_DIR"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv || true

# the default ladder with offline models: rtdetr-l from its YAML, mnv4 without ImageNet weights
sed -e 's/"rtdetr-l.pt"/"rtdetr-l.yaml"/' -e 's/^pretrained = true/pretrained = false/' \
    ladders/default.toml > "$OUT/default-offline.toml"
python -c "
from pathlib import Path
from launcher.demo import make_dataset
print(make_dataset(Path('$OUT/shapes640'), train=64, val=16, size=640, max_boxes=40))"

python -m launcher dry-run --ladder "$OUT/default-offline.toml" --data "$OUT/shapes640/shapes.yaml" \
    --epochs 2 --start-rung optimal --vram 8 | sed -n '/^Probe/,/^Why/p'
NAME=gpu-check-$(date +%Y%m%d-%H%M%S)
start=$(date +%s)
set +e
python -m launcher run --ladder "$OUT/default-offline.toml" --data "$OUT/shapes640/shapes.yaml" --epochs 2 \
    --start-rung optimal --vram 8 --name "$NAME" > "$OUT/run.log" 2>&1
code=$?
set -e
echo "launcher exit code: $code after $(( $(date +%s) - start )) s (full output: $OUT/run.log)"
grep '^launcher:' "$OUT/run.log" | grep -v '^launcher: checkpoint' | tail -40
python - "$PWD/logs/$NAME" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
events = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines()]
print(f"\n{'attempt':>7}  {'rung':<11} {'batch':>5}  {'result':<9} {'peak VRAM':>10}  {'it/s':>6}  evidence")
for e in events:
    if e["event"] != "attempt_start":
        continue
    n = e["attempt"]
    end = next(x for x in events if x["event"] == "attempt_end" and x["attempt"] == n)
    rep = json.loads((run / f"attempt-{n}" / "report.json").read_text()) if (run / f"attempt-{n}" / "report.json").exists() else {}
    beat = json.loads((run / f"attempt-{n}" / "heartbeat.json").read_text()) if (run / f"attempt-{n}" / "heartbeat.json").exists() else {}
    vram = f"{rep['peak_vram_bytes'] / 2**30:.2f} GiB" if rep.get("peak_vram_bytes") else "-"
    its = f"{beat['it_s']:.2f}" if beat.get("it_s") else "-"
    print(f"{n:>7}  {e['rung']:<11} {e['batch']:>5}  {end['kind'] or 'ok':<9} {vram:>10}  {its:>6}  {(end['evidence'] or '')[:90]}")
PY
exit $code
