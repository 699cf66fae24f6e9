"""Train a feed-forward style network (Johnson et al. 2016) against a loss network, on one
process or data-parallel on many:

    result = train_stylenet(vgg, [starry], contents, steps=2000)
    result = train_stylenet(vgg, [a, b, c, d], contents, norm="conditional")   # N styles

- **Losses.** Those of `convscope.synthesize.perceptual`, written once: content at relu2_2
  (the relative error of the features of the stylized batch against the content batch's),
  style Grams at relu1_2, relu2_2, relu3_3, relu4_3 against targets computed once per style
  image, and TV in 0–255 levels; loss = content_weight · content + style_weight · style +
  tv_weight · tv, each term a mean over the batch's images. Each forward of the loss network
  stops at the deepest layer it needs (the content batch's at the content layer).
- **Precision.** Where the CPU (or GPU) does bfloat16 natively (`precision` "auto"), the loss
  network's forwards and backwards run under bfloat16 autocast; the style network, its
  weights, Adam's state and the losses stay float32. (Under autocast the style network
  trains about 1.8× faster, but with instance norm it diverged: at 128 px, lr 1e-3, the loss
  grew from step 25 and was NaN by step 117, where float32 kept falling.)
- **Data.** `contents` is anything with a length and indexing that gives images (a list of
  tensors, or a `ContentImages` over a folder, which loads lazily). The batches walk through
  seeded random permutations of it, one per epoch; each image is resized so its short side
  is `size` and cropped to `size`×`size` at a random place.
- **Styles.** With N styles (norm "conditional"), each step trains one style, drawn at random,
  as Dumoulin et al. do; the per-style scales and shifts learn at N × `lr`, as each trains on
  1/N of the steps (at `lr`, 500 steps into a 4-style run the styles still looked the same).
  `style_size` resizes each style image's long side first (the style
  scale: the Grams describe the style's patterns at that size); by default, `size`.
- **Determinism and resuming.** The initial weights come from `seed` (inside
  `torch.random.fork_rng`, so the caller's random state is left alone). Every random choice
  of step t (its images, crops and style) comes from a generator seeded with (seed, t), so
  the random state of a run *is* (seed, step): a `Checkpoint` (the weights, Adam's state, the
  step and the history, handed to `on_checkpoint` every `checkpoint_every` steps) resumes
  exactly where it was taken (`resume=`), and the resumed run equals the uninterrupted one.
- **Data-parallel.** When a `torch.distributed` process group is initialized (`torchrun`),
  the network is wrapped in `DistributedDataParallel` and `batch` is the global batch: every
  rank draws the same global batch and loads and trains on its own slice of it (rank r, the
  r-th `batch / world` images), and DDP averages the gradients. As the losses are means over
  images, this equals one process with the same global batch (up to float rounding). The
  history holds the ranks' mean losses; `on_checkpoint` and `on_preview` run on rank 0 only.
  With batch norm, each rank normalizes over its own slice (DDP's default).
- **Non-finite steps.** A step whose gradient holds an inf or NaN is skipped (Adam's state
  untouched) and marked "skipped" in the history, so one bad batch cannot poison the run.
- The loss network is left as it was (its `requires_grad` flags restored).

The default weights (content 10, style 10, TV 1e-4 on the normalized terms) are provisional,
from two short runs (300 steps at 128 px, batch 4, Starry Night, ten bundled photos): with
content 1 : style 10 the content was lost, with 1 : 1 it was kept and the style showed. They
will be set from the longer runs that train the shipped model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from convscope.data.datasets import ImageDataset
from convscope.errors import UserInputError, check_number, check_whole
from convscope.events import Progress, ProgressCallback, no_progress
from convscope.models.base import ConvModel, check_image_batch
from convscope.probe import Probe
from convscope.stylenet.files import Checkpoint, image_hash
from convscope.stylenet.net import MIN_SIDE, Norm, TransformerNet
from convscope.synthesize.objectives import Inputs, Objective
from convscope.synthesize.octaves import resize
from convscope.synthesize.perceptual import StyleTarget, check_size, perceptual, style_grams
from convscope.synthesize.recipes.style import choose_precision, output_size

__all__ = [
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "Checkpoint",
    "ContentImages",
    "Contents",
    "StyleNetResult",
    "train_stylenet",
]

CONTENT_LAYER = "relu2_2"
STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class Contents(Protocol):
    """Content images by index: (3, h, w) or (1, 3, h, w) in [0, 1], any sizes."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Tensor: ...


class ContentImages:
    """The images of a dataset (`convscope.data.load_dataset`: a folder, or a built-in set),
    decoded when first asked for and kept in memory shrunk so their short side is `side` (as
    8-bit, about 200 KB each at 256 px), so a few thousand photos are read from disk once
    (`keep` bounds how many are kept). An unreadable or blank (one-colour) image is replaced
    by the next usable one (the same on every rank) and its name kept in `skipped`: a blank
    crop gives an infinite gradient through the first instance norm (seen on transparent
    wallpapers, which read as plain white)."""

    def __init__(self, dataset: ImageDataset, *, side: int, keep: int = 8192) -> None:
        self.dataset = dataset
        self.side = check_whole(side, "--size", MIN_SIDE)
        self.skipped: dict[str, str] = {}
        self._cache: dict[int, Tensor] = {}
        self._keep = keep

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        n = len(self.dataset)
        for k in range(n):
            i = (index + k) % n
            if i in self._cache:
                return self._cache[i].float() / 255.0
            try:
                image = self.dataset[i].image
            except UserInputError as exc:
                self.skipped[self.dataset.ident(i)] = str(exc)
                continue
            x = check_image_batch(image, f"content image {self.dataset.ident(i)}")[:1]
            if float(x.flatten(2).std(dim=2).max()) < 1 / 255:  # one colour: a transparent PNG
                self.skipped[self.dataset.ident(i)] = "a blank image (one colour)"
                continue
            h, w = int(x.shape[-2]), int(x.shape[-1])
            scale = self.side / min(h, w)
            if scale < 1:
                hw = (max(self.side, round(h * scale)), max(self.side, round(w * scale)))
                x = resize(x, hw)
            small = (x.clamp(0, 1) * 255).round().to(torch.uint8)
            if len(self._cache) < self._keep:
                self._cache[i] = small
            return small.float() / 255.0
        raise UserInputError(f"no image of {self.dataset.name} could be read.")


@dataclass
class StyleNetResult:
    """The trained network (in eval mode), each step's losses, and the configuration."""

    net: TransformerNet
    history: list[dict[str, float]]  # per step: loss, content, style, tv, style index, skipped
    config: dict[str, Any] = field(default_factory=dict)


def _crop(image: Tensor, size: int, u: Tensor) -> Tensor:
    """(1, 3, size, size): short side resized to `size`, then a square crop at the place
    `u` (2,) in [0, 1) picks."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scale = size / min(h, w)
    hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = resize(image, hw).clamp(0.0, 1.0) if hw != (h, w) else image
    y0 = min(int(float(u[0]) * (hw[0] - size + 1)), hw[0] - size)
    x0 = min(int(float(u[1]) * (hw[1] - size + 1)), hw[1] - size)
    return x[..., y0 : y0 + size, x0 : x0 + size]


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def _draw(seed: int, step: int, batch: int, n: int, styles: int) -> tuple[list[int], Tensor, int]:
    """Step `step`'s global batch: the content indices, the crop places (batch, 2) and the
    style, all a function of (seed, step)."""
    first = step * batch
    picks = []
    for i in range(first, first + batch):
        epoch, position = divmod(i, n)
        picks.append(_permutation(seed, epoch, n)[position])
    g = torch.Generator().manual_seed(seed * 7_919 + 104_729 * (step + 1))
    places = torch.rand(batch, 2, generator=g)
    style = int(torch.randint(styles, (1,), generator=g)) if styles > 1 else 0
    return picks, places, style


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_stylenet(
    loss_model: ConvModel,
    styles: Sequence[Tensor],
    contents: Contents,
    *,
    size: int = 256,
    batch: int = 4,
    steps: int = 2000,
    lr: float = 1e-3,
    content_weight: float = 10.0,
    style_weight: float = 10.0,
    tv_weight: float = 1e-4,
    content_layer: str = CONTENT_LAYER,
    style_layers: Sequence[str] = STYLE_LAYERS,
    style_size: int | None = None,
    norm: Norm = "instance",
    seed: int = 0,
    precision: str = "auto",
    resume: Checkpoint | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    preview_every: int = 0,
    on_preview: Callable[[int, TransformerNet], None] | None = None,
    on_progress: ProgressCallback = no_progress,
) -> StyleNetResult:
    """Train a style network for `styles` ((3, h, w) or (1, 3, h, w) in [0, 1] each) on
    `contents` (images of any size); see the module docstring. `steps` is the total, counted
    from the start of the run (a resumed run does the rest)."""
    if not styles:
        raise UserInputError("give at least one style image.")
    steps = check_whole(steps, "--steps", 1)
    checkpoint_every = check_whole(checkpoint_every, "--checkpoint-every", 0)
    preview_every = check_whole(preview_every, "--preview-every", 0)
    style_imgs = [check_image_batch(s, "style image")[:1].detach().float().cpu() for s in styles]
    rank, world = _world()
    config = _configuration(
        loss_model, style_imgs, len(contents), world, size=size, batch=batch, lr=lr,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        content_layer=content_layer, style_layers=style_layers, style_size=style_size,
        norm=norm, seed=seed, precision=precision,
    )  # fmt: skip
    start = 0 if resume is None else _resume_step(resume, config, steps)
    targets = _style_targets(loss_model, style_imgs, config)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        net = TransformerNet(norm=norm, styles=len(style_imgs) if norm == "conditional" else 1)
    net = net.to(loss_model.device)
    opt = torch.optim.Adam(_parameter_groups(net, config["lr"]))
    history: list[dict[str, float]] = []
    if resume is not None:
        net.load_state_dict(resume.net)
        opt.load_state_dict(resume.optimizer)
        history = [dict(h) for h in resume.history]
    net.train()
    model: nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net)
    flags = [(p, p.requires_grad) for p in loss_model.module.parameters()]
    layer = config["content_layer"]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        probes = (
            Probe(loss_model, [layer], stop_early=True),  # the content batch's, to its layer
            Probe(loss_model, sorted({layer, *config["style_layers"]}), detach=False,
                  clone="auto", stop_early=True),
        )  # fmt: skip
        for step in range(start, steps):
            picks, places, k = _draw(config["seed"], step, config["batch"], len(contents),
                                     len(targets))  # fmt: skip
            share = config["batch"] // world
            x = torch.cat(
                [_crop(_content(contents, picks[i]), config["size"], places[i])
                 for i in range(rank * share, (rank + 1) * share)]
            ).to(loss_model.device)  # (share, 3, size, size): this rank's slice  # fmt: skip
            opt.zero_grad(set_to_none=True)
            record = _backward(loss_model, model, probes, x, targets[k], k, config)
            finite = _finite_gradients(net)  # the same on every rank: DDP averaged them
            if finite:
                opt.step()
            record = _mean_over_ranks(record, world)
            history.append({**record, "style_index": float(k), "skipped": float(not finite)})
            done = step + 1
            if rank == 0 and on_checkpoint and checkpoint_every and done % checkpoint_every == 0:
                on_checkpoint(_checkpoint(done, net, opt, history, config))
            if rank == 0 and on_preview and preview_every and done % preview_every == 0:
                on_preview(done, net)
            try:
                on_progress(Progress("train stylenet", done, steps, "steps", metrics=record))
            except KeyboardInterrupt:  # Ctrl-C, raised between two steps: keep this one
                if rank == 0 and on_checkpoint and checkpoint_every:
                    on_checkpoint(_checkpoint(done, net, opt, history, config))
                raise
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return StyleNetResult(net.eval(), history, {**config, "steps": steps})


def _parameter_groups(net: TransformerNet, lr: float) -> list[dict[str, Any]]:
    """Adam's groups: the shared weights at `lr`; a conditional network's per-style scales and
    shifts at `lr` × the number of styles, since each style trains on 1/N of the steps (Adam's
    steps are about `lr` whatever the gradient, so they move as far in all as the shared
    weights do)."""
    per_style = [p for n, p in net.named_parameters() if n.endswith((".scale", ".shift"))]
    if not per_style or net.styles == 1:
        return [{"params": list(net.parameters()), "lr": lr}]
    ids = {id(p) for p in per_style}
    shared = [p for p in net.parameters() if id(p) not in ids]
    return [{"params": shared, "lr": lr}, {"params": per_style, "lr": lr * net.styles}]


def _configuration(
    loss_model: ConvModel, style_imgs: list[Tensor], contents: int, world: int, *, size: int,
    batch: int, lr: float, content_weight: float, style_weight: float, tv_weight: float,
    content_layer: str, style_layers: Sequence[str], style_size: int | None, norm: Norm,
    seed: int, precision: str,
) -> dict[str, Any]:  # fmt: skip
    """The run's options checked (one sentence each) and normalized: what a checkpoint must
    match to be resumed, and what the saved network records."""
    if contents == 0:
        raise UserInputError("there are no content images to train on.")
    if norm != "conditional" and len(style_imgs) > 1:
        raise UserInputError(f"{len(style_imgs)} styles need --norm conditional, not {norm!r}.")
    size = check_whole(size, "--size", MIN_SIDE)
    batch = check_whole(batch, "--batch", 1)
    if batch % world:
        raise UserInputError(f"--batch {batch} does not split evenly over {world} processes.")
    if style_size is not None:
        style_size = check_whole(style_size, "--style-size", MIN_SIDE)
    layers = [str(n) for n in style_layers]
    if not layers:
        raise UserInputError("--style-layers names no layer.")
    for name in [content_layer, *layers]:
        loss_model.resolve(name)
    check_size(loss_model, [content_layer, *layers], (size, size), "training crop")
    return {
        "size": size, "batch": batch, "lr": check_number(lr, "--lr", zero=False),
        "content_weight": check_number(content_weight, "--content-weight", zero=True),
        "style_weight": check_number(style_weight, "--style-weight", zero=False),
        "tv_weight": check_number(tv_weight, "--tv-weight", zero=True),
        "content_layer": content_layer, "style_layers": layers, "style_size": style_size,
        "norm": norm, "seed": check_whole(seed, "--seed", 0),
        "precision": choose_precision(precision, loss_model.device),
        "loss_model": loss_model.name, "contents": contents, "styles": len(style_imgs),
        "style_images": [image_hash(s) for s in style_imgs],
    }  # fmt: skip


def _resume_step(resume: Checkpoint, config: dict[str, Any], steps: int) -> int:
    """The step a checkpoint resumes at, when it belongs to this run (a one-sentence error
    naming what differs otherwise)."""
    if resume.config != config:
        changed = sorted(k for k in config if resume.config.get(k) != config[k])
        raise UserInputError(
            "the checkpoint was made by a different training run ("
            + ", ".join(changed or ["its configuration"]) + " differ); resume with the "
            "same options, or start again."
        )  # fmt: skip
    if resume.step > steps:
        raise UserInputError(f"the checkpoint is at step {resume.step}, past --steps {steps}.")
    return resume.step


def _style_targets(
    loss_model: ConvModel, style_imgs: list[Tensor], config: dict[str, Any]
) -> list[StyleTarget]:
    """Each style's Gram matrices, computed once, with its long side at --style-size."""
    layers, side = config["style_layers"], config["style_size"] or config["size"]
    targets = []
    for s in style_imgs:
        hw = output_size((int(s.shape[-2]), int(s.shape[-1])), side)
        check_size(loss_model, layers, hw, "style image at --style-size")
        targets.append(StyleTarget(style_grams(loss_model, [resize(s, hw).clamp(0, 1)], layers)))
    return targets


def _backward(
    loss_model: ConvModel, model: nn.Module, probes: tuple[Probe, Probe], x: Tensor,
    target: StyleTarget, k: int, config: dict[str, Any],
) -> dict[str, float]:  # fmt: skip
    """The loss of style `k` on the content batch `x` (B, 3, size, size), its gradient
    accumulated into the network's; returns the losses."""
    content_probe, probe = probes
    layer, chosen = config["content_layer"], config["precision"]
    with torch.no_grad(), _autocast(x.device, chosen):
        content_probe.run(loss_model.preprocess.normalize(x))  # stops at the content layer
        goal = content_probe.activations[layer].float().clone()
    objective = perceptual(
        content={layer: goal},
        styles=[target],
        content_weight=config["content_weight"],
        style_weight=config["style_weight"],
        tv_weight=config["tv_weight"],
    )
    y = model(x, style=k if config["norm"] == "conditional" else None)  # float32: see above
    value, losses = _evaluate(probe, objective, y, loss_model, chosen)
    (-value).backward()  # type: ignore[no-untyped-call]
    return {"loss": float(-value.detach()), **{n: float(v) for n, v in losses.items()}}


def _finite_gradients(net: nn.Module) -> bool:
    """Whether every gradient is finite; a step whose gradient is not is skipped (recorded
    as "skipped" in the history), as mixed-precision training skips an overflowed step."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def _content(contents: Contents, index: int) -> Tensor:
    image = contents[index]
    return check_image_batch(image, f"content image {index + 1}")[:1].detach().float()


def _checkpoint(
    step: int, net: nn.Module, opt: torch.optim.Optimizer, history: list[dict[str, float]],
    config: dict[str, Any],
) -> Checkpoint:  # fmt: skip
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    optimizer = opt.state_dict()
    copied = {i: {n: torch.as_tensor(v).clone() for n, v in s.items()} for i, s in
              optimizer["state"].items()}  # fmt: skip
    return Checkpoint(
        step, state, {"state": copied, "param_groups": optimizer["param_groups"]},
        [dict(h) for h in history], dict(config),
    )  # fmt: skip


def _mean_over_ranks(record: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return record
    import torch.distributed as dist

    values = torch.tensor(list(record.values()), dtype=torch.float64)
    dist.all_reduce(values)
    return {k: float(v) / world for k, v in zip(record, values, strict=True)}


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


def _evaluate(
    probe: Probe, objective: Objective, y: Tensor, model: ConvModel, precision: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective on the stylized batch `y` (B, 3, H, W), through the loss network."""
    with _autocast(y.device, precision):
        probe.run(model.preprocess.normalize(y))
    acts = {n: a.float() for n, a in probe.activations.items()}
    return objective.evaluate(Inputs(acts, y, None, model.preprocess))
