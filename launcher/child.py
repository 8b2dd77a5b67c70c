"""The training child: `python -m launcher.child SPEC.json` (contract.py).

Started by the supervisor with the rung's environment already set (allocator settings only work
if present before torch is imported). It caps VRAM, reads the model's checkpoint to decide what is
left to do (train fresh, resume, only the owed final validation, or nothing), trains with the
launcher's callbacks, and on any exception writes report.json before exiting non-zero. A spec of
mode "trial" measures its rung instead (launcher/trial.py) and touches no checkpoint.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from .contract import CHILD_FAILED, CHILD_OK, ENV_PRETRAINED_BACKBONE, Report, Spec, Unreadable
from .runlog import ModelPaths

# Checkpoint states (docs/design.md, "Checkpoints"): what `last.pt` says is left to do for a model.
NONE, RESUMABLE, FINAL_VAL_OWED, FINISHED, UNLOADABLE = "none", "resumable", "final_val_owed", "finished", "unloadable"


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when the launcher dies, so no orphan holds the GPU."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def checkpoint_state(last: Path) -> tuple[str, dict]:
    """(state, facts) of a model's last.pt, loaded the way Ultralytics loads it, after checking the
    CRC of every member (torch.load does not: a file mixing pages of two saves would load)."""
    if not last.exists():
        return NONE, {}
    from .checkpoint import zip_damage
    damage = zip_damage(last)
    if damage:
        return UNLOADABLE, {"error": f"fails its check: {damage}"}
    try:
        from ultralytics.utils.patches import torch_load
        ckpt = torch_load(last, map_location="cpu")
        epoch = int(ckpt["epoch"])
        epochs = int(ckpt["train_args"]["epochs"])
    except Exception as e:  # noqa: BLE001 - torn, truncated, or not a checkpoint at all
        return UNLOADABLE, {"error": f"{type(e).__name__}: {e}"}
    facts = {"epoch": epoch, "epochs": epochs, "epochs_done": epoch + 1 if epoch >= 0 else epochs}
    if epoch == -1:
        return FINISHED, facts
    if ckpt.get("optimizer") is not None and epoch + 1 >= epochs:
        return FINAL_VAL_OWED, facts
    return RESUMABLE, facts


def checkpoint_line(last: Path, state: str, facts: dict) -> str:
    """The attempt's first line about its checkpoint, in the one epoch convention of what the
    launcher prints: epochs done k/N, never Ultralytics' 0-based `epoch` (docs/design.md,
    "Dry-run, status, report")."""
    if "epochs_done" in facts:
        return f"launcher: checkpoint {last}: {state.replace('_', ' ')}, epochs done {facts['epochs_done']}/" \
               f"{facts['epochs']}"
    return f"launcher: checkpoint {last}: {state}" + (f" ({facts['error']})" if facts.get("error") else "")


def restore_verified(verified: Path, last: Path, state: str, facts: dict) -> None:
    """Put the verified copy back as last.pt; a torn last.pt is kept beside it, never deleted."""
    why = f"will not load ({facts['error']})" if state == UNLOADABLE else "is missing"
    if last.exists():
        last.rename(last.with_name(f"{last.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}"))
    last.parent.mkdir(parents=True, exist_ok=True)
    tmp = last.with_name(f".{last.name}.restoring")
    shutil.copyfile(verified, tmp)
    os.replace(tmp, last)
    print(f"launcher: {last} {why}; resuming from the verified copy {verified}", flush=True)


def set_aside(save_dir: Path, why: str) -> Path:
    """Move a model's save_dir out of the way (never delete what was trained)."""
    aside = save_dir.with_name(f"{save_dir.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(save_dir), aside)
    return aside


def peak_memory(watch=None) -> dict:
    """The report's peak memory fields (contract.Report), as keyword arguments: the whole process's
    peaks, and the Watch's by phase (it resets torch's peaks between phases)."""
    # never imports torch: a Ctrl-C that tore its import leaves it half-made (and nothing on a GPU)
    torch = sys.modules.get("torch")
    out = dict(peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        phases = {}
        if watch is not None:
            watch.close_peaks()
            phases = {phase: dict(peaks) for phase, peaks in watch.vram_peaks.items()}
        out.update(peak_vram_bytes=max([torch.cuda.max_memory_allocated(),
                                        *(p.get("allocated", 0) for p in phases.values())]),
                   peak_vram_reserved_bytes=max([torch.cuda.max_memory_reserved(),  # what the card must hold
                                                 *(p.get("reserved", 0) for p in phases.values())]))
        if phases:
            out["vram_peaks"] = phases
    return out


def progress(watch) -> dict:
    """Where training was, for a failure's report (contract.Report): None where the watch never started."""
    return dict(phase=getattr(watch, "phase", None), epoch=getattr(watch, "epoch", None),
                start_epoch=getattr(watch, "start_epoch", None), batch=getattr(watch, "batch", None),
                epochs_saved=getattr(watch, "epochs_saved", None),
                last_saved_epoch=getattr(watch, "last_saved_epoch", None))


def ensure_offline_font() -> None:
    """Offline, Ultralytics' dataset check would go to the network for Arial.ttf: give it a local font."""
    from ultralytics.utils import USER_CONFIG_DIR
    import matplotlib
    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).exists() and source.exists():
            shutil.copyfile(source, USER_CONFIG_DIR / name)


def register(model, spec: Spec, watch) -> None:
    """The launcher's callbacks: the tracker's first (it logs at a save, before the Watch's thrash
    restart can end the process there), imported only when the spec names a tracker run."""
    if spec.track:
        from .track import Logger
        Logger.of(spec).register(model)
    watch.register(model)


def train(spec: Spec, watch) -> dict:
    from ultralytics import RTDETR

    save_dir = Path(spec.save_dir)
    files = ModelPaths.at(save_dir)
    last = files.last
    state, facts = checkpoint_state(last)
    print(checkpoint_line(last, state, facts), flush=True)
    watch.checkpoint = str(last) if state != NONE else None
    verified = Path(spec.verified)
    if state in (UNLOADABLE, NONE) and verified.exists():
        v_state, v_facts = checkpoint_state(verified)
        if v_state not in (NONE, UNLOADABLE):
            restore_verified(verified, last, state, facts)
            state, facts, watch.checkpoint = v_state, v_facts, f"{verified} (verified copy)"
    if state == UNLOADABLE:
        aside = set_aside(save_dir, "unloadable")
        print(f"launcher: {last} will not load ({facts['error']}); moved {save_dir} to {aside} and starting "
              f"{Path(spec.model).name} fresh", flush=True)
        state = NONE
    if state != NONE:
        # the checkpoint holds every weight: rebuilding from the YAML must not fetch ImageNet weights
        os.environ[ENV_PRETRAINED_BACKBONE] = "0"
    if state in (FINISHED, FINAL_VAL_OWED):
        return final_validation(spec, save_dir, state, watch)

    if state == RESUMABLE:
        model = RTDETR(str(last))
        register(model, spec, watch)
        model.train(resume=True, **spec.resume_args(), **spec.extra_args)
    else:
        model = RTDETR(spec.model)
        register(model, spec, watch)
        model.train(**spec.fresh_args(), **spec.extra_args)
    return {"best": str(files.best), "last": str(last)}


def final_validation(spec: Spec, save_dir: Path, state: str, watch) -> dict:
    """Finish a model whose training is done: strip the optimizer as Ultralytics' final_eval
    does, then validate best.pt (at this rung's batch, lower than the one that failed)."""
    from ultralytics import RTDETR
    from ultralytics.utils.torch_utils import strip_optimizer

    from .callbacks import remove_temps, strip_by_rename

    files = ModelPaths.at(save_dir)
    best = files.best if files.best.exists() else files.last
    strip = strip_by_rename(strip_optimizer)  # a file beside, renamed: a kill or a full disk tears nothing
    remove_temps(files.last, files.best)  # left by a child killed mid-write
    if state == FINAL_VAL_OWED:
        strip(files.last)
        if best == files.best:
            strip(best)
    watch.phase, watch.epoch = "final", spec.epochs
    watch.close_peaks("final")
    watch.beat(force=True)
    model = RTDETR(str(best))
    if watch.injections:  # fire drills reach the final validation through the same hook
        import torch
        torch.nn.modules.module.register_module_forward_pre_hook(watch.forward_pre_hook)
    metrics = model.val(**spec.validate_args(), plots=False, project=str(save_dir), name="final-val", exist_ok=True)
    watch.phase = "done"
    watch.beat(force=True)
    return {"best": str(best), "last": str(files.last), "validated_only": True,
            "metrics": {k: float(v) for k, v in getattr(metrics, "results_dict", {}).items()}}


def describe(e: BaseException, spec: Spec) -> str:
    """The exception's message, with the path when the disk is full (Ultralytics' own error
    names none, and the person has to know where to make room)."""
    message = str(e).strip()
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = Path(e.filename) if e.filename else Path(spec.save_dir)
        folder = where if where.is_dir() else where.parent
        free = shutil.disk_usage(folder).free if folder.exists() else None
        message += (f" — while writing {where}; {free / 2**20:.1f} MiB free there" if free is not None
                    else f" — while writing {where}")
    return message


def _interrupted(signum, frame):
    # SIGTERM (from the launcher, or the kernel when the launcher died) ends training the way
    # Ctrl-C does: an exception, a report, no final evaluation, so the checkpoint stays resumable
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupted)
    die_with_parent()
    from .runlog import write_json_atomic

    spec = Spec.load(Path(argv[0]))
    why = spec.why if isinstance(spec, Unreadable) else spec.unusable()
    if why and (isinstance(spec, Unreadable) or not spec.report):  # no report path: a plain traceback then
        raise TypeError(f"the attempt's spec cannot be used: {why}")
    watch = None
    try:
        if why:  # the launcher wrote it moments ago: a damaged spec is a bug, fatal (failures.FATAL_TYPES)
            raise TypeError(f"{argv[0]}: the attempt's spec cannot be used: {why}")
        if os.environ.get("YOLO_OFFLINE") == "1":
            ensure_offline_font()
        from .callbacks import Watch
        if spec.register:
            importlib.import_module(spec.register).register()
        watch = Watch(spec)
        watch.cap_devices()  # this process; DDP ranks cap themselves (Watch callbacks)
        if spec.mode == "trial":  # a measured trial of the rung, never a checkpoint (launcher/trial.py)
            from .trial import run as run_trial
            result = run_trial(spec, watch)
        else:
            result = train(spec, watch)
        watch.finish_copy()
    except BaseException as e:  # noqa: BLE001 - everything is reported, then re-raised as an exit code
        if watch is not None:
            watch.finish_copy()  # a whole verified copy of the last save, before this process ends
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        exc_type = f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins.")
        report = Report(ok=False, ts=time.time(), exc_type=exc_type, message=describe(e, spec)[:2000],
                        **progress(watch), **peak_memory(watch))
        write_json_atomic(Path(spec.report), report.to_json())
        return CHILD_FAILED
    report = Report(ok=True, phase="done", epochs_saved=watch.epochs_saved, last_saved_epoch=watch.last_saved_epoch,
                    **result, **peak_memory(watch))  # result: train's or final_validation's weights (and metrics)
    write_json_atomic(Path(spec.report), report.to_json())
    return CHILD_OK


if __name__ == "__main__":
    sys.exit(main())
