"""One tracker run per night (docs/design.md, "One tracker run per night").

The launcher owns the night's tracker run: `begin` creates the MLflow run at the run's start (or
takes the one state.json records: a continued run, a launcher restart, a SLURM requeue) and names
the night's TensorBoard folder; every child logs into them through `Logger`, the launcher's
Ultralytics callback, imported by the child only when its spec names a tracker. Ultralytics' own
MLflow and TensorBoard callbacks are dropped from every child (callbacks.drop_trackers): each child
is a new process, and they would start a run per process (and MLflow's fails on `log_params` in a
resumed child).

The night's axis: step = epochs trained in the night so far, this one included, across attempts,
rungs and models; the model's own epoch is the metric `launcher/epoch`, the attempt
`launcher/attempt`. Which steps are taken is the ledger's, `logs/<run>/track.jsonl`, written by the
child before it logs an epoch (so a child killed between the two never reuses a step): an epoch a
model trains again (a resume from an older verified copy, a save_dir set aside and started anew)
gets the next step and `launcher/retrained` = 1, so no step ever holds two values.

A tracker that is not installed or not configured costs nothing: this module imports no tracker
package until one is configured. A tracker that fails never affects training: the child stops
using it for the attempt, prints one line and notes it in the ledger; the launcher turns that
note into one `track_failed` event.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .runlog import Events, RunPaths, RunState

MLFLOW, TENSORBOARD = "mlflow", "tensorboard"
URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own: whatever store it names (file:, sqlite:, http:, databricks)
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"  # MLflow's own; else EXPERIMENT
EXPERIMENT = "rtdetr-launcher"
PREFIX = "launcher"  # tags, params and the axis metrics the launcher adds


def redact(uri: str) -> str:
    """A tracking URI fit to print and record: no user:password@, no query (tokens live there)."""
    uri = re.sub(r"(?<=://)[^/@]*@", "***@", uri)
    return uri.split("?", 1)[0]


def installed(name: str) -> bool:
    """Whether a package can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def wanted(environ: Mapping[str, str], settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The trackers this night logs to: MLflow where `MLFLOW_TRACKING_URI` names a store, TensorBoard
    where Ultralytics' settings turn it on (`yolo settings tensorboard=True`); each only where its
    package is installed, and never one Ultralytics' settings turn off (`mlflow=False`)."""
    out = []
    if environ.get(URI_ENV) and settings.get(MLFLOW, True) is not False and installed("mlflow"):
        out.append(MLFLOW)
    if settings.get(TENSORBOARD) is True and installed("tensorboard"):
        out.append(TENSORBOARD)
    return tuple(out)


# ---- the launcher's side (no torch, no Ultralytics) --------------------------------------------------

def begin(tracking: dict, run: str, experiment: str, tensorboard_dir: Path, trackers: tuple[str, ...],
          environ: Mapping[str, str], warn: Callable[[str, str], None], tags: Mapping[str, str] | None = None) -> dict:
    """The night's tracker run, for state.json's `tracking`: the recorded one kept (a continued run,
    a restart, a requeue), else created now. Returns the new `tracking`; a tracker that cannot be
    reached is left out for this session, with `warn(tracker, why)` (one record line)."""
    out = {k: v for k, v in tracking.items() if k in (MLFLOW, TENSORBOARD)}
    if MLFLOW in trackers:
        uri = environ[URI_ENV]
        known = out.pop(MLFLOW, None) or {}
        known = known if known.get("uri") == redact(uri) else {}  # a run of another store: a new one in this
        try:
            out[MLFLOW] = mlflow_run(known, run, environ.get(EXPERIMENT_ENV) or experiment, uri, dict(tags or {}))
        except Exception as e:  # noqa: BLE001 - a tracker never stops the night
            if known:
                out[MLFLOW] = known  # the store may answer the children: they log into the night's run
            warn(MLFLOW, f"{type(e).__name__}: {str(e).replace(uri, redact(uri))[:300]}")
    if TENSORBOARD in trackers:
        out[TENSORBOARD] = {"dir": str(tensorboard_dir)}
    return out


def mlflow_run(known: dict, run: str, experiment: str, uri: str, tags: dict) -> dict:
    """The recorded MLflow run, marked running again; else a new one in `experiment`."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    if known.get("run_id"):
        client.update_run(known["run_id"], status="RUNNING")
        return known
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    made = client.create_run(exp_id, run_name=run, tags={f"{PREFIX}.run": run, **tags})
    return {"run_id": made.info.run_id, "experiment_id": exp_id, "uri": redact(uri)}


END_STATUS = {"complete": "FINISHED", "fatal": "FAILED", "exhausted": "FAILED", "interrupted": "KILLED"}


def end(tracking: dict, status: str, environ: Mapping[str, str], warn: Callable[[str, str], None]) -> None:
    """The night ended: its MLflow run takes the ending's status (a SLURM cut leaves it running: the
    job runs again). A continued run marks it running again (`begin`)."""
    known, terminal = tracking.get(MLFLOW), END_STATUS.get(status)
    if not known or not terminal or not environ.get(URI_ENV):
        return
    try:
        from mlflow.tracking import MlflowClient
        MlflowClient(tracking_uri=environ[URI_ENV]).set_terminated(known["run_id"], status=terminal)
    except Exception as e:  # noqa: BLE001
        warn(MLFLOW, f"{type(e).__name__}: {str(e).replace(environ[URI_ENV], known.get('uri', ''))[:300]}")


def for_child(tracking: dict, trackers: tuple[str, ...], ledger: Path) -> dict | None:
    """The spec's `track`: the night's run of each tracker this session logs to, and the ledger the
    child numbers steps by (the URI stays in the environment the child inherits: no secret in a spec)."""
    keep = {k: v for k, v in tracking.items() if k in trackers}
    return {**keep, "ledger": str(ledger)} if keep else None


def warnings(ledger: Path, attempt: int) -> list[tuple[str, str]]:
    """(tracker, why) for each tracker that failed in `attempt`, as its child noted it in the ledger."""
    from .runlog import read_jsonl
    return [(str(d.get("tracker")), str(d.get("warning"))) for d in read_jsonl(ledger)
            if d.get("attempt") == attempt and "warning" in d]


def describe(tracking: dict) -> list[str]:
    """status and report: where the night's tracker run is (no secret: the URI is recorded redacted)."""
    lines = []
    if m := tracking.get(MLFLOW):
        lines.append(f"MLflow run {m.get('run_id')} (experiment {m.get('experiment_id')}) at {m.get('uri')}")
    if t := tracking.get(TENSORBOARD):
        lines.append(f"TensorBoard {t.get('dir')}")
    return lines


# ---- the night's axis: pure -----------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """Where one trained epoch goes on the night's axis."""

    step: int
    retrained: bool


def place(ledger: list[dict], model: str, epoch: int) -> Point:
    """The step of `model`'s `epoch` (1-based), trained now: the step after every one the night has
    taken; `retrained` when the ledger already holds this model's epoch (it is trained again)."""
    steps = [d for d in ledger if isinstance(d.get("step"), int) and not isinstance(d.get("step"), bool)]
    last = max((d["step"] for d in steps), default=0)
    again = any(d.get("model") == model and d.get("epoch") == epoch for d in steps)
    return Point(last + 1, again)


def metric_key(name: str) -> str:
    """Ultralytics' names as MLflow takes them ("metrics/mAP50(B)" -> "metrics/mAP50B"), as its own callback does."""
    return name.replace("(", "").replace(")", "")


# ---- the child's side: Ultralytics callbacks --------------------------------------------------------

@dataclass
class Logger:
    """The launcher's tracker callback in the child: at each save (the epoch is on disk; before the
    Watch, whose thrash restart ends the process there), the epoch's losses, metrics and learning
    rates go to the night's run, at the ledger's step. Plain attributes until the first log (DDP
    cloudpickles the callbacks to the ranks; only the saving rank logs)."""

    track: dict
    attempt: int
    rung: str
    model: str
    failed: dict = field(default_factory=dict)  # tracker -> why, in this attempt
    _writer: Any = None
    _client: Any = None

    @classmethod
    def of(cls, spec) -> "Logger":
        return cls(dict(spec.track), spec.attempt, spec.rung, str(spec.model))

    def register(self, model) -> None:
        model.add_callback("on_model_save", self.on_model_save)
        model.add_callback("on_train_end", self.close)

    @property
    def ledger(self) -> Path:
        return Path(self.track["ledger"])

    def on_model_save(self, trainer) -> None:
        from .runlog import JsonLines, read_jsonl
        epoch = trainer.epoch + 1
        point = place(read_jsonl(self.ledger), self.model, epoch)
        JsonLines(self.ledger).add({"step": point.step, "model": self.model, "epoch": epoch, "attempt": self.attempt,
                                    "rung": self.rung, "retrained": point.retrained, "t": time.time()})
        values = {**trainer.label_loss_items(trainer.tloss, prefix="train"), **(trainer.metrics or {}),
                  **(trainer.lr or {})}
        values = {metric_key(k): float(v) for k, v in values.items()}
        values.update({f"{PREFIX}/epoch": epoch, f"{PREFIX}/attempt": self.attempt})
        if point.retrained:
            values[f"{PREFIX}/retrained"] = 1
        self.log(point, epoch, values)

    def log(self, point: Point, epoch: int, values: dict[str, float]) -> None:
        for name, write in ((MLFLOW, self._mlflow), (TENSORBOARD, self._tensorboard)):
            if name in self.track and name not in self.failed:
                try:
                    write(point, epoch, values)
                except Exception as e:  # noqa: BLE001 - a tracker never stops training
                    self.fail(name, e)

    def fail(self, name: str, e: BaseException) -> None:
        from .runlog import JsonLines
        uri = os.environ.get(URI_ENV) or ""
        why = f"{type(e).__name__}: {(str(e).replace(uri, redact(uri)) if uri else str(e))[:300]}"
        self.failed[name] = why
        print(f"launcher: {name} failed, not tracking the rest of this attempt there ({why})", flush=True)
        try:
            JsonLines(self.ledger).add({"attempt": self.attempt, "tracker": name, "warning": why, "t": time.time()})
        except OSError:
            pass

    def _mlflow(self, point: Point, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric, RunTag
        if self._client is None:
            from mlflow.tracking import MlflowClient
            self._client = MlflowClient(tracking_uri=os.environ.get(URI_ENV))
            a = f"{PREFIX}.attempt.{self.attempt}"
            self._client.log_batch(self.track[MLFLOW]["run_id"], tags=[
                RunTag(f"{PREFIX}.attempt", str(self.attempt)), RunTag(f"{PREFIX}.rung", self.rung),
                RunTag(f"{PREFIX}.model", self.model), RunTag(f"{a}.rung", self.rung),
                RunTag(f"{a}.model", self.model)])
        ms = int(time.time() * 1000)
        self._client.log_batch(self.track[MLFLOW]["run_id"],
                               metrics=[Metric(k, v, ms, point.step) for k, v in values.items()])

    def _tensorboard(self, point: Point, epoch: int, values: dict[str, float]) -> None:
        # TensorBoard's own event writer and protos (no torch: torch.utils.tensorboard wraps these);
        # one file per child, all in the night's one folder, which TensorBoard reads as one run
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        if self._writer is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
            self._writer = EventFileWriter(self.track[TENSORBOARD]["dir"])
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._writer.add_event(Event(wall_time=time.time(), step=point.step, summary=summary))
        self._writer.flush()

    def close(self, trainer=None) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001
                pass
            self._writer = None


class Night:
    """The night's tracker run as the supervisor drives it (docs/design.md, "One tracker run per
    night"): taken from state.json or created as a session starts (`start`), named in each child's
    spec (`child`), a failure one record line and one said (`warn`), ended with the night
    (`finish`). With no tracker configured each is a no-op, and nothing is imported."""

    def __init__(self, paths: RunPaths, events: Events, say: Callable[[str], None]):
        self.paths, self.events, self.say = paths, events, say
        self.state: RunState | None = None
        self.trackers: tuple[str, ...] = ()  # the trackers this session logs the night to

    def start(self, state: RunState) -> None:
        from .models import ultralytics_settings

        self.state = state
        trackers = wanted(os.environ, ultralytics_settings())
        if not trackers:
            return
        state.tracking = begin(state.tracking, state.run, EXPERIMENT, self.paths.tensorboard, trackers, os.environ,
                               lambda tracker, why: self.warn(tracker, why),
                               tags={f"{PREFIX}.ladder": state.ladder, f"{PREFIX}.data": state.data,
                                     f"{PREFIX}.device": state.device})
        self.trackers = tuple(t for t in trackers if t in state.tracking)
        state.save(self.paths.state)
        for line in describe({t: state.tracking[t] for t in self.trackers}):
            self.say(f"tracking: {line}")

    def warn(self, tracker: str, why: str, attempt: int | None = None) -> None:
        """A tracker failed: one record line and one said; training goes on."""
        from .runlog import Ev

        self.events.append(Ev.TRACK_FAILED, tracker=tracker, attempt=attempt, error=why)
        self.say(f"warning: {tracker} failed{f' in attempt {attempt}' if attempt else ''} ({why}); training goes on")

    def child(self) -> dict | None:
        """What a child's spec carries to log into the night's run (Spec.track); None: no tracker."""
        return for_child(self.state.tracking, self.trackers, self.paths.track_ledger) if self.trackers else None

    def attempt_ended(self, attempt: int) -> None:
        """The failures the attempt's child noted in the ledger, each a record line."""
        for tracker, why in warnings(self.paths.track_ledger, attempt) if self.trackers else ():
            self.warn(tracker, why, attempt)

    def finish(self, status: str) -> None:
        if MLFLOW in self.trackers:
            end(self.state.tracking, status, os.environ, self.warn)
