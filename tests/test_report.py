"""`launcher.report`: timeline.png and report.md from a synthetic run record (no training)."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from launcher import accounting, fmt, report, report_md, timeline
from launcher.runlog import RunPaths

GIB = 1024 ** 3
T0 = 1_780_000_000  # the run's start (unix seconds, whole: ISO `ts` has second resolution)
FIXTURE = Path(__file__).parent / "fixtures" / "run_record"

# A night on rtdetr-l (10 epochs) with every kind of turn:
#   #1 optimal     epochs 1-3, then a late cuda_oom  -> retry
#   #2 optimal     cuda_oom before any epoch          -> step down to optimal-b4
#   #3 optimal-b4  epochs 4-5, then a hang            -> retry
#   #4 optimal-b4  cuda_oom before any epoch          -> step down to mnv4 (rtdetr-l set aside)
#   #5 mnv4        epochs 1-2, then a late cuda_oom  -> retry
#   #6 mnv4        cuda_oom before any epoch          -> step down to safe (mnv4 set aside, rtdetr-l taken up)
#   #7 safe        epochs 6-10, complete
# (n, rung, model, start, setup s, [epoch seconds], end, kind, evidence)
L, M = "rtdetr-l.yaml", "/opt/launcher/models/rtdetr-mnv4.yaml"
ATTEMPTS = [
    (1, "optimal", L, 0, 60, [1500] * 3, 5400, "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to "
     "allocate 2.00 GiB | GPU 0 has a total capacity of 23.6 GiB of which 1.2 GiB is free; this is long evidence"),
    (2, "optimal", L, 5410, 60, [], 5530, "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory."),
    (3, "optimal-b4", L, 5540, 60, [1400] * 2, 10800, "hang", "heartbeat silent for 1801 s (limit 1800 s after the "
     "first batch; phase train, epoch 6, batch 118)"),
    (4, "optimal-b4", L, 10810, 60, [], 11010, "cuda_oom", "CUDA error: out of memory"),
    (5, "mnv4", M, 11020, 60, [800] * 2, 13000, "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory."),
    (6, "mnv4", M, 13010, 60, [], 13200, "cuda_oom", "torch.OutOfMemoryError: CUDA out of memory."),
    (7, "safe", L, 13210, 60, [2000] * 5, 23400, None, None),
]
FIRST_EPOCH = {1: 1, 2: 4, 3: 4, 4: 6, 5: 1, 6: 3, 7: 6}  # the epoch each attempt starts in
NEXT = {1: ("retry", "optimal"), 2: ("step_down", "optimal-b4"), 3: ("retry", "optimal-b4"),
        4: ("step_down", "mnv4"), 5: ("retry", "mnv4"), 6: ("step_down", "safe")}
KEPT_S = 3 * 1500 + 2 * 1400 + 5 * 2000  # epochs of rtdetr-l that the delivered model stands on
WALL_S = 23400


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).astimezone().isoformat(timespec="seconds")


def event(name: str, at: float, **fields) -> str:
    return json.dumps({"ts": iso(at), "event": name, **fields})


def results_csv(rows: list[tuple[int, float, float]]) -> str:
    """Ultralytics' layout: padded headers, `time` restarting at each resumed attempt."""
    head = ["epoch", "time", "train/giou_loss", "metrics/precision(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)"]
    out = [",".join(f"{h:>22}" for h in head)]
    for epoch, t, m in rows:
        out.append(",".join(f"{v:>22}" for v in (epoch, f"{t:g}", "0.9", "0.5", f"{m + 0.2:.5g}", f"{m:.5g}")))
    return "\n".join(out) + "\n"


def build_record(root: Path, telemetry: bool = True) -> Path:
    """A run record as the launcher writes it: events, state, telemetry, each model's results.csv."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [event("probe", T0, gpus=[{"index": 0}]), event("start", T0, rung="optimal", device="0")]
    samples = []
    rows = {L: [], M: []}
    for n, rung, model, start, setup, epochs, end, kind, evidence in ATTEMPTS:
        first = FIRST_EPOCH.get(n, 1)
        if n > 1 and model == L:
            lines.append(event("resume", T0 + start, attempt=n, rung=rung,
                               checkpoint="models/rtdetr-l/weights/last.pt"))
        if n != 7:
            lines.append(event("attempt_start", T0 + start, attempt=n, rung=rung, mode="train", model=model, batch=6,
                               workers=8, cache="ram", resume_from=None, t=T0 + start + 0.25))
        else:  # no float `t`: the reader falls back on `ts`
            lines.append(event("attempt_start", T0 + start, attempt=n, rung=rung, mode="train", model=model, batch=2,
                               workers=2, cache="off", resume_from="models/rtdetr-l/weights/last.pt"))
        clock, done = 0.0, []
        for i, sec in enumerate(epochs):
            clock += sec
            rows[model].append((first + i, clock, 0.1 + 0.03 * (first + i)))
            done.append(first + i)
        lines.append(event("attempt_end", T0 + end, attempt=n, rung=rung, exit_code=0 if kind is None else 1,
                           seconds=end - start, kind=kind, evidence=evidence, phase="train" if kind else None,
                           epochs_saved=len(done), last_saved_epoch=done[-1] if done else None, checkpoint=None,
                           t=T0 + end + 0.5))
        if n in NEXT:
            what, to = NEXT[n]
            if n == 3:  # a transient failure's retry, logged by the backoff, names its wait
                lines.append(event(what, T0 + end, rung=rung, kind=kind, evidence=evidence, wait_s=10.0, retry=1, of=1))
            else:
                lines.append(event(what, T0 + end, rung=rung, to=to, kind=kind, reason="..."))
            if n == 4:
                lines.append(event("model_set_aside", T0 + end, model="rtdetr-l.yaml", epochs_done=5, of=10,
                                   save_dir=str(root / "models" / "rtdetr-l"), next_model="rtdetr-mnv4"))
            if n == 6:
                lines.append(event("model_set_aside", T0 + end, model="rtdetr-mnv4", epochs_done=2, of=150,
                                   save_dir=str(root / "models" / "rtdetr-mnv4"), next_model="rtdetr-l.yaml"))
        # one sample a minute: VRAM climbs through each epoch (a leak), RAM holds the cache
        base = {"optimal": 12.0, "optimal-b4": 9.0, "mnv4": 5.0, "safe": 3.0}[rung]
        for t in range(start + 30, end, 60):
            into = t - start - setup
            epoch, phase = None, None
            if into >= 0:
                k, acc = 0, 0
                while k < len(epochs) and acc + epochs[k] <= into:
                    acc += epochs[k]
                    k += 1
                epoch, phase = first + k, "train"
                if n == 7 and k == len(epochs):  # after the last epoch: the final validation
                    epoch, phase = first + k - 1, "final"
                leak = 2.5 * (into - acc) / (epochs[k] if k < len(epochs) else 1500)
            vram = None if into < 0 else (base + min(leak, 4.0)) * GIB
            samples.append({"t": T0 + t, "attempt": n, "rung": rung, "vram": vram,
                            "ram_used": (9 + (4.6 if rung != "safe" else 0)) * GIB, "ram_available": 48 * GIB,
                            "rss": (3 + (4.6 if rung != "safe" else 0)) * GIB, "phase": phase, "epoch": epoch,
                            "batch": 10 if epoch else None, "it_s": 6.5 if epoch else None})
    lines.append(event("complete", T0 + WALL_S, rung="safe", model=L,
                       best=str(root / "models/rtdetr-l/weights/best.pt"),
                       last=str(root / "models/rtdetr-l/weights/last.pt"), set_aside={M: 2}))
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    if telemetry:
        (root / "telemetry.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    for source, name in ((L, "rtdetr-l"), (M, "rtdetr-mnv4")):
        (root / "models" / name).mkdir(parents=True, exist_ok=True)
        (root / "models" / name / "results.csv").write_text(results_csv(rows[source]))
    state = {"run": "night-1", "ladder": "/opt/ladders/night.toml", "data": "/data/coco.yaml", "device": "0",
             "status": "complete", "rung": "safe", "attempts": 7, "training_model": L,
             "models": {L: {"save_dir": "/elsewhere/gone/rtdetr-l", "epochs": 10, "epochs_done": 10, "complete": True},
                        M: {"save_dir": str(root / "models" / "rtdetr-mnv4"), "epochs": 150, "epochs_done": 2,
                            "complete": False, "set_aside": True}},
             "delivered": {"model": L, "best": str(root / "models/rtdetr-l/weights/best.pt"),
                           "last": str(root / "models/rtdetr-l/weights/last.pt")}}
    (root / "state.json").write_text(json.dumps(state))
    return root


def table_rows(md: str) -> dict[int, list[str]]:
    rows = {}
    for line in md.splitlines():
        m = re.match(r"\| (\d+) \|", line)
        if m:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[int(m.group(1))] = cells
    return rows


def assert_png(path: Path, min_bytes: int = 20_000) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert min_bytes < len(data) < 2_000_000
    img = mpimg.imread(path)
    assert img.shape[:2] == (600, 1200)  # 12 x 6 inches at 100 dpi


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[Path, Path, str]:
    root = build_record(tmp_path_factory.mktemp("logs") / "night-1")
    png, md = report.write_report(root)
    return root, png, md.read_text()


def test_writes_both_files_into_the_record(night):
    root, png, md = night
    assert png == root / "timeline.png" and (root / "report.md").read_text() == md
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # written by rename
    assert_png(png)
    assert md.startswith("# Run report: night-1\n")
    assert "**Status:** complete" in md
    assert "best `" + str(root / "models/rtdetr-l/weights/best.pt") + "`" in md


def test_attempt_table_kinds_epochs_and_next_steps(night):
    _, _, md = night
    rows = table_rows(md)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]
    # columns: #, rung, mode, model, start, end, duration, trained, kept, failure, evidence, then
    kinds = {n: r[9] for n, r in rows.items()}
    assert kinds == {1: "cuda_oom (train)", 2: "cuda_oom (train)", 3: "hang (train)", 4: "cuda_oom (train)",
                     5: "cuda_oom (train)", 6: "cuda_oom (train)", 7: "-"}
    assert {n: r[1] for n, r in rows.items()} == {1: "optimal", 2: "optimal", 3: "optimal-b4", 4: "optimal-b4",
                                                  5: "mnv4", 6: "mnv4", 7: "safe"}
    assert {n: r[7] for n, r in rows.items()} == {1: "3 (1–3)", 2: "0", 3: "2 (4–5)", 4: "0", 5: "2 (1–2)",
                                                  6: "0", 7: "5 (6–10)"}
    # rtdetr-mnv4 was set aside for good: its two epochs count for nothing
    assert {n: int(r[8]) for n, r in rows.items()} == {1: 3, 2: 0, 3: 2, 4: 0, 5: 0, 6: 0, 7: 5}
    assert rows[1][10].endswith("…") and len(rows[1][10].replace("\\|", "|")) <= report_md.EVIDENCE_CHARS
    assert "\\|" in rows[1][10]  # the pipe in the evidence does not break the table
    assert rows[1][11] == "retry" and rows[3][11] == "retry after 10 s"
    assert rows[2][11] == "step down → optimal-b4" and rows[7][11] == "complete"
    assert rows[3][6] == "1 h 27 min"  # 5540 s to 10800 s
    assert rows[7][5] != "-" and rows[7][4] != "-"  # attempt 7 has only ISO `ts`: still timed


def test_goodput_time_lost_and_metrics(night):
    _, _, md = night
    goodput = 100 * KEPT_S / WALL_S
    assert f"**Goodput:** {goodput:.1f} %" in md
    assert f"| training kept (goodput) | {fmt.duration(KEPT_S)} | {goodput:.1f} % |" in md
    # failed attempts' time not kept (900 + 120 + 2460 + 200 + 1980 + 190) plus six waits of 10 s
    assert f"| lost to failures | {fmt.duration(5910)} |" in md
    assert "| wall time (launcher running) | 6 h 30 min | 100.0 % |" in md
    assert "last row (epoch 10/10)" in md
    assert "- mAP50-95: **0.4**" in md and "- mAP50: 0.6" in md  # 0.1 + 0.03 × 10
    assert "Set aside:** `rtdetr-mnv4`, epochs done 2/150 " in md
    assert "Set aside:** `rtdetr-l.yaml`" not in md  # taken up again by safe


def test_the_nights_first_eta_is_set_against_the_real_night(night, tmp_path):
    """No trial measured the start: the first epoch (1500 s, of 10) gave the first ETA. With the
    start event's ETA from the start rung's trial, that one is the first."""
    _, _, md = night
    assert ("- **ETA:** expected after the first epoch: 4 h 10 min (10 epochs × 25 min 00 s, its training and "
            "validation, on optimal); took 6 h 30 min of wall time (+56 %)\n") in md  # 23400 / 15000
    root = build_record(tmp_path / "tuned")
    lines = (root / "events.jsonl").read_text().splitlines()
    lines[1] = event("start", T0, rung="optimal", device="0", eta_s=21600.0, train_images=3912,
                     speeds={"optimal": 30.0, "safe": 60.0})
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    rec = accounting.load(root)
    assert rec.first_eta == {"seconds": 21600.0, "from": "the trial", "rung": "optimal", "images_per_s": 30.0,
                             "with_val": False}
    assert ("- **ETA:** expected at the start: 6 h 00 min of training (from the trial of optimal at 30.0 images/s; "
            "training only, validation and start-up not counted); took 6 h 30 min of wall time (+8 %)\n"
            ) in report_md.markdown(rec)  # 23400 / 21600
    rec.status = "exhausted"
    assert "training only, validation and start-up not counted); not finished (exhausted) after 6 h 30 min of " \
        "wall time\n" in report_md.markdown(rec)


def test_no_telemetry_still_draws_bands_and_failures(tmp_path):
    root = build_record(tmp_path / "old-run", telemetry=False)
    png, md = report.write_report(root)
    assert_png(png)
    assert int(table_rows(md.read_text())[1][8]) == 3


def test_torn_last_line_and_garbage_are_skipped(tmp_path):
    root = build_record(tmp_path / "torn")
    with open(root / "events.jsonl", "a") as f:
        f.write('{"ts": "2026-06-01T00:00:00+00:00", "event": "attempt_st')  # a power cut mid-write
    with open(root / "telemetry.jsonl", "a") as f:
        f.write('{"t": 17800\n[1, 2]\n')
    (root / "models" / "rtdetr-l" / "results.csv").open("a").write("11, 5")  # torn csv row
    png, md = report.write_report(root)
    text = md.read_text()
    assert len(table_rows(text)) == 7 and "last row (epoch 10/10)" in text
    assert_png(png)


def test_running_record_without_state_or_results(tmp_path):
    """Mid-run (no ending, no state.json yet, no results.csv): the open attempt is shown to its
    last telemetry sample and nothing is delivered."""
    root = tmp_path / "live"
    root.mkdir()
    (root / "events.jsonl").write_text("\n".join([
        event("start", T0, rung="optimal", device="0"),
        event("attempt_start", T0, attempt=1, rung="optimal", mode="train", model=L, t=T0 + 1.0),
    ]) + "\n")
    (root / "telemetry.jsonl").write_text("".join(json.dumps(
        {"t": T0 + t, "attempt": 1, "rung": "optimal", "vram": 8 * GIB, "ram_used": 10 * GIB,
         "ram_available": 20 * GIB, "rss": 4 * GIB, "phase": "train", "epoch": 1 + t // 300, "batch": 3,
         "it_s": 7.0}) + "\n" for t in range(10, 900, 10)))
    png, md = report.write_report(root)
    text = md.read_text()
    assert "**Status:** running" in text and "Delivered:** nothing yet" in text
    row = table_rows(text)[1]
    assert row[5].endswith("(last seen)") and row[9] == "(no end)" and row[6] == "14 min 49 s"
    assert "No results.csv" in text and "**ETA:**" not in text  # no trial, no epoch yet: no ETA existed
    assert_png(png)
    # its results.csv rows say what it has saved so far
    (root / "models" / "rtdetr-l").mkdir(parents=True)
    (root / "models" / "rtdetr-l" / "results.csv").write_text(results_csv([(1, 290, 0.1), (2, 580, 0.2)]))
    rec = accounting.load(root)
    assert [(a.epochs, a.kept) for a in rec.attempts] == [((1, 2), 2)] and rec.kept_s == 580
    assert "last row (epoch 2)" in report_md.markdown(rec)


def test_a_continued_run_counts_only_the_launchers_time(tmp_path):
    """Interrupted at 1000 s, continued 9000 s later: the gap is neither wall time nor lost."""
    root = tmp_path / "continued"
    root.mkdir()
    (root / "events.jsonl").write_text("\n".join([
        event("start", T0, rung="optimal"),
        event("attempt_start", T0, attempt=1, rung="optimal", mode="train", model=L, t=T0),
        event("attempt_end", T0 + 1000, attempt=1, rung="optimal", kind="interrupted", evidence="SIGINT",
              epochs_saved=1, last_saved_epoch=1, t=T0 + 1000),
        event("interrupted", T0 + 1000, reason="stopped by SIGINT", exit_code=130),
        event("continue", T0 + 10_000, rung="optimal", attempts=1, status_was="interrupted"),
        event("attempt_start", T0 + 10_000, attempt=2, rung="optimal", mode="train", model=L, t=T0 + 10_000),
        event("attempt_end", T0 + 11_000, attempt=2, rung="optimal", kind=None, epochs_saved=1, last_saved_epoch=2,
              t=T0 + 11_000),
        event("complete", T0 + 11_000, model=L, best="best.pt", last="last.pt"),
    ]) + "\n")
    (root / "models" / "rtdetr-l").mkdir(parents=True)
    (root / "models" / "rtdetr-l" / "results.csv").write_text(results_csv([(1, 800, 0.1), (2, 900, 0.2)]))
    rec = accounting.load(root)
    assert rec.wall_s == 2000 and rec.kept_s == 1700 and rec.status == "complete"
    assert rec.lost_s == 0 and rec.interrupted_s == 200  # Ctrl-C stopped the night: nothing failed
    png, md = report.write_report(root)
    text = md.read_text()
    assert "**Goodput:** 85.0 %" in text and table_rows(text)[1][11] == "interrupted"
    assert "0 s lost to failures; 3 min 20 s interrupted" in text
    assert "| lost to failures | 0 s | 0.0 % |" in text
    assert "| interrupted (Ctrl-C, SIGTERM: stopped, not failed) | 3 min 20 s | 10.0 % |" in text
    assert_png(png)


def test_report_md_separates_time_lost_to_failures_from_interrupted_time(tmp_path):
    """An OOM after 1 epoch (a retry 30 s later), then a Ctrl-C in the resumed attempt's second epoch."""
    root = tmp_path / "stopped"
    root.mkdir()
    (root / "events.jsonl").write_text("\n".join([
        event("start", T0, rung="optimal"),
        event("attempt_start", T0, attempt=1, rung="optimal", mode="train", model=L, t=T0),
        event("attempt_end", T0 + 1000, attempt=1, rung="optimal", kind="cuda_oom", evidence="CUDA out of memory",
              phase="train", epochs_saved=1, last_saved_epoch=1, t=T0 + 1000),
        event("retry", T0 + 1000, rung="optimal", wait_s=30.0),
        event("resume", T0 + 1030, attempt=2, rung="optimal", checkpoint="last.pt", epochs_done=1),
        event("attempt_start", T0 + 1030, attempt=2, rung="optimal", mode="train", model=L, resume_from="last.pt",
              t=T0 + 1030),
        event("attempt_end", T0 + 2630, attempt=2, rung="optimal", kind="interrupted",
              evidence="the launcher received SIGINT", phase="train", epochs_saved=1, last_saved_epoch=2,
              t=T0 + 2630),
        event("interrupted", T0 + 2630, reason="stopped by SIGINT", exit_code=130),
    ]) + "\n")
    (root / "models" / "rtdetr-l").mkdir(parents=True)
    (root / "models" / "rtdetr-l" / "results.csv").write_text(results_csv([(1, 700, 0.1), (2, 1000, 0.2)]))
    rec = accounting.load(root)
    # lost: the OOM'd attempt less its kept epoch, and the wait; interrupted: the Ctrl-C'd one less its epoch
    assert (rec.kept_s, rec.lost_s, rec.wait_s, rec.interrupted_s) == (1700, 300 + 30, 30, 1600 - 1000)
    text = report_md.markdown(rec)
    assert "5 min 30 s lost to failures; 10 min 00 s interrupted (the launcher was stopped)" in text
    assert "| lost to failures | 5 min 30 s |" in text
    assert "| interrupted (Ctrl-C, SIGTERM: stopped, not failed) | 10 min 00 s |" in text
    assert "| other (start-up, dataset caching, final validation of good attempts) | 0 s |" in text
    assert "- *Interrupted*:" in text and "ended in a failure (not an interruption)" in text
    assert "**ETA:**" not in text  # no trial, and without state.json no epoch target to multiply by
    # the picture tells the two apart: a red failure line, a grey interrupted one, a resume mark
    fig = timeline.figure(rec)
    assert sorted(t.get_text().strip() for t in texts(fig, timeline.GID_FAILURE)) == ["cuda_oom", "interrupted"]
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_RESUME)] == ["resumes at epoch 2"]


def test_an_empty_record_still_reports(tmp_path):
    png, md = report.write_report(tmp_path)
    assert "**Status:** not started" in md.read_text() and "**ETA:**" not in md.read_text()
    assert_png(png, min_bytes=10_000)  # one empty panel, its axes and a line of text: ~18 kB, not blank (~5 kB)


def test_superseded_epochs_are_not_kept(tmp_path):
    """A resume from an older checkpoint (a torn last.pt, the verified copy one epoch behind)
    redoes epochs: the earlier attempt keeps only what the later one resumed from."""
    root = tmp_path / "redo"
    root.mkdir()
    ev = [event("start", T0)]
    for n, (start, end, saved, last, kind) in enumerate([(0, 100, 3, 3, "unknown"), (110, 200, 3, 5, None)], 1):
        ev.append(event("attempt_start", T0 + start, attempt=n, rung="optimal", mode="train", model=L, t=T0 + start))
        ev.append(event("attempt_end", T0 + end, attempt=n, rung="optimal", kind=kind, epochs_saved=saved,
                        last_saved_epoch=last, t=T0 + end))
    ev.append(event("complete", T0 + 200, model=L, best="b.pt", last="l.pt"))
    (root / "events.jsonl").write_text("\n".join(ev) + "\n")
    # epoch 3 twice in results.csv (the failed attempt's row, then the redo): the last one counts
    (root / "models" / "rtdetr-l").mkdir(parents=True)
    (root / "models" / "rtdetr-l" / "results.csv").write_text(results_csv(
        [(1, 20, 0.1), (2, 40, 0.1), (3, 60, 0.1), (3, 25, 0.2), (4, 50, 0.2), (5, 75, 0.3)]))
    rec = accounting.load(root)
    assert [(a.epochs, a.kept) for a in rec.attempts] == [((1, 2, 3), 2), ((3, 4, 5), 3)]
    assert rec.kept_s == pytest.approx(40 + 75)
    assert rec.lost_s == pytest.approx((100 - 40) + 10)


def test_two_models_whose_files_share_a_stem_are_two_models(tmp_path):
    """v1/best.pt trains 2 epochs and is set aside; v2/best.pt trains 3 and is delivered. Each has
    its own folder (stem plus hash), so the report keeps them apart: v1's epochs are not kept, the
    final metrics are v2's, and the attempt rows say which best.pt."""
    v1, v2 = "/w/v1/best.pt", "/w/v2/best.pt"
    root = tmp_path / "twins"
    root.mkdir()
    (root / "events.jsonl").write_text("\n".join([
        event("start", T0, rung="big"),
        event("attempt_start", T0, attempt=1, rung="big", mode="train", model=v1, t=T0),
        event("attempt_end", T0 + 300, attempt=1, rung="big", kind="cuda_oom", epochs_saved=2, last_saved_epoch=2,
              t=T0 + 300),
        event("step_down", T0 + 300, rung="big", to="small"),
        event("model_set_aside", T0 + 300, model="v1/best.pt", source=v1, epochs_done=2, of=5,
              save_dir=str(RunPaths(root).save_dir(v1)), next_model="v2/best.pt"),
        event("attempt_start", T0 + 300, attempt=2, rung="small", mode="train", model=v2, t=T0 + 300),
        event("attempt_end", T0 + 900, attempt=2, rung="small", kind=None, epochs_saved=3, last_saved_epoch=3,
              t=T0 + 900),
        event("complete", T0 + 900, model=v2, best="best.pt", last="last.pt"),
    ]) + "\n")
    for source, rows in ((v1, [(1, 100, 0.5), (2, 200, 0.6)]), (v2, [(1, 150, 0.1), (2, 300, 0.2), (3, 450, 0.3)])):
        RunPaths(root).save_dir(source).mkdir(parents=True)
        (RunPaths(root).save_dir(source) / "results.csv").write_text(results_csv(rows))
    rec = accounting.load(root)
    assert set(rec.models) == {RunPaths(root).save_dir(v).name for v in (v1, v2)}  # the key is the folder
    assert set(rec.set_aside) == {accounting.model_key(v1)} and rec.counting == {accounting.model_key(v2)}
    assert [(a.epochs, a.kept) for a in rec.attempts] == [((1, 2), 0), ((1, 2, 3), 3)] and rec.kept_s == 450
    key, last, _, _ = accounting.final_metrics(rec)
    assert key == accounting.model_key(v2) and last[accounting.MAP50_95] == pytest.approx(0.3)
    text = report_md.markdown(rec)
    rows = table_rows(text)
    assert [rows[n][3] for n in (1, 2)] == [f"best.pt ({accounting.model_key(v)})" for v in (v1, v2)]
    assert f"From the delivered model `best.pt ({key})`'s results.csv, last row (epoch 3)" in text


def test_static_fixture_from_a_real_cpu_rehearsal(tmp_path):
    """A record the launcher wrote (`run --demo --inject cuda_oom:optimal:2`, CPU), copied elsewhere:
    results.csv is found under the record although state.json names the old save_dir."""
    root = shutil.copytree(FIXTURE, tmp_path / "rehearsal")
    png, md = report.write_report(root)
    text = md.read_text()
    rows = table_rows(text)
    assert [r[9] for r in rows.values()] == ["cuda_oom (train)", "cuda_oom (train)", "-"]
    assert [r[8] for r in rows.values()] == ["1", "0", "1"]
    assert "last row (epoch 2/2)" in text and re.search(r"\*\*Goodput:\*\* \d+\.\d %", text)
    assert_png(png)


def test_report_command_writes_into_the_newest_run(tmp_path, monkeypatch, capsys):
    from launcher import cli

    monkeypatch.chdir(tmp_path)
    shutil.copytree(Path(__file__).parent / "fixtures" / "run_record", tmp_path / "logs" / "rehearsal")
    assert cli.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "timeline.png" in out and (tmp_path / "logs" / "rehearsal" / "report.md").is_file()
    assert cli.main(["report", "nope"]) == 2


# ---- the timeline picture ----------------------------------------------------------------------

def texts(fig, gid: str) -> list:
    """The figure's texts of one kind (timeline.GID_*)."""
    return [t for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def ram_data(rec: accounting.Record) -> tuple[float, float]:
    """(the peak of host RAM used and the child's RSS, the host's total RAM), in GiB."""
    peak = max(max(s["ram_used"], s["rss"]) for s in rec.telemetry) / GIB
    total = max(s["ram_used"] + s["ram_available"] for s in rec.telemetry) / GIB
    return peak, total


def resume_marks(fig) -> list[float]:
    """The x of the resume marks (triangles on the epoch row)."""
    return [x for line in fig.axes[0].lines if line.get_marker() == "v" for x in line.get_xdata()]


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def build_long_record(root: Path) -> Path:
    """A GPU-like night of 100 epochs (10 min each, a sample every 10 s): #1 optimal epochs 1-30,
    a late OOM; #2 resumes at 31, OOM at start-up, step down; #3 optimal-b4 31-62, a hang; #4
    resumes at 63, saves 63-80, Ctrl-C in epoch 81; two hours later #5 (a `continue`) does 81-100.
    VRAM 10-20 GiB; host RAM ~2.5 GiB of a 24 GiB machine."""
    root.mkdir(parents=True, exist_ok=True)
    epoch_s, setup = 600, 120
    plan = [  # n, rung, first epoch, epochs saved, seconds into the next epoch when it ended, kind
        (1, "optimal", 1, 30, 300, "cuda_oom"),
        (2, "optimal", 31, 0, -30, "cuda_oom"),
        (3, "optimal-b4", 31, 32, 1800, "hang"),
        (4, "optimal-b4", 63, 18, 200, "interrupted"),
        (5, "optimal-b4", 81, 20, 60, None),
    ]
    lines = [event("start", T0, rung="optimal", device="0")]
    samples, rows = [], []
    start = 0
    for n, rung, first, saved, tail, kind in plan:
        if n == 5:
            start += 7200
            lines.append(event("continue", T0 + start, rung=rung, attempts=4, status_was="interrupted"))
        resume = "models/rtdetr-l/weights/last.pt" if first > 1 else None
        if resume:
            lines.append(event("resume", T0 + start, attempt=n, rung=rung, checkpoint=resume, epochs_done=first - 1))
        lines.append(event("attempt_start", T0 + start, attempt=n, rung=rung, mode="train", model=L, batch=8,
                           resume_from=resume, t=T0 + start))
        end = start + setup + saved * epoch_s + tail
        for k in range(saved):
            rows.append((first + k, (k + 1) * epoch_s + 0.0, 0.1 + 0.003 * (first + k)))
        lines.append(event("attempt_end", T0 + end, attempt=n, rung=rung, kind=kind, exit_code=1 if kind else 0,
                           phase="train" if kind else None, epochs_saved=saved,
                           last_saved_epoch=first + saved - 1 if saved else None, t=T0 + end))
        if kind == "cuda_oom" and n == 1:
            lines.append(event("retry", T0 + end, rung=rung, wait_s=10.0))
        elif kind == "cuda_oom":
            lines.append(event("step_down", T0 + end, rung=rung, to="optimal-b4"))
        elif kind == "hang":
            lines.append(event("retry", T0 + end, rung=rung, wait_s=10.0))
        elif kind == "interrupted":
            lines.append(event("interrupted", T0 + end, reason="stopped by SIGINT", exit_code=130))
        base = 16.0 if rung == "optimal" else 11.0
        for t in range(start + 10, end, 10):
            into = t - start - setup
            epoch = None if into < 0 else first + into // epoch_s
            samples.append({"t": T0 + t, "attempt": n, "rung": rung,
                            "vram": None if epoch is None else (base + 3.0 * (into % epoch_s) / epoch_s) * GIB,
                            "ram_used": (2.2 + 0.3 * (t % 600) / 600) * GIB, "ram_available": 21.6 * GIB,
                            "rss": (1.4 + 0.2 * (t % 300) / 300) * GIB, "phase": "train" if epoch else None,
                            "epoch": epoch, "batch": 5 if epoch else None, "it_s": 4.0 if epoch else None})
        start = end + 10
    lines.append(event("complete", T0 + end, model=L, best="best.pt", last="last.pt"))
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    (root / "telemetry.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (root / "models" / "rtdetr-l").mkdir(parents=True)
    (root / "models" / "rtdetr-l" / "results.csv").write_text(results_csv(rows))
    return root


def test_a_cpu_record_draws_the_ram_panel_alone_fitted_to_its_data(tmp_path):
    """The real CPU rehearsal: no VRAM samples, so one panel; its axis fits the run's 1-6 GiB, not the
    machine's 23.5 GiB, which the axis label names instead."""
    rec = accounting.load(shutil.copytree(FIXTURE, tmp_path / "rehearsal"))
    assert all(s["vram"] is None for s in rec.telemetry)
    fig = timeline.figure(rec)
    assert len(fig.axes) == 1
    (ax,) = fig.axes
    peak, total = ram_data(rec)
    low, high = ax.get_ylim()
    assert low == 0 and peak <= high <= 1.5 * peak and high < total
    assert "RAM" in ax.get_ylabel() and "host total 23.5 GiB" in ax.get_ylabel()
    # attempts 2 and 3 resumed from epoch 1's checkpoint: each start is marked
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_RESUME)] == ["resumes at epoch 2"] * 2
    starts = {(a.start - rec.start) / 60 for a in rec.attempts[1:]}
    assert {round(t.get_position()[0], 6) for t in texts(fig, timeline.GID_RESUME)} == {round(x, 6) for x in starts}


def test_a_gpu_record_draws_vram_and_ram_and_marks_the_resumed_starts(night):
    root, _, _ = night
    rec = accounting.load(root)
    fig = timeline.figure(rec)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "VRAM (GiB)"
    peak, total = ram_data(rec)
    high = fig.axes[1].get_ylim()[1]
    assert peak <= high < total  # 13.6 GiB used of 61.6: the total is named, not the scale
    # rtdetr-l resumed in #2, #3 (at epoch 4), #4 (at 6) and #7 (at 6), the heartbeat's epoch: each
    # start marked; #2 died in its start-up, so #3's start is too close to name apart (the same epoch)
    assert [a.resumed_at for a in rec.attempts] == [None, 4, 4, 6, None, None, 6]
    assert len(resume_marks(fig)) == 4
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_RESUME)] == [
        "resumes at epoch 4", "resumes at epoch 6", "resumes at epoch 6"]


def test_the_host_total_is_a_line_when_it_is_within_reach_of_the_data(tmp_path):
    root = tmp_path / "tight"
    root.mkdir()
    (root / "events.jsonl").write_text(event("start", T0) + "\n" + event(
        "attempt_start", T0, attempt=1, rung="optimal", mode="train", model=L, t=T0) + "\n")
    (root / "telemetry.jsonl").write_text("".join(json.dumps(
        {"t": T0 + t, "attempt": 1, "vram": None, "ram_used": 10 * GIB, "ram_available": 2 * GIB, "rss": 6 * GIB,
         "epoch": 1}) + "\n" for t in range(10, 300, 10)))
    fig = timeline.figure(accounting.load(root))
    (ax,) = fig.axes
    assert [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [12.0]
    assert 12.0 < ax.get_ylim()[1] < 15.0 and ax.get_ylabel() == "RAM (GiB)"


def test_a_long_record_has_few_epoch_labels_none_touching(tmp_path):
    """100 epochs over 4 resumed attempts: at most 20 epoch numbers along the top, apart from each
    other and from the rung names; the resumed attempts' first epochs among them."""
    rec = accounting.load(build_long_record(tmp_path / "long"))
    assert [(a.kind, a.resumed_at) for a in rec.attempts] == [
        ("cuda_oom", None), ("cuda_oom", 31), ("hang", 31), ("interrupted", 63), (None, 81)]
    fig = timeline.figure(rec)
    assert len(fig.axes) == 2
    epochs = texts(fig, timeline.GID_EPOCH)
    assert 5 <= len(epochs) <= timeline.EPOCH_LABELS
    assert {"31", "63", "81"} <= {t.get_text() for t in epochs}
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in epochs]
    rungs = [t.get_window_extent(renderer) for t in texts(fig, timeline.GID_RUNG)]
    assert rungs and not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] + rungs)
    # four resumed starts marked; #2 (dead in its start-up) and #3 both resumed at 31: one label
    assert len(resume_marks(fig)) == 4
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_RESUME)] == [
        "resumes at epoch 31", "resumes at epoch 63", "resumes at epoch 81"]
    # #1's and #2's OOMs 2 px apart: one label counts both; the interruption is named apart
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_FAILURE)] == ["cuda_oom ×2", "hang", "interrupted"]
    labels = [t.get_window_extent(renderer) for g in (timeline.GID_RESUME, timeline.GID_FAILURE, timeline.GID_RUNG)
              for t in texts(fig, g)]
    assert not any(overlaps(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])
    peak, total = ram_data(rec)
    assert peak <= fig.axes[1].get_ylim()[1] <= 1.5 * peak < total
    assert rec.interrupted_s > 0 and rec.lost_s > 0


def build_flurry_record(root: Path, resumes: int = 14, cpu: bool = True) -> Path:
    """Three hours of epoch 1, then `resumes` short attempts a few pixels apart, each resuming at
    the next epoch, saving it and dying of OOM: many "resumes at epoch k" labels with no room."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [event("start", T0, rung="optimal", device="cpu" if cpu else "0")]
    samples, start, end = [], 0, 0
    for n in range(1, resumes + 2):
        length = 10800 if n == 1 else 40
        resume = "models/rtdetr-l/weights/last.pt" if n > 1 else None
        if resume:
            lines.append(event("resume", T0 + start, attempt=n, rung="optimal", checkpoint=resume, epochs_done=n - 1))
        lines.append(event("attempt_start", T0 + start, attempt=n, rung="optimal", mode="train", model=L, batch=6,
                           resume_from=resume, t=T0 + start))
        end = start + length
        lines.append(event("attempt_end", T0 + end, attempt=n, rung="optimal", kind="cuda_oom", exit_code=1,
                           phase="train", epochs_saved=1, last_saved_epoch=n, t=T0 + end))
        lines.append(event("retry", T0 + end, rung="optimal", wait_s=1.0))
        for t in range(start + 5, end, 10 if n == 1 else 5):
            samples.append({"t": T0 + t, "attempt": n, "vram": None if cpu else 8 * GIB, "ram_used": 3 * GIB,
                            "ram_available": 20 * GIB, "rss": 2 * GIB, "epoch": n})
        start = end + 2
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    (root / "telemetry.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return root


@pytest.mark.parametrize("cpu", [True, False])
def test_resume_labels_never_overlap_however_many(tmp_path, cpu):
    """Issue 18, item 6: each label's box, read after the figure is drawn, touches no other label
    and stays inside its panel; a resume with no room is named on the label before only where the
    longer label still fits."""
    rec = accounting.load(build_flurry_record(tmp_path / "flurry", cpu=cpu))
    fig = timeline.figure(rec)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    resumes = texts(fig, timeline.GID_RESUME)
    assert resumes and len(resume_marks(fig)) == 14
    named = [int(e) for t in resumes for e in re.findall(r"\d+", t.get_text())]
    assert named[0] == 2 and named == sorted(set(named))  # in order, none twice
    labels = [t for g in (timeline.GID_RESUME, timeline.GID_FAILURE, timeline.GID_RUNG) for t in texts(fig, g)]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    panel = fig.axes[0].get_window_extent(renderer)
    for t in resumes:
        box = t.get_window_extent(renderer)
        assert panel.y0 <= box.y0 and box.y1 <= panel.y1, t.get_text()


def test_the_title_time_matches_the_time_axis(tmp_path):
    """Issue 18, item 6: the title gives the time in the axis's own unit, and where launcher
    sessions leave a gap, both the span the axis shows and the wall time within it."""
    rec = accounting.load(build_long_record(tmp_path / "long"))
    fig = timeline.figure(rec)
    unit = re.search(r"\((\w+)\)$", fig.axes[-1].get_xlabel()).group(1)
    span = fig.axes[0].get_xlim()[1] / 1.01
    title = fig._suptitle.get_text()
    assert unit == "hours" and f"{span:.1f} hours shown" in title, title
    assert f"wall {rec.wall_s / 3600:.1f} hours" in title and rec.wall_s / 3600 < span - 1, title
    rec = accounting.load(shutil.copytree(FIXTURE, tmp_path / "rehearsal"))  # one session: the two agree
    fig = timeline.figure(rec)
    unit = re.search(r"\((\w+)\)$", fig.axes[-1].get_xlabel()).group(1)
    title = fig._suptitle.get_text()
    assert f"(wall {fig.axes[0].get_xlim()[1] / 1.01:.1f} {unit}, goodput " in title, title


SHORTER = ["cuda_oom ×3", "cuda_oom ×2+", "cuda_oom+", "cuda_oom"]  # what the label may say, best first


@pytest.mark.parametrize("room", SHORTER)
def test_a_failure_label_never_counts_fewer_than_it_stands_for(tmp_path, monkeypatch, room):
    """Three OOMs a second apart, one label: the 2nd and 3rd have no place of their own (made so
    here). Where "cuda_oom ×3" does not fit (here: a text longer than `room` touches every label),
    it says "×2+", else "cuda_oom+", else no count: never "cuda_oom ×2" for three."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    root = tmp_path / "oom"
    root.mkdir()
    lines = [event("start", T0, rung="optimal")]
    for n in (1, 2, 3):
        start, end = T0 + 5000 + n, T0 + 5001 + n
        lines += [event("attempt_start", start, attempt=n, rung="optimal", mode="train", model=L, t=start),
                  event("attempt_end", end, attempt=n, rung="optimal", kind="cuda_oom", evidence="CUDA out of memory",
                        phase="train", t=end)]
    lines += [event("attempt_start", T0 + 5010, attempt=4, rung="optimal", mode="train", model=L, t=T0 + 5010),
              event("attempt_end", T0 + 9000, attempt=4, rung="optimal", kind=None, t=T0 + 9000)]
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    too_long, extent, first = SHORTER[:SHORTER.index(room)], Text.get_window_extent, []

    def crowded(self, renderer=None, dpi=None):  # a text that does not fit touches every label
        text = self.get_text().strip()
        if text.startswith("cuda_oom"):
            first[:] = first or [self]
            if self is not first[0] or text in too_long:
                return Bbox([[-1e6, -1e6], [1e6, 1e6]])
        return extent(self, renderer, dpi)

    monkeypatch.setattr(Text, "get_window_extent", crowded)
    fig = timeline.figure(accounting.load(root))
    monkeypatch.undo()
    assert [t.get_text().strip() for t in texts(fig, timeline.GID_FAILURE)] == [room]
