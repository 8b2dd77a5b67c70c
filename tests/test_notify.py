"""The message when the night ends (issue 22, item 4; docs/design.md, "A message when the night
ends"): a real HTTP server on 127.0.0.1 in a thread, and the supervisor driven by scripted children
to every ending. The night's exit code and record never depend on the message."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from launcher import cli, notify
from launcher.contract import EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK, EXIT_REQUEUED
from launcher.errors import BadInput
from launcher.failures import ChildEnd
from launcher.runlog import RunPaths, RunState
from launcher.supervisor import Supervisor

from helpers import FakeChild, crash, new_state, ok, oom, with_job

SECRETS = ("hunter2", "SECRETTOKEN", "QUERYSECRET", "B0/SECRET")
TIMEOUT = 0.5  # notify.TIMEOUT_S in these tests: a hanging server costs half a second


class Server:
    """An HTTP server on 127.0.0.1 in a thread: `mode` "ok" (200), "500", or "hang" (answers
    nothing until the test ends); every POST it reads is kept in `got` as (path, headers, body)."""

    def __init__(self, mode: str = "ok"):
        self.mode, self.got, self.release = mode, [], threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                if server.mode == "hang":
                    server.release.wait(30)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.got.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200 if server.mode == "ok" else 500)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "/services/T0/B0/SECRETTOKEN?auth=QUERYSECRET") -> str:
        return f"http://user:hunter2@127.0.0.1:{self.port}{path}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    monkeypatch.setattr(notify, "TIMEOUT_S", TIMEOUT)


@pytest.fixture(autouse=True)
def dispositions_restored():
    """A requeued night leaves SIGTERM ignored on purpose (test_slurm.py): put it back."""
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)]
    yield
    for s, handler in zip((signal.SIGINT, signal.SIGTERM, signal.SIGUSR1), before):
        signal.signal(s, handler)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook/SECRETTOKEN"


# ---- the nights ---------------------------------------------------------------------------------

def results_writing(script):
    """FakeChild that also writes an epoch row with an mAP into the model's results.csv (as
    Ultralytics does), so the message's facts come from the report's accounting."""
    child = FakeChild(script)

    def launch(cmd, env, log_path, watchdog):
        end = child(cmd, env, log_path, watchdog)
        save_dir = Path(child.calls[-1]["train_args"]["save_dir"])
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "results.csv").write_text("epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)\n1,10,0.61,0.4321\n")
        return end
    launch.calls = child.calls
    return launch


def interrupted_child(ref):
    def poked(cmd, env, log_path, watchdog):
        ref["sup"].signals(signal.SIGINT, None)
        return ChildEnd(-2)
    return poked


def night(tmp_path, ending: str, urls: list[str] | None, **job):
    """One scripted night to `ending`; (exit code, state, lines said, events)."""
    from test_slurm import cut_night
    slurm_job, ref = None, {}
    if urls:
        job["notify"] = urls
    if ending in ("time_limit", "preempted"):
        ladder, launch, ref, slurm_job = cut_night(tmp_path, signal.SIGUSR1 if ending == "time_limit" else
                                                   signal.SIGTERM, shown=None if ending == "time_limit" else "preempt",
                                                   **job)
    else:
        ladder = with_job(**({"max_attempts": 1} if ending == "exhausted" else {}), **job)
        launch = {"complete": lambda: results_writing([ok()]),
                  "exhausted": lambda: FakeChild([crash()]),
                  "fatal": lambda: FakeChild([(1, {"exc_type": "FileNotFoundError",
                                                   "message": "Dataset 'x.yaml' images not found"}, 0, "")]),
                  "interrupted": lambda: interrupted_child(ref),
                  "step_down": lambda: FakeChild([oom(saved=0), ok()])}[ending]()
    lines: list[str] = []
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=launch, sleep=lambda s: None, say=lines.append, slurm_job=slurm_job)
    ref["sup"] = sup
    state = new_state(ladder)
    code = sup.run(state)
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    return code, state, lines, events


ENDINGS = {"complete": EXIT_OK, "exhausted": EXIT_EXHAUSTED, "fatal": EXIT_FATAL, "interrupted": 130,
           "time_limit": EXIT_REQUEUED, "preempted": EXIT_REQUEUED}


def same_record(a, b):
    """Two nights' records alike but for the `notify` events and the clock."""
    def kinds(events):
        return [(e["event"], e.get("rung"), e.get("kind"), e.get("exit_code"), e.get("reason")) for e in events
                if e["event"] != "notify"]
    (code_a, state_a, _, events_a), (code_b, state_b, _, events_b) = a, b
    assert code_a == code_b and kinds(events_a) == kinds(events_b)
    assert (state_a.status, state_a.reason, state_a.attempts, state_a.delivered) == \
        (state_b.status, state_b.reason, state_b.attempts, state_b.delivered)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_ending_sends_one_message_with_the_nights_facts(tmp_path, server, ending):
    code, state, lines, events = night(tmp_path, ending, [server.url()])
    assert code == ENDINGS[ending] and state.status == ending
    assert len(server.got) == 1
    path, headers, body = server.got[0]
    assert path == "/services/T0/B0/SECRETTOKEN?auth=QUERYSECRET"  # the URL is used whole, only never shown
    assert headers["Content-Type"].startswith("application/json")
    assert body["text"] == body["content"] and "\n" not in body["text"] and len(body["text"]) <= notify.TEXT_CHARS
    assert f"run 't' {ending}" in body["text"]
    assert (body["event"], body["run"], body["status"], body["exit_code"]) == ("end", "t", ending, code)
    assert body["reason"] == state.reason and body["record"] == str((tmp_path / "run").resolve())
    assert body["report"] and Path(body["report"]).is_file()  # written before the message
    sent = [e for e in events if e["event"] == "notify"]
    assert len(sent) == 1 and sent[0]["result"] == "sent" and sent[0]["about"] == "end"
    assert events.index(sent[0]) > max(i for i, e in enumerate(events) if e["event"] == ending)  # after the ending
    if ending == "complete":
        assert body["delivered"] is True and body["best"] == "b.pt" and (body["epochs_done"], body["epochs"]) == \
            (state.models[state.training_model].epochs, state.models[state.training_model].epochs)
        assert body["map50_95"] == pytest.approx(0.4321) and "mAP50-95 0.432" in body["text"]
        assert "delivered" in body["text"]
    else:
        assert body["delivered"] is False and "no model delivered" in body["text"]
    assert isinstance(body["lost_s"], (int, float))


@pytest.mark.parametrize("ending", ["complete", "fatal", "interrupted", "time_limit"])
@pytest.mark.parametrize("failure", ["hang", "500", "refused"])
def test_a_failed_message_is_one_record_line_and_never_the_nights(tmp_path, ending, failure):
    """A server that hangs past the timeout, a 500, a closed port: the night ends as it would with
    no message at all (exit code, events, state), plus one `notify` event and one line said."""
    server = Server("hang" if failure == "hang" else "500")
    try:
        url = closed_port_url() if failure == "refused" else server.url()
        t0 = time.monotonic()
        told = night(tmp_path / "told", ending, [url])
        took = time.monotonic() - t0
        same_record(told, night(tmp_path / "quiet", ending, None))
    finally:
        server.close()
    code, _, lines, events = told
    sent = [e for e in events if e["event"] == "notify"]
    assert len(sent) == 1 and sent[0]["result"] == "failed" and sent[0]["seconds"] < TIMEOUT + 1
    error = {"hang": f"no answer within {TIMEOUT:g} s", "500": "HTTP 500", "refused": "refused"}[failure]
    assert error in sent[0]["error"]
    said = [line for line in lines if line.startswith("notify ")]
    assert len(said) == 1 and "failed" in said[0] and "the night is not affected" in said[0]
    assert took < 10  # the hang cost the timeout, not the server's 30 s


def test_no_secret_of_the_url_is_said_or_recorded(tmp_path, server):
    code, _, lines, _ = night(tmp_path, "fatal", [server.url(), closed_port_url()])
    assert code == EXIT_FATAL and len(server.got) == 1
    written = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*")
                        if p.is_file() and p.suffix != ".png")
    for text in ("\n".join(lines), written):
        assert "http://***@127.0.0.1:" in text and "/***?***" in text
        for secret in (*SECRETS, "user:", "/hook/"):
            assert secret not in text


def test_a_step_down_sends_a_message_when_asked(tmp_path, server):
    code, state, _, events = night(tmp_path, "step_down", [server.url()], notify_on=["step_down"])
    assert code == EXIT_OK and [b["event"] for _, _, b in server.got] == ["step_down", "end"]
    body = server.got[0][2]
    assert (body["rung"], body["to"], body["kind"]) == ("optimal", "optimal-b4", "cuda_oom")
    assert "stepped down from rung optimal to optimal-b4 after cuda_oom" in body["text"]
    assert [e["about"] for e in events if e["event"] == "notify"] == ["step_down", "end"]
    server.got.clear()
    night(tmp_path / "not-asked", "step_down", [server.url()])
    assert [b["event"] for _, _, b in server.got] == ["end"]  # without notify_on: the end alone


def test_the_status_is_the_records_whatever_it_is(tmp_path):
    """A new ending (issue 22's `deadline`) needs no change here: the status is read from RunState."""
    state = RunState(run="r", ladder="l", data="d", device="0", rung="x", status="deadline",
                     reason="delivered at epoch 63 of 100: the deadline 07:30",
                     delivered={"model": "m.pt", "best": "b.pt", "last": "l.pt"})
    body = notify.night_body(state, RunPaths(tmp_path / "none"), 0, None)
    assert body["status"] == "deadline" and body["delivered"] and "run 'r' deadline: m.pt delivered" in body["text"]
    assert "the deadline 07:30" in body["text"] and body["report"] is None


# ---- the URLs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T0/B0/SECRETTOKEN", "https://hooks.slack.com/***"),
    ("https://discord.com/api/webhooks/123/SECRETTOKEN", "https://discord.com/***"),
    ("https://ntfy.sh/SECRETTOKEN?tpl=1&m={{.text}}", "https://ntfy.sh/***?***"),
    ("http://user:hunter2@[::1]:8080/x", "http://***@[::1]:8080/***"),
    ("https://example.org", "https://example.org"),
    ("https://example.org/", "https://example.org"),
    ("not a url", "***"),
])
def test_redact_keeps_the_host_and_masks_the_rest(url, shown):
    assert notify.redact(url) == shown


@pytest.mark.parametrize("bad", ["ftp://user:hunter2@host/SECRETTOKEN", "hunter2", "https:///SECRETTOKEN",
                                 "https://host/a b", "file:///etc/SECRETTOKEN"])
def test_a_url_that_is_not_http_is_refused_in_one_line_without_its_secret(tmp_path, monkeypatch, capsys, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--demo", "--notify", bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--notify" in err
    with pytest.raises(BadInput) as ladder_error:
        with_job(notify=["https://ok.example/x", bad])
    for text in (err, str(ladder_error.value), (tmp_path / "logs" / "launcher-errors.log").read_text()):
        assert "hunter2" not in text and "SECRETTOKEN" not in text
    assert "http:// or https://" in str(ladder_error.value) and "\n" not in str(ladder_error.value)


@pytest.mark.parametrize("job, names", [
    ({"notify": []}, ["key 'notify'"]),
    ({"notify": 3}, ["key 'notify'"]),
    ({"notify": "https://x.example/h", "notify_on": ["complete"]}, ["key 'notify_on'", "'step_down', 'retry'"]),
])
def test_ladder_notify_keys_are_checked(job, names):
    with pytest.raises(BadInput) as e:
        with_job(**job)
    for n in names:
        assert n in str(e.value)


def test_ladder_and_command_line_urls_are_both_told(tmp_path, monkeypatch):
    from launcher import setup
    monkeypatch.chdir(tmp_path)
    ladder = tmp_path / "l.toml"
    ladder.write_text((Path(__file__).parents[1] / "ladders" / "demo.toml").read_text().replace(
        "[job]\n", '[job]\nnotify = "https://a.example/1"\nnotify_on = ["step_down"]\n', 1))
    req = setup.Request(ladder=str(ladder), notify=("https://b.example/2", "https://a.example/1"), demo=True)
    job = setup.load_job(setup.demo_ladder(req)).job
    assert job.notify == ("https://a.example/1", "https://b.example/2") and job.notify_on == ("step_down",)


def test_sbatch_passes_notify_on_and_prints_it_redacted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = "https://hooks.slack.com/services/T0/B0/SECRETTOKEN"
    assert cli.sbatch_run_argv(["sbatch", "--demo", "--notify", url], "demo") == ["--name", "demo", "--demo",
                                                                                  "--notify", url]
    assert cli.main(["sbatch", "--demo", "--notify", url, "--dry-run", "--", "--time=60"]) == 0
    out = capsys.readouterr().out
    assert "--notify 'https://hooks.slack.com/***'" in out and "SECRETTOKEN" not in out


def test_a_record_that_cannot_be_written_still_sends_its_fatal_message(tmp_path, server, monkeypatch):
    import errno

    def full(self, outcome):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "state.json"))
    monkeypatch.setattr(Supervisor, "_complete", full)
    code, state, _, _ = night(tmp_path, "complete", [server.url()])
    body = server.got[0][2]
    assert code == EXIT_FATAL and (body["status"], body["exit_code"]) == ("fatal", EXIT_FATAL)
    assert "No space left on device" in body["text"] and state.status == "running"  # as recorded: nothing more
