"""The curves of a pacgan run that did not finish, from its log: when a GPU session's time runs
out mid-run, the checkpoints stay on the device machine and only the log comes back. Its progress
lines hold each row's mean over its trials at every scoring (no standard errors, no per-trial
values); this turns them into means.json and curves.png.

    python benchmarks/pacgan_log_curves.py LOG [LOG ...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gankit.theory import pacgan
from gankit.theory import pacgan_curves as curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="the run's logs, in the order they were written")
    parser.add_argument("--out", required=True, help="folder for means.json and curves.png")
    args = parser.parse_args(argv)
    missing = [log for log in args.logs if not Path(log).is_file()]
    if missing:
        print(f"pacgan_log_curves: no such log: {', '.join(missing)}", file=sys.stderr)
        return 2
    points = [p for log in args.logs for p in curves.parse_lines(Path(log).read_text().splitlines())]
    if not points:
        print(f"pacgan_log_curves: no progress lines of a pacgan run in {', '.join(args.logs)}", file=sys.stderr)
        return 2
    trials = {p["trials"] for p in points}
    if len(trials) > 1:
        print(f"pacgan_log_curves: the logs' rows are means of {sorted(trials)} trials: give the logs of one run",
              file=sys.stderr)
        return 2
    latest = {(p["data"], p["pack"], p["g_loss"], p["g_ema"], p["iteration"]): p for p in points}  # a later log wins
    rows: dict[tuple, list[dict]] = {}
    for (*row, _), p in sorted(latest.items(), key=lambda item: item[0][-1]):
        rows.setdefault(tuple(row), []).append({k: p[k] for k in ("iteration", *curves.METRICS)})
    results = [{"data": d, "pack": m, "g_loss": g, "g_ema": h, "curve": curve} for (d, m, g, h), curve in rows.items()]
    datasets, methods = pacgan.rows_of(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves.figure(out / "curves.png", results, datasets, methods, pacgan.PUBLISHED, means_of=trials.pop())
    (out / "means.json").write_text(json.dumps({"logs": args.logs, "trials_per_mean": points[0]["trials"],
                                                "rows": results}, indent=1) + "\n")
    last = max(p["iteration"] for p in points)
    print(f"{len(results)} rows, scored up to update {last:,}: wrote {out / 'means.json'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
