"""A message when the night ends (docs/design.md, "A message when the night ends"): one HTTP POST
to each `--notify` / `[job] notify` URL, whatever the ending, and optionally one at each step-down
(`[job] notify_on`).

The body is one JSON object: `text` and `content` carry the same one line (Slack's incoming
webhooks show `text`, Discord's show `content`; ntfy shows it with its message template,
`?tpl=1&m={{.text}}`), beside the night's facts for any other receiver. Standard library only
(urllib): no new dependency for a feature most nights leave off.

A message never decides the night: every URL gets at most TIMEOUT_S in all (a thread, so a slow
DNS answer or a server that trickles counts too), and a failure (timeout, refused, a non-2xx
answer) is one `notify` event and one line said. A URL's secret (userinfo, the path: a Slack or
Discord webhook's token, an ntfy topic; the query) is never said or recorded: `redact`.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .runlog import Ev, Events, RunPaths, RunState

TIMEOUT_S = 5.0  # per URL, everything included
SCHEMES = ("http", "https")
NOTIFY_ON = (Ev.STEP_DOWN, Ev.RETRY)  # the decisions `[job] notify_on` may add a message for
MASK = "***"
TEXT_CHARS = 300  # the one line's length at most: the reason is cut, never the facts before it
AGENT = "rtdetr-launcher"


# ---- the URLs -----------------------------------------------------------------------------------

def check_url(value: Any) -> str:
    """A URL the night may POST to: http or https with a host; ValueError (its text never holds
    the URL, which may carry a secret: the caller names it redacted)."""
    if not isinstance(value, str) or not value.strip():
        raise TypeError("an http:// or https:// URL")
    url = value.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7f for c in url):
        raise ValueError("one http:// or https:// URL, without spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises here)
    except ValueError:
        raise ValueError("an http:// or https:// URL (this one does not parse)") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("an http:// or https:// URL (the night posts its message with HTTP)")
    if not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    return url


def check_urls(value: Any) -> tuple[str, ...]:
    """`[job] notify`: one URL or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise TypeError("an http:// or https:// URL, or a list of them")
    return merge(tuple(check_url(v) for v in items))


def check_on(value: Any) -> tuple[str, ...]:
    """`[job] notify_on`: the decisions that also send a message."""
    if not isinstance(value, list) or any(v not in NOTIFY_ON for v in value):
        raise ValueError(f"a list of {', '.join(repr(k) for k in NOTIFY_ON)}")
    return tuple(dict.fromkeys(value))


def merge(*lists: tuple[str, ...]) -> tuple[str, ...]:
    """The URLs of the ladder and the command line together, each once, in order."""
    return tuple(dict.fromkeys(u for urls in lists for u in urls))


def redact(url: str) -> str:
    """What is said and recorded of a URL: its scheme, host and port; `***` for any userinfo, path
    and query. The path goes whole: Slack (/services/T/B/token) and Discord (/api/webhooks/id/token)
    keep the secret in it, and an ntfy topic, its first segment, is the password ("the topic is
    essentially a password", ntfy's docs)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    host = f"[{host}]" if ":" in host else host
    out = f"{parts.scheme.lower()}://{f'{MASK}@' if '@' in parts.netloc else ''}{host}{f':{port}' if port else ''}"
    if parts.path not in ("", "/"):
        out += f"/{MASK}"
    if parts.query:
        out += f"?{MASK}"
    return out


def redact_value(value: Any) -> Any:
    """A `[job] notify` value as an error may show it: its URLs redacted."""
    if isinstance(value, str):
        return redact(value)
    return [redact(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as it may be written down: each --notify URL redacted."""
    out, after = [], False
    for a in argv:
        if after:
            out.append(redact(a))
        elif a.startswith("--notify="):
            out.append("--notify=" + redact(a.split("=", 1)[1]))
        else:
            out.append(a)
        after = a == "--notify"
    return out


# ---- the message --------------------------------------------------------------------------------

def night_body(state: RunState, paths: RunPaths, code: int, report: Path | None) -> dict:
    """The message at the night's end: the one line and the facts, from the record as it ended
    (the status is the ending's, whichever: the ladder's, a deadline's, a SLURM cut's)."""
    facts = _facts(state, paths)
    status, reason = state.status, state.reason
    delivered = state.delivered or {}
    model = delivered.get("model") or state.training_model
    epochs = (f"epochs {facts['epochs_done']}/{facts['epochs']}" if facts["epochs"] is not None else "no epoch")
    what = [f"{Path(str(model)).name} delivered" if delivered.get("model") else "no model delivered", epochs]
    if facts["map50_95"] is not None:
        what.append(f"mAP50-95 {facts['map50_95']:.3f}")
    if facts["lost_s"]:
        what.append(f"{_duration(facts['lost_s'])} lost to failures")
    line = f"{AGENT} on {socket.gethostname()}: run {state.run!r} {status}: {', '.join(what)}"
    if reason and status != Ev.COMPLETE:
        line += f" — {' '.join(str(reason).split())}"
    line = _cut(line)
    return {"text": line, "content": line, "event": "end", "run": state.run, "status": status, "reason": reason,
            "exit_code": code, "host": socket.gethostname(), "model": model, "delivered": bool(delivered.get("model")),
            "best": delivered.get("best"), "last": delivered.get("last"), **facts,
            "report": str(report) if report else None, "record": str(paths.root)}


def step_body(state: RunState, action: str, rung: str, to: str, kind: str, evidence: str, reason: str) -> dict:
    """The message at a step-down or retry (`[job] notify_on`): the night goes on."""
    did = f"stepped down from rung {rung} to {to}" if action == Ev.STEP_DOWN else f"retries rung {rung}"
    line = _cut(f"{AGENT} on {socket.gethostname()}: run {state.run!r} {did} after {kind}: "
                f"{' '.join(str(evidence).split())}")
    return {"text": line, "content": line, "event": action, "run": state.run, "status": state.status,
            "host": socket.gethostname(), "rung": rung, "to": to, "kind": kind, "evidence": evidence,
            "reason": reason, "attempts": state.attempts}


def _facts(state: RunState, paths: RunPaths) -> dict:
    """Epochs from the record; mAP and time lost from the report's accounting where it reads (a
    record it cannot read costs the message those facts, nothing more)."""
    model = (state.delivered or {}).get("model") or state.training_model
    m = state.model(model)
    out = {"epochs_done": m.epochs_done if m else None, "epochs": m.epochs if m else None,
           "map50_95": None, "map50": None, "lost_s": None, "wall_s": None}
    try:
        from . import accounting
        rec = accounting.load(paths.root)
        _, _, best, _ = accounting.final_metrics(rec)
        out.update(lost_s=round(rec.lost_s, 1), wall_s=round(rec.wall_s, 1))
        if best:
            out.update(map50_95=best.get(accounting.MAP50_95), map50=best.get(accounting.MAP50))
    except Exception:  # noqa: BLE001 - the facts are a courtesy; the message goes without them
        pass
    return out


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def _cut(line: str) -> str:
    return line if len(line) <= TEXT_CHARS else line[:TEXT_CHARS - 1].rstrip() + "…"


# ---- sending ------------------------------------------------------------------------------------

def post(url: str, body: dict, timeout: float | None = None) -> str | None:
    """POST `body` as JSON; None when a 2xx answer came within `timeout` (TIMEOUT_S) in all, else why
    not, in a few words that never hold the URL."""
    timeout = TIMEOUT_S if timeout is None else timeout
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": AGENT}
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:  # urllib takes no userinfo in the URL: it goes as HTTP Basic auth (ntfy takes that)
        user = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    result: list[str | None] = []

    def send() -> None:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 (checked: http or https)
                answer.read(1 << 16)
                result.append(None if 200 <= answer.status < 300 else f"HTTP {answer.status}")
        except urllib.error.HTTPError as e:
            result.append(f"HTTP {e.code} {e.reason}".strip())
        except urllib.error.URLError as e:
            reason = e.reason
            result.append(_no_answer(timeout) if isinstance(reason, (socket.timeout, TimeoutError))
                          else _scrub(str(reason), url))
        except (socket.timeout, TimeoutError):
            result.append(_no_answer(timeout))
        except Exception as e:  # noqa: BLE001 - a message never fails the night
            result.append(_scrub(f"{type(e).__name__}: {e}", url))

    thread = threading.Thread(target=send, name="notify", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else _no_answer(timeout)


def _no_answer(timeout: float) -> str:
    return f"no answer within {timeout:g} s"


def _scrub(text: str, url: str) -> str:
    """An error's words without the URL or its parts (a library may quote them)."""
    parts = urllib.parse.urlsplit(url)
    for secret in sorted({url, parts.netloc, parts.path, parts.query, parts.username or "", parts.password or ""},
                         key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, MASK)
    return " ".join(text.split())[:200]


def send(urls: tuple[str, ...], body: dict, events: Events, say: Callable[[str], None],
         timeout: float | None = None) -> int:
    """Post `body` to each URL: each try is one `notify` event and one line said. Returns how
    many failed. Nothing here raises: a record that cannot be written loses the event, no more."""
    failed = 0
    for url in urls:
        t0 = time.monotonic()
        error = post(url, body, timeout)
        shown = redact(url)
        failed += error is not None
        try:
            events.append(Ev.NOTIFY, url=shown, about=body.get("event"), result="failed" if error else "sent",
                          error=error, seconds=round(time.monotonic() - t0, 2))
        except OSError:  # the record cannot be written (a full disk): said below all the same
            pass
        try:
            say(f"notify {shown}: failed ({error}); the night is not affected" if error
                else f"notify {shown}: sent")
        except Exception:  # noqa: BLE001
            pass
    return failed


def night_end(urls: tuple[str, ...], state: RunState, paths: RunPaths, code: int, events: Events,
              say: Callable[[str], None]) -> None:
    """The message at the night's end to each URL (none: nothing), the report written first so the
    path it names exists. Neither changes the exit code: each failure is one line said and, where
    the record takes it, one event."""
    if not urls:
        return
    report = None
    try:
        from . import report as report_mod  # matplotlib: only a night that sends a message draws here
        _, report = report_mod.write_report(paths.root)
    except Exception as e:  # noqa: BLE001 - the message goes without it
        say(f"report: not written ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the message goes "
            "without it")
    send(urls, night_body(state, paths, code, report), events, say)


def on_step(job, state: RunState, action: str, rung: str, to: str, failure, reason: str, events: Events,
            say: Callable[[str], None]) -> None:
    """A message at a step-down or retry, where the ladder's `[job] notify_on` asks for it."""
    if job.notify and action in job.notify_on:
        send(job.notify, step_body(state, action, rung, to, failure.kind, failure.evidence, reason), events, say)
