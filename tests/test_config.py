"""Config validation: every bad value is refused with the flag's name."""

import pytest

from gankit.config import TrainConfig, flag
from gankit.errors import ConfigError


@pytest.mark.parametrize("field, bad, message", [
    ("batch_size", -3, "--batch-size must be a positive integer, got -3"),
    ("batch_size", 0, "--batch-size"),
    ("k", 1.5, "--k must be a positive integer"),
    ("lr_d", -1.0, "--lr-d must be a positive number"),
    ("lr_g", float("nan"), "--lr-g"),
    ("beta1", 1.0, "--beta1 must be in [0, 1)"),
    ("model", "resnet", "--model must be one of dcgan, mlp"),
    ("g_loss", "hinge", "--g-loss must be one of non-saturating, saturating"),
    ("optimizer", "rmsprop", "--optimizer"),
    ("channels", 2, "--channels must be 1 or 3"),
    ("seed", -1, "--seed"),
    ("device", "tpu", "--device"),
    ("epochs", 0, "--epochs"),
])
def test_bad_values_name_the_flag(field, bad, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: bad})
    assert message in str(err.value)


def test_max_images_and_epochs_are_exclusive():
    with pytest.raises(ConfigError, match="either --max-images or --epochs"):
        TrainConfig(max_images=10, epochs=1.0)


def test_dcgan_on_toy_data_is_refused():
    with pytest.raises(ConfigError, match="use --model mlp"):
        TrainConfig(data="toy:ring8", model="dcgan")


def test_defaults_are_dcgans():
    config = TrainConfig()
    assert (config.optimizer, config.lr_g_resolved, config.lr_d_resolved, config.beta1) == ("adam", 2e-4, 2e-4, 0.5)
    assert (config.batch_size, config.k, config.latent_dim, config.g_loss) == (128, 1, 100, "non-saturating")


def test_round_trip_and_unknown_keys():
    config = TrainConfig(model="mlp", k=3, lr_d=1e-3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown config keys"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 1})


def test_flag_names():
    assert flag("max_images") == "--max-images"


def test_eval_every_needs_classifier_features():
    with pytest.raises(ConfigError, match="--features inception"):
        TrainConfig(data="npz:x.npz", eval_every=1000)
    TrainConfig(data="toy:ring8", model="mlp", eval_every=1000)
