"""--memory-format: the choice from timings (injected: no test depends on a real timing), its
cache, the agreement of several processes, the resume rule, and runs in each layout."""

import io
import json
from dataclasses import dataclass

import pytest
import torch

from configs import TOY, tiny_images
from gankit import checkpoint, distributed, memformat
from gankit.config import TrainConfig
from gankit.errors import ConfigError
from gankit.fastpath import fast_path_plan
from gankit.memformat import (
    Choice,
    choose,
    pick,
    time_layouts,  # the real measurement, bound before conftest replaces it
)
from gankit.train import resume, train
from runchecks import same_state

CPU = distributed.World()
DCGAN = dict(model="dcgan", g_width=8, d_width=8, latent_dim=8, batch_size=16, device="cpu")
SHAPE = (1, 28, 28)


def timings(channels_last: float, contiguous: float):
    """A timer that says each layout takes this many seconds a step, and counts its calls."""
    def timer(config, data_shape, num_classes, batch):
        timer.calls.append(batch)
        return {"channels_last": [channels_last] * 3, "contiguous": [contiguous] * 3}
    timer.calls = []
    return timer


def never(*args):
    raise AssertionError("nothing should be timed here")


def layout_of(run) -> str:
    """The layout a run's checkpoint was written in (torch.save keeps the strides): G's first
    convolution, 8 x 8 x 7 x 7 here, is strided one way or the other."""
    w = checkpoint.load(run / "checkpoints" / "last.pt")["G"]["net.0.weight"]
    return "channels_last" if w.is_contiguous(memory_format=torch.channels_last) else "contiguous"


# --- the choice ----------------------------------------------------------------------------------

def test_the_faster_median_is_chosen_and_a_tie_keeps_channels_last():
    assert pick({"channels_last": 12.0, "contiguous": 11.0}).layout == "contiguous"
    assert pick({"channels_last": 11.0, "contiguous": 12.0}).layout == "channels_last"
    assert pick({"channels_last": 11.0, "contiguous": 11.0}).layout == "channels_last"
    assert pick({"channels_last": 11.2, "contiguous": 14.0}).note() == "measured: 11.2 vs 14.0 ms/step for contiguous"


def test_auto_on_the_cpu_measures_once_then_the_cache_decides(isolated_cache):
    timer = timings(channels_last=0.014, contiguous=0.011)
    config, choice = choose(TrainConfig(**DCGAN), SHAPE, None, CPU, timer)
    assert (config.memory_format, choice.how, timer.calls) == ("contiguous", "measured", [16])
    assert choice.note() == "measured: 11.0 vs 14.0 ms/step for channels_last"
    assert memformat.cache_file().is_relative_to(isolated_cache)
    again, cached = choose(TrainConfig(**DCGAN), SHAPE, None, CPU, never)
    assert (again.memory_format, cached.how, cached.ms) == ("contiguous", "cached", choice.ms)
    assert cached.note().startswith("cached choice: 11.0 vs 14.0 ms/step for channels_last, measured 20")
    for other in (dict(batch_size=32), dict(precision="bf16"), dict(d_width=16), dict(d_norm="spectral")):
        choose(TrainConfig(**{**DCGAN, **other}), SHAPE, None, CPU, timer)  # another key: measured
    choose(TrainConfig(**DCGAN), (3, 32, 32), None, CPU, timer)
    assert len(timer.calls) == 6 and len(json.loads(memformat.cache_file().read_text())) == 6


def test_the_cache_key_names_the_machine_torch_and_threads(monkeypatch):
    key = json.loads(memformat.cache_key(TrainConfig(**DCGAN), SHAPE, None, 16, 1))
    assert key["cpu"] == memformat.cpu_name() and key["cpu"]
    assert (key["torch"], key["threads"], key["batch"], key["precision"]) == (
        torch.__version__, torch.get_num_threads(), 16, "tf32")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)
    assert memformat.cache_key(TrainConfig(**DCGAN), SHAPE, None, 16, 1) != json.dumps(key, sort_keys=True)


def test_the_median_decides_and_a_choice_the_rounds_disagree_on_is_not_cached():
    def busy(config, data_shape, num_classes, batch):  # a busy machine: one slow contiguous step
        return {"channels_last": [0.014, 0.014, 0.014], "contiguous": [0.011, 0.099, 0.011]}

    assert memformat.rounds_agree({"channels_last": [1, 1, 1], "contiguous": [2, 2, 2]})
    # a large model: the hard budget left 2 rounds; both agree by a clear margin: settled
    assert memformat.rounds_agree({"channels_last": [0.70, 0.72], "contiguous": [0.95, 0.90]})
    assert not memformat.rounds_agree({"channels_last": [0.70, 0.72], "contiguous": [0.75, 0.90]})  # one by 7%
    assert not memformat.rounds_agree({"channels_last": [0.70, 1.00], "contiguous": [0.95, 0.80]})  # they disagree
    assert not memformat.rounds_agree({"channels_last": [1], "contiguous": [2]})  # one round is too few
    config, choice = choose(TrainConfig(**DCGAN), SHAPE, None, CPU, busy)
    assert (config.memory_format, choice.settled) == ("contiguous", False)
    assert choice.note().endswith("; the timed rounds disagreed (a busy machine?): not cached, measured again "
                                  "at the next start")
    assert not memformat.cache_file().exists()


def test_a_damaged_cache_is_measured_again_and_rewritten():
    memformat.cache_file().parent.mkdir(parents=True)
    memformat.cache_file().write_text("{not json")
    timer = timings(0.010, 0.020)
    assert choose(TrainConfig(**DCGAN), SHAPE, None, CPU, timer)[1].how == "measured"
    assert choose(TrainConfig(**DCGAN), SHAPE, None, CPU, never)[1].how == "cached"


def test_nothing_is_timed_on_cuda_for_the_mlp_or_when_the_layout_is_given():
    cuda = distributed.World(device=torch.device("cuda"))
    assert choose(TrainConfig(**DCGAN), SHAPE, None, cuda, never)[0].memory_format == "channels_last"
    assert choose(TrainConfig(**TOY), (2,), None, CPU, never)[0].memory_format == "contiguous"
    for given in ("channels_last", "contiguous"):
        config, choice = choose(TrainConfig(**DCGAN, memory_format=given), SHAPE, None, CPU, never)
        assert (config.memory_format, choice.note()) == (given, "")
    assert not memformat.cache_file().exists()


@dataclass
class TwoRanks:
    """A World of 2 launched processes whose all-reduces add the other rank's tensors (`peers`, in order)."""

    rank: int
    peers: list
    size: int = 2
    launched: bool = True
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values):
        return values + torch.tensor(self.peers.pop(0), dtype=values.dtype)


def test_several_processes_agree_on_rank_0s_cache_or_on_their_mean_timings():
    # No cache on rank 0: every rank measures; the mean of the medians decides, the same on every rank.
    # This rank finds channels_last faster by 1 ms, the other contiguous faster by 10 ms.
    world = TwoRanks(rank=1, peers=[(0.0,) * 4, (30.0, 20.0)])
    config, choice = choose(TrainConfig(**DCGAN), SHAPE, None, world, timings(0.010, 0.011))
    assert (config.memory_format, choice.ms) == ("contiguous", {"channels_last": 20.0, "contiguous": 15.5})
    # Rank 0 found [found, layout index, ms...] in its cache: rank 1 takes it without timing anything.
    world = TwoRanks(rank=1, peers=[(1.0, 1.0, 14.0, 11.0)])
    config, choice = choose(TrainConfig(**DCGAN), SHAPE, None, world, never)
    assert (config.memory_format, choice.how) == ("contiguous", "cached")
    assert not memformat.cache_file().exists()  # only rank 0 writes


def test_the_measurement_leaves_the_runs_random_streams_alone(monkeypatch):
    monkeypatch.setattr(memformat, "MAX_ROUNDS", 2)
    monkeypatch.setattr(memformat, "MIN_ROUNDS", 1)
    # no time budget: on a busy machine the 2 s one stopped after one round (a CI run beside training jobs)
    monkeypatch.setattr(memformat, "BUDGET_S", float("inf"))
    monkeypatch.setattr(memformat, "HARD_BUDGET_S", float("inf"))
    before = torch.get_rng_state()
    config = TrainConfig(data="npz:x.npz", **{**DCGAN, "g_width": 4, "d_width": 4, "conditional": True})
    times = time_layouts(config, SHAPE, 3, 8)  # conditional: z and the images carry the classes
    assert torch.equal(torch.get_rng_state(), before)
    assert {name: len(t) for name, t in times.items()} == {"channels_last": 2, "contiguous": 2}
    assert all(t > 0 for ts in times.values() for t in ts)


# --- the flag, the resume rule --------------------------------------------------------------------

def test_a_bad_memory_format_is_an_error_naming_the_flag():
    with pytest.raises(ConfigError, match="--memory-format must be one of auto, channels_last, contiguous; got 'nhwc'"):
        TrainConfig(memory_format="nhwc")
    with pytest.raises(ConfigError, match="--memory-format channels_last is a layout for the DCGAN"):
        TrainConfig(**TOY, memory_format="channels_last")


def test_on_resume_auto_keeps_the_recorded_layout_and_a_given_one_replaces_it():
    stored = TrainConfig(**DCGAN, memory_format="contiguous")
    assert stored.resumed({"memory_format": "auto"}).memory_format == "contiguous"
    assert stored.resumed({"memory_format": "channels_last"}).memory_format == "channels_last"
    assert fast_path_plan(stored, "cpu").channels_last is False
    assert fast_path_plan(TrainConfig(**DCGAN), "cpu").channels_last  # auto, unresolved: channels_last


@pytest.mark.parametrize("model, layout", [("dcgan", "channels_last"), ("mlp", "contiguous")])
def test_a_checkpoint_from_before_the_flag_resumes_in_the_layout_it_trained_with(model, layout):
    values = TrainConfig(**{**DCGAN, "model": model}).to_dict()
    del values["memory_format"]
    record = {"config": json.dumps(values)}
    assert checkpoint.config_of(record, "old.pt").memory_format == layout


# --- runs -------------------------------------------------------------------------------------------

def test_contiguous_runs_record_it_and_auto_trains_what_it_chose(tmp_path, monkeypatch):
    common = dict(tiny_images(tmp_path), batch_size=8, max_images=32, tensorboard="off")
    train(TrainConfig(**common, memory_format="contiguous"), tmp_path / "given")
    monkeypatch.setattr(memformat, "time_layouts", timings(channels_last=0.014, contiguous=0.011))
    out = io.StringIO()
    train(TrainConfig(**common), tmp_path / "auto", stream=out)
    train(TrainConfig(**common, memory_format="channels_last"), tmp_path / "nhwc")
    same_state(tmp_path / "given", tmp_path / "auto")  # the contiguous numbers, bit for bit
    assert [layout_of(tmp_path / r) for r in ("given", "auto", "nhwc")] == ["contiguous", "contiguous",
                                                                            "channels_last"]
    stored = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert stored["config"]["memory_format"] == "contiguous" and stored["speed"]["channels_last"] is False
    assert "gankit: speed: tf32, contiguous (measured: 11.0 vs 14.0 ms/step for channels_last)," in out.getvalue()
    assert checkpoint.config_of(checkpoint.load(tmp_path / "auto" / "checkpoints" / "last.pt"),
                                "last.pt").memory_format == "contiguous"


def test_resume_keeps_the_recorded_layout_without_measuring(tmp_path, monkeypatch):
    common = dict(tiny_images(tmp_path), batch_size=8, tensorboard="off")
    monkeypatch.setattr(memformat, "time_layouts", timings(channels_last=0.014, contiguous=0.011))
    train(TrainConfig(**common, max_images=64), tmp_path / "straight")
    train(TrainConfig(**common, max_images=32), tmp_path / "split")
    monkeypatch.setattr(memformat, "time_layouts", never)  # and the cache would now say channels_last:
    memformat.cache_file().unlink()
    resume(tmp_path / "split", {"max_images": 64, "memory_format": "auto"})
    same_state(tmp_path / "straight", tmp_path / "split")
    assert layout_of(tmp_path / "split") == "contiguous"


def test_choice_notes_are_empty_without_a_measurement():
    assert Choice("channels_last").note() == Choice("contiguous", "rule").note() == ""
