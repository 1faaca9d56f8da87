"""The training configuration: one typed dataclass, validated once, at the boundary.

Errors name the command-line flag (`--batch-size`), the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

from gankit.errors import ConfigError
from gankit.losses import G_LOSSES

MODELS = ("dcgan", "mlp")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
ON_NAN = ("stop", "rollback")
PRECISIONS = ("fp32", "tf32", "bf16")
CUDA_GRAPHS = ("auto", "off")
SYNC_BN = ("on", "off")
TENSORBOARD = ("on", "off")
D_NORMS = ("batch", "spectral", "none")
AUGMENTS = ("off", "diffaug")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

# Fields that may differ when a run is resumed: how long, where and how often, never what is
# trained. The speed settings are here too: they change how the arithmetic is done, not the game.
# (--memory-format auto on resume keeps the layout the run recorded: see resumed.)
RESUMABLE_CHANGES = frozenset(
    {"max_images", "epochs", "device", "snapshot_every", "checkpoint_every", "log_every", "on_nan", "eval_every",
     "eval_samples", "precision", "sync_every", "cuda_graphs", "sync_bn", "tensorboard", "memory_format"}
)


@dataclass
class TrainConfig:
    # data
    data: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = None  # None: the dataset's own size
    channels: int | None = None  # None: the dataset's own channels
    # models
    model: str = "dcgan"
    latent_dim: int = 100
    g_width: int | None = None  # None: 64 base channels for dcgan, 512 hidden units for mlp
    d_width: int | None = None
    conditional: bool = False  # class-conditional G and D (models/conditional.py); needs labelled data
    pack: int = 1  # PacGAN: D judges packs of this many samples from one source (models/pack.py)
    d_norm: str = "batch"  # D's normalisation: DCGAN's batch norm, spectral norm (Miyato et al. 2018), or none
    # quality levers (docs/quality.md)
    g_ema: float = 0.0  # half-life in images of the EMA of G's weights (0: no EMA); ema.py
    g_ema_rampup: float = 0.0  # half-life at most images_seen * this (stylegan2-ada's ema_rampup; 0: none)
    augment: str = "off"  # diffaug: DiffAugment (Zhao et al. 2020) on D's inputs, real and fake; augment.py
    max_train_images: int | None = None  # train on the first N images of the training set (shuffled once)
    # Algorithm 1
    g_loss: str = "non-saturating"
    k: int = 1
    batch_size: int = 128
    optimizer: str = "adam"
    lr_g: float | None = None  # None: 2e-4 for adam (DCGAN), 0.01 for sgd
    lr_d: float | None = None
    beta1: float = 0.5  # adam (DCGAN: 0.5)
    beta2: float = 0.999
    momentum: float = 0.5  # sgd (the GAN paper started at 0.5)
    # length: exactly one of max_images / epochs is used; epochs is resolved into max_images
    max_images: int | None = None
    epochs: float | None = None
    seed: int = 0
    device: str = "auto"
    # output
    snapshot_every: int = 25_600  # images between sample grids
    checkpoint_every: int = 51_200  # images between checkpoints (also saved at the end)
    log_every: int = 1  # iterations between metrics.jsonl rows
    grid_size: int = 64  # samples in each snapshot grid
    on_nan: str = "stop"  # stop, or rollback to the last checkpoint with halved learning rates
    eval_every: int | None = None  # images between evaluations during training (None: never)
    eval_samples: int = 5000  # generated samples per evaluation during training
    tensorboard: str = "on"  # on: RUN/tensorboard/ event files where tensorboard is installed (tblog.py)
    # speed (see fastpath.py): none of these changes what is trained
    precision: str = "tf32"  # fp32; tf32: TF32 tensor cores on CUDA (fp32 on the CPU); bf16: autocast
    sync_every: int | None = None  # iterations between reads of the statistics; None: 1 on CPU, 50 on CUDA
    cuda_graphs: str = "auto"  # capture the iteration as a CUDA graph where possible (verified on an H200, docs/benchmarks.md)
    # the DCGAN pair's layout; auto: channels_last on CUDA, measured on the CPU (memformat.py). A
    # run's stored config holds the layout it chose, never auto.
    memory_format: str = "auto"
    # several processes (torchrun; see distributed.py): batch norm over the global batch, or per process
    sync_bn: str = "on"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def lr_g_resolved(self) -> float:
        return self.lr_g if self.lr_g is not None else default_lr(self.optimizer)

    @property
    def lr_d_resolved(self) -> float:
        return self.lr_d if self.lr_d is not None else default_lr(self.optimizer)

    def validate(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError(f"{flag('data')} must name a dataset, got {self.data!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"{flag('data_dir')} must be a folder path, got {self.data_dir!r}")
        _choice("model", self.model, MODELS)
        _choice("g_loss", self.g_loss, G_LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        _choice("on_nan", self.on_nan, ON_NAN)
        _choice("precision", self.precision, PRECISIONS)
        _choice("cuda_graphs", self.cuda_graphs, CUDA_GRAPHS)
        _choice("sync_bn", self.sync_bn, SYNC_BN)
        _choice("tensorboard", self.tensorboard, TENSORBOARD)
        _choice("d_norm", self.d_norm, D_NORMS)
        _choice("augment", self.augment, AUGMENTS)
        _choice("memory_format", self.memory_format, MEMORY_FORMATS)
        if self.model == "mlp" and self.memory_format == "channels_last":
            raise ConfigError("--memory-format channels_last is a layout for the DCGAN pair's convolutions; the MLP "
                              "has none: give auto or contiguous")
        for name in ("latent_dim", "k", "batch_size", "pack", "snapshot_every", "checkpoint_every",
                     "log_every", "grid_size"):
            _positive_int(name, getattr(self, name))
        if self.batch_size % self.pack:
            raise ConfigError(f"{flag('batch_size')} {self.batch_size} must divide by {flag('pack')} "
                              f"{self.pack} (D judges packs of {self.pack} samples); give a multiple of {self.pack}")
        _positive_int("eval_samples", self.eval_samples)
        if self.eval_samples < 2:
            raise ConfigError(f"{flag('eval_samples')} must be at least 2 (FID needs a covariance), got {self.eval_samples}")
        for name in ("image_size", "channels", "g_width", "d_width", "max_images", "eval_every", "sync_every",
                     "max_train_images"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"{flag('channels')} must be 1 or 3, got {self.channels}")
        for name in ("lr_g", "lr_d", "epochs"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 < value < float("inf")):
                raise ConfigError(f"{flag(name)} must be a positive number, got {value!r}")
        for name in ("beta1", "beta2", "momentum"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < 1):
                raise ConfigError(f"{flag(name)} must be in [0, 1), got {value!r}")
        for name in ("g_ema", "g_ema_rampup"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < float("inf")):
                raise ConfigError(f"{flag(name)} must be a number >= 0 (0: off), got {value!r}")
        if self.g_ema_rampup and not self.g_ema:
            raise ConfigError(f"{flag('g_ema_rampup')} {self.g_ema_rampup} needs an EMA: give --g-ema HALF_LIFE_IMAGES too")
        if self.data.startswith("toy:") and (self.augment != "off" or self.max_train_images is not None):
            which = "--augment" if self.augment != "off" else "--max-train-images"
            raise ConfigError(f"{which} applies to image data, not to a toy distribution ({self.data})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"{flag('seed')} must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"{flag('conditional')} is a switch (true or false), got {self.conditional!r}")
        if self.max_images is not None and self.epochs is not None:
            raise ConfigError("give either --max-images or --epochs, not both")
        if self.model == "dcgan" and self.data.startswith("toy:"):
            raise ConfigError(
                f"--model dcgan needs image data, but --data {self.data} is a toy distribution; use --model mlp"
            )
        if self.eval_every is not None and not (self.data in ("fashion-mnist", "mnist") or self.data.startswith("toy:")):
            raise ConfigError(
                f"--eval-every uses the offline classifier features, which exist for fashion-mnist, mnist "
                f"and toy data, not {self.data}; evaluate such runs afterwards with gankit eval --features inception"
            )
        if self.image_size is not None and self.data.startswith("toy:"):
            raise ConfigError(f"{flag('image_size')} does not apply to toy data ({self.data})")

    def resumed(self, overrides: dict) -> TrainConfig:
        """This (a run's stored) config with the flags a resume may change; any other differing
        flag is an error."""
        changed = {}
        for name, new in overrides.items():
            old = getattr(self, name)
            if new == old or (name == "memory_format" and new == "auto"):  # auto: the layout the run recorded
                continue
            if name not in RESUMABLE_CHANGES:
                raise ConfigError(
                    f"{flag(name)} {new} differs from the run's {name} = {old}; a resumed run keeps its "
                    f"training config (only {', '.join(sorted(flag(n) for n in RESUMABLE_CHANGES))} may change)"
                )
            changed[name] = new
        if "max_images" in changed:
            changed.setdefault("epochs", None)
        elif "epochs" in changed:
            changed.setdefault("max_images", None)
        return dataclasses.replace(self, **changed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as exc:  # a wrong type that validate() could not phrase
            raise ConfigError(f"{source}: {exc}") from None


def flag(name: str) -> str:
    """The command-line flag for a config field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def default_lr(optimizer: str) -> float:
    return 2e-4 if optimizer == "adam" else 0.01


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{flag(name)} must be a positive integer, got {value!r}")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(allowed)}; got {value!r}")
