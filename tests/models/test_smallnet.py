"""smallnet: architecture, the shipped checkpoint, and `train_small`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from convscope.errors import UnknownNameError, UserInputError, WeightsUnavailableError
from convscope.events import Progress
from convscope.models import WeightSource, load_model
from convscope.models.smallnet import (
    DIGIT_CLASSES,
    PREPROCESS,
    SmallNet,
    checkpoint_metadata,
    load_smallnet,
    shipped_checkpoint,
    smallnet_model,
)
from convscope.models.train_small import (
    TrainResult,
    _shift,
    checkpoint_command,
    save_checkpoint,
    split_indices,
    train_small,
)
from convscope.testing import TinyNet, same_state, state_copy

LAYERS = [
    "conv1", "relu1", "pool1",
    "conv2", "relu2", "pool2",
    "conv3", "relu3", "pool3",
    "flatten", "fc1", "relu4", "fc2",
]  # fmt: skip
SHAPES = {
    "conv1": (2, 16, 28, 28),
    "pool1": (2, 16, 14, 14),
    "conv2": (2, 20, 14, 14),
    "pool2": (2, 20, 7, 7),
    "relu3": (2, 20, 7, 7),
    "pool3": (2, 20, 1, 1),
    "flatten": (2, 20),
    "relu4": (2, 32),
    "fc2": (2, 10),
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- architecture ---------------------------------------------------------------------------


def test_layer_names_shapes_and_aliases() -> None:
    cm = load_model("smallnet", weights="random")
    assert cm.layer_names() == LAYERS
    assert cm.resolve("embed") == "relu4" and cm.alias_of("relu4") == "embed"
    assert cm.resolve("conv2") == "conv2" and cm.default_layer == "relu3"
    assert cm.classes == DIGIT_CLASSES and cm.source.kind == "random"
    conv2 = cm.module.get_submodule("conv2")
    assert isinstance(conv2, nn.Conv2d)
    assert tuple(conv2.weight.shape) == (20, 16, 7, 7) and conv2.padding == (3, 3)
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        cm.module.get_submodule(n).register_forward_hook(
            lambda _m, _i, o, n=n: seen.__setitem__(n, tuple(o.shape))
        )
        for n in SHAPES
    ]
    with torch.no_grad():
        logits = cm(cm.prepare(torch.rand(2, 3, 8, 8)))  # 8×8 digits upsample to 28×28
    for h in hooks:
        h.remove()
    assert seen == SHAPES and tuple(logits.shape) == (2, 10)


def test_every_activation_is_a_separate_non_inplace_module() -> None:
    relus = [m for m in SmallNet().modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 4 and not any(r.inplace for r in relus)
    assert len({id(r) for r in relus}) == 4


def test_weights_options() -> None:
    with pytest.raises(WeightsUnavailableError, match="no download"):
        load_smallnet("DEFAULT")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_smallnet("/nonexistent/net.safetensors")


def test_weights_file_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        load_smallnet(str(path))


def test_checkpoint_classes_come_from_its_metadata(tmp_path: Path) -> None:
    names = tuple("abcdefghij")
    module = SmallNet()
    cm = smallnet_model(module, WeightSource("user"), names)
    config = {"dataset": "fashion-mnist", "epochs": 1, "batch_size": 8, "lr": 0.1, "seed": 3}
    config |= {"test_fraction": 0.5, "limit": None, "shift": 0, "classes": list(names)}
    out = save_checkpoint(TrainResult(cm, 0.5, [1.0], config), tmp_path / "f.safetensors")
    loaded = load_model("smallnet", weights=str(out))
    assert loaded.classes == names and loaded.source.kind == "file"
    assert same_state(state_copy(loaded.module), state_copy(module))
    meta = checkpoint_metadata(out)
    assert meta["command"] == checkpoint_command(config, tmp_path / "f.safetensors")
    assert "--dataset fashion-mnist" in meta["command"] and "--limit" not in meta["command"]


# ---- the shipped checkpoint -----------------------------------------------------------------


def test_shipped_checkpoint_is_small_and_records_how_it_was_made() -> None:
    path = shipped_checkpoint()
    assert path.is_file() and path.stat().st_size < 1_000_000
    meta = checkpoint_metadata(path)
    for key in ("dataset", "epochs", "batch_size", "lr", "seed", "test_fraction"):
        assert key in meta
    assert meta["dataset"] == "digits" and meta["model"] == "smallnet"
    assert meta["command"].startswith("convscope train-small --dataset digits --out ")
    assert meta["torch_version"] and meta["created"]
    assert json.loads(meta["preprocess"])["mean"] == list(PREPROCESS.mean)


def test_shipped_checkpoint_classifies_held_out_digits() -> None:
    from convscope.data.datasets import digits

    cm = load_model("smallnet")
    assert cm.source.kind == "package" and cm.classes == DIGIT_CLASSES
    meta = checkpoint_metadata(shipped_checkpoint())
    ds = digits()
    _, test = split_indices(len(ds), float(meta["test_fraction"]), int(meta["seed"]))
    assert len(test) == int(meta["n_test"])
    items = [ds[int(i)] for i in test]
    preds = cm.classify(torch.stack([it.image for it in items]), top=1)
    acc = sum(p[0].index == it.label for p, it in zip(preds, items, strict=True)) / len(items)
    assert acc >= 0.95
    assert acc == pytest.approx(float(meta["test_accuracy"]), abs=1e-5)


# ---- training -------------------------------------------------------------------------------


def test_split_indices_is_seeded_and_disjoint() -> None:
    train, test = split_indices(100, 0.2, seed=5)
    assert len(train) == 80 and len(test) == 20
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    again = split_indices(100, 0.2, seed=5)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(test, split_indices(100, 0.2, seed=6)[1])
    train, test = split_indices(100, 0.25, seed=5, limit=40)
    assert len(train) == 30 and len(test) == 10
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(UserInputError):
            split_indices(100, bad, seed=0)


def test_shift_moves_images_with_zero_fill() -> None:
    x = torch.zeros(64, 1, 10, 10)
    x[:, 0, 4:6, 4:6] = 1.0
    g = torch.Generator().manual_seed(0)
    y = _shift(x, 2, g)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(y, x)
    rows = y[:, 0].amax(2).argmax(1)
    assert rows.min() >= 2 and rows.max() <= 6 and len(set(rows.tolist())) > 1
    assert torch.equal(_shift(x, 0, g), x)


def test_short_training_lowers_the_loss_and_reports_progress() -> None:
    events: list[Progress] = []
    result = train_small("digits", epochs=2, limit=300, seed=1, on_progress=events.append)
    assert len(result.losses) == 2 and result.losses[1] < result.losses[0]
    assert [e.done for e in events] == [0, 1, 2]
    assert all(e.task == "train" and e.total == 2 and e.unit == "epochs" for e in events)
    assert set(events[-1].metrics) == {"loss", "train_acc", "test_acc"}
    assert events[-1].metrics["test_acc"] == result.test_accuracy
    assert events[1].metrics["loss"] == result.losses[0]
    cfg = result.config
    assert cfg["n_train"] + cfg["n_test"] == 300 and cfg["seed"] == 1 and cfg["epochs"] == 2
    assert not result.model.module.training and result.model.source.kind == "user"


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    rng = torch.get_rng_state()
    torch.set_num_threads(2)
    a = train_small("digits", epochs=1, limit=120, seed=7)  # on one thread, by default
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is untouched
    assert torch.get_num_threads() == 2 and a.config["torch_threads"] == 1
    torch.set_num_threads(1)
    b = train_small("digits", epochs=1, limit=120, seed=7)
    c = train_small("digits", epochs=1, limit=120, seed=8)
    assert same_state(state_copy(a.model.module), state_copy(b.model.module))
    assert a.losses == b.losses
    assert not same_state(state_copy(a.model.module), state_copy(c.model.module))


def test_mnist5k_trains() -> None:
    result = train_small("mnist5k", epochs=1, limit=100, batch_size=50)
    assert result.config["dataset"] == "mnist5k" and result.config["n_test"] == 20


def test_bad_arguments() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        train_small("digit")
    bad: list[dict[str, int | float]] = [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"shift": -1},
        {"threads": 0},
        {"test_fraction": 1.0},
        {"limit": 1},
    ]
    for kwargs in bad:
        with pytest.raises(UserInputError):
            train_small("digits", **kwargs)  # type: ignore[arg-type]


def test_missing_fashion_mnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVSCOPE_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist"):
        train_small("fashion-mnist", epochs=1)
