#!/usr/bin/env bash
# GPU check (issue 6), for a CUDA machine with no network: the default ladder's rungs on the real
# GPU at imgsz 640, each in one uncapped short run (1 epoch, 64 images), with peak VRAM (torch's
# allocated and reserved peaks) and it/s, and from the reserved peak plus ~0.5 GiB of CUDA context
# whether it fits under 8, 12, 16 and 24 GiB. Then one verdict is checked with a real --vram cap.
# Compare with the user's table: batch 6 about 12-16 GB and 7-8 it/s; safe 2-4 GB and 2.4 it/s.
#   bash tests/gpu/rung_table.sh       Under 8 minutes.
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
STAMP=$(date +%H%M%S)
for rung in optimal optimal-b4 mnv4 safe; do
  python -m launcher run --ladder "$OUT/default-offline.toml" --data "$OUT/shapes640/shapes.yaml" --epochs 1 \
      --start-rung "$rung" --no-memory --name "table-$rung-$STAMP" > "$OUT/$rung.log" 2>&1
  echo "rung $rung: exit $?"
done
python - "$STAMP" <<'PY'
import json, sys
from pathlib import Path
stamp, G = sys.argv[1], 2**30
print(f"\n{'rung':<11} {'batch':>5} {'alloc peak':>10} {'reserved':>9} {'it/s':>6}  fits under 8 / 12 / 16 / 24 GiB")
for rung in ("optimal", "optimal-b4", "mnv4", "safe"):
    a = Path(f"logs/table-{rung}-{stamp}/attempt-1")
    rep, hb, spec = (json.loads((a / f).read_text()) for f in ("report.json", "heartbeat.json", "spec.json"))
    need = (rep.get("peak_vram_reserved_bytes") or 0) / G + 0.5
    fits = " / ".join("yes" if need <= cap else "no" for cap in (8, 12, 16, 24))
    print(f"{rung:<11} {spec['train_args']['batch']:>5} {rep.get('peak_vram_bytes', 0) / G:>8.2f} G "
          f"{rep.get('peak_vram_reserved_bytes', 0) / G:>7.2f} G {hb.get('it_s') or 0:>6.2f}  {fits}")
PY
echo "== checking the optimal rung's 12 GiB verdict with a real cap (--vram 12)"
python -m launcher run --ladder "$OUT/default-offline.toml" --data "$OUT/shapes640/shapes.yaml" --epochs 1 \
    --start-rung optimal --vram 12 --no-memory --name "table-cap12-$STAMP" > "$OUT/cap12.log" 2>&1
echo "exit $?"; grep '^launcher:   attempt' "$OUT/cap12.log"
