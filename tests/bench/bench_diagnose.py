"""How often `diagnose` names the kind a person would, on the real crash logs of tests/fixtures/logs.

INDEX.tsv's `split` column: `tuned` logs are the ones signatures were written for (tests/test_failures.py
holds every label); `heldout` logs were labelled before the classifier ever read them and no signature is
written for them, so their accuracy is the honest estimate of how `diagnose` does on a log nobody has seen.
Each log goes through `failures.classify` as `diagnose` calls it: the exit code only where INDEX gives one.
Run: python tests/bench/bench_diagnose.py [--all]   (--all also lists the tuned logs)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launcher import failures  # noqa: E402

LOGS = ROOT / "tests" / "fixtures" / "logs"


def main(argv: list[str]) -> None:
    with (LOGS / "INDEX.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for split in ("heldout", "tuned"):
        part = [r for r in rows if r["split"] == split]
        right = 0
        for r in part:
            code = int(r["exit_code"]) if r["exit_code"] else None
            found = failures.classify((LOGS / r["file"]).read_text(encoding="utf-8"), exit_code=code)
            got = found.kind if found else "none"
            right += got == r["kind"]
            if split == "heldout" or "--all" in argv:
                mark = "ok  " if got == r["kind"] else "MISS"
                print(f"{mark} {r['file']:<48} want {r['kind']:<12} got {got:<12} "
                      f"{(found.evidence if found else '')[:70]!r}")
        print(f"{split}: {right}/{len(part)} = {right / len(part):.0%}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
