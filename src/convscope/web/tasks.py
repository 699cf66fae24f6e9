"""The jobs the web app runs: each is a few calls into the library, the same ones the CLI
makes, with typed arguments; none holds an algorithm.

Every function takes the job's context first (for progress, previews and cancellation), then
keyword arguments, and returns a JSON-ready dict whose images are result ids in the store.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from convscope.errors import UnknownNameError, UserInputError
from convscope.web.jobs import JobContext
from convscope.web.store import Store, StoredImage

if TYPE_CHECKING:
    from torch import Tensor

    from convscope.data.datasets import ImageDataset
    from convscope.inspect.scan import TopK
    from convscope.models import ConvModel
    from convscope.stylenet import NetInfo, TransformerNet

__all__ = [
    "SHOWN_CHANNELS",
    "SYNTHESES",
    "Served",
    "activations",
    "attribute",
    "channel",
    "predict",
    "scan",
    "stylize",
    "synthesize",
]

SHOWN_CHANNELS = 512
"""The activation grid shows at most this many channels (the first ones)."""

SYNTHESES = ("visualize", "adversarial", "invert", "dream", "texture", "style")


@dataclass
class Served:
    """What one server serves: the models named at start-up (loaded on first use), the
    shipped style network, an optional dataset for top patches, and the store."""

    models: Sequence[str]
    store: Store
    device: torch.device
    stylenet: str = "four-styles"
    dataset: str | None = None
    _loaded: dict[str, ConvModel] = field(default_factory=dict)
    _net: tuple[TransformerNet, NetInfo] | None = None
    _data: ImageDataset | None = None
    _scans: dict[tuple[str, str], TopK] = field(default_factory=dict)
    _layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_model(self, name: str) -> str:
        if name not in self.models:
            raise UnknownNameError("model", name, list(self.models))
        return name

    def model(self, name: str) -> ConvModel:
        self.check_model(name)
        with self._lock:
            cm = self._loaded.get(name)
            if cm is None:
                from convscope.models import load_model

                cm = self._loaded[name] = load_model(name, device=self.device)
            return cm

    def net(self) -> tuple[TransformerNet, NetInfo]:
        with self._lock:
            if self._net is None:
                from convscope.stylenet.zoo import open_net

                self._net = open_net(self.stylenet, device=self.device)
            return self._net

    def data(self) -> ImageDataset:
        """The server's dataset (read once), or one sentence when it was started without."""
        if self.dataset is None:
            raise UserInputError("this server has no dataset; start it with --dataset NAME.")
        with self._lock:
            if self._data is None:
                from convscope.data.datasets import load_dataset

                self._data = load_dataset(self.dataset)
            return self._data

    def layers(self, name: str) -> list[dict[str, Any]]:
        """The model's layers with spatial maps (`convscope layers`' rows), in network order:
        the name to use (its alias where it has one), the dotted name and the output shape."""
        cm = self.model(name)
        with self._lock:
            known = self._layers.get(name)
        if known is None:
            from convscope.probe import layers

            rows = layers(cm, cm.preprocess.crop or 224)
            known = [
                {"name": r.alias or r.name, "dotted": r.name, "shape": list(r.shape[1:])}
                for r in rows
                if r.shape is not None and len(r.shape) == 4
            ]
            with self._lock:
                self._layers[name] = known
        return known

    def scan_of(self, model: str, layer: str) -> TopK | None:
        with self._lock:
            return self._scans.get((model, layer))

    def keep_scan(self, model: str, layer: str, top: TopK) -> None:
        with self._lock:
            self._scans[(model, layer)] = top


def _recipe(kind: str, cm: ConvModel | None, params: dict[str, Any]) -> dict[str, Any]:
    """The recipe a result PNG carries (as the CLI's "convscope" text chunk)."""
    from convscope import __version__

    return {
        "recipe": kind,
        "params": params,
        "model": None if cm is None else cm.name,
        "weights": None if cm is None else str(cm.source),
        "seed": params.get("seed", 0),
        "convscope": __version__,
        "torch": torch.__version__,
        "made_by": "convscope serve",
    }


def _result(
    served: Served,
    image: Any,
    *,
    name: str,
    kind: str,
    cm: ConvModel | None,
    params: dict[str, Any],
) -> str:
    return served.store.add_result(image, name=name, meta=_recipe(kind, cm, params)).id


def predict(ctx: JobContext, served: Served, *, model: str, image: StoredImage) -> dict[str, Any]:
    """The top-5 classes (none for a model without class names)."""
    cm = served.model(model)
    with torch.inference_mode():
        (preds,) = cm.classify(image.image, top=5) if cm.classes else ([],)
    return {"predictions": [{"index": p.index, "name": p.name, "prob": p.prob} for p in preds]}


def _maps(cm: ConvModel, image: StoredImage, layer: str) -> tuple[str, Tensor]:
    """The layer's dotted name and its (C, h, w) maps on the image (one sentence for a layer
    without spatial maps)."""
    from convscope.inspect.activations import activation_maps

    name = cm.resolve(layer)
    act = activation_maps(cm, image.image, name)  # (C, h, w)
    if act.dim() != 3:
        raise UserInputError(f"layer {layer} has no spatial maps (output {tuple(act.shape)}).")
    return name, act


def activations(
    ctx: JobContext, served: Served, *, model: str, image: StoredImage, layer: str
) -> dict[str, Any]:
    """A layer's maps as a sprite of equal tiles (row-major, `ncol` per row, no padding), so
    that the page can tell which channel a click falls on; and the CLI's labelled grid."""
    from convscope.inspect.activations import (
        activation_grid,
        channel_tiles,
        scaling_caption,
        strongest_channels,
    )
    from convscope.render.grids import image_grid

    cm = served.model(model)
    name, act = _maps(cm, image, layer)
    c, h, w = (int(s) for s in act.shape)
    shown = list(range(min(c, SHOWN_CHANNELS)))
    ncol = min(32, max(1, round(len(shown) ** 0.5 * 1.6)))
    tile = max(h, w)
    tiles = channel_tiles(act, channels=shown)
    sprite = image_grid(tiles, ncol=ncol, tile=tile, pad=0)
    grid = activation_grid(act, channels=shown, title=f"{cm.name} · {layer}")
    params = {"layer": layer, "image": image.label}
    return {
        "layer": layer,
        "channels": c,
        "shown": len(shown),
        "ncol": ncol,
        "tile": tile,
        "size": [h, w],
        "caption": scaling_caption(act, shown),
        "strongest": strongest_channels(act, k=min(8, c)),
        "sprite": served.store.add_result(sprite, name="sprite").id,
        "grid": _result(
            served, grid, name=f"activations-{layer}", kind="activations", cm=cm, params=params
        ),
        "scanned": served.scan_of(model, name) is not None,
    }


def channel(
    ctx: JobContext, served: Served, *, model: str, image: StoredImage, layer: str, channel: int
) -> dict[str, Any]:
    """One channel over the image, and its top dataset patches when a scan exists."""
    from convscope.inspect.activations import activation_overlay

    cm = served.model(model)
    name, act = _maps(cm, image, layer)
    if not 0 <= channel < act.shape[0]:
        raise UserInputError(
            f"channel {channel} is out of range 0..{act.shape[0] - 1} for layer {layer}."
        )
    seen = cm.preprocess.geometry(image.image)  # (3, H, W) as the model sees it
    overlay = activation_overlay(seen, act[channel])
    params = {"layer": layer, "channel": channel, "image": image.label}
    out: dict[str, Any] = {
        "overlay": _result(
            served,
            overlay,
            name=f"{layer}-ch{channel}",
            kind="activation-overlay",
            cm=cm,
            params=params,
        ),
        "max": float(act[channel].max()),
        "mean": float(act[channel].mean()),
        "patches": None,
    }
    top = served.scan_of(model, name)
    if top is not None:
        from convscope.inspect.patches import top_patches_figure

        fig = top_patches_figure(cm, served.data(), name, top, [channel], guided=True)
        out["patches"] = _result(
            served,
            fig,
            name=f"{layer}-ch{channel}-patches",
            kind="top-patches",
            cm=cm,
            params=params,
        )
    return out


def scan(ctx: JobContext, served: Served, *, model: str, layer: str, k: int = 6) -> dict[str, Any]:
    """The streaming top-k scan of the server's dataset at `layer` (kept while it runs)."""
    from convscope.inspect.scan import scan_top_activations

    data = served.data()
    cm = served.model(model)
    name = cm.resolve(layer)
    top = scan_top_activations(cm, data, name, k=min(k, len(data)), on_progress=ctx.on_progress)
    served.keep_scan(model, name, top)
    return {"layer": layer, "images": top.seen}


def attribute(
    ctx: JobContext,
    served: Served,
    *,
    model: str,
    image: StoredImage,
    methods: Sequence[str],
    target: str | None,
    faithfulness_steps: int,
    seed: int,
) -> dict[str, Any]:
    """The saliency methods side by side (the CLI's panel), the deletion/insertion AUCs of
    each against random maps, and the GrabCut cut-out seeded by the first method's map."""
    from convscope.attribute import (
        METHODS,
        class_probability,
        describe_target,
        explain_image,
        make_targets,
        seen_images,
    )
    from convscope.attribute.faithfulness import evaluate
    from convscope.attribute.segment import cutout_rgba, grabcut_segment
    from convscope.events import Progress
    from convscope.render.heatmaps import saliency_panel

    cm = served.model(model)
    for m in methods:
        if m not in METHODS:
            raise UnknownNameError("method", m, list(METHODS))
    seen = seen_images(cm, image.image)  # (1, 3, H, W)
    targets = make_targets(cm, seen, target)
    total = len(methods) + 2
    done = 0

    def step(m: str) -> None:
        nonlocal done
        done += 1
        ctx.on_progress(Progress("attribute", done, total, unit="steps", message=m))

    ctx.on_progress(Progress("attribute", 0, total, unit="steps", message="saliency"))
    options: dict[str, Any] = {"generator": torch.Generator().manual_seed(seed)}
    maps, signed = explain_image(cm, seen, targets, methods, options, on_method=step)
    described = describe_target(cm, targets[0])
    p = class_probability(cm, seen, targets[0])
    title = f"{cm.name} · {image.label} · {described}" + ("" if p is None else f" · p={p:.0%}")
    panel = saliency_panel(seen[0], maps, title=title, signed=signed)
    params = {"methods": list(methods), "target": target, "image": image.label, "seed": seed}
    report = evaluate(
        cm,
        seen,
        list(methods),
        target=targets[0],
        names=[image.label],
        steps=faithfulness_steps,
        seed=seed,
        on_progress=ctx.on_progress,
    )
    step("faithfulness")
    first = maps[methods[0]]
    mask = grabcut_segment(seen[0], first[0] if first.dim() == 3 else first, seed=seed)
    cut = cutout_rgba(seen[0], mask)
    step("grabcut")
    return {
        "target": described,
        "probability": p,
        "panel": _result(served, panel, name="saliency", kind="saliency", cm=cm, params=params),
        "cutout": _result(served, cut, name="cutout", kind="segment", cm=cm, params=params),
        "coverage": float(mask.float().mean()),
        "faithfulness": [
            {"method": r.method, "deletion": r.deletion_auc, "insertion": r.insertion_auc}
            for r in report.rows
        ],
    }


def _knobs(params: dict[str, Any], *names: str) -> dict[str, Any]:
    """The knobs among `names` that the request set; the others keep the library's defaults."""
    return {k: params[k] for k in names if params.get(k) is not None}


def synthesize(
    ctx: JobContext,
    served: Served,
    *,
    kind: str,
    model: str,
    image: StoredImage | None,
    style: StoredImage | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    """One of the synthesis recipes with the knobs the request set (`params`, checked by the
    app's schema; the rest are the recipe's own defaults), previews streamed through the
    progress events."""
    from convscope.synthesize.recipes import adversarial, dream, invert, texture, visualize
    from convscope.synthesize.recipes import style as style_recipe

    cm = served.model(model)
    p = {k: v for k, v in params.items() if v is not None}
    common: dict[str, Any] = {
        "seed": int(p.get("seed", 0)),
        "preview_every": max(1, int(p.get("steps", 100)) // 20),
        "on_progress": ctx.on_progress,
    }

    def need(img: StoredImage | None, what: str) -> Tensor:
        if img is None:
            raise UserInputError(f"{kind} needs {what}; upload or pick one.")
        return img.image

    def layer() -> str:
        if "layer" not in p:
            raise UserInputError(f"{kind} needs a layer, e.g. relu3_3 for vgg16.")
        return str(p["layer"])

    extra: dict[str, Any] = {}
    picture: Any
    if kind == "visualize":
        knobs = _knobs(p, "target", "layer", "channel", "preset", "steps", "size")
        res = visualize.visualize(cm, **knobs, **common)
        picture = res.images[0]
        extra = {"objective": res.objective}
    elif kind == "adversarial":
        knobs = _knobs(p, "target", "steps", "untargeted")
        if "eps" in p:
            knobs["eps"] = float(p["eps"]) / 255  # the page gives 8-bit levels
        adv = adversarial.adversarial(cm, need(image, "an image"), **knobs, **common)
        ctx.set_preview(adv.image)
        picture = adversarial.adversarial_panel(adv)
        extra = {"success": adv.success, "linf": adv.linf, "steps": adv.steps}
    elif kind == "invert":
        knobs = _knobs(p, "size", "steps")
        inv = invert.invert(cm, need(image, "an image"), [layer()], **knobs, **common)
        picture = invert.inversion_panel(inv)
    elif kind == "dream":
        knobs = _knobs(p, "octaves", "steps", "size")
        picture = dream.dream(cm, need(image, "an image"), layer(), **knobs, **common).image
    elif kind == "texture":
        knobs = _knobs(p, "size", "steps")
        exemplar = need(style or image, "a texture image")
        picture = texture.texture(cm, exemplar, **knobs, **common).image
    elif kind == "style":
        knobs = _knobs(p, "size", "steps", "style_weight", "content_weight")
        content, painting = need(image, "a content image"), need(style, "a style image")
        picture = style_recipe.style_transfer(cm, content, [painting], **knobs, **common).image
    else:
        raise UnknownNameError("synthesis", kind, SYNTHESES)
    if isinstance(picture, torch.Tensor):
        picture = picture[0] if picture.dim() == 4 else picture
        ctx.set_preview(picture)
    labels = {
        "image": None if image is None else image.label,
        "style": None if style is None else style.label,
    }
    record = {**p, **{k: v for k, v in labels.items() if v is not None}}
    return {
        "image": _result(served, picture, name=kind, kind=kind, cm=cm, params=record),
        **extra,
    }


def stylize(
    ctx: JobContext, served: Served, *, image: StoredImage, weights: Sequence[float], size: int
) -> dict[str, Any]:
    """The shipped style network at `size` with a blend of its styles."""
    from convscope.stylenet.apply import stylize as run

    net, info = served.net()
    if len(weights) != len(info.styles):
        raise UserInputError(
            f"the network holds {len(info.styles)} styles ({', '.join(info.styles)}); "
            f"got {len(weights)} weights."
        )
    (out,) = run(net, [image.image], style=list(weights), size=size)
    params = {"weights": list(weights), "styles": info.styles, "size": size, "image": image.label}
    return {"image": _result(served, out, name="stylized", kind="stylize", cm=None, params=params)}
