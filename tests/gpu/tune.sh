#!/usr/bin/env bash
# GPU check (issue 21), for a CUDA machine with no network: does a trial measure what a night needs?
#   1. `tune --json`: a trial of every rung of the default ladder at 640 px, on a generated dataset;
#   2. one full epoch plus validation at the rung tune chose (`run --epochs 1 --start-rung R --no-tune`,
#      at the val_batch tune chose, if any), NVML's used memory sampled beside it every 0.1 s;
#   3. a table per measured rung (ending, peaks, images/s, time to the first batch, trial time against
#      the 90 s budget), then the chosen rung's trial peaks against the full epoch's: torch's reserved
#      and allocated peaks for training and for validation (report.json's vram_peaks) and NVML's device
#      peak, the difference in %, and the goal (within ±5 %).
# Exit code: 0 every goal met; 1 a goal missed (the numbers say which); 2 a step failed (what it had
# is printed). Under 8 minutes on an H100 (about 4 expected: 1,200 training images, 4 trials).
#   bash tests/gpu/tune.sh               writes its results under $OUT (or a temp folder), work under $WORK
#   DEVICE=cpu bash tests/gpu/tune.sh    the same steps on the CPU at 64 px, to prove the plumbing (~5 min
#                                        on 2 cores); no goal is judged there
# On a machine without Ultralytics (the project's device machine): `bash tests/gpu/wheels.sh` first,
# where pip reaches PyPI; the run then carries .whl/ and this script installs it into $WORK.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
WORK=${WORK:-$(mktemp -d)}  # the dataset, the config, the wheels: never under $OUT (only a few files come back)
DEVICE=${DEVICE:-gpu}
PY=${PYTHON:-$(command -v python || command -v python3)}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 YOLO_CONFIG_DIR="$WORK/yolo"
# Offline, Ultralytics' AMP check still tries GitHub for yolo26n.pt; a closed local port fails it at
# once where a firewall that drops packets would make every child wait on timeouts (trials included)
export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
mkdir -p "$YOLO_CONFIG_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
TUNE=gpu-tune-$STAMP FULL=gpu-full-$STAMP LOGS=${RTDETR_LOGS:-logs}  # where the launcher keeps its runs
SAMPLER=

table() {  # the tables from whatever the steps left; exit 0, or 1 when a goal was missed
  "$PY" - "$OUT" "$LOGS/$TUNE" "$LOGS/$FULL" "$DEVICE" <<'PY'
import json, sys
from pathlib import Path

out, tune_dir, full_dir, device = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
G, GOAL, BUDGET = 2**30, 5.0, 90.0
on_gpu = device != "cpu"


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def gib(n):
    return None if n is None else n / G


# the trials: tune's JSON (peaks in GiB), else the trial.json files a cut-short tune left (bytes)
tuned = load(out / "tune.json")
if tuned:
    trials = tuned["trials"]
else:
    trials = []
    for f in sorted(tune_dir.glob("trials/*/trial.json")):
        t = load(f) or {}
        trials.append({"rung": t.get("rung"), "ended": t.get("ended"), "why": t.get("why"), "batch": t.get("batch"),
                       "val_batch": t.get("val_batch"), "peak_reserved_gib": gib(t.get("peak_reserved_bytes")),
                       "peak_allocated_gib": gib(t.get("peak_allocated_bytes")),
                       "peak_val_reserved_gib": gib(t.get("val_peak_reserved_bytes")),
                       "peak_val_allocated_gib": gib(t.get("val_peak_allocated_bytes")),
                       "peak_device_used_gib": gib(t.get("device_used_bytes")),
                       "peak_rss_gib": gib(t.get("peak_rss_bytes")), "images_per_s": t.get("images_per_s"),
                       "first_batch_s": t.get("first_batch_s"), "seconds": t.get("seconds")})
    if trials:
        print("(tune gave no JSON: the trials below are the trial.json files it left)")


def f(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


lines = []
say = lines.append
missed = []
say(f"\n== trials: {len(trials)} rung{'s' if len(trials) != 1 else ''}, "
    f"{sum(t.get('seconds') or 0 for t in trials):.0f} s in all (peaks in GiB; goal: each trial <= {BUDGET:.0f} s)")
say(f"{'rung':<11} {'batch':>5} {'ended':<13} {'train res':>9} {'alloc':>6} {'val res':>7} {'alloc':>6} {'@batch':>6} "
    f"{'device':>6} {'RSS':>6} {'img/s':>7} {'1st batch':>9} {'trial s':>7}  <= 90 s")
for t in trials:
    ok = "n/a" if not on_gpu or t.get("seconds") is None else ("yes" if t["seconds"] <= BUDGET else "NO")
    if ok == "NO":
        missed.append(f"trial {t['rung']} took {t['seconds']:.0f} s")
    say(f"{t['rung']:<11} {f(t.get('batch'), 'd'):>5} {t.get('ended') or '-':<13} {f(t.get('peak_reserved_gib')):>9} "
        f"{f(t.get('peak_allocated_gib')):>6} {f(t.get('peak_val_reserved_gib')):>7} "
        f"{f(t.get('peak_val_allocated_gib')):>6} {f(t.get('val_batch'), 'd'):>6} {f(t.get('peak_device_used_gib')):>6} "
        f"{f(t.get('peak_rss_gib')):>6} {f(t.get('images_per_s'), '.1f'):>7} {f(t.get('first_batch_s'), '.1f'):>9} "
        f"{f(t.get('seconds'), '.1f'):>7}  {ok}")
    if t.get("why") and t.get("ended") != "fit":
        say(f"{'':<11} why: {t['why'][:150]}")
if tuned:
    say(f"tune chose: {tuned.get('start')}" + (f" at val_batch {tuned['val_batch']}" if tuned.get("val_batch") else "")
        + "".join(f"\n  {r}" for r in tuned.get("reasons", [])[:2]))

# the full epoch at the chosen rung: its first attempt (a later one would be another rung)
attempt = full_dir / "attempt-1"
report, spec, beat = (load(attempt / n) for n in ("report.json", "spec.json", "heartbeat.json"))
nvml = load(out / "nvml.json") or {}
chosen = (spec or {}).get("rung")
trial = next((t for t in trials if t["rung"] == chosen), None)
if report is not None and trial is not None:
    batch = spec["train_args"].get("batch")
    phases = report.get("vram_peaks") or {}

    def val_gib(key):  # the night validates twice: at the epoch's end, then best.pt (final_eval)
        seen = [phases[p][key] for p in ("val", "final") if key in phases.get(p, {})]
        return gib(max(seen)) if seen else None
    rows = [("train reserved", trial.get("peak_reserved_gib"), gib(phases.get("train", {}).get("reserved"))),
            ("train allocated", trial.get("peak_allocated_gib"), gib(phases.get("train", {}).get("allocated"))),
            ("val reserved", trial.get("peak_val_reserved_gib"), val_gib("reserved")),
            ("val allocated", trial.get("peak_val_allocated_gib"), val_gib("allocated")),
            ("device (NVML)", trial.get("peak_device_used_gib"), gib(max(nvml.values())) if nvml else None)]
    if not on_gpu:  # the CPU's device memory is the child tree's RSS; the full run's report has its own process's
        rows = [("RSS", trial.get("peak_rss_gib"), gib(report.get("peak_rss_bytes")))]
    epoch_ips = beat.get("it_s") * batch if beat and beat.get("it_s") and batch else None
    say(f"\n== rung {chosen} (batch {batch}): the trial against one full epoch and its validation "
        f"({(beat or {}).get('batches') or '?'} batches; run ok: {report.get('ok')}; peaks in GiB)")
    say(f"{'peak':<16} {'trial':>7} {'full':>7} {'diff':>8}  within ±{GOAL:g} %")
    for name, tv, fv in rows:
        diff = None if tv is None or not fv else (tv - fv) / fv * 100
        ok = "n/a" if not on_gpu or diff is None else ("yes" if abs(diff) <= GOAL else "NO")
        if ok == "NO":
            missed.append(f"{name} {diff:+.1f} %")
        say(f"{name:<16} {f(tv):>7} {f(fv):>7} {f(diff, '+.1f') + ' %' if diff is not None else '-':>8}  {ok}")
    say(f"{'images/s (info)':<16} {f(trial.get('images_per_s'), '.1f'):>7} {f(epoch_ips, '.1f'):>7}"
        "   (the trial's median after its warm-up; the epoch's average)")
    if phases:
        say("full run's torch peaks by phase: " + ", ".join(
            f"{p} {gib(v.get('reserved')):.2f} reserved / {gib(v.get('allocated')):.2f} allocated"
            for p, v in phases.items()))
    if nvml:
        say("full run's NVML peaks by the heartbeat's phase: " + ", ".join(f"{p} {gib(v):.2f}" for p, v in nvml.items()))
    if on_gpu and not phases:
        missed.append("the full run's report has no vram_peaks")
elif chosen or tuned:
    say(f"\n== no full epoch to compare with (report: {report is not None}, a trial of its rung: {trial is not None})")
if on_gpu:
    say("\nGOALS: " + ("all met" if not missed and trials and report else "MISSED: " + "; ".join(missed or ["no numbers"])))
text = "\n".join(lines)
print(text)
(out / "table.txt").write_text(text + "\n")
sys.exit(1 if on_gpu and (missed or not trials or not report) else 0)
PY
}

fail() {  # a step failed: the table from what there is, then exit 2
  echo "FAILED: $1"
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  table || true
  exit 2
}

if ! "$PY" -c "import ultralytics" 2>/dev/null; then
  ls .whl/*.whl > /dev/null 2>&1 || fail "no Ultralytics here and no .whl/ to install it from (bash tests/gpu/wheels.sh)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl \
    || fail "pip install of .whl/"
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if [ "$DEVICE" = cpu ]; then
  SIZE=64 TRAIN=24 VAL=8 ARGS=(--device cpu imgsz=64) TUNE_LIMIT=900 FULL_LIMIT=600
else
  # 200 batches at batch 6: past the rungs' first cache cleanup (every 100 batches) and many times a
  # trial's 30, so the epoch's peak is the night's; 20 validation batches at 2 × 6
  SIZE=640 TRAIN=1200 VAL=240 ARGS=() TUNE_LIMIT=330 FULL_LIMIT=200
  nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv || true
fi
"$PY" -c "import torch, ultralytics; print(f'torch {torch.__version__}, Ultralytics {ultralytics.__version__}, CUDA:',
           torch.cuda.is_available())"

# the default ladder with offline models: rtdetr-l from its YAML, mnv4 without ImageNet weights
sed -e 's/"rtdetr-l.pt"/"rtdetr-l.yaml"/' -e 's/^pretrained = true/pretrained = false/' \
    ladders/default.toml > "$WORK/default-offline.toml"
t0=$(date +%s)
"$PY" -c "
from pathlib import Path
from launcher.demo import make_dataset
print(make_dataset(Path('$WORK/shapes$SIZE'), train=$TRAIN, val=$VAL, size=$SIZE, max_boxes=40))"
DATA="$WORK/shapes$SIZE/shapes.yaml"
echo "dataset: $TRAIN + $VAL images at $SIZE px in $(( $(date +%s) - t0 )) s"


echo "== tune: a trial of every rung (stderr: $OUT/tune.log)"
t0=$(date +%s)
set +e
timeout --kill-after=30 "$TUNE_LIMIT" "$PY" -m launcher tune --ladder "$WORK/default-offline.toml" --data "$DATA" \
    --name "$TUNE" --no-memory --json "${ARGS[@]}" > "$OUT/tune.json" 2> "$OUT/tune.log"
code=$?
set -e
grep '^launcher:' "$OUT/tune.log" || true
echo "tune exit code: $code after $(( $(date +%s) - t0 )) s"
if [ "$code" != 0 ]; then
  grep -v '^launcher:' "$OUT/tune.log" | tail -20 || true
  rm -f "$OUT/tune.json"
  fail "tune (exit $code)"
fi
CHOSEN=$("$PY" -c "import json; print(json.load(open('$OUT/tune.json'))['start'] or '-')") || fail "tune's JSON"
VAL_BATCH=$("$PY" -c "import json; print(json.load(open('$OUT/tune.json'))['val_batch'] or '-')")
[ "$CHOSEN" != "-" ] || fail "tune chose no rung"

# the night at the chosen rung: with the val_batch the choice set (forced --start-rung takes the ladder's)
LADDER="$WORK/default-offline.toml"
if [ "$VAL_BATCH" != "-" ]; then
  LADDER="$WORK/chosen.toml"
  awk -v r="$CHOSEN" -v vb="$VAL_BATCH" '{print} $0 == "name = \"" r "\"" {print "val_batch = " vb}' \
      "$WORK/default-offline.toml" > "$LADDER"
fi
cat > "$WORK/nvml_sampler.py" <<'PY'
"""NVML's used memory of GPU 0 (as a trial reads it: memstats.nvml_used), every 0.1 s, by the phase the
run's newest heartbeat says; the peaks rewritten to a JSON file at each new one, until killed."""
import json, os, sys, time
from pathlib import Path
from launcher.memstats import nvml_used

run, out = Path(sys.argv[1]), Path(sys.argv[2])
used, peaks = nvml_used(0), {}
while True:
    now = used()
    beats = sorted(run.glob("attempt-*/heartbeat.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    try:
        phase = json.loads(beats[-1].read_text()).get("phase") if beats else "start"
    except (OSError, ValueError):
        phase = "unknown"
    if now is not None and now > peaks.get(phase, -1):
        peaks[phase] = now
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(peaks))
        os.replace(tmp, out)
    time.sleep(0.1)
PY
echo "== one full epoch plus validation at rung $CHOSEN (output: $OUT/run.log)"
if [ "$DEVICE" != cpu ]; then
  "$PY" "$WORK/nvml_sampler.py" "$LOGS/$FULL" "$OUT/nvml.json" &
  SAMPLER=$!
fi
t0=$(date +%s)
set +e
timeout --kill-after=30 "$FULL_LIMIT" "$PY" -m launcher run --ladder "$LADDER" --data "$DATA" --epochs 1 \
    --start-rung "$CHOSEN" --no-tune --no-memory --name "$FULL" "${ARGS[@]}" > "$OUT/run.log" 2>&1
code=$?
set -e
[ -n "$SAMPLER" ] && { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=; }
grep '^launcher:' "$OUT/run.log" | grep -v '^launcher: checkpoint' | tail -15 || true
echo "run exit code: $code after $(( $(date +%s) - t0 )) s"
cp "$LOGS/$FULL/attempt-1/report.json" "$OUT/full-report.json" 2>/dev/null || true
[ "$code" = 0 ] || fail "run (exit $code)"
table
