"""The batched-trials engine of --protocol pacgan (theory/pacgan_batched.py): T trials as stacked
tensors train exactly as T runs of pacgan.simultaneous_step on the unbatched modules would."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankit.cli import main
from gankit.errors import ConfigError
from gankit.fastpath import GRAPH_WARMUP
from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb

DATAS, SEEDS, PACK = ["ring8", "grid25", "ring8"], [3, 4, 5], 2


class NoStep:
    """An optimiser that leaves the parameters alone: simultaneous_step's gradients stay readable."""

    def step(self):
        pass


def _state(G, D) -> dict[str, torch.Tensor]:
    return {k: v for k, v in itertools.chain(G.state_dict().items(), D.state_dict().items())
            if v.dtype.is_floating_point}


def _unbatched(pack, seeds):
    pairs = []
    for seed in seeds:
        torch.manual_seed(seed)
        pairs.append(pacgan.build_players(pack))
    return pairs


def _inputs(steps, seed=0):
    """Per update: real (T, P*M, 2) drawn from the trials' own training sets, as trial() packs
    them, and noise zs (T, M, P, 2)."""
    points, packed = pb.training_sets(DATAS, PACK, SEEDS, "cpu")
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        rows = torch.randint(pacgan.SETUP["dataset_size"], (len(SEEDS), 100), generator=g)  # (T, P)
        real = pb.minibatch(points, packed, rows)
        for t in range(len(SEEDS)):  # trial()'s own indexing: points[packed[rows].flatten()]
            assert torch.equal(real[t], points[t][packed[t][rows[t]].flatten()])
        out.append((real, torch.randn(len(SEEDS), PACK, 100, 2, generator=g)))
    return out


def test_initial_weights_and_training_sets_are_the_loop_engines():
    players = pb.initial_players(PACK, SEEDS)
    for (G, D), t in zip(_unbatched(PACK, SEEDS), range(len(SEEDS)), strict=True):
        ours, theirs = _state(*pb.unstack(players, t)), _state(G, D)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    points, packed = pb.training_sets(DATAS, PACK, SEEDS, "cpu")
    assert points.shape == (3, 100_000, 2) and packed.shape == (3, 100_000, PACK)
    for t, (data, seed) in enumerate(zip(DATAS, SEEDS, strict=True)):  # trial()'s draws, in its order
        rng = torch.Generator().manual_seed(seed)
        assert torch.equal(points[t], pacgan.PACGAN_TOYS[data].sample(100_000, rng))
        assert torch.equal(packed[t], torch.randint(100_000, (100_000, PACK), generator=rng))


def test_losses_and_gradients_are_each_trials_own():
    """The gradient of the summed losses, trial by trial, is simultaneous_step's (not 1/T of it)."""
    players = pb.initial_players(PACK, SEEDS)
    (real, zs), = _inputs(1)
    loss_d, loss_g, grads_d, grads_g = pb.gradients(players, real, zs)
    stacked = pb.Players(g_weights=list(grads_g[:5]), g_bias=grads_g[5], bn_scale=list(grads_g[6:10]),
                         bn_shift=list(grads_g[10:14]), bn_mean=players.bn_mean, bn_var=players.bn_var,
                         d_weights=list(grads_d[:4]), d_biases=list(grads_d[4:]), pack=PACK,
                         packs=players.packs)  # the gradients
    for t, (G, D) in enumerate(_unbatched(PACK, SEEDS)):
        ld, lg = pacgan.simultaneous_step(G, D, NoStep(), NoStep(), real[t], list(zs[t]))
        torch.testing.assert_close(loss_d[t], ld, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss_g[t], lg, rtol=1e-5, atol=1e-6)
        for p in itertools.chain(G.parameters(), D.parameters()):  # the gradients, laid out as the weights
            p.data = p.grad
        ours, theirs = _state(*pb.unstack(stacked, t)), _state(G, D)
        for k in theirs:
            if "running" not in k:
                torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-7, msg=k)


def test_three_batched_updates_equal_three_simultaneous_steps():
    players = pb.initial_players(PACK, SEEDS)
    adam = pb.make_adam(players)
    inputs = _inputs(3)
    for real, zs in inputs:
        pb.step(players, adam, real, zs)
    s = pacgan.SETUP
    for t, (G, D) in enumerate(_unbatched(PACK, SEEDS)):
        start = {k: v.clone() for k, v in _state(G, D).items()}
        opt_G = torch.optim.Adam(G.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
        opt_D = torch.optim.Adam(D.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
        for real, zs in inputs:
            pacgan.simultaneous_step(G, D, opt_G, opt_D, real[t], list(zs[t]))
        ours, theirs = _state(*pb.unstack(players, t)), _state(G, D)
        for k in theirs:
            assert not torch.equal(theirs[k], start[k]), f"{k} did not train"  # bn scale, running stats too
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-6, msg=k)


def test_batch_norm_is_nn_batchnorm1d_per_trial_and_pass():
    T, M, P, C = 2, 3, 50, 400
    players = pb.initial_players(1, [0, 1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        players.bn_scale[0].copy_(1 + 0.3 * torch.randn(T, C, generator=g))
        players.bn_shift[0].copy_(0.3 * torch.randn(T, C, generator=g))
    bns = []
    for t in range(T):
        bn = torch.nn.BatchNorm1d(C, pacgan.SETUP["bn_eps"], pacgan.SETUP["bn_momentum"])
        bn.weight.data.copy_(players.bn_scale[0][t])
        bn.bias.data.copy_(players.bn_shift[0][t])
        bns.append(bn)
    for _ in range(3):  # three updates of M passes each
        x = 2 + 3 * torch.randn(T, M, P, C, generator=g)
        y = pb.batch_norm(players, 0, x)
        for t, m in itertools.product(range(T), range(M)):  # pass after pass, as G's M calls
            torch.testing.assert_close(y[t, m], bns[t](x[t, m]), rtol=1e-5, atol=1e-5)
    for t in range(T):
        torch.testing.assert_close(players.bn_mean[0][t], bns[t].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(players.bn_var[0][t], bns[t].running_var, rtol=1e-5, atol=1e-6)
    x = 2 + 3 * torch.randn(T, 1, P, C, generator=g)
    players.training = False
    y = pb.batch_norm(players, 0, x)
    for t in range(T):
        torch.testing.assert_close(y[t, 0], bns[t].eval()(x[t, 0]), rtol=1e-5, atol=1e-5)


def test_run_batch_returns_what_trial_returns(monkeypatch):
    zs, theirs = [], []
    sample, samples = pb.sample, pacgan._samples
    monkeypatch.setattr(pb, "sample", lambda players, z: zs.append(z) or sample(players, z))
    monkeypatch.setattr(pacgan, "_samples", lambda G, z: theirs.append(z) or samples(G, z))
    results = pb.run_batch(["ring8", "grid25"], 2, [0, 1], 50, "cpu", snapshots=True)
    keys = set(pacgan.trial("ring8", 2, 1, 1)[0].keys())
    assert torch.equal(zs[-1][1], theirs[-1])  # the scoring z of seed 1 is trial()'s
    assert [(r["data"], r["seed"], r["pack"]) for r in results] == [("ring8", 0, 2), ("grid25", 1, 2)]
    for r, most in zip(results, (8, 25), strict=True):
        assert set(r) == keys and r["iterations"] == 50 and r["device"] == "cpu"
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("loss_d", "loss_g", "seconds"))
        assert 0 <= r["modes"] <= most and 0 <= r["high_quality"] <= 100 and r["n_samples"] == 2500
        assert r["_samples"].shape == (2500, 2)
        assert [s["iteration"] for s in r["_snapshots"]] == [1, 5, 25, 50]
        assert r["_snapshots"][-1]["samples"].tolist() == r["_samples"].tolist()
    assert results[0]["_samples"].tolist() != results[1]["_samples"].tolist()


def test_bench_modes_batched_end_to_end(tmp_path):
    argv = ["bench", "modes", "--protocol", "pacgan", "--engine", "batched", "--iterations", "30",
            "--trials", "2", "--packs", "1,2", "--datasets", "ring8", "--out", str(tmp_path)]
    assert main(argv) == 0  # the default --jobs: 2 processes on a 2-core machine
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["engine"] == "batched"
    assert [(r["pack"], r["seeds"]) for r in record["rows"]] == [(1, [0, 1]), (2, [0, 1])]
    assert [(r["pack"], r["seed"]) for r in record["trial_results"]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in record["trial_results"]:  # every trial's scores along the way, without the samples
        assert [shot["iteration"] for shot in r["snapshots"]] == [1, 3, 15, 30]
        assert r["snapshots"][-1]["modes"] == r["modes"] and "samples" not in r["snapshots"][-1]
    assert "PacGAN2 gankit" in (tmp_path / "table.txt").read_text()
    assert (tmp_path / "collapse.png").is_file()
    loop = ["bench", "modes", "--protocol", "pacgan", "--engine", "loop", "--iterations", "2", "--trials", "1",
            "--packs", "1", "--datasets", "ring8", "--jobs", "1", "--out", str(tmp_path / "loop")]
    assert main(loop) == 0
    assert json.loads((tmp_path / "loop" / "results.json").read_text())["engine"] == "loop"


def test_engine_choice_and_bad_engine_errors(tmp_path, capsys):
    assert [pacgan.choose_engine(e, d) for e, d in (("auto", "cuda"), ("auto", "cpu"), ("batched", "cpu"),
                                                    ("loop", "cuda"))] == ["batched", "batched", "batched", "loop"]
    with pytest.raises(ConfigError, match=r"--engine must be auto, batched or loop; got 'fast'"):
        pacgan.run(tmp_path, trials=1, packs=(1,), datasets=("ring8",), iterations=1, jobs=1, engine="fast")
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "modes", "--protocol", "pacgan", "--engine", "fast", "--out", str(tmp_path)])
    assert exit_.value.code == 1 and "--engine: invalid choice: 'fast'" in capsys.readouterr().err
    assert main(["bench", "modes", "--engine", "batched", "--out", str(tmp_path)]) == 1  # quick has none
    err = capsys.readouterr().err
    assert "--engine" in err and "--protocol pacgan only" in err
    assert not (tmp_path / "results.json").exists()


class ReplayingRunner:
    """A CPU stand-in for fastpath.GraphedIteration's contract (its own tests, with fakes of
    torch.cuda, are in tests/test_speed.py): GRAPH_WARMUP calls run the iteration; then it keeps
    static copies of the inputs, and each call copies its inputs into them and runs the iteration
    on the copies, as a replay of the captured kernels does, into a static output."""

    def __init__(self, iteration, optimizers, on_fallback):
        self.iteration, self.optimizers, self.calls = iteration, optimizers, 0
        self.static, self.out = None, None

    @property
    def in_use(self) -> bool:
        return self.static is not None

    def __call__(self, reals, noises, measure=True):
        self.calls += 1
        if self.calls <= GRAPH_WARMUP:
            return self.iteration(reals, noises, True)
        if self.static is None:
            self.static = ([x.clone() for x in reals], [z.clone() for z in noises])
        for buffer, x in zip(self.static[0] + self.static[1], reals + noises, strict=True):
            buffer.copy_(x)
        out = self.iteration(*self.static, True)
        self.out = out if self.out is None else self.out.copy_(out)
        return self.out.clone()


def test_the_graphed_update_trains_like_the_eager_one_on_each_updates_own_inputs():
    """Update(graph=True) hands the runner one real and one noise tensor per update and reads the
    (2, T) losses back: with the stand-in runner, GRAPH_WARMUP direct calls and then calls on the
    static copies, the parameters and losses end equal to eager updates' (a replay on stale
    inputs, or the two losses swapped, would not)."""
    steps = GRAPH_WARMUP + 3
    inputs = _inputs(steps)
    ends = []
    for graph in (False, True):
        players = pb.initial_players(PACK, SEEDS)
        pb.add_emas(players, [1_000.0])  # G's EMA is updated inside the iteration (the graph) too
        update = pb.Update(players, graph=graph, graphed=ReplayingRunner)
        losses = [tuple(t.clone() for t in update(real, zs)) for real, zs in inputs]
        assert update.captured == graph
        ends.append(([p.detach().clone() for p in players.d_params() + players.g_params() + players.emas[0]], losses))
    for a, b in zip(ends[0][0], ends[1][0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (da, ga), (db, gb) in zip(ends[0][1], ends[1][1], strict=True):
        torch.testing.assert_close(da, db, rtol=0, atol=0)
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)
    loss_d, loss_g, _, _ = pb.gradients(pb.initial_players(PACK, SEEDS), *inputs[0])  # the first update's
    torch.testing.assert_close(ends[1][1][0], (loss_d, loss_g), rtol=0, atol=0)  # (D, G), in that order


# --- stopping and continuing (--stop-after, theory/pacgan_checkpoint.py) -------------------------

def _clock(monkeypatch, start=1000.0):
    """time.time() in pacgan_batched advancing one second per call: the deadline check before
    each update is one call, so a deadline of start + n stops after about n updates."""
    now = [start]

    def tick():
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(pb.time, "time", tick)
    return start


def _same_results(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if not k.startswith("_") and k != "seconds"} == \
            {k: v for k, v in y.items() if not k.startswith("_") and k != "seconds"}
        assert x["_samples"].tolist() == y["_samples"].tolist()
        assert [s["samples"].tolist() for s in x["_snapshots"]] == [s["samples"].tolist() for s in y["_snapshots"]]


def test_a_stopped_batch_continues_to_the_results_of_an_uninterrupted_one(tmp_path, monkeypatch):
    args = (["ring8", "grid25"], 2, [0, 1], 30, "cpu", True)
    straight = pb.run_batch(*args)
    path = tmp_path / "pack2-0.pt"
    start = _clock(monkeypatch)
    assert pb.run_batch(*args, checkpoint=str(path), deadline=start + 12) is None  # stopped mid-way
    state = torch.load(path, weights_only=True)  # tensors and plain values only
    assert 0 < state["it"] < 30 and not state["done"] and state["kept"]  # past the snapshot at 1 and 3
    resumed = pb.run_batch(*args, checkpoint=str(path), deadline=start + 10_000)
    _same_results(straight, resumed)
    assert torch.load(path, weights_only=True)["done"]
    _same_results(straight, pb.run_batch(*args, checkpoint=str(path)))  # a finished batch is read back


def test_a_checkpoint_of_another_command_or_a_broken_one_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "pack2-0.pt"
    start = _clock(monkeypatch)
    assert pb.run_batch(["ring8"], 2, [0], 30, "cpu", checkpoint=str(path), deadline=start + 5) is None
    with pytest.raises(ConfigError, match=f"{path} belongs to another command.*iterations 30"):
        pb.run_batch(["ring8"], 2, [0], 40, "cpu", checkpoint=str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"{path}: not a readable checkpoint.*delete it"):
        pb.run_batch(["ring8"], 2, [0], 30, "cpu", checkpoint=str(path))
    with pytest.raises(ValueError, match="deadline needs a checkpoint"):
        pb.run_batch(["ring8"], 2, [0], 30, "cpu", deadline=start)


def test_bench_modes_stop_after_exits_3_and_the_same_command_finishes(tmp_path, capsys):
    argv = ["bench", "modes", "--protocol", "pacgan", "--iterations", "20", "--trials", "1", "--packs", "1,2",
            "--datasets", "ring8", "--jobs", "1", "--out", str(tmp_path)]
    assert main([*argv, "--stop-after", "0.001"]) == 3
    assert "The same command continues" in capsys.readouterr().out
    assert not (tmp_path / "results.json").exists()
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["pack1-0.pt", "pack2-0.pt"]
    assert main(["bench", "modes", "--stop-after", "5", "--out", str(tmp_path / "q")]) == 1
    assert "--stop-after: for --protocol pacgan only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--stop-after: for the batched engine only .* drop --engine loop"):
        pacgan.run(tmp_path, trials=1, packs=(1,), datasets=("ring8",), iterations=1, jobs=1, engine="loop",
                   stop_after=5)
    with pytest.raises(ConfigError, match=r"--stop-after must be a positive number of seconds, got 0\.0$"):
        pacgan.run(tmp_path, trials=1, packs=(1,), datasets=("ring8",), iterations=1, jobs=1, stop_after=0.0)


# --- trials of different packs in one batch --------------------------------------------------------

def test_trials_of_mixed_packs_train_as_in_batches_of_their_own_m():
    """Trials of M = 1, 3 and 2 in one batch (D padded to 6 inputs, G making 3 passes each), with
    junk in the columns and passes beyond a trial's own M: after three updates every trial equals
    three simultaneous_steps of its own modules on its own inputs, padding rows still zero."""
    packs, seeds, datas = [1, 3, 2], [3, 4, 5], ["ring8", "grid25", "ring8"]
    players = pb.initial_players(packs, seeds)
    assert players.pack == 3 and players.packs == packs
    adam = pb.make_adam(players)
    g = torch.Generator().manual_seed(0)
    points, packed = pb.training_sets(datas, packs, seeds, "cpu")
    own, mixed = [], []
    for _ in range(3):
        rows = torch.randint(pacgan.SETUP["dataset_size"], (3, 100), generator=g)
        real = pb.minibatch(points, packed, rows).view(3, 100, 3, 2)  # (T, P, M, 2); beyond M_t: point 0
        real = torch.where(torch.arange(3)[None, None, :, None] < torch.tensor(packs)[:, None, None, None],
                           real, torch.randn(real.shape, generator=g) * 7)  # junk where a trial has no point
        zs = torch.randn(3, 3, 100, 2, generator=g)
        mixed.append((real.reshape(3, 300, 2), zs))
        own.append([(real[t, :, :m].reshape(100 * m, 2), list(zs[t, :m])) for t, m in enumerate(packs)])
    for real, zs in mixed:
        pb.step(players, adam, real, zs)
    assert torch.equal(players.d_weights[0][0, 2:], torch.zeros(4, 1000))  # M = 1: rows 2-5 never moved
    assert torch.equal(players.d_weights[0][2, 4:], torch.zeros(2, 1000))
    s = pacgan.SETUP
    for t, (G, D) in enumerate(pair for m, seed in zip(packs, seeds, strict=True) for pair in _unbatched(m, [seed])):
        opt_G = torch.optim.Adam(G.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
        opt_D = torch.optim.Adam(D.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
        for step_inputs in own:
            pacgan.simultaneous_step(G, D, opt_G, opt_D, *step_inputs[t])
        ours, theirs = _state(*pb.unstack(players, t)), _state(G, D)
        for k in theirs:
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-6, msg=f"trial {t}: {k}")


def test_run_batch_with_mixed_packs_scores_each_trial_with_its_own_m():
    results = pb.run_batch(["ring8", "grid25", "ring8"], [1, 2, 4], [0, 1, 2], 20, "cpu", snapshots=True)
    assert [r["pack"] for r in results] == [1, 2, 4]
    assert all(r["_samples"].shape == (2500, 2) and math.isfinite(r["loss_d"]) for r in results)
    with pytest.raises(ValueError, match="one positive pack per trial"):
        pb.run_batch(["ring8", "grid25"], [1], [0, 1], 20, "cpu")


def test_the_benchmark_in_one_batch_of_mixed_packs(tmp_path):
    """run(one_batch=True), the CUDA layout, on the CPU: one batch of every trial, one checkpoint,
    each row its own pack's trials."""
    record = pacgan.run(tmp_path, trials=2, packs=(1, 2), datasets=("ring8", "grid25"), iterations=10, jobs=1,
                        engine="batched", one_batch=True)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["all-0.pt"]
    assert [(r["data"], r["pack"], r["seed"]) for r in record["trial_results"]] == \
        [(d, m, s) for d in ("ring8", "grid25") for m in (1, 2) for s in (0, 1)]
    assert [(r["data"], r["pack"], r["seeds"]) for r in record["rows"]] == \
        [(d, m, [0, 1]) for d in ("ring8", "grid25") for m in (1, 2)]


# --- signals and crashes: nothing lost ---------------------------------------------------------------

class _At:
    """Wraps pb.Update.__call__: at the `n`-th update of this process, `act()` (send a signal, crash)."""

    def __init__(self, monkeypatch, n, act):
        self.calls, call = 0, pb.Update.__call__

        def counting(update, real, zs):
            self.calls += 1
            if self.calls == n:
                act()
            return call(update, real, zs)

        monkeypatch.setattr(pb.Update, "__call__", counting)


def test_a_sigint_checkpoints_the_batch_at_the_next_update_and_the_same_call_continues(tmp_path, monkeypatch):
    args = (["ring8", "grid25"], 2, [0, 1], 30, "cpu", True)
    straight = pb.run_batch(*args)
    path = str(tmp_path / "pack2-0.pt")
    _At(monkeypatch, 12, lambda: os.kill(os.getpid(), signal.SIGINT))
    pb.STOP.signal = None
    assert pb.run_batch(*args, checkpoint=path) is None  # no KeyboardInterrupt: stopped cleanly
    assert pb.STOP.signal == signal.SIGINT and torch.load(path, weights_only=True)["it"] == 12
    assert pb.run_batch(*args, checkpoint=path) is None  # this process was stopped: no new batch starts
    pb.STOP.signal = None
    _same_results(straight, pb.run_batch(*args, checkpoint=path))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_a_crash_loses_only_the_updates_since_the_last_periodic_checkpoint(tmp_path, monkeypatch):
    args = (["ring8"], 1, [0], 30, "cpu", True)
    straight = pb.run_batch(*args, score_every=5)
    path = str(tmp_path / "pack1-0.pt")
    monkeypatch.setattr(pb, "SAVE_EVERY_S", 0.0)  # a checkpoint at every score point

    def crash():
        raise RuntimeError("the machine went away")

    _At(monkeypatch, 23, crash)
    with pytest.raises(RuntimeError, match="went away"):
        pb.run_batch(*args, checkpoint=path, score_every=5)
    assert torch.load(path, weights_only=True)["it"] == 20  # the last score point before update 23
    monkeypatch.undo()
    _same_results(straight, pb.run_batch(*args, checkpoint=path, score_every=5))


def test_bench_modes_on_sigint_exits_130_and_the_same_command_finishes(tmp_path, monkeypatch, capsys):
    argv = ["bench", "modes", "--protocol", "pacgan", "--iterations", "20", "--trials", "1", "--packs", "1",
            "--datasets", "ring8", "--jobs", "1", "--out", str(tmp_path)]
    _At(monkeypatch, 7, lambda: os.kill(os.getpid(), signal.SIGINT))
    assert main(argv) == 130
    assert "(SIGINT); where each batch is" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(argv) == 0 and json.loads((tmp_path / "results.json").read_text())["iterations"] == 20


@pytest.mark.slow
def test_a_sigint_to_the_command_reaches_its_worker_processes(tmp_path):
    """--jobs 2: the worker processes train; a SIGINT to the command alone (as `kill -INT` sends it,
    not a terminal's Ctrl-C to the group) reaches both, each checkpoints, and the command exits 130."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gankit", "bench", "modes", "--protocol", "pacgan", "--iterations", "400000",
           "--trials", "2", "--packs", "1", "--datasets", "ring8", "--jobs", "2", "--score-every", "200",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:  # wait until both batches train
        seen.append(line)
        if sum("update 200 of" in x for x in seen) >= 2:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "(SIGINT); where each batch is" in rest
    states = [torch.load(p, weights_only=True) for p in sorted((out / "checkpoints").iterdir())]
    assert len(states) == 2 and all(0 < s["it"] < 400_000 and not s["done"] for s in states)
