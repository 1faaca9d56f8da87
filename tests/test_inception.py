"""The FID Inception network and its preprocessing against torch-fidelity's, with the same random
weights (the real weights cannot be downloaded here)."""

import importlib.util
import sys
import types

import pytest
import torch

from gankit.errors import GankitError
from gankit.features import inception


def torch_fidelity_extractor():
    # torch-fidelity's package __init__ imports torchvision, which does not import beside the CPU
    # build of torch we test with; its Inception module itself needs only torch, so load it alone.
    if "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        assert spec is not None, "make test installs torch-fidelity (no deps) as the reference"
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torch_fidelity"] = package
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )
    return FeatureExtractorInceptionV3, interpolate_bilinear_2d_like_tensorflow1x


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = inception.FIDInception()
    for module in model.modules():  # non-trivial batch-norm statistics, so every layer matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("w") / "random-inception.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("size", [(28, 28), (64, 64), (299, 299), (37, 50)])
def test_resize_matches_torch_fidelity(size):
    _, reference = torch_fidelity_extractor()
    x = torch.randint(0, 256, (2, 3, *size)).float()
    ours = inception.resize_tf1(x, 299)
    theirs = reference(x, size=(299, 299), align_corners=False)
    assert torch.allclose(ours, theirs, atol=1e-3, rtol=0)


def test_network_matches_torch_fidelity_on_the_same_weights(random_weights):
    Reference, _ = torch_fidelity_extractor()
    reference = Reference("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(random_weights))
    ours, info = inception.load(random_weights)
    assert len(info["sha256"]) == 64
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    grey = torch.randint(0, 256, (2, 1, 28, 28), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(ours(rgb), reference(rgb)[0], rtol=1e-4, atol=1e-5)
        # grey images are repeated to three channels, as torch-fidelity's users must do themselves
        assert torch.allclose(ours(grey), reference(grey.repeat(1, 3, 1, 1))[0], rtol=1e-4, atol=1e-5)
    features = inception.extract(ours, rgb, batch=2)
    assert features.shape == (3, 2048) and features.dtype == torch.float64


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(GankitError, match="the Inception weights does not match"):
        inception.load(tmp_path / "bad.pth")


def test_offline_without_weights_says_where_to_get_them(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GankitError) as err:
        inception.load()
    message = str(err.value)
    assert "--inception-weights" in message and inception.WEIGHTS_URL in message
    assert not list((tmp_path / "gankit" / "weights").iterdir())
