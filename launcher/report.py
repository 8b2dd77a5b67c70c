"""`report`: what happened in one run, from its record alone — `timeline.png` and `report.md`
written into `logs/<run>/` (docs/design.md, "The run record").

Reads only the run record: no torch, no Ultralytics, no network. `accounting` reads the record
and does the time accounting, `report_md` writes the Markdown, `timeline` draws the plot
(importing matplotlib only when it draws), so `import launcher.report` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import accounting, report_md, timeline
from .runlog import write_text_atomic


def write_report(root: Path) -> tuple[Path, Path]:
    """Write `timeline.png` and `report.md` into the run record at `root` (logs/<run>), each
    replaced atomically; returns their paths. A state.json with wrong types raises runlog's
    one-line BadInput before anything is written."""
    root = Path(root)
    rec = accounting.load(root)
    png, md = root / timeline.TIMELINE_NAME, root / report_md.REPORT_MD_NAME
    tmp = root / f".{timeline.TIMELINE_NAME}.{os.getpid()}.tmp"
    try:
        timeline.draw(rec, tmp)
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(md, report_md.markdown(rec), fsync=False)
    return png, md
