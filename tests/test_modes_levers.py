"""`gankit bench modes --protocol quick` with the other levers: packing (`--packs`) and the EMA
generator (`--g-ema`), every combination trained and scored, the EMA run scored from its EMA G."""

from __future__ import annotations

import json

import pytest
import torch

from gankit import checkpoint, cli
from gankit.sample import generate, load_generator
from gankit.theory import modes

PACKS = (1, 2)
HALF_LIFE = 1000.0  # images: 10 G steps of the 100-sample batch, a tenth of the 40-step run
LEVERS = dict(seed=0, seeds=2, ks=(1,), g_losses=("non-saturating",), datasets=("ring8",), iterations=40,
              packs=PACKS, g_emas=(0.0, HALF_LIFE))


@pytest.fixture(scope="module")
def lever_run(tmp_path_factory):
    """The tiny lever comparison, in one process, with the samples each run was scored on."""
    out = tmp_path_factory.mktemp("levers")
    scored: list[torch.Tensor] = []

    def recording(samples, distribution):
        scored.append(samples.clone())
        return real_mode_metrics(samples, distribution)

    real_mode_metrics = modes.mode_metrics
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modes, "mode_metrics", recording)
        record = modes.run(out, jobs=1, **LEVERS)
    return out, record, scored


@pytest.mark.slow  # eight 40-step runs: about 6 s
def test_every_lever_combination_is_a_row_of_runs_trained_with_its_levers(lever_run):
    out, record, _ = lever_run
    configs = [(r["pack"], r["g_ema"]) for r in record["rows"]]
    assert configs == [(1, 0.0), (1, HALF_LIFE), (2, 0.0), (2, HALF_LIFE)]
    assert all(r["seeds"] == [0, 1] for r in record["rows"])
    assert json.loads((out / "results.json").read_text())["rows"] == record["rows"]
    assert (record["packs"], record["g_emas"]) == (list(PACKS), [0.0, HALF_LIFE])
    for pack, g_ema in configs:
        for seed in (0, 1):
            run = out / "runs" / modes.run_name("ring8", 1, "non-saturating", pack, g_ema, seed)
            stored = json.loads((run / "config.json").read_text())["config"]
            assert (stored["pack"], stored["g_ema"], stored["seed"]) == (pack, g_ema, seed)
            saved = checkpoint.load(checkpoint.resolve(run))
            # D's first layer reads M two-dimensional samples at once; an EMA run saved its EMA G.
            first = next(v for name, v in saved["D"].items() if name.endswith("weight"))
            assert first.shape[1] == 2 * pack
            assert ("G_ema" in saved) == bool(g_ema)
    text = modes.table(record)
    for label in ("ring8 gankit k=1 ns M=1 ", "ring8 gankit k=1 ns M=1 ema", "ring8 gankit k=1 ns M=2 ",
                  "ring8 gankit k=1 ns M=2 ema"):
        assert label in text
    assert "ring8 GAN (PacGAN Table 1)" in text and (out / "modes.png").is_file()


@pytest.mark.slow  # shares the runs above
def test_an_ema_run_is_scored_from_its_ema_generator(lever_run):
    out, record, scored = lever_run
    order = [(pack, g_ema, seed) for pack in PACKS for g_ema in (0.0, HALF_LIFE) for seed in (0, 1)]
    assert len(scored) == len(order)
    for samples, (pack, g_ema, seed) in zip(scored, order, strict=True):
        run = out / "runs" / modes.run_name("ring8", 1, "non-saturating", pack, g_ema, seed)
        raw = generate(load_generator(run, "cpu", generator="raw")[0], modes.SAMPLES, seed, 2)
        if not g_ema:
            assert torch.equal(samples, raw)
            continue
        ema = generate(load_generator(run, "cpu", generator="ema")[0], modes.SAMPLES, seed, 2)
        assert torch.equal(samples, ema)
        assert not torch.allclose(samples, raw, atol=1e-3)  # the EMA G is a different generator


def test_the_default_table_is_unchanged_by_the_levers():
    row = {"data": "ring8", "k": 1, "g_loss": "saturating", "pack": 1, "g_ema": 0.0,
           **{m: {"mean": 1.0, "std": 0.0} for m in ("modes", "high_quality", "reverse_kl")}}
    text = modes.table({"rows": [row], "packs": [1], "g_emas": [0.0]})
    assert f"{'ring8 gankit k=1 sat':<34}{'1.0 +- 0.0':>14}" in text
    assert modes.run_name("ring8", 1, "saturating", 1, 0.0, 3) == "ring8-k1-sat-seed3"  # today's folders


def test_packs_that_do_not_divide_the_batch_are_refused(tmp_path, capsys):
    assert cli.main(["bench", "modes", "--packs", "1,3", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--packs 3" in err and "100" in err
    assert cli.main(["bench", "modes", "--g-ema", "-5", "--out", str(tmp_path)]) == 1
    assert "--g-ema" in capsys.readouterr().err
    assert cli.main(["bench", "modes", "--trials", "3", "--out", str(tmp_path)]) == 1
    assert "--trials: for --protocol pacgan only" in capsys.readouterr().err
    assert cli.main(["bench", "modes", "--protocol", "pacgan", "--seeds", "3", "--out", str(tmp_path)]) == 1
    assert "--seeds: for --protocol quick only" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything trained


def test_a_value_given_twice_runs_once(tmp_path):
    record = modes.run(tmp_path, seeds=1, ks=(1, 1), g_losses=("non-saturating",), datasets=("ring8",),
                       iterations=5, jobs=1, packs=(2, 2))
    assert [(r["k"], r["pack"]) for r in record["rows"]] == [(1, 2)]
    assert len(list((tmp_path / "runs").iterdir())) == 1
