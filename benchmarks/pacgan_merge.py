"""One PacGAN Table 1 from the units the GPU sessions have finished (benchmarks/pacgan_gpu.py):
each unit's results.json is a run of some rows; this joins their trials into one table.

    python benchmarks/pacgan_merge.py                                   # docs/theory/pacgan-gpu/*/results.json
    python benchmarks/pacgan_merge.py --add units.tar.gz                # a GPU session's units, then the table
    python benchmarks/pacgan_merge.py --units DIR --out DIR
    python benchmarks/pacgan_merge.py --units docs/theory/pacgan-cpu --add-run build/X/out
                                        # a finished run (one CPU trial, say) joins the units

A row's trials can come from several units of different seeds (one CPU trial a session, `gankit
bench modes --protocol pacgan --seed S --trials 1`); the table then gives each row's number of trials.

Writes table.txt (PacGAN's layout, each row beside the published one), results.json (the rows and
every trial) and curves.png (each row's mean against updates) in --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from gankit.errors import ConfigError
from gankit.files import atomic_write, write_json
from gankit.theory import pacgan
from gankit.theory import pacgan_curves as curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", default="docs/theory/pacgan-gpu", help="folder of unit folders (default: %(default)s)")
    parser.add_argument("--out", default=None, help="where the table goes (default: --units)")
    parser.add_argument("--add", default=None, help="a GPU session's units.tar.gz: its units join --units first")
    parser.add_argument("--add-run", default=None, metavar="OUT",
                        help="a finished `gankit bench modes --protocol pacgan` run's --out folder: its results.json "
                             "joins --units first, as a unit named after its rows and seeds")
    args = parser.parse_args(argv)
    units, out = Path(args.units), Path(args.out or args.units)
    for flag, source, add in (("--add", args.add, add_units), ("--add-run", args.add_run, add_run)):
        if not source:
            continue
        try:
            added = add(Path(source), units)
        except (OSError, tarfile.TarError, ValueError) as e:
            print(f"pacgan_merge: {flag} {source}: {e}", file=sys.stderr)
            return 2
        print(f"added {', '.join(added)} to {units}")
    files = sorted(units.glob("*/results.json"))
    if not files:
        print(f"pacgan_merge: no {units}/*/results.json: add a GPU session's units first (--add units.tar.gz)", file=sys.stderr)
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


def add_units(archive: Path, units: Path) -> list[str]:
    """Unpack a units.tar.gz (benchmarks/pacgan_gpu.py) into units/, a folder per unit. Nothing is
    written unless every unit in it is new and holds a readable results.json: a unit already
    there is never replaced (move it away first to replace it)."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")  # no paths outside tmp, no links, no devices
        found = sorted(p for p in Path(tmp).iterdir() if p.is_dir())
        if not found:
            raise ValueError("no unit folders in it")
        for folder in found:
            if (units / folder.name).exists():
                raise ValueError(f"{units / folder.name} exists already; nothing was added")
            try:  # every unit whole before any is kept
                json.loads((folder / "results.json").read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{folder.name}/results.json: {e}; nothing was added") from None
        units.mkdir(parents=True, exist_ok=True)
        for folder in found:
            shutil.copytree(folder, units / folder.name)
    return [p.name for p in found]


def add_run(run: Path, units: Path) -> list[str]:
    """Copy a finished run's results.json to units/NAME/, NAME from its rows and seeds, such as
    "pack1-sat-grid25-seed1". A unit already there is never replaced."""
    if not (run / "results.json").is_file():
        raise ValueError("no results.json in it: give the --out folder of a finished run (one stopped early "
                         "has only checkpoints: run its command again to finish it)")
    try:
        record = json.loads((run / "results.json").read_text())
        trials = record["trial_results"]
    except (KeyError, TypeError):
        raise ValueError("its results.json holds no trial_results: give the --out folder of a finished "
                         "`gankit bench modes --protocol pacgan` run") from None
    name = run_name(trials)
    if (units / name).exists():
        raise ValueError(f"{units / name} exists already; nothing was added")
    tmp = units / f".{name}.partial"  # a copy cut off half way is never taken for a unit
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(run / "results.json", tmp / "results.json")
    tmp.rename(units / name)
    return [name]


def run_name(trials: list[dict]) -> str:
    return pacgan.unit_name({r["pack"] for r in trials}, {r.get("g_loss", "non-saturating") for r in trials},
                            {r["data"] for r in trials}, {r["seed"] for r in trials})


if __name__ == "__main__":
    raise SystemExit(main())
