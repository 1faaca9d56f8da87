"""One PacGAN Table 1 from the units the GPU sessions have finished (benchmarks/pacgan_gpu.py):
each unit's results.json is a run of some rows; this joins their trials into one table.

    python benchmarks/pacgan_merge.py                                   # docs/theory/pacgan-gpu/*/results.json
    python benchmarks/pacgan_merge.py --units DIR --out DIR

Writes table.txt (PacGAN's layout, each row beside the published one), results.json (the rows and
every trial) and curves.png (each row's mean against updates) in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gankit.errors import ConfigError
from gankit.files import atomic_write, write_json
from gankit.theory import pacgan
from gankit.theory import pacgan_curves as curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", default="docs/theory/pacgan-gpu", help="folder of unit folders (default: %(default)s)")
    parser.add_argument("--out", default=None, help="where the table goes (default: --units)")
    args = parser.parse_args(argv)
    units, out = Path(args.units), Path(args.out or args.units)
    files = sorted(units.glob("*/results.json"))
    if not files:
        print(f"pacgan_merge: no {units}/*/results.json: unpack a GPU session's units.tar.gz there first", file=sys.stderr)
        return 2
    try:
        record = pacgan.merge([json.loads(f.read_text()) for f in files], [str(f.parent.name) for f in files])
    except ConfigError as e:
        print(f"pacgan_merge: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    methods = [tuple(m) for m in record["methods"]]
    curves.figure(out / "curves.png", record["trial_results"], record["datasets"], methods, pacgan.PUBLISHED)
    text = pacgan.table(record)
    write_json(out / "results.json", {k: v for k, v in record.items() if k != "trial_results"})
    with atomic_write(out / "table.txt", suffix=".txt") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'table.txt'}, {out / 'results.json'} and {out / 'curves.png'} from {len(files)} units")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
