"""Scores along the way in --protocol pacgan (theory/pacgan_curves.py, --score-every): each trial's
curve is the mode metrics of its own samples at the scored updates, survives a stop and continue,
and is drawn in curves.png; a progress line says where each batch is."""

import json

import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.errors import ConfigError
from gankit.metrics.toy import mode_metrics
from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb
from gankit.theory import pacgan_curves as curves


def _final(r: dict) -> dict:
    return {k: float(r[k]) for k in curves.METRICS}


def _scores(point: dict) -> dict:
    return {k: point[k] for k in curves.METRICS}


def test_a_batchs_curve_is_its_own_scores_at_every_scored_update(capsys):
    results = pb.run_batch(["ring8", "grid25"], 2, [0, 1], 20, "cpu", snapshots=True, score_every=10, name="pack2-0")
    for r in results:
        assert [p["iteration"] for p in r["curve"]] == [10, 20]
        assert _scores(r["curve"][-1]) == _final(r)
        assert (r["curve"][-1]["loss_d"], r["curve"][-1]["loss_g"]) == (r["loss_d"], r["loss_g"])  # the last update's
        shot = next(s for s in r["_snapshots"] if s["iteration"] == 10)  # the samples kept at 10, scored anew
        again = mode_metrics(torch.from_numpy(shot["samples"]), pacgan.PACGAN_TOYS[r["data"]])
        assert _scores(r["curve"][0]) == {k: float(again[k]) for k in curves.METRICS}
    assert results[0]["curve"] != results[1]["curve"]  # each trial its own
    out = capsys.readouterr().out
    assert "pack2-0: update 10 of 20 (50%)" in out and "pack2-0: update 20 of 20 (100%)" in out
    assert "ring8 PacGAN2, mean of 1:" in out and "grid25 PacGAN2, mean of 1:" in out


def test_the_loop_engine_keeps_the_same_curve(capsys):
    [r] = pacgan.trial("grid25", 1, 0, 12, score_every=5)
    assert [p["iteration"] for p in r["curve"]] == [5, 10, 12]
    assert _scores(r["curve"][-1]) == _final(r)
    assert (r["curve"][-1]["loss_d"], r["curve"][-1]["loss_g"]) == (r["loss_d"], r["loss_g"])
    assert "grid25 GAN, seed 0: update 5 of 12" in capsys.readouterr().out


def test_an_emas_curve_has_its_trials_losses_and_the_figure_a_panel_for_ds(tmp_path):
    # D's loss at the scored update, log 4 where D = 1/2 everywhere: an EMA of G is not trained, so
    # its view of the trial carries the trial's losses (G's and D's) beside its own scores
    g, average = pb.run_batch(["grid25"], 1, [0], 12, score_every=6, g_emas=(300.0,))
    assert [p["iteration"] for p in average["curve"]] == [6, 12]
    assert [(p["loss_d"], p["loss_g"]) for p in average["curve"]] == [(p["loss_d"], p["loss_g"]) for p in g["curve"]]
    assert g["curve"][0]["loss_d"] != g["curve"][1]["loss_d"]
    methods = [(1, "non-saturating", 0.0), (1, "non-saturating", 300.0)]
    curves.figure(tmp_path / "with.png", [g, average], ["grid25"], methods, pacgan.PUBLISHED)
    older = [{**r, "curve": [_scores(p) | {"iteration": p["iteration"]} for p in r["curve"]]} for r in (g, average)]
    curves.figure(tmp_path / "without.png", older, ["grid25"], methods, pacgan.PUBLISHED)
    curves.figure(tmp_path / "mixed.png", [g, older[0]], ["grid25"], methods[:1], pacgan.PUBLISHED)
    with Image.open(tmp_path / "with.png") as a, Image.open(tmp_path / "without.png") as b, \
            Image.open(tmp_path / "mixed.png") as mixed:
        assert a.width > b.width * 1.2 and a.height == b.height  # a fourth panel, for runs that recorded it
        assert mixed.size == a.size  # also when older trials of the row did not: D's loss from those that did


def test_the_progress_line_counts_this_processs_updates_only(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(curves.time, "perf_counter", lambda: now[0])
    toys = [pacgan.PACGAN_TOYS["ring8"]] * 2
    watch = curves.Watch("pack1-0", ["ring8 GAN", "ring8 GAN"], toys, 100, 1000)
    watch.start(400)  # continued from a checkpoint at update 400
    now[0] = 160.0  # 60 s for 200 updates: 0.3 s an update, 400 to go
    scores = [{"modes": 6.0, "high_quality": 90.0, "reverse_kl": 0.25},
              {"modes": 7.0, "high_quality": 80.0, "reverse_kl": float("inf")}]
    line = watch.line(600, scores)
    assert "pack1-0: update 600 of 1,000 (60%), 60 s, about 120 s to go" in line
    assert "ring8 GAN, mean of 2: 6.5 modes, 85.0% high quality, reverse KL inf" in line
    assert watch.due(600) and not watch.due(650) and watch.due(1000)
    with pytest.raises(ValueError, match="positive number of updates"):
        curves.Watch("b", [], [], 0, 10)


def test_bench_modes_writes_the_curves_and_refuses_a_bad_score_every(tmp_path, capsys):
    argv = ["bench", "modes", "--protocol", "pacgan", "--iterations", "20", "--trials", "2", "--packs", "1,2",
            "--datasets", "ring8", "--jobs", "1", "--score-every", "10", "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["score_every"] == 10
    assert all([p["iteration"] for p in r["curve"]] == [10, 20] for r in record["trial_results"])
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    with pytest.raises(ConfigError, match="--score-every must be a positive integer, got 0"):
        pacgan.run(tmp_path / "x", trials=1, packs=(1,), datasets=("ring8",), iterations=5, jobs=1, score_every=0)
    assert main(["bench", "modes", "--score-every", "5", "--out", str(tmp_path / "q")]) == 1
    assert "--score-every: for --protocol pacgan only" in capsys.readouterr().err


def test_a_checkpoint_of_another_score_every_is_refused(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(pb.time, "time", lambda: now.__setitem__(0, now[0] + 1) or now[0])
    path = tmp_path / "pack1-0.pt"
    assert pb.run_batch(["ring8"], 1, [0], 30, "cpu", checkpoint=str(path), deadline=1005, score_every=5) is None
    with pytest.raises(ConfigError, match="belongs to another command.*score_every 5"):
        pb.run_batch(["ring8"], 1, [0], 30, "cpu", checkpoint=str(path), score_every=10)
