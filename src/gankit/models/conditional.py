"""Class-conditional players (--conditional): the class label rides with every sample.

A conditional G takes z with the class index appended as one more column, (B, latent_dim + 1),
and returns its samples with the class attached as one more channel, (B, C + 1, H, W) (toy
points: (B, dim + 1)); a conditional D reads the class back off its input. A real minibatch
carries its labels the same way (data/batches.py). So Algorithm 1 (train.iteration), the DDP
wrappers and the CUDA graph see one tensor per minibatch, as for an unconditional run, and
D(G(z)) judges each fake against the class it was drawn for.

The conditioning (docs/models.md says why):
- G: the class one-hot joined to z (Mirza & Osindero 2014 feed y to G's input layer). G's own
  layers are untouched, so synchronised batch norm, channels_last and the initialisation apply
  as they are. (A learned N(0, I) class embedding in its place made G ignore z: measured in
  docs/models.md.)
- D: a projection discriminator (Miyato & Koyama 2018): logit = psi(phi(x)) + <embed(y), phi(x)>,
  phi(x) D's last hidden features (summed over space for DCGAN), psi D's own output layer.
  Packed (--pack M): D judges M samples with their M classes at once, x concatenated along the
  channels as models/pack.py does and the projection on the sum of the M classes' embeddings,
  one table per place in the pack: logit = psi(phi(pack)) + <sum_j embed_j(y_j), phi(pack)>.
  M = 1 is the projection above.

Class indices are stored as floats in these tensors: exact up to 256 classes in bfloat16.
"""

from __future__ import annotations

import torch
from torch import nn

from gankit.models.pack import pack

MAX_CLASSES = 256  # integers are exact in bfloat16 up to 256


def join_noise(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z (B, latent_dim), classes y (B,) -> G's input (B, latent_dim + 1)."""
    return torch.cat([z, y.to(z.dtype).unsqueeze(1)], dim=1)


def attach(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Samples x (B, C, H, W) or (B, dim), classes y (B,) -> (B, C + 1, H, W) or (B, dim + 1)."""
    plane = y.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    plane = plane.expand(x.shape[0], 1, *x.shape[2:])
    return torch.cat([x, plane], dim=1)


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """attach's inverse: (samples (B, C, H, W) or (B, dim), classes (B,) int64)."""
    label = x[:, -1, 0, 0] if x.dim() == 4 else x[:, -1]
    return x[:, :-1], label.round().long()


class ConditionalGenerator(nn.Module):
    """(z, y) joined (B, latent_dim + 1) -> samples with their class attached (see attach).
    `inner` is an unconditional G built for latent_dim + num_classes inputs: z and y one-hot."""

    def __init__(self, inner: nn.Module, num_classes: int, latent_dim: int):
        super().__init__()
        self.inner = inner
        self.num_classes = num_classes
        self.latent_dim = latent_dim  # of z alone; the input has one more column
        # p(y), the data's class frequencies: with p_G(x | y) it is the model p_G(x), so sampling
        # "as the data" needs nothing but the checkpoint. Set by state.build_state.
        self.register_buffer("class_weights", torch.full((num_classes,), 1.0 / num_classes))

    def forward(self, zy: torch.Tensor) -> torch.Tensor:
        z, y = zy[:, :-1], zy[:, -1].round().long()
        # (B, K) one-hot by comparison: no range check, so no host sync on CUDA
        onehot = (y[:, None] == torch.arange(self.num_classes, device=y.device)).to(z.dtype)
        return attach(self.inner(torch.cat([z, onehot], dim=1)), y)

    def sample(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Samples alone (B, C, H, W) or (B, dim) for noise z (B, latent_dim) and classes y (B,)."""
        return split(self(join_noise(z, y.to(z.device))))[0]


def is_conditional(G: nn.Module) -> bool:
    return isinstance(G, ConditionalGenerator)


def draw_classes(weights: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """m class indices (m,) int64 drawn from the frequencies `weights` (K,), on the CPU."""
    return torch.multinomial(weights.detach().float().cpu(), m, replacement=True, generator=generator)


class ProjectionDiscriminator(nn.Module):
    """Samples with their class attached (B, ...) -> logits (B/M,). `inner` is an unconditional D,
    built for M samples' channels, whose `net` ends in its output layer (psi); the layers before
    it give phi. pack M: M consecutive samples (one source: all real or all fake) are one pack."""

    def __init__(self, inner: nn.Module, num_classes: int, features: int, pack: int = 1):
        super().__init__()
        self.inner = inner
        self.num_classes = num_classes
        self.pack = pack
        # row j * K + y: class y at place j of a pack (M = 1: the usual table of K rows)
        self.embed = nn.Embedding(pack * num_classes, features)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        x, y = split(xy)
        if len(x) % self.pack:
            raise ValueError(f"a D packing {self.pack} samples got a batch of {len(x)}, not a multiple of {self.pack}")
        x, y = pack(x, self.pack), y.view(-1, self.pack)  # (B/M, M*C, ...), (B/M, M)
        net = self.inner.net
        h = net[:-1](x.flatten(1) if _flat(net) else x)  # (B/M, ch, s, s) or (B/M, width)
        logit = net[-1](h).reshape(len(h))
        phi = h.sum(dim=(2, 3)) if h.dim() == 4 else h  # (B/M, features)
        places = torch.arange(self.pack, device=y.device) * self.num_classes  # (M,)
        e = self.embed(y + places).sum(dim=1)  # (B/M, features): the pack's classes, each at its place
        return logit + (e.to(phi.dtype) * phi).sum(dim=1)

    def extra_repr(self) -> str:
        return f"pack={self.pack}" if self.pack > 1 else ""


def _flat(net: nn.Sequential) -> bool:
    """Whether D's first layer takes flat vectors (the MLP) rather than images."""
    return isinstance(net[0], nn.Linear)


def conditional(G: nn.Module, D: nn.Module, num_classes: int, latent_dim: int,
                pack: int = 1) -> tuple[nn.Module, nn.Module]:
    """The conditional pair around unconditional players (G built for latent_dim + num_classes; D
    for `pack` samples' channels)."""
    head = D.net[-1]  # psi: DCGAN's last convolution, or the MLP's output layer
    features = head.in_channels if isinstance(head, nn.Conv2d) else head.in_features
    G = ConditionalGenerator(G, num_classes, latent_dim)
    D = ProjectionDiscriminator(D, num_classes, features, pack)
    nn.init.normal_(D.embed.weight, 0.0, 0.02)  # DCGAN's scale for D's weights
    return G, D
