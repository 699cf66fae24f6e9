"""Rules every command follows, tested once for all of them: one rule for output paths (the
folder must exist; convscope creates none), all outputs checked before any work and written
all or none, non-finite floats refused, the same seed giving the same bytes, and torch's
pickle-protocol warning kept off stderr."""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from convscope.cli.root import command
from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.models.tiny import TinyNet
from convscope.models.weights import load_state_dict_file

pytestmark = pytest.mark.usefixtures("one_thread")

OUTPUT_OPTIONS = ("--out", "--raw", "--cutout", "--html", "--save-topk", "--panel", "--onnx")
"""The names convscope gives options that name files (or, for `demo`, a folder) to write."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of eight small images and a feature file of it (tiny's `act` layer)."""
    root = tmp_path_factory.mktemp("inputs")
    images = root / "images"
    images.mkdir()
    for i in range(8):
        Image.new("RGB", (12, 12), (30 * i, 255 - 30 * i, 90)).save(images / f"im{i}.png")
    from convscope.inspect.features import extract_features
    from convscope.models.tiny import tiny_model

    extract_features(tiny_model(), images, "act", out=root / "f.safetensors")
    from convscope.cli.root import main

    made = main(["visualize", *VISUALIZE, "--out", str(root / "v.png"), "--quiet"])
    assert made == 0
    from convscope.stylenet import TransformerNet, save_net

    torch.manual_seed(0)
    save_net(TransformerNet(), root / "net.safetensors", styles=["one"])
    return root


def _all_commands() -> list[tuple[str, typing.Any]]:
    """(name, command) for every command, a group's as "group command"."""
    found = []
    for name, cmd in command().commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        if subs:
            found += [(f"{name} {sub}", c) for sub, c in subs.items()]
        else:
            found.append((name, cmd))
    return found


VISUALIZE = ["-m", "tiny", "--layer", "relu1", "--channel", "0", "--steps", "3", "--size", "16"]

INVERT = ["--size", "16", "--steps", "2"]
DREAM = ["--size", "24", "--octaves", "1", "--steps", "2"]
TEXTURE = ["-m", "tiny", "--layers", "relu1,act", "--size", "16", "--steps", "2"]
STYLE = ["-m", "tiny", "--content-layers", "act", "--style-layers", "relu1,act", "--size", "24"]

# command → (its arguments with the outputs as {option: file name}, the outputs)
Runner = Callable[[Path, dict[str, Path]], list[str]]
COMMANDS: dict[str, tuple[Runner, dict[str, str]]] = {
    "classify": (lambda d, o: ["classify", "coffee", "-m", "tiny"], {"--out": "r.json"}),
    "filters": (lambda d, o: ["filters", "-m", "tiny"], {"--out": "f.png"}),
    "activations": (lambda d, o: ["activations", "coffee", "-m", "tiny"], {"--out": "a.png"}),
    "features": (
        lambda d, o: ["features", str(d / "images"), "-m", "tiny", "-l", "act"],
        {"--out": "g.safetensors"},
    ),
    "neighbors": (
        lambda d, o: ["neighbors", "@0", "--index", str(d / "f.safetensors"), "--k", "2"],
        {"--out": "n.png"},
    ),
    "embed": (
        lambda d, o: ["embed", str(d / "f.safetensors"), "--method", "pca"],
        {"--out": "e.png", "--html": "e.html"},
    ),
    "top-patches": (
        lambda d, o: ["top-patches", str(d / "images"), "-m", "tiny", "-l", "relu1", "--k", "2"],
        {"--out": "t.png", "--save-topk": "t.safetensors"},
    ),
    "train-small": (
        lambda d, o: ["train-small", "--limit", "40", "--epochs", "1"],
        {"--out": "s.safetensors"},
    ),
    "saliency": (
        lambda d, o: ["saliency", "coffee", "-m", "tiny", "--method", "gradient"],
        {"--out": "s.png", "--raw": "s.safetensors"},
    ),
    "segment": (
        lambda d, o: ["segment", "coffee", "-m", "tiny"],
        {"--out": "m.png", "--cutout": "c.png"},
    ),
    "faithfulness": (
        lambda d, o: ["faithfulness", "coffee", "-m", "tiny", "--methods", "gradient"],
        {"--out": "p.png"},
    ),
    "visualize": (lambda d, o: ["visualize", *VISUALIZE], {"--out": "v.png"}),
    "adversarial": (
        lambda d, o: ["adversarial", "coffee", "-m", "tiny", "--target", "cool", "--steps", "2"],
        {"--out": "adv.png", "--panel": "adv-panel.png"},
    ),
    "invert": (
        lambda d, o: ["invert", "coffee", "-m", "tiny", "--layers", "relu1,act", *INVERT],
        {"--out": "i.png"},
    ),
    "dream": (
        lambda d, o: ["dream", "coffee", "-m", "tiny", "-l", "act", *DREAM],
        {"--out": "d.png"},
    ),
    "texture": (lambda d, o: ["texture", "brick", *TEXTURE], {"--out": "tx.png"}),
    "style": (
        lambda d, o: ["style", "coffee", "brick", *STYLE, "--steps", "2"],
        {"--out": "st.png"},
    ),
    "stylenet train": (
        lambda d, o: [
            *("stylenet", "train", "--style", "brick", "--dataset", str(d / "images")),
            *("-m", "tiny", "--content-layer", "relu1", "--style-layers", "relu1,act"),
            *("--size", "32", "--batch", "1", "--steps", "1", "--device", "cpu"),
        ],
        {"--out": "sn.safetensors"},
    ),
    "stylenet apply": (
        lambda d, o: ["stylenet", "apply", str(d / "net.safetensors"), "coffee"],
        {"--out": "sa.png"},
    ),
    "stylenet export": (
        lambda d, o: ["stylenet", "export", str(d / "net.safetensors")],
        {"--onnx": "n.onnx"},
    ),
    "reproduce": (lambda d, o: ["reproduce", str(d / "v.png")], {"--out": "r.png"}),
    "demo": (lambda d, o: ["demo", "--sections", "layers"], {"--out": "gallery"}),
    "atlas": (
        lambda d, o: [
            *("atlas", "-m", "tiny", "--dataset", str(d / "images"), "--layers", "relu1"),
            *("--channels", "0-1", "--steps", "2", "--size", "16", "--diverse", "0", "--k", "2"),
            *("--map-method", "pca", "--neighbors", "2"),
        ],
        {"--out": "atlas"},
    ),
    "serve": (lambda d, o: ["serve", "--port", "0", "--model", "tiny"], {}),
}


def _args(name: str, inputs: Path, outputs: dict[str, Path]) -> list[str]:
    runner, _ = COMMANDS[name]
    args = runner(inputs, outputs)
    for option, path in outputs.items():
        args += [option, str(path)]
    return [*args, "--quiet"] if name not in ("classify", "stylenet export") else args


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_the_table_covers_every_output_option() -> None:
    found = {
        (name, opt)
        for name, cmd in _all_commands()
        for param in cmd.params
        for opt in param.opts
        if opt in OUTPUT_OPTIONS
    }
    listed = {(name, opt) for name, (_, outs) in COMMANDS.items() for opt in outs}
    assert found == listed


CASES = [(name, opt) for name, (_, outs) in COMMANDS.items() for opt in outs]


@pytest.mark.parametrize(("name", "option"), CASES)
def test_a_missing_folder_is_refused_before_any_work(
    name: str, option: str, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {o: tmp_path / f for o, f in COMMANDS[name][1].items()}
    outputs[option] = tmp_path / "missing" / COMMANDS[name][1][option]
    code, _, err = run_cli(capsys, *_args(name, inputs, outputs))
    assert code == 2, err
    line = assert_one_sentence(err)
    assert "does not exist" in line
    assert _files(tmp_path) == []  # no folder made, no other output written


FILE_CASES = [(n, o) for n, o in CASES if n not in ("demo", "atlas")]  # they write folders


@pytest.mark.parametrize(("name", "option"), FILE_CASES)
def test_an_output_that_is_a_folder_is_refused_and_nothing_is_written(
    name: str, option: str, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {o: tmp_path / f for o, f in COMMANDS[name][1].items()}
    outputs[option].mkdir()  # a folder with the file's name
    code, _, err = run_cli(capsys, *_args(name, inputs, outputs))
    assert code == 2, err
    assert "is a folder" in assert_one_sentence(err)
    assert _files(tmp_path) == [outputs[option].name]


def test_two_outputs_may_not_be_one_file(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "x.png"
    outputs = {"--out": same, "--cutout": same}
    code, _, err = run_cli(capsys, *_args("segment", inputs, outputs))
    assert code == 2 and "different files" in assert_one_sentence(err)
    assert _files(tmp_path) == []


def _float_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command whose type is a float."""
    found = []
    for name, cmd in _all_commands():
        hints = typing.get_type_hints(inspect.unwrap(cmd.callback), include_extras=True)
        for param in cmd.params:
            hint = hints.get(str(param.name))
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            if base is float or float in typing.get_args(base):
                found.append((name, param.opts[0]))
    return found


def test_float_options_are_found() -> None:
    options = _float_options()
    assert ("embed", "--perplexity") in options and ("saliency", "--noise") in options
    assert len(options) >= 10


@pytest.mark.parametrize(("name", "option"), _float_options())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_option_refuses_non_finite_values(
    name: str,
    option: str,
    value: str,
    inputs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outputs = {o: tmp_path / f for o, f in COMMANDS[name][1].items()}
    code, _, err = run_cli(capsys, *_args(name, inputs, outputs), option, value)
    assert code == 2, err
    line = assert_one_sentence(err)
    # Options with a bound report it (a range check runs first); the others say "finite".
    assert option in line and ("finite" in line or "greater than" in line)
    assert _files(tmp_path) == []


def test_the_same_seed_gives_the_same_bytes(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every output file, the safetensors header (metadata keys) included."""
    runs = []
    for k in range(2):
        outputs = {"--out": tmp_path / f"s{k}.png", "--raw": tmp_path / f"s{k}.safetensors"}
        args = ["saliency", "coffee", "cat", "-m", "tiny", "--method", "gradient,smoothgrad"]
        args += ["--seed", "3", "--quiet"]
        for option, path in outputs.items():
            args += [option, str(path)]
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err
        runs.append([p.read_bytes() for p in outputs.values()])
    assert runs[0] == runs[1]


def test_old_pickle_protocols_load_without_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch warns about any pickle protocol but 2 under weights_only; convscope refuses
    unsafe content itself, so the warning would only add lines before the result."""
    path = tmp_path / "p3.pt"
    torch.save(TinyNet().state_dict(), path, pickle_protocol=3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_state_dict_file(path)
    assert [str(w.message) for w in seen] == []
    code, _, err = run_cli(capsys, "classify", "coffee", "-m", "tiny", "--weights", str(path))
    assert code == 0 and err == ""
