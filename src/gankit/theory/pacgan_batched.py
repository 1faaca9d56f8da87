"""PacGAN's trials trained together: T trials as ONE set of stacked tensors (`--engine batched`).

`gankit.theory.pacgan.trial` trains one G and one D for 400,000 updates; each update is about a
hundred small kernels, so a GPU waits on launches and a CPU core on dispatch. Here every tensor
of T trials gets a leading trial dimension and every kernel works on all T trials at once:

- G: a weight (T, in, out) applied with torch.bmm / baddbmm to x (T, B, in); batch norm per trial
  and per pass (statistics over the batch of that trial's pass only), running statistics updated
  as nn.BatchNorm1d updates them (momentum 0.05, eps 1e-4, unbiased variance), once per pass;
- D: maxout layers (T, in, 1000) -> view (T, B, 200, 5).max(-1); a last layer to one logit;
  packs as gankit.models.pack.pack makes them: pack i = points M*i .. M*i + M-1 concatenated;
- one update is pacgan.simultaneous_step: both losses from one forward pass, each trial's loss
  the mean over its own packs (as gankit.losses), D's and G's gradients by two autograd.grad
  calls, then Adam (lr 1e-4, betas (0.8, 0.999)). The trials' parameters are disjoint, so the
  gradient of the SUM of the T losses is, trial by trial, that trial's own gradient; Adam is
  elementwise, so one Adam on the stacked tensors is T Adams;
- trials of different M in one batch: D padded to the largest M's inputs and each trial's packs
  masked to its own points (stack_players), so that a GPU launches an update's kernels once;
- on CUDA the update is one CUDA graph (Update); a batch can stop at a deadline and continue
  from its checkpoint (run_batch, theory/pacgan_checkpoint.py).

What is the same as the loop engine (`trial`), trial by trial: the initial weights (built by
`build_players` after torch.manual_seed(seed), then stacked), the 100,000 training points and
the packing table (the same CPU generator, seeded with the trial's seed), the 2,500-point
scoring z and the scoring. What is not: the per-epoch shuffle and the noise z are drawn on the
engine's device for all trials at once, from one generator seeded with the batch's first seed,
so a batched trial is statistically, not bitwise, the loop engine's trial of the same seed (and
depends on its slot in the batch). D sees the real and the fake packs in one call (PacGAN's code
does too); the logits are the same up to rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gankit.losses import G_LOSSES
from gankit.metrics.toy import mode_metrics
from gankit.models.pack import Packed
from gankit.stopsignal import StopFlag
from gankit.theory import pacgan_checkpoint as ckpt
from gankit.theory import pacgan_curves as curves
from gankit.theory.pacgan import PACGAN_TOYS, SETUP, SNAPSHOTS, build_players, ema_beta

# --- the stacked players -------------------------------------------------------------------------

@dataclass
class Players:
    """T trials' G and D. Weights are stored (T, in, out) (nn.Linear's weight, transposed)."""

    g_weights: list[torch.Tensor]  # 4 hidden layers (T, in, 400), then the output layer (T, 400, 2)
    g_bias: torch.Tensor  # (T, 1, 2): the output layer's bias (the hidden layers have none)
    bn_scale: list[torch.Tensor]  # 4 x (T, 400)
    bn_shift: list[torch.Tensor]  # 4 x (T, 400)
    bn_mean: list[torch.Tensor]  # 4 x (T, 400): running statistics, no gradient
    bn_var: list[torch.Tensor]  # 4 x (T, 400)
    d_weights: list[torch.Tensor]  # 3 maxout layers (T, in, 1000), then (T, 200, 1)
    d_biases: list[torch.Tensor]  # (T, 1, 1000) x 3, then (T, 1, 1)
    pack: int  # M, the largest of the trials' packs
    packs: list[int] = field(default_factory=list)  # each trial's own M (mixed packs, see stack_players)
    column_mask: torch.Tensor | None = None  # (T, 1, 2M): 1 on the columns of a trial's own M points
    bn_weight: torch.Tensor | None = None  # (T, M): batch norm's momentum on a trial's own passes, else 0
    training: bool = True  # eval mode (sample): batch norm on the running statistics
    saturating: torch.Tensor | None = None  # (T,) bool: trials whose G minimises log(1 - D(G(z))) (set_losses)
    emas: list[list[torch.Tensor]] = field(default_factory=list)  # EMAs of g_params(), one per half-life (add_emas)
    ema_rates: list[float] = field(default_factory=list)  # each EMA's 1 - beta

    def g_params(self) -> list[torch.Tensor]:
        return [*self.g_weights, self.g_bias, *self.bn_scale, *self.bn_shift]

    def ema_players(self, i: int) -> Players:
        """These players with G's weights replaced by its i-th EMA (batch norm's running statistics
        are G's own: gankit.ema copies the buffers)."""
        ema, n, k = self.emas[i], len(self.g_weights), len(self.bn_scale)  # laid out as g_params()
        return replace(self, g_weights=ema[:n], g_bias=ema[n], bn_scale=ema[n + 1:n + 1 + k],
                       bn_shift=ema[n + 1 + k:], emas=[], ema_rates=[])

    def d_params(self) -> list[torch.Tensor]:
        return [*self.d_weights, *self.d_biases]


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def stack_players(pairs: list[tuple[nn.Module, nn.Module]], device: str | torch.device = "cpu") -> Players:
    """The (G, D) of `build_players`, one pair per trial, as one Players on `device`.

    Trials may pack differently (M_t): then D's first layer takes the largest M's 2M inputs, a
    trial's rows beyond its own 2 M_t are zero, and its packs are masked to its own points, so
    those rows get a zero gradient and Adam leaves them at zero; G makes M passes for every trial,
    and a pass beyond M_t is masked out of D's input and out of the running statistics. Each
    trial then trains exactly as in a batch of its own M (tests/test_pacgan_batched.py)."""
    Gs = [g for g, _ in pairs]
    Ds = [d.inner if isinstance(d, Packed) else d for _, d in pairs]
    g_lin = list(zip(*(_linears(g) for g in Gs), strict=True))  # per layer: the T trials' nn.Linear
    d_lin = list(zip(*(_linears(d) for d in Ds), strict=True))
    bns = list(zip(*([m for m in g.modules() if isinstance(m, nn.BatchNorm1d)] for g in Gs), strict=True))
    packs = [m.in_features // 2 for m in d_lin[0]]
    pack = max(packs)
    masks = _pack_masks(packs, device) if len(set(packs)) > 1 else (None, None)
    return Players(
        g_weights=[_stacked([m.weight.t() for m in layer], device) for layer in g_lin],
        g_bias=_stacked([m.bias[None] for m in g_lin[-1]], device),
        bn_scale=[_stacked([m.weight for m in layer], device) for layer in bns],
        bn_shift=[_stacked([m.bias for m in layer], device) for layer in bns],
        bn_mean=[_stacked([m.running_mean for m in layer], device, grad=False) for layer in bns],
        bn_var=[_stacked([m.running_var for m in layer], device, grad=False) for layer in bns],
        # the first layer's (2 M_t, out) weights padded to (2M, out): zero rows for inputs a trial lacks
        d_weights=[_stacked([F.pad(m.weight.t(), (0, 0, 0, 2 * pack - m.in_features)) if i == 0 else m.weight.t()
                             for m in layer], device) for i, layer in enumerate(d_lin)],
        d_biases=[_stacked([m.bias[None] for m in layer], device) for layer in d_lin],
        pack=pack, packs=packs, column_mask=masks[0], bn_weight=masks[1])


def _stacked(tensors: list[torch.Tensor], device, grad: bool = True) -> torch.Tensor:
    """Per-trial tensors -> one (T, ...) tensor on device: a leaf with a gradient (a parameter)
    or, grad=False, a buffer."""
    stacked = torch.stack([t.detach() for t in tensors]).to(device)
    return stacked.requires_grad_() if grad else stacked


def _pack_masks(packs: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 1, 2M) column mask of each trial's own points, (T, M) batch-norm momentum per pass."""
    pack = max(packs)
    own = torch.tensor([[float(k < m) for k in range(pack)] for m in packs])  # (T, M): 1 for a trial's passes
    return own.repeat_interleave(2, 1)[:, None, :].to(device), (own * SETUP["bn_momentum"]).to(device)


def initial_players(pack: int | list[int], seeds: list[int], device: str | torch.device = "cpu") -> Players:
    """Trial t's initial weights are those of build_players(M_t) after torch.manual_seed(seeds[t]),
    as `trial` builds them. pack: one M for all, or each trial's."""
    pairs = []
    for seed, m in zip(seeds, _packs(pack, seeds), strict=True):
        torch.manual_seed(seed)
        pairs.append(build_players(m))
    return stack_players(pairs, device)


def unstack(players: Players, t: int) -> tuple[nn.Module, nn.Module]:
    """Trial t's players as the unbatched modules (CPU), e.g. to compare or to keep."""
    G, D = build_players(players.packs[t])
    inner = D.inner if isinstance(D, Packed) else D
    with torch.no_grad():
        for m, w in zip(_linears(G), players.g_weights, strict=True):
            m.weight.copy_(w[t].t())
        _linears(G)[-1].bias.copy_(players.g_bias[t, 0])
        bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm1d)]
        for i, m in enumerate(bns):
            m.weight.copy_(players.bn_scale[i][t])
            m.bias.copy_(players.bn_shift[i][t])
            m.running_mean.copy_(players.bn_mean[i][t])
            m.running_var.copy_(players.bn_var[i][t])
        for m, w, b in zip(_linears(inner), players.d_weights, players.d_biases, strict=True):
            m.weight.copy_(w[t, :m.in_features].t())  # the first layer's own rows
            m.bias.copy_(b[t, 0])
    return G, D


def set_losses(players: Players, g_losses: list[str]) -> None:
    """Each trial's generator loss (gankit.losses.G_LOSSES): non-saturating, as published, or
    saturating. All non-saturating: nothing to mask."""
    if len(g_losses) != players.g_bias.shape[0] or not set(g_losses) <= set(G_LOSSES):
        raise ValueError(f"one generator loss of {G_LOSSES} per trial, got {g_losses}")
    sat = [g == "saturating" for g in g_losses]
    players.saturating = torch.tensor(sat, device=players.g_bias.device) if any(sat) else None


def add_emas(players: Players, half_lives: list[float]) -> None:
    """An EMA of every trial's G for each half-life (gankit.ema's update, half-lives as
    pacgan.ema_beta takes them), each starting as a copy of G. They follow G and do not change its
    training: each trial is scored from G and from each EMA (`views`), the same run."""
    for h in half_lives:
        players.emas.append([p.detach().clone() for p in players.g_params()])
        players.ema_rates.append(1.0 - ema_beta(h))


@torch.no_grad()
def update_emas(players: Players) -> None:
    """Each EMA <- beta EMA + (1 - beta) G (gankit.ema.update: one fused lerp per EMA)."""
    for ema, rate in zip(players.emas, players.ema_rates, strict=True):
        torch._foreach_lerp_(ema, players.g_params(), rate)


def make_adam(players: Players) -> torch.optim.Adam:
    """One Adam for both players (disjoint parameters, the same settings: the same as two Adams).
    Fused: one kernel for all the stacked tensors on a GPU, and about 10% of an update saved on a
    CPU (torch >= 2.4 fuses on the CPU too). A CUDA graph's runner makes it capturable itself."""
    return torch.optim.Adam(players.d_params() + players.g_params(), lr=SETUP["lr"],
                            betas=(SETUP["beta1"], SETUP["beta2"]), fused=True)


# --- the forward passes --------------------------------------------------------------------------

def batch_norm(players: Players, i: int, x: torch.Tensor) -> torch.Tensor:
    """x (T, M, P, C): M passes of P samples per trial -> (T, M, P, C). Training: each pass of each
    trial normalised with its own statistics (biased variance) and the running statistics updated
    once per pass (momentum 0.05, the unbiased variance), as M calls of nn.BatchNorm1d would; eval:
    the running statistics. One F.batch_norm over P rows of T*M*C channels (the layout it needs,
    one copy; a strided reduction over P is several times slower on a CPU)."""
    T, M, P, C = x.shape
    rows = x.permute(2, 0, 1, 3).reshape(P, T * M * C)  # channel (t, m, c)
    scale = players.bn_scale[i][:, None, :].expand(T, M, C).reshape(-1)  # (T*M*C,)
    shift = players.bn_shift[i][:, None, :].expand(T, M, C).reshape(-1)
    if players.training:
        # momentum 1: the buffers receive exactly this pass's mean and unbiased variance
        mean, var = x.new_zeros(T, M, C), x.new_ones(T, M, C)
        y = F.batch_norm(rows, mean.view(-1), var.view(-1), scale, shift, True, 1.0, SETUP["bn_eps"])
        with torch.no_grad():
            for k in range(M):  # running = (1 - momentum) running + momentum batch, pass after pass
                w = SETUP["bn_momentum"] if players.bn_weight is None else players.bn_weight[:, k, None]  # (T, 1)
                players.bn_mean[i].lerp_(mean[:, k], w)
                players.bn_var[i].lerp_(var[:, k], w)
    else:
        mean = players.bn_mean[i][:, None, :].expand(T, M, C).reshape(-1)
        var = players.bn_var[i][:, None, :].expand(T, M, C).reshape(-1)
        y = F.batch_norm(rows, mean, var, scale, shift, False, 0.0, SETUP["bn_eps"])
    return y.view(P, T, M, C).permute(1, 2, 0, 3)


def generate(players: Players, z: torch.Tensor) -> torch.Tensor:
    """z (T, M, P, 2): M noise batches of P per trial, each its own batch-norm pass -> x (T, M, P, 2).
    The M passes share G's weights, so each linear layer is one bmm over (T, M*P, in)."""
    T, M, P, _ = z.shape
    h = z.reshape(T, M * P, -1)
    for i, w in enumerate(players.g_weights[:-1]):
        h = torch.bmm(h, w)  # (T, M*P, 400)
        h = torch.relu(batch_norm(players, i, h.view(T, M, P, -1))).reshape(T, M * P, -1)
    return torch.baddbmm(players.g_bias, h, players.g_weights[-1]).view(T, M, P, -1)


def discriminate(players: Players, x: torch.Tensor) -> torch.Tensor:
    """x (T, N, 2M): N packs per trial -> logits (T, N)."""
    T, N, _ = x.shape
    h = x
    for w, b in zip(players.d_weights[:-1], players.d_biases[:-1], strict=True):
        h = torch.baddbmm(b, h, w)  # (T, N, units * pieces)
        h = h.view(T, N, -1, SETUP["maxout_pieces"]).max(-1).values  # (T, N, units)
    return torch.baddbmm(players.d_biases[-1], h, players.d_weights[-1]).squeeze(-1)


def losses(real_logits: torch.Tensor, fake_logits: torch.Tensor,
           saturating: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, P) logits -> (D loss (T,), G loss (T,)): per trial, gankit.losses.discriminator_loss and
    generator_loss(..., "non-saturating", or "saturating" where `saturating` (T,) is set), each the
    mean over that trial's packs."""
    loss_d = F.softplus(-real_logits).mean(1) + F.softplus(fake_logits).mean(1)
    loss_g = F.softplus(-fake_logits).mean(1)
    if saturating is not None:
        loss_g = torch.where(saturating, -F.softplus(fake_logits).mean(1), loss_g)
    return loss_d, loss_g


def gradients(players: Players, real: torch.Tensor, zs: torch.Tensor) -> tuple:
    """Both losses from one forward pass and their gradients, pacgan.simultaneous_step's. real
    (T, P*M, 2): M consecutive points a pack; zs (T, M, P, 2): the M noise batches. Returns
    (loss_d (T,), loss_g (T,), D's gradients, G's gradients) in d_params() / g_params() order."""
    T, M, P, _ = zs.shape
    fake = generate(players, zs).transpose(1, 2).reshape(T, P, 2 * M)  # pack i = (G(z_1)[i], ..., G(z_M)[i])
    real = real.reshape(T, P, 2 * M)
    if players.column_mask is not None:  # mixed packs: each trial's own M points of a pack
        real, fake = real * players.column_mask, fake * players.column_mask
    logits = discriminate(players, torch.cat([real, fake], 1))  # (T, 2P): real, then fake
    loss_d, loss_g = losses(logits[:, :P], logits[:, P:], players.saturating)
    # The sum over trials: the trials' parameters are disjoint, so each gets its own loss's gradient.
    grads_d = torch.autograd.grad(loss_d.sum(), players.d_params(), retain_graph=True)
    grads_g = torch.autograd.grad(loss_g.sum(), players.g_params())
    return loss_d.detach(), loss_g.detach(), grads_d, grads_g


def step(players: Players, adam: torch.optim.Optimizer, real: torch.Tensor,
         zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of every trial (`gradients`, then Adam on both players, then G's EMAs if it has
    any). Returns the (T,) D and G losses, detached."""
    loss_d, loss_g, grads_d, grads_g = gradients(players, real, zs)
    for p, g in zip(players.d_params() + players.g_params(), grads_d + grads_g, strict=True):
        p.grad = g
    adam.step()
    if players.emas:
        update_emas(players)
    return loss_d, loss_g


def sample(players: Players, z: torch.Tensor) -> torch.Tensor:
    """G in inference mode (running statistics): z (T, N, 2) -> (T, N, 2) on the CPU."""
    with torch.no_grad():
        return generate(replace(players, training=False), z[:, None]).squeeze(1).cpu()


def views(players: Players, z: torch.Tensor) -> torch.Tensor:
    """The samples every trial is scored on: G's, then each EMA's: z (T, N, 2) -> (V, N, 2), V = T
    (1 + EMAs), view e * T + t = trial t seen through scorer e (0: G)."""
    return torch.cat([sample(p, z) for p in [players, *map(players.ema_players, range(len(players.emas)))]])


# --- the update as a CUDA graph ------------------------------------------------------------------

class Update:
    """One update of every trial, `step`: eager, or (graph=True, CUDA) replayed as one CUDA graph by
    the training loop's own runner, fastpath.GraphedIteration (warm-up on a side stream, one
    capture, replays on static copies of (real, zs), eager again if CUDA refuses the capture).
    At T = 80 trials an eager update is ~250 launches of small kernels; the graph launches them as
    one. `graphed`: GraphedIteration (tests give a CPU stand-in)."""

    def __init__(self, players: Players, graph: bool = False, graphed=None):
        self.players = players
        self.adam = make_adam(players)
        self.graphed = None
        if graph:
            if graphed is None:
                from gankit.fastpath import GraphedIteration as graphed
            self.graphed = graphed(self._iteration, [self.adam], on_fallback=lambda message: print(message, flush=True))

    def _iteration(self, reals: list[torch.Tensor], noises: list[torch.Tensor], measure: bool = True) -> torch.Tensor:
        """The runner's iteration: one real (T, P*M, 2) and one noise (T, M, P, 2) -> (2, T) losses."""
        return torch.stack(step(self.players, self.adam, reals[0], noises[0]))

    def __call__(self, real: torch.Tensor, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D losses (T,), G losses (T,)) of this update."""
        losses = self.graphed([real], [zs]) if self.graphed is not None else self._iteration([real], [zs])
        return losses[0], losses[1]

    @property
    def captured(self) -> bool:
        """Whether the updates are replays of a CUDA graph."""
        return self.graphed is not None and self.graphed.in_use


# --- data ----------------------------------------------------------------------------------------

def training_sets(datas: list[str], pack: int | list[int], seeds: list[int],
                  device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """points (T, N, 2) and packed (T, N, M) point ids: trial t's are exactly those `trial` draws
    for (datas[t], M_t, seeds[t]) (the same CPU generator, in the same order); with mixed packs
    the ids beyond a trial's M_t are 0 (masked out of D's input)."""
    n = SETUP["dataset_size"]
    packs = _packs(pack, seeds)
    points, packed = [], []
    for data, seed, m in zip(datas, seeds, packs, strict=True):
        rng = torch.Generator().manual_seed(seed)
        points.append(PACGAN_TOYS[data].sample(n, rng))  # (N, 2): the fixed training set
        ids = torch.randint(n, (n, m), generator=rng)  # (N, M_t): M_t resamplings per pack
        packed.append(F.pad(ids, (0, max(packs) - m)))
    return torch.stack(points).to(device), torch.stack(packed).to(device)


def _packs(pack: int | list[int], seeds: list[int]) -> list[int]:
    """Each trial's M: one for all (int) or a list, one per seed."""
    packs = [pack] * len(seeds) if isinstance(pack, int) else list(pack)
    if len(packs) != len(seeds) or min(packs) < 1:
        raise ValueError(f"one positive pack per trial, got {pack} for {len(seeds)} seeds")
    return packs


def minibatch(points: torch.Tensor, packed: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """rows (T, P) packed-example ids per trial -> real (T, P*M, 2), pack after pack."""
    T, P = rows.shape
    M = packed.shape[2]
    ids = packed.gather(1, rows[:, :, None].expand(T, P, M))  # (T, P, M) point ids
    return points.gather(1, ids.reshape(T, P * M, 1).expand(T, P * M, 2))


# --- a batch of trials ---------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a batch's training is: the next update `it`, the epoch's shuffle order (T, N), the
    samples kept so far [(update, (T, 2500, 2))], the last update's (D, G) losses (T,) each, the
    seconds spent training in earlier processes (a run stopped and continued), and the scores
    along the way [(update, [each trial's scores])] (pacgan_curves.Watch)."""

    it: int = 0
    order: torch.Tensor | None = None
    kept: list = field(default_factory=list)
    result: tuple | None = None
    seconds: float = 0.0
    scores: list = field(default_factory=list)


def train(players: Players, points: torch.Tensor, packed: torch.Tensor, generator: torch.Generator,
          iterations: int, keep: set[int], eval_z: torch.Tensor, update: Update | None = None,
          progress: Progress | None = None, stop=None, watch: curves.Watch | None = None,
          save=None) -> Progress:
    """Updates progress.it .. iterations - 1 of every trial, a new shuffle per trial each epoch
    (ShuffledScheme); G's samples at the updates in `keep`. update: how an update runs (default:
    eager). stop(it) -> True: stop before update `it` (then progress.it < iterations). watch:
    scores every trial when it is due (progress.scores) and says where the batch is; then
    save(progress), if given, may checkpoint (an update boundary: a consistent point)."""
    T, N, M = packed.shape
    P = SETUP["batch_packs"]
    per_epoch = N // P
    update = update or Update(players)
    progress = progress or Progress()
    device = points.device
    for it in range(progress.it, iterations):
        if stop is not None and stop(it):
            break
        if it % per_epoch == 0:
            progress.order = torch.rand(T, N, generator=generator, device=device).argsort(1)  # (T, N): T permutations
        j = it % per_epoch
        real = minibatch(points, packed, progress.order[:, j * P:(j + 1) * P])
        zs = torch.randn(T, M, P, SETUP["latent_dim"], generator=generator, device=device)
        progress.result = update(real, zs)
        progress.it = it + 1
        scored = watch is not None and watch.due(it + 1)
        if it + 1 in keep or scored:
            samples = views(players, eval_z)  # (V, 2500, 2)
            if it + 1 in keep:
                progress.kept.append((it + 1, samples))
            if scored:
                progress.scores.append(watch(it + 1, samples, progress.result))
                if save is not None:
                    save(progress)
    return progress


STOP = StopFlag()  # SIGINT / SIGTERM: every batch of this process checkpoints at the next update and stops
SAVE_EVERY_S = 300.0  # a running batch also checkpoints at its first score point this long after the last


class Periodic:
    """save(progress) for `train`: a checkpoint at most every SAVE_EVERY_S, so that a process that
    dies (killed, out of memory, a lost machine) loses minutes, not the run. progress.seconds in
    the file counts this process's time so far too."""

    def __init__(self, path: Path, key: dict, players: Players, adam, generator, started: float):
        self.args, self.started = (path, key, players, adam, generator), started
        self.last = time.perf_counter()

    def __call__(self, progress: Progress) -> None:
        now = time.perf_counter()
        if now - self.last >= SAVE_EVERY_S:
            path, key, players, adam, generator = self.args
            ckpt.save_progress(path, key, players, adam, generator,
                               replace(progress, seconds=progress.seconds + now - self.started))
            self.last = now


def install_stop() -> None:
    """For a worker process (ProcessPoolExecutor's initializer): STOP's handler for its whole life,
    so that a signal between two batches stops it too (the next batch returns at once)."""
    STOP.install()


def run_batch(datas: list[str], pack: int | list[int], seeds: list[int], iterations: int, device: str = "cpu",
              snapshots: bool = False, threads: int | None = None, precision: str = "fp32",
              checkpoint: str | None = None, deadline: float | None = None,
              score_every: int | None = None, name: str = "batch",
              g_emas: tuple[float, ...] = (), g_loss: str | list[str] = "non-saturating") -> list[dict] | None:
    """Train trials (datas[t], M_t, seeds[t]) together and score each as `trial` does (pack: one M,
    or each trial's M_t: see stack_players); one dict per trial and scorer (G, then an EMA of G for
    each half-life in g_emas, `views`), with trial()'s keys. `seconds` is the batch's training time (the trials finish together).
    snapshots: keep every trial's samples at pacgan.SNAPSHOTS of training. On CUDA the update is a
    CUDA graph, and precision tf32 lets its matrix products use TF32 (fp32: as published).
    checkpoint: a file (pacgan_checkpoint) that a finished batch's results are read from and
    written to, and a stopped batch continues from; deadline (time.time()): stop there, write the
    checkpoint and return None. score_every: score every trial every so many updates (its `curve`)
    and print a progress line headed `name` (default: pacgan_curves.default_every). g_loss: the
    generator loss, one for all or each trial's (set_losses). A SIGINT or
    SIGTERM (STOP) stops it at the next update with its checkpoint written, as a deadline does; a
    running batch also checkpoints every SAVE_EVERY_S (Periodic)."""
    if len(datas) != len(seeds) or not seeds:
        raise ValueError(f"run_batch needs one dataset per seed, got {len(datas)} and {len(seeds)}")
    if deadline is not None and checkpoint is None:
        raise ValueError("run_batch: a deadline needs a checkpoint to stop to")
    score_every = score_every or curves.default_every(iterations)
    emas = [float(h) for h in g_emas]
    g_losses = [g_loss] * len(seeds) if isinstance(g_loss, str) else list(g_loss)
    if not all(0 < h < math.inf for h in emas):
        raise ValueError(f"EMA half-lives must be positive and finite (G itself is always scored), got {emas}")
    key = {"datas": list(datas), "packs": _packs(pack, seeds), "seeds": list(seeds), "iterations": iterations,
           "device": torch.device(device).type, "precision": precision, "snapshots": snapshots,
           "score_every": score_every, "g_emas": emas, "g_losses": g_losses}
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and (done := ckpt.load_results(path, key)) is not None:
        return done
    if STOP.signal is not None or (deadline is not None and time.time() >= deadline):
        return None  # stopped or out of time before it began: nothing to keep
    if threads is not None:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"  # this process's own (a worker's)
    started = time.perf_counter()
    players = initial_players(pack, seeds, device)
    add_emas(players, emas)
    set_losses(players, g_losses)
    points, packed = training_sets(datas, pack, seeds, device)
    generator = torch.Generator(device=device).manual_seed(seeds[0])
    eval_z = torch.stack([torch.randn(SETUP["samples"], SETUP["latent_dim"],
                                      generator=torch.Generator().manual_seed(10_000 + s)) for s in seeds]).to(device)
    keep = {max(1, round(f * iterations)) for f in SNAPSHOTS} if snapshots else set()
    update = Update(players, graph=torch.device(device).type == "cuda")
    progress = _resumed(path, key, players, update.adam, generator, device)
    stop = lambda it: STOP.signal is not None or (deadline is not None and time.time() >= deadline)  # noqa: E731
    watch = curves.Watch(name, [curves.row_label(d, m, h, g) for h in [0.0, *emas]
                                for d, m, g in zip(datas, players.packs, g_losses, strict=True)],
                         [PACGAN_TOYS[d] for d in datas] * (1 + len(emas)), score_every, iterations)
    watch.start(progress.it)
    save = Periodic(path, key, players, update.adam, generator, started) if path is not None else None
    with STOP.installed():
        progress = train(players, points, packed, generator, iterations, keep, eval_z, update, progress, stop, watch,
                         save)
    progress.seconds += time.perf_counter() - started
    if progress.it < iterations:
        if path is None:  # a signal, and nowhere to keep the batch
            raise KeyboardInterrupt
        ckpt.save_progress(path, key, players, update.adam, generator, progress)
        return None
    results = _scored(datas, seeds, g_losses, emas, players, eval_z, progress, update, device, precision, iterations)
    if path is not None:
        ckpt.save_results(path, key, results)
    return results


def _resumed(path: Path | None, key: dict, players: Players, adam, generator, device) -> Progress:
    """A stopped batch's progress (players, Adam and generator restored), or a fresh start."""
    saved = ckpt.load_progress(path, key, players, adam, generator) if path is not None else None
    if saved is None:
        return Progress()
    it, order, kept, result, seconds, scores = saved
    return Progress(it, None if order is None else order.to(device), list(kept), result, seconds, list(scores))


def _scored(datas, seeds, g_losses, emas, players, eval_z, progress, update, device, precision,
            iterations) -> list[dict]:
    """One dict per trial and scorer (view v = e * T + t) with trial()'s keys: the final samples
    and those kept, scored."""
    samples = views(players, eval_z)  # (V, 2500, 2)
    loss_d, loss_g = progress.result
    T = len(seeds)
    results = []
    scorers = [h for h in [0.0, *emas] for _ in range(T)]  # each view's EMA half-life (0: G)
    for v, h in enumerate(scorers):
        t = v % T
        toy = PACGAN_TOYS[datas[t]]
        shots = [{"iteration": it, "samples": x[v].numpy(), **mode_metrics(x[v], toy)} for it, x in progress.kept]
        results.append({"data": datas[t], "pack": players.packs[t], "g_loss": g_losses[t], "g_ema": h, "seed": seeds[t],
                        "iterations": iterations, "loss_d": loss_d[t].item(), "loss_g": loss_g[t].item(),
                        "device": str(device), "cuda_graph": update.captured, "precision": precision,
                        **mode_metrics(samples[v], toy), "seconds": round(progress.seconds, 2),
                        "curve": curves.curve(progress.scores, v),
                        "_samples": samples[v].numpy(), "_snapshots": shots})
    return results
