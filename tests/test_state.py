"""The run's state as one object, and the loop driven by a fake step, tested directly."""

import contextlib
import io
import math
import struct
from pathlib import Path

import pytest
import torch

from gankit import checkpoint, runs
from gankit.config import TrainConfig
from gankit.data import load_dataset
from gankit.data.batches import toy_seed
from gankit.distributed import World
from gankit.errors import CheckpointError, TrainingDiverged
from gankit.fastpath import fast_path_plan
from gankit.state import TrainState, build_state, draw_noise, noise_seed
from gankit.stopsignal import StopFlag
from gankit.train import STAT_NAMES, EagerIteration, open_run, resume, train, training_loop

TOY = dict(data="toy:ring8", model="mlp", g_width=16, d_width=16, latent_dim=4, device="cpu")


def new_state(config: TrainConfig) -> TrainState:
    dataset = load_dataset(config.data)
    device = torch.device(config.device)  # World()'s default is the CPU: a CUDA config builds on CUDA
    return build_state(config, dataset, fast_path_plan(config, device.type), World(device=device))


def advance(state: TrainState, iterations: int) -> list[torch.Tensor]:
    """Iterations of Algorithm 1 on the state's own batches and noise, as the loop draws them."""
    step = EagerIteration(state, state.config.g_loss, contextlib.nullcontext)
    m, outs = state.config.batch_size, []
    for _ in range(iterations):
        reals = [state.batches.next(m) for _ in range(state.config.k)]
        noises = [torch.randn(m, state.config.latent_dim, generator=state.noise) for _ in range(state.config.k + 1)]
        outs.append(step(reals, noises))
        state.iterations += 1
        state.images_seen += state.config.k * m
    return outs


def test_a_state_saved_and_loaded_continues_bit_for_bit(tmp_path):
    config = TrainConfig(**TOY, k=2, batch_size=8)
    straight = new_state(config)
    advance(straight, 3)
    path = tmp_path / "last.pt"
    checkpoint.save(path, straight.state_dict())
    expected = advance(straight, 4)

    restored = new_state(TrainConfig(**TOY, k=2, batch_size=8, seed=1))  # other weights and streams
    restored.config = config
    restored.load_state_dict(checkpoint.load(path), path)
    assert (restored.images_seen, restored.iterations) == (48, 3)
    assert [torch.equal(a, b) for a, b in zip(advance(restored, 4), expected, strict=True)] == [True] * 4
    for a, b in zip(straight.G.state_dict().values(), restored.G.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_other_data_is_refused_by_name(tmp_path):
    state = new_state(TrainConfig(**TOY, batch_size=8))
    record = state.state_dict()
    record["data_shape"] = [1, 28, 28]
    with pytest.raises(CheckpointError, match=r"last.pt was trained on data of shape \(1, 28, 28\)"):
        state.load_state_dict(record, tmp_path / "last.pt")


class FakeStep:
    """Statistics without training: all 0.5, with an Inf gradient norm at call `bad_at`."""

    def __init__(self, bad_at: int | None = None):
        self.calls, self.bad_at = 0, bad_at

    def __call__(self, reals, noises, measure=True):
        self.calls += 1
        out = torch.full((len(STAT_NAMES),), 0.5)
        if self.calls == self.bad_at:
            out[STAT_NAMES.index("grad_norm_g")] = math.inf
        return out

    def reset(self):
        pass


def open_toy_run(tmp_path, **options):
    config = TrainConfig(**TOY, batch_size=8, **options)
    state = new_state(config)
    runs.prepare_new(tmp_path / "run")
    run = open_run(config, fast_path_plan(config, "cpu"), tmp_path / "run", load_dataset(config.data),
                   World(), state, stream=None, resumed=False)
    return run, state


def test_the_loop_logs_checkpoints_and_stops_at_a_fake_steps_inf(tmp_path):
    run, state = open_toy_run(tmp_path, max_images=8 * 10, checkpoint_every=8 * 4, sync_every=3)
    with pytest.raises(TrainingDiverged, match=r"iteration 7 \(56 images\): grad_norm_g = inf"):
        training_loop(run, state, FakeStep(bad_at=7), StopFlag())
    run.log.close()
    assert [r["images"] for r in runs.read_metrics(run.dir)] == [8 * i for i in range(1, 7)]
    assert checkpoint.load(run.last)["progress"] == {"images_seen": 32, "iterations": 4, "best_fid": None}


def test_the_loop_trains_to_its_length_with_a_fake_step(tmp_path):
    run, state = open_toy_run(tmp_path, max_images=8 * 5 + 1, checkpoint_every=10**6)
    step = FakeStep()
    reading = training_loop(run, state, step, StopFlag())
    run.log.close()
    assert step.calls == 6 and state.images_seen == 48, "the length is rounded up to whole iterations"
    assert reading.stats == dict.fromkeys(STAT_NAMES, 0.5)
    assert checkpoint.load(run.last)["progress"]["images_seen"] == 48


# --- generator states across devices -------------------------------------------------------------

def philox_state(seed: int, offset: int = 0) -> torch.Tensor:
    """A CUDA generator's state as get_state() gives it: 8 bytes of seed, 8 of offset."""
    return torch.tensor(list(struct.pack("<Qq", seed, offset)), dtype=torch.uint8)


def test_noise_is_drawn_on_the_cpu_generator_whatever_the_device():
    state = new_state(TrainConfig(**TOY, batch_size=8))
    assert state.noise.device.type == "cpu" and state.batches.generator.device.type == "cpu"
    reference = torch.Generator().manual_seed(noise_seed(0))
    z = draw_noise(state.noise, 8, 4, torch.device("cpu"), share=slice(2, 6))
    assert torch.equal(z, torch.randn(8, 4, generator=reference)[2:6])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_noise_and_toy_batches_are_the_cpu_streams_copied():
    cpu, cuda = (new_state(TrainConfig(**{**TOY, "device": d}, batch_size=8)) for d in ("cpu", "cuda"))
    for _ in range(3):
        z = draw_noise(cuda.noise, 8, 4, torch.device("cuda"))
        assert z.device.type == "cuda" and torch.equal(z.cpu(), draw_noise(cpu.noise, 8, 4, torch.device("cpu")))
        x = cuda.batches.next(8, slice(0, 4))
        assert x.device.type == "cuda" and torch.equal(x.cpu(), cpu.batches.next(8, slice(0, 4)))
    assert torch.equal(cuda.state_dict()["rng"]["noise"], cpu.state_dict()["rng"]["noise"])


def test_a_checkpoint_with_cuda_generator_states_resumes_on_the_cpu_with_a_note(tmp_path):
    # gankit before the noise moved to the CPU drew it (and toy samples) on the run's device:
    # such a CUDA checkpoint holds 16-byte Philox states, which a CPU generator cannot take.
    config = TrainConfig(**TOY, batch_size=8, max_images=8 * 6, checkpoint_every=8 * 3)
    train(config, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    record = checkpoint.load(last)
    record["rng"]["noise"] = philox_state(noise_seed(0), 4 * 6)
    record["rng"]["data"] = {"generator": philox_state(toy_seed(0), 4 * 6)}
    checkpoint.save(last, record)
    checkpoint.save(tmp_path / "cuda-era.pt", record)  # last.pt moves on with the resume
    out = io.StringIO()
    result = resume(tmp_path / "run", {"max_images": 8 * 9}, stream=out)
    assert (result.images_seen, result.iterations) == (72, 9)
    notes = [line for line in out.getvalue().splitlines() if line.startswith("gankit: note:")]
    assert len(notes) == 2, out.getvalue()
    assert "noise generator is a CUDA generator's" in notes[0] and "toy data generator" in notes[1]
    assert all("seeded afresh from --seed and the iteration (6)" in note for note in notes)
    # The fresh streams are a function of (seed, iteration): every resume of that record is the same.
    restored, again = new_state(config), new_state(config)
    notes_again = [state.load_state_dict(checkpoint.load(tmp_path / "cuda-era.pt"), last) for state in (restored, again)]
    assert notes_again == [notes, notes]
    assert torch.equal(restored.noise.get_state(), again.noise.get_state())
    assert not torch.equal(restored.noise.get_state(), new_state(config).noise.get_state())
    assert torch.equal(torch.stack(advance(restored, 2)), torch.stack(advance(again, 2)))


def test_a_damaged_rng_entry_is_a_checkpoint_error(tmp_path):
    state = new_state(TrainConfig(**TOY, batch_size=8))
    record = state.state_dict()
    del record["rng"]["noise"]
    with pytest.raises(CheckpointError, match=r"last.pt holds random-number states that cannot be restored"):
        state.load_state_dict(record, tmp_path / "last.pt")


def test_a_cpu_run_does_not_initialise_cuda_to_save_its_rng(monkeypatch):
    # A GPU host, CUDA not initialised (a --device cpu run): asking for the CUDA RNG states would
    # initialise it.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def initialises(*args, **kwargs):
        raise AssertionError("CUDA initialised by a CPU run")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", initialises)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", initialises)
    state = new_state(TrainConfig(**TOY, batch_size=8))
    record = state.state_dict()
    assert "cuda" not in record["rng"]
    record["rng"]["cuda"] = [philox_state(1)] * 2  # a CUDA run's checkpoint, resumed on the CPU
    assert state.load_state_dict(record, Path("last.pt")) == []


def test_cuda_rng_states_of_another_gpu_count_are_not_restored_and_the_run_says_so(monkeypatch):
    state = new_state(TrainConfig(**TOY, batch_size=8))
    record = state.state_dict()
    record["rng"]["cuda"] = [philox_state(1)] * 8
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a CUDA run on a 2-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    notes = state.load_state_dict(record, Path("last.pt"))
    assert restored == [] and len(notes) == 1
    assert "CUDA RNG states of 8 GPU(s) and this machine has 2: they are not restored" in notes[0]
    record["rng"]["cuda"] = [philox_state(1)] * 2
    assert state.load_state_dict(record, Path("last.pt")) == [] and len(restored) == 1
