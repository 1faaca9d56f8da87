"""The levers in --protocol pacgan. An EMA of G (--g-ema): each trial is scored from G and from an
EMA of G for each half-life, the same run; the batched engine's EMA is gankit.ema's, trial by
trial. G's loss (--g-loss): each its own trials; the batched engine's mixed losses are each
trial's simultaneous_step. Their rows sit beside the published ones in one table."""

import json

import pytest
import torch

from gankit import ema
from gankit.cli import main
from gankit.errors import ConfigError
from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb

SEEDS, DATAS, PACK = [3, 4, 5], ["ring8", "grid25", "ring8"], 2
HALF_LIVES = [300.0, 5_000.0]


def test_the_batched_emas_are_gankit_emas_update_of_each_trials_g_after_each_update():
    """Each trial's EMAs follow its own G by gankit.ema.update (G's training is checked against
    simultaneous_step in test_pacgan_batched.py)."""
    players = pb.initial_players(PACK, SEEDS)
    pb.add_emas(players, HALF_LIVES)
    adam = pb.make_adam(players)
    points, packed = pb.training_sets(DATAS, PACK, SEEDS, "cpu")
    g = torch.Generator().manual_seed(0)
    averages = [[ema.make_ema(pb.unstack(players, t)[0]) for _ in HALF_LIVES] for t in range(len(SEEDS))]
    for _ in range(3):
        real = pb.minibatch(points, packed, torch.randint(100_000, (3, 100), generator=g))
        pb.step(players, adam, real, torch.randn(3, PACK, 100, 2, generator=g))
        for t, mine in enumerate(averages):
            G = pb.unstack(players, t)[0]
            for average, h in zip(mine, HALF_LIVES, strict=True):
                ema.update(average, G, pacgan.ema_beta(h))
    for t, mine in enumerate(averages):
        for e, average in enumerate(mine):
            ours, _ = pb.unstack(players.ema_players(e), t)
            for k, theirs in average.state_dict().items():
                if theirs.dtype.is_floating_point:
                    torch.testing.assert_close(ours.state_dict()[k], theirs, rtol=1e-6, atol=1e-9, msg=k)
    live, short, long = players.g_params(), *players.emas
    assert not torch.equal(short[0], live[0]) and not torch.equal(long[0], short[0])  # each lags G its own way
    assert (long[0] - live[0]).abs().sum() > (short[0] - live[0]).abs().sum()  # the longer memory lags more
    assert pacgan.ema_beta(100.0) == 0.5 and pacgan.ema_beta(0.0) == 0.0  # 100 examples an update


def test_each_trial_is_scored_from_g_and_from_each_ema_of_the_same_run():
    plain = pb.run_batch(["ring8", "grid25"], 1, [0, 1], 20, "cpu", snapshots=True)
    both = pb.run_batch(["ring8", "grid25"], 1, [0, 1], 20, "cpu", snapshots=True, g_emas=(2_000.0,))
    assert [(r["data"], r["g_ema"]) for r in both] == [("ring8", 0.0), ("grid25", 0.0), ("ring8", 2000.0), ("grid25", 2000.0)]
    for g, e, p in zip(both[:2], both[2:], plain, strict=True):
        assert g["_samples"].tolist() == p["_samples"].tolist()  # the EMA does not change G's training
        assert (g["loss_d"], g["seed"]) == (e["loss_d"], e["seed"])  # one run, two scorers
        assert e["_samples"].tolist() != g["_samples"].tolist()  # scored from its EMA
        assert [p["iteration"] for p in e["curve"]] == [p["iteration"] for p in g["curve"]]
        assert [p["iteration"] for p in e["_snapshots"]] == [1, 2, 10, 20]
    looped = pacgan.trial("ring8", 1, 1, 8, g_emas=(2_000.0,))
    assert [r["g_ema"] for r in looped] == [0.0, 2_000.0]
    assert looped[0]["_samples"].tolist() == pacgan.trial("ring8", 1, 1, 8)[0]["_samples"].tolist()
    assert looped[1]["_samples"].tolist() != looped[0]["_samples"].tolist()
    with pytest.raises(ValueError, match="positive and finite"):
        pb.run_batch(["ring8"], 1, [0], 5, "cpu", g_emas=(0.0,))


def test_a_stopped_ema_batch_continues_to_the_uninterrupted_results(tmp_path, monkeypatch):
    args = (["ring8", "grid25"], 1, [0, 1], 20, "cpu")
    straight = pb.run_batch(*args, g_emas=(500.0,))
    now = [1000.0]
    monkeypatch.setattr(pb.time, "time", lambda: now.__setitem__(0, now[0] + 1) or now[0])
    path = str(tmp_path / "pack1-0.pt")
    assert pb.run_batch(*args, checkpoint=path, deadline=1008, g_emas=(500.0,)) is None
    resumed = pb.run_batch(*args, checkpoint=path, deadline=10_000, g_emas=(500.0,))
    for x, y in zip(straight, resumed, strict=True):
        assert x["_samples"].tolist() == y["_samples"].tolist() and x["curve"] == y["curve"]
    with pytest.raises(ConfigError, match="belongs to another command.*g_emas"):
        pb.run_batch(*args, checkpoint=path)


def test_bench_modes_puts_ema_rows_beside_the_published_ones(tmp_path, capsys):
    argv = ["bench", "modes", "--protocol", "pacgan", "--iterations", "10", "--trials", "2", "--packs", "1",
            "--g-ema", "0,5000,5000", "--datasets", "ring8", "--jobs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["g_emas"] == [5000.0]  # G itself is always scored; a value given twice runs once
    assert [(r["g_ema"], r["published"] is not None) for r in record["rows"]] == [(0.0, True), (5000.0, False)]
    assert sorted((r["g_ema"], r["seed"]) for r in record["trial_results"]) == [(0.0, 0), (0.0, 1), (5000.0, 0), (5000.0, 1)]
    by = {(r["g_ema"], r["seed"]): r for r in record["trial_results"]}
    ema_row = record["rows"][1]
    assert ema_row["paired"]["high_quality"]["values"] == \
        [by[(5000.0, s)]["high_quality"] - by[(0.0, s)]["high_quality"] for s in (0, 1)]  # the same trials
    assert "paired" not in record["rows"][0]
    table = (tmp_path / "table.txt").read_text()
    assert "minus G, same trials" in table
    assert "GAN + EMA 5,000 gankit" in table and "GAN + EMA 5,000 PacGAN" not in table
    assert "ring8 GAN + EMA 5,000, mean of 2" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--g-ema must list finite half-lives >= 0"):
        pacgan.run(tmp_path / "x", trials=1, packs=(1,), datasets=("ring8",), iterations=5, jobs=1, g_emas=(-1.0,))


class NoStep:
    """An optimiser that leaves the parameters alone: simultaneous_step's gradients stay readable."""

    def step(self):
        pass


def test_trials_of_mixed_g_losses_get_simultaneous_steps_gradients_of_their_own_loss():
    """Losses and G's gradients of one update, trial by trial (gradients, not parameters after
    Adam: Adam's first steps are about lr * sign(g), so a rounding-sized difference in a gradient
    near 0 moves a weight by 2 lr, and threads change the rounding)."""
    losses = ["saturating", "non-saturating", "saturating"]
    players = pb.initial_players(PACK, SEEDS)
    pb.set_losses(players, losses)
    points, packed = pb.training_sets(DATAS, PACK, SEEDS, "cpu")
    g = torch.Generator().manual_seed(1)
    real, zs = pb.minibatch(points, packed, torch.randint(100_000, (3, 100), generator=g)), torch.randn(3, PACK, 100, 2, generator=g)
    _, ours_g, _, grads_g = pb.gradients(players, real, zs)
    for t, (seed, loss) in enumerate(zip(SEEDS, losses, strict=True)):
        torch.manual_seed(seed)
        G, D = pacgan.build_players(PACK)
        _, loss_g = pacgan.simultaneous_step(G, D, NoStep(), NoStep(), real[t], list(zs[t]), loss)
        torch.testing.assert_close(ours_g[t], loss_g, rtol=1e-5, atol=1e-6)
        assert (loss_g < 0) == (loss == "saturating")  # log(1 - D) < 0 < -log D
        theirs = [m.weight.grad for m in G.modules() if isinstance(m, torch.nn.Linear)]  # (out, in); ours (T, in, out)
        for i, (mine, their) in enumerate(zip(grads_g[:5], theirs, strict=True)):
            torch.testing.assert_close(mine[t], their.t(), rtol=1e-4, atol=1e-7, msg=f"G layer {i}")
    with pytest.raises(ValueError, match="one generator loss"):
        pb.set_losses(players, ["hinge"] * 3)


def test_bench_modes_puts_each_g_loss_in_its_own_rows(tmp_path, capsys):
    argv = ["bench", "modes", "--protocol", "pacgan", "--iterations", "6", "--trials", "1", "--packs", "1",
            "--g-loss", "non-saturating,saturating", "--datasets", "ring8", "--jobs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["g_losses"] == ["non-saturating", "saturating"]
    assert [(r["g_loss"], r["published"] is not None) for r in record["rows"]] == \
        [("non-saturating", True), ("saturating", False)]
    losses = {r["g_loss"]: r["loss_g"] for r in record["trial_results"]}
    assert losses["saturating"] < 0 < losses["non-saturating"]  # each trained on its own loss
    assert "GAN, saturating gankit" in (tmp_path / "table.txt").read_text()
    assert main([*argv[:-2], "--k", "5", "--out", str(tmp_path / "k")]) == 1
    assert "--k: for --protocol quick only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--g-loss must list non-saturating or saturating"):
        pacgan.run(tmp_path / "x", trials=1, packs=(1,), datasets=("ring8",), iterations=5, jobs=1, g_losses=("hinge",))
