"""PacGAN's table a few rows a GPU session (benchmarks/pacgan_gpu.py, benchmarks/pacgan_merge.py):
the plan takes the units not yet done that fit, in the table's order (the published rows, then
the saturating loss's); a table merged from runs of
some rows each is the table of one run of them all; runs that cannot be merged are refused."""

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

from gankit.errors import ConfigError
from gankit.theory import pacgan
from gankit.theory import pacgan_curves as curves

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("pacgan_gpu", ROOT / "benchmarks" / "pacgan_gpu.py")
pacgan_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pacgan_gpu)
spec = importlib.util.spec_from_file_location("pacgan_merge", ROOT / "benchmarks" / "pacgan_merge.py")
pacgan_merge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pacgan_merge)
spec = importlib.util.spec_from_file_location("pacgan_log_curves", ROOT / "benchmarks" / "pacgan_log_curves.py")
pacgan_log_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pacgan_log_curves)

# ms an update, of the shape the H200 measured on 2026-11-30: about 0.78 ms plus 12.6 us a pass
# of G, a pass per trial and pack (M); a batch of 20 trials per pack then costs 1.03-1.79 ms
NS, SAT = "non-saturating", "saturating"
VARIANTS = [(m, NS) for m in (1, 2, 3, 4)] + [(m, SAT) for m in (1, 2, 3, 4)]
ALL = {(m, g, d) for m, g in VARIANTS for d in pacgan.DATASETS}


def _timed(unit):
    m, losses, datasets = unit
    return 0.78 + 0.0126 * m * 10 * len(losses) * len(datasets)


def _plan(fit, done=()):
    units, timing = pacgan_gpu.plan(VARIANTS, set(done), fit, 400_000, _timed)
    return [pacgan_gpu.unit_name(u) for u in units], timing


def _done(*units):
    return {(m, g, d) for m, losses, datasets in units for g in losses for d in datasets}


def test_the_plan_takes_the_units_that_fit_in_the_tables_order():
    # the GAN's two losses in one batch: 1.284 ms, 565 s of 650; nothing else fits the 85 s left
    units, timing = _plan(650)
    assert units == ["pack1-ns-sat-ring8-grid25"]
    # timed: only what could still fit; a unit of no smaller M and no fewer trials than one that did
    # not fit is left untimed (PacGAN2's 40 trials after the GAN's 40; every later unit after
    # PacGAN2's 20 and 10 trials on one dataset)
    assert list(timing) == ["pack1-ns-sat-ring8-grid25", "pack2-ring8-grid25", "pack2-ring8"]
    # then PacGAN2: both losses 1.788 ms (787 s) do not fit, its published loss (1.284 ms) does
    gan = _done((1, (NS, SAT), pacgan.DATASETS))
    assert _plan(650, gan)[0] == ["pack2-ring8-grid25"]
    # PacGAN3 (1.536 ms on both datasets: 676 s) a dataset at a time (1.158 ms: 509 s)
    assert _plan(650, gan | _done((2, (NS,), pacgan.DATASETS)))[0] == ["pack3-ring8"]


def test_the_plan_skips_rows_done_and_runs_a_packs_missing_dataset_alone():
    done = ALL - {(3, NS, "grid25"), (4, NS, "ring8"), (4, NS, "grid25"), (1, SAT, "ring8")}
    assert _plan(650, done)[0] == ["pack3-grid25"]  # 509 s; PacGAN4 565 s alone, the saturating GAN's ring8 399 s
    assert _plan(1000, done)[0] == ["pack3-grid25", "pack1-sat-ring8"], "a later unit takes the time left"
    assert _plan(None, done)[0] == ["pack3-grid25", "pack4-ring8-grid25", "pack1-sat-ring8"], "no --fit: all left"
    assert _plan(650, ALL)[0] == []


def test_when_nothing_fits_the_first_unit_runs_as_far_as_it_goes(capsys):
    assert _plan(100)[0] == ["pack1-ns-sat-ring8-grid25"]
    assert "no unit fits in --fit 100 s: pack1-ns-sat-ring8-grid25" in capsys.readouterr().out


def test_only_runs_of_the_same_length_count_as_done(tmp_path, capsys):
    for name, iterations in (("a", 4), ("b", 6)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"iterations": iterations, "trial_results": [
            {"pack": 2, "g_loss": SAT, "data": "ring8"}, {"pack": 1, "data": "grid25"}]}))
    assert pacgan_gpu.done_rows(tmp_path, 4) == {(2, SAT, "ring8"), (1, NS, "grid25")}
    assert "b/results.json: 6 updates, not 4: not counted as done" in capsys.readouterr().out


def _run(tmp_path, name, packs, datasets=pacgan.DATASETS, **kw):
    return pacgan.run(tmp_path / name, seed=7, trials=2, packs=packs, datasets=datasets, iterations=4, jobs=1,
                      score_every=2, engine="batched", g_emas=(300.0,), **kw)


def test_a_table_merged_from_runs_of_some_rows_is_the_table_of_one_run_of_them_all(tmp_path):
    whole = _run(tmp_path, "whole", (1, 2), g_losses=(NS, SAT))
    parts = [_run(tmp_path, "gan", (1,)), _run(tmp_path, "ring", (2,), ("ring8",)),
             _run(tmp_path, "grid", (2,), ("grid25",)), _run(tmp_path, "sat", (1, 2), g_losses=(SAT,))]
    merged = pacgan.merge(parts, ["gan", "ring", "grid", "sat"])
    assert merged["rows"] == whole["rows"]
    assert pacgan.table(merged) == pacgan.table(whole)


def test_trials_of_other_seeds_join_their_row_and_each_row_says_how_many_it_holds(tmp_path):
    # a CPU session adds one trial of a row (--seed S --trials 1) to the trials so far
    two = _run(tmp_path, "two", (1, 2), ("grid25",))  # seeds 7 and 8
    one = pacgan.run(tmp_path / "one", seed=9, trials=1, packs=(1,), datasets=("grid25",), iterations=4, jobs=1,
                     score_every=2, engine="batched", g_emas=(300.0,))
    merged = pacgan.merge([two, one], ["two", "one"])
    gan = next(r for r in merged["rows"] if (r["pack"], r["g_ema"]) == (1, 0.0))
    trials = [r for r in two["trial_results"] + one["trial_results"] if (r["pack"], r["g_ema"]) == (1, 0.0)]
    assert gan["seeds"] == [7, 8, 9]
    assert gan["high_quality"]["values"] == [r["high_quality"] for r in trials]
    assert gan["high_quality"]["mean"] == pytest.approx(sum(r["high_quality"] for r in trials) / 3)
    assert merged["seed"] is None and merged["trials"] is None
    text = pacgan.table(merged)
    assert "mean +- standard error over each row's trials" in text
    assert "  GAN gankit, 3 trials " in text and "  PacGAN2 gankit, 2 trials " in text
    assert "over 2 trials" in pacgan.table(two) and "gankit, 2 trials" not in pacgan.table(two)


def test_a_saturating_row_is_paired_with_the_non_saturating_trials_of_its_seeds(tmp_path):
    # the non-saturating row holds seeds 7 and 8, the saturating one 8 and 9: seed 8 is the one pair
    ns = _run(tmp_path, "ns", (1,), ("grid25",))
    sat = pacgan.run(tmp_path / "sat", seed=8, trials=2, packs=(1,), datasets=("grid25",), iterations=4, jobs=1,
                     score_every=2, engine="batched", g_emas=(300.0,), g_losses=(SAT,))
    merged = pacgan.merge([ns, sat], ["ns", "sat"])
    by = {(r["g_loss"], r["seed"]): r for r in merged["trial_results"] if r["g_ema"] == 0.0}
    row = next(r for r in merged["rows"] if (r["g_loss"], r["g_ema"]) == (SAT, 0.0))
    assert row["seeds"] == [8, 9] and row["minus_non_saturating"]["seeds"] == [8]
    for k in pacgan.METRICS:
        assert row["minus_non_saturating"][k]["values"] == [by[(SAT, 8)][k] - by[(NS, 8)][k]]
    assert all("minus_non_saturating" not in r for r in merged["rows"] if r is not row)  # not G's, not an EMA's
    assert "    minus non-saturating, same seeds (1) " in pacgan.table(merged)
    assert "minus_non_saturating" not in next(r for r in sat["rows"] if r["g_ema"] == 0.0)  # no pair, no line
    assert "minus non-saturating" not in pacgan.table(sat)


def test_the_merge_script_writes_the_table_of_the_unit_folders(tmp_path, capsys):
    for name, packs in (("pack1-ring8-grid25", (1,)), ("pack2-ring8-grid25", (2,))):
        _run(tmp_path / "units", name, packs)
    assert pacgan_merge.main(["--units", str(tmp_path / "units"), "--out", str(tmp_path / "table")]) == 0
    text = (tmp_path / "table" / "table.txt").read_text()
    assert "GAN PacGAN Table 1" in text and "PacGAN2 PacGAN Table 1" in text
    assert json.loads((tmp_path / "table" / "results.json").read_text())["sources"] == \
        ["pack1-ring8-grid25", "pack2-ring8-grid25"]
    assert (tmp_path / "table" / "curves.png").stat().st_size > 0
    assert pacgan_merge.main(["--units", str(tmp_path / "nothing")]) == 2
    assert "add a GPU session's units first (--add units.tar.gz)" in capsys.readouterr().err


def test_a_finished_run_joins_the_units_under_its_rows_and_seed_once(tmp_path, capsys):
    units = tmp_path / "units"
    _run(units, "pack1-2-grid25-seeds7-8", (1, 2), ("grid25",))
    pacgan.run(tmp_path / "cpu" / "out", seed=9, trials=1, packs=(1,), datasets=("grid25",), iterations=4, jobs=1,
               score_every=2, engine="batched", g_emas=(300.0,), g_losses=(SAT,))
    assert pacgan_merge.main(["--units", str(units), "--add-run", str(tmp_path / "cpu" / "out")]) == 0
    assert (units / "pack1-sat-grid25-seed9" / "results.json").is_file()
    assert "GAN, saturating gankit, 1 trial " in (units / "table.txt").read_text()
    assert pacgan_merge.main(["--units", str(units), "--add-run", str(tmp_path / "cpu" / "out")]) == 2
    assert "pack1-sat-grid25-seed9 exists already; nothing was added" in capsys.readouterr().err
    assert pacgan_merge.main(["--units", str(units), "--add-run", str(tmp_path / "cpu")]) == 2
    assert f"--add-run {tmp_path / 'cpu'}: no results.json in it" in capsys.readouterr().err
    assert sorted(p.name for p in units.iterdir() if p.is_dir()) == ["pack1-2-grid25-seeds7-8", "pack1-sat-grid25-seed9"]


def test_runs_of_another_length_or_the_same_trials_twice_are_not_merged(tmp_path):
    gan = _run(tmp_path, "gan", (1,))
    longer = pacgan.run(tmp_path / "longer", seed=7, trials=2, packs=(2,), iterations=6, jobs=1, score_every=2,
                        engine="batched", g_emas=(300.0,))
    with pytest.raises(ConfigError, match=r"differ in iterations \(gan: 4, longer: 6\)"):
        pacgan.merge([gan, longer], ["gan", "longer"])
    with pytest.raises(ConfigError, match="again and gan both hold"):
        pacgan.merge([gan, gan], ["gan", "again"])


def test_a_packs_datasets_each_fit_alone_when_both_at_once_do_not():
    # a batch of both datasets slower than two of one each: 1,100 s at once, 440 s each alone
    def timed(unit):
        return 2.5 if len(unit[2]) == 2 else 1.0
    units, _ = pacgan_gpu.plan([(3, NS)], set(), 900, 400_000, timed)
    assert units == [(3, (NS,), ("ring8",)), (3, (NS,), ("grid25",))]
    assert pacgan_gpu.plan([(3, NS)], set(), 500, 400_000, timed)[0] == [(3, (NS,), ("ring8",))]


def test_the_next_call_follows_the_first_calls_plan_and_hands_back_the_finished_units(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / "pack1-ring8").mkdir(parents=True)
    (out / "pack1-ring8" / "results.json").write_text('{"iterations": 4}')  # finished in an earlier call: not run again
    (out / "timing.json").write_text(json.dumps({"plan": [[1, [NS], ["ring8"]], [2, [SAT], ["ring8"]]]}))
    monkeypatch.setenv("OUT", str(tmp_path / "back"))
    args = ["--run-only", "--device", "cpu", "--iterations", "4", "--score-every", "2", "--g-ema", "", "--out", str(out)]
    assert pacgan_gpu.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pack1-ring8", "pack2-sat-ring8", "timing.json"]
    record = json.loads((out / "pack2-sat-ring8" / "results.json").read_text())
    assert (record["packs"], record["g_losses"]) == ([2], [SAT])
    with tarfile.open(tmp_path / "back" / "pacgan" / "units.tar.gz") as tar:
        names = tar.getnames()
    assert "pack1-ring8/results.json" in names and "pack2-sat-ring8/curves.png" in names
    assert not any("checkpoints" in n for n in names)
    with pytest.raises(SystemExit, match="run once without --run-only first"):
        pacgan_gpu.main(["--run-only", "--device", "cpu", "--out", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="pack1-ring8 holds a run of 4 updates, this call asks for 6"):
        pacgan_gpu.main([*args[:4], "6", *args[5:]])


def test_a_runs_log_gives_back_each_rows_mean_at_every_scoring(tmp_path, capsys):
    """What comes back from a GPU run cut short is its log: the progress lines read back are the
    means of the trials' curves (to the printed digits), for every row, loss and EMA."""
    record = _run(tmp_path, "run", (1, 2), g_losses=(NS, SAT))
    log = tmp_path / "run.log"
    log.write_text(capsys.readouterr().out)
    points = curves.parse_lines(log.read_text().splitlines())
    rows = {(r["data"], r["pack"], r["g_loss"], r["g_ema"]) for r in record["trial_results"]}
    assert {(p["data"], p["pack"], p["g_loss"], p["g_ema"]) for p in points} == rows
    assert len(rows) == 16 and len(points) == 16 * 2  # 2 datasets x 2 packs x 2 losses x (G, EMA); scored at 2, 4
    for p in points:
        trials = [r for r in record["trial_results"] if (r["data"], r["pack"], r["g_loss"], r["g_ema"]) ==
                  (p["data"], p["pack"], p["g_loss"], p["g_ema"])]
        at = [next(q for q in r["curve"] if q["iteration"] == p["iteration"]) for r in trials]
        assert p["trials"] == len(trials) == 2
        for key, digits in (("modes", 0.05), ("high_quality", 0.05), ("reverse_kl", 0.005)):
            mean = sum(q[key] for q in at) / len(at)
            assert mean == p[key] or abs(mean - p[key]) <= digits + 1e-9, (p, key, mean)
    assert pacgan_log_curves.main([str(log), "--out", str(tmp_path / "curves")]) == 0
    means = json.loads((tmp_path / "curves" / "means.json").read_text())
    assert means["trials_per_mean"] == 2 and len(means["rows"]) == 16
    assert (tmp_path / "curves" / "curves.png").stat().st_size > 0
    assert pacgan_log_curves.main([str(tmp_path / "none.log"), "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert pacgan_log_curves.main([str(tmp_path / "empty.log"), "--out", str(tmp_path / "x")]) == 2
    assert "no progress lines of a pacgan run" in capsys.readouterr().err


def test_a_failing_stream_measurement_does_not_cost_the_plan(monkeypatch, capsys):
    """stream_check (two units' CUDA graphs on two streams) is a measurement for a later plan: on
    a GPU its failure is recorded and the plan goes on; on a CPU it is not run."""
    assert pacgan_gpu.stream_check("cpu") == {}

    def fail(device, precision):
        assert precision == "tf32"  # timed in the run's precision
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(pacgan_gpu, "stream_check", fail)
    monkeypatch.setattr(pacgan_gpu, "graph_check", lambda device: 0.0)
    monkeypatch.setattr(pacgan_gpu.torch.cuda, "get_device_name", lambda: "a stand-in GPU")
    report = pacgan_gpu.checks([(1, NS)], "tf32", "cuda", None, 400_000, set())
    assert report["streams"] == {"error": "RuntimeError: operation not permitted when stream is capturing"}
    assert report["plan"] == [[1, [NS], list(pacgan.DATASETS)]]
    assert "streams: not measured (RuntimeError" in capsys.readouterr().out


def test_a_sessions_units_join_the_table_and_never_replace_one_already_there(tmp_path, capsys):
    _run(tmp_path / "machine", "pack1-ring8-grid25", (1,))
    archive = tmp_path / "units.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("results.json", "table.txt"):
            tar.add(tmp_path / "machine" / "pack1-ring8-grid25" / name, arcname=f"pack1-ring8-grid25/{name}")
    units = tmp_path / "units"
    assert pacgan_merge.main(["--units", str(units), "--add", str(archive)]) == 0
    assert "added pack1-ring8-grid25" in capsys.readouterr().out
    assert (units / "table.txt").is_file() and (units / "pack1-ring8-grid25" / "results.json").is_file()
    before = (units / "pack1-ring8-grid25" / "results.json").read_bytes()
    assert pacgan_merge.main(["--units", str(units), "--add", str(archive)]) == 2
    assert "pack1-ring8-grid25 exists already; nothing was added" in capsys.readouterr().err
    assert (units / "pack1-ring8-grid25" / "results.json").read_bytes() == before
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(archive, arcname="../outside.tar.gz")
    assert pacgan_merge.main(["--units", str(units), "--add", str(evil)]) == 2
    assert not (tmp_path / "outside.tar.gz").exists()
    broken = tmp_path / "broken.tar.gz"
    (tmp_path / "pack2-ring8").mkdir()
    (tmp_path / "pack2-ring8" / "results.json").write_text("{cut off")
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(tmp_path / "pack2-ring8", arcname="pack2-ring8")
    assert pacgan_merge.main(["--units", str(units), "--add", str(broken)]) == 2
    assert "pack2-ring8/results.json: " in capsys.readouterr().err and not (units / "pack2-ring8").exists()
