"""events.jsonl's declared format (runlog.EVENTS, issue 19): a writer's undeclared field is a
launcher bug caught at the write; a reader gets each kind's declared fields, typed, from any line,
an old one without a version or a damaged one, and never a KeyError."""

from __future__ import annotations

import ast
import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from launcher import ladder, plan, probe
from launcher.runlog import EVENTS, EVENTS_VERSION, Ev, Event, Events, read_events


def test_every_kind_ev_names_is_declared_and_nothing_else():
    names = {v for k, v in vars(Ev).items() if not k.startswith("_") and isinstance(v, str)}
    assert set(EVENTS) == names


def test_an_undeclared_field_or_kind_raises_and_writes_nothing(tmp_path):
    events = Events(tmp_path / "events.jsonl")
    with pytest.raises(TypeError, match="exit_cod.*attempt_end"):
        events.append(Ev.ATTEMPT_END, attempt=1, exit_cod=0)  # a typo for exit_code
    with pytest.raises(TypeError, match="'atempt_end' is not declared"):
        events.append("atempt_end", attempt=1)
    assert not events.path.exists()
    line = events.append(Ev.ATTEMPT_END, attempt=1, exit_code=0)
    assert line["v"] == EVENTS_VERSION and json.loads(events.path.read_text()) == line


def test_a_line_reads_as_its_kinds_fields_typed(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        json.dumps({"ts": "2026-06-01T00:00:00+00:00", "event": "attempt_start", "attempt": 1, "rung": "a",
                    "t": 5.5}),  # written before `v`: version 0
        json.dumps({"ts": "x", "event": "attempt_end", "v": 1, "attempt": True, "epochs_saved": "two",
                    "seconds": float("nan"), "kind": "cuda_oom", "not_declared": 1}),  # wrong types: None
        json.dumps({"ts": "2026-06-01T00:00:10+00:00", "event": "from_a_newer_launcher", "v": 7, "attempt": 3}),
        json.dumps({"attempt": 1}), "[]", '{"event": "complete", "mod',  # no kind, not an object, torn
    ]) + "\n")
    start, end, newer = read_events(path)
    assert (start.kind, start.v, start.known, start.time) == (Ev.ATTEMPT_START, 0, True, 5.5)
    assert (start.get("attempt"), start.get("rung"), start.get("model")) == (1, "a", None)
    assert end.fields == {"kind": "cuda_oom"} and end.get("attempt") is None and end.time is None
    assert (newer.known, newer.v, newer.get("attempt")) == (False, 7, None)
    assert newer.time == datetime(2026, 6, 1, 0, 0, 10, tzinfo=timezone.utc).timestamp()  # no `t`: its `ts`


def test_a_field_its_kind_does_not_declare_is_a_readers_bug():
    e = Event(Ev.COMPLETE, None, 1, {"best": "b.pt"})
    assert (e.get("best"), e.get("last")) == ("b.pt", None)
    for name in ("bestt", "reason"):  # a typo; another kind's field, never written with this one
        with pytest.raises(LookupError, match=f"{name}.*complete"):
            e.get(name)
    newer = Event("from_a_newer_launcher", None, 2, {}, known=False)
    assert newer.get("reason") is None
    with pytest.raises(LookupError):
        newer.get("bestt")


def writers() -> list[tuple[str, str, list[str]]]:
    """Every `.append(Ev.KIND, field=...)` in the package (a kind picked from a dict of Ev.KINDs
    too): (where, kind, the fields it names)."""
    out = []
    for path in sorted((Path(__file__).resolve().parents[1] / "launcher").glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "append"
                    and n.args):
                continue
            first = n.args[0].value if isinstance(n.args[0], ast.Subscript) else n.args[0]
            kinds = first.values if isinstance(first, ast.Dict) else [first]
            for k in kinds:
                if isinstance(k, ast.Attribute) and isinstance(k.value, ast.Name) and k.value.id == "Ev":
                    out.append((f"{path.name}:{n.lineno}", getattr(Ev, k.attr),
                                [kw.arg for kw in n.keywords if kw.arg is not None]))
    return out


def test_every_writer_names_only_fields_declared_for_its_kind():
    found = writers()
    assert len(found) >= 15  # (a kind in a variable, the `**fields` of the endings and a probe: checked as written)
    assert [(where, kind, name) for where, kind, names in found for name in names
            if name not in EVENTS[kind]] == []


def test_the_probe_event_declares_the_snapshots_fields():
    assert set(EVENTS[Ev.PROBE]) == {f.name for f in dataclasses.fields(probe.Snapshot)}


@pytest.mark.parametrize("changed", [{"cache": "ram"}, {"cache": "off", "workers": 4}])
def test_a_retrys_remedies_are_declared(changed):
    default = ladder.load(Path(__file__).resolve().parents[1] / "ladders" / "default.toml")
    rungs = (dataclasses.replace(default.rungs[0], **changed),) + default.rungs[1:]
    step = plan.decide(rungs, 0, plan.HOST_OOM, "train", 0, streak=0, policy=plan.Policy.of(default.job))
    assert step.changes and set(dict(step.changes)) <= set(EVENTS[Ev.RETRY])
