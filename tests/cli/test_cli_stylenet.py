"""`convscope stylenet train|apply|export`: outputs, resume, bad inputs (exit 2, one sentence,
no output file) and the 2-process torchrun training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from convscope.cli.stylenet import preview_path, state_path
from convscope.cli.testing import assert_one_sentence, run_cli
from convscope.stylenet import TransformerNet, load_net, save_net

SRC = Path(__file__).resolve().parents[2] / "src"
TRAIN = ["--size", "32", "--batch", "2", "--style-layers", "relu1_2,relu2_2", "--lr", "0.01"]
TRAIN += ["--precision", "fp32", "--device", "cpu", "--quiet"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Four small photos-to-be in a folder (one of them not an image, which is skipped)."""
    root = tmp_path / "photos"
    root.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        arr = (torch.rand(40, 48 + 4 * i, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / f"p{i}.png")
    return root


@pytest.fixture
def two_style_net(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(norm="conditional", styles=2)
    return save_net(net, tmp_path / "two.safetensors", styles=["brick", "grass"])


def _png(path: Path, w: int = 40, h: int = 36) -> Path:
    Image.new("RGB", (w, h), (200, 120, 40)).save(path)
    return path


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---- train -------------------------------------------------------------------------------------
def test_train_writes_a_network_with_its_recipe_and_previews(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net.safetensors"
    args = ["stylenet", "train", "--style", "brick", "--style", "grass", "--dataset", str(photos)]
    code, _, err = run_cli(
        capsys, *args, *TRAIN, "--steps", "2", "--preview-every", "1", "--out", str(out)
    )
    assert code == 0, err
    _, info = load_net(out)
    assert info.styles == ["brick", "grass"] and info.norm == "conditional"
    assert len(info.thumbnails) == 2 and all(len(h) == 64 for h in info.thumbnails)
    t = info.training
    assert (
        t["steps"] == 2
        and t["size"] == 32
        and t["command"][:3] == ["convscope", "stylenet", "train"]
    )
    assert set(t["final_losses"]) == {"loss", "content", "style", "tv"}
    for step in (1, 2):
        with Image.open(preview_path(out, step)) as im:
            assert im.size[0] > im.size[1] > 0  # 2 rows (styles) of 4 photos
    assert not state_path(out).exists()  # the state goes when the run finishes


def test_resume_continues_to_the_uninterrupted_network(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run interrupted after its step-2 checkpoint and resumed ends as the run that went
    through (the CLI keeps the checkpoint beside --out while it runs)."""
    import convscope.stylenet.train as train_lib

    args = ["stylenet", "train", "--style", "brick", "--dataset", str(photos), *TRAIN]
    whole = tmp_path / "whole.safetensors"
    assert run_cli(capsys, *args, "--steps", "4", "--out", str(whole))[0] == 0

    stopped = tmp_path / "stopped.safetensors"
    real = train_lib.train_stylenet

    def stop_at_3(*a: object, **k: object) -> object:
        def on_progress(event: object) -> None:
            if getattr(event, "done", 0) >= 3:
                raise KeyboardInterrupt

        return real(*a, **{**k, "on_progress": on_progress})  # type: ignore[arg-type]

    train_lib.train_stylenet = stop_at_3  # type: ignore[assignment]
    try:
        code, _, err = run_cli(
            capsys, *args, "--steps", "4", "--checkpoint-every", "2", "--out", str(stopped)
        )
    finally:
        train_lib.train_stylenet = real
    assert code == 130 and "--resume" in err
    assert state_path(stopped).is_file() and not stopped.exists()
    code, _, err = run_cli(
        capsys, *args, "--steps", "4", "--checkpoint-every", "2", "--resume", "--out", str(stopped)
    )
    assert code == 0, err
    a, _ = load_net(whole)
    b, _ = load_net(stopped)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_train_bad_inputs_are_one_sentence(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net.safetensors"
    base = ["stylenet", "train", "--dataset", str(photos), "--steps", "1", *TRAIN]
    cases = [
        (["--style", "brick", "--out", str(tmp_path / "net.pt")], ".safetensors"),
        (["--style", "brick", "--resume", "--out", str(out)], "nothing to resume"),
        (["--style", "brick", "--style", "grass", "--norm", "batch", "--out", str(out)], "batch"),
        (["--style", "no_such_style", "--out", str(out)], "no_such_style"),
        (["--style", "brick", "--out", str(tmp_path / "nowhere" / "n.safetensors")], "nowhere"),
        (["--style", "brick", "--preview-every", "-1", "--out", str(out)], "--preview-every"),
    ]
    for extra, words in cases:
        code, _, err = run_cli(capsys, *base, *extra)
        assert code == 2, (extra, err)
        assert words in assert_one_sentence(err)
    assert _files(tmp_path) == {"photos"}
    state_path(out).write_bytes(b"an interrupted run's state")  # kept, never overwritten
    code, _, err = run_cli(capsys, *base, "--style", "brick", "--out", str(out))
    assert code == 2 and "add --resume" in assert_one_sentence(err)
    assert state_path(out).read_bytes() == b"an interrupted run's state"


def test_two_process_torchrun_equals_one_process(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """Data-parallel training on two gloo ranks (each its half of every batch of 4) ends
    within float tolerance of one process with the same global batch: the same losses, and
    networks that give the same images."""
    args = ["stylenet", "train", "--style", "brick", "--dataset", str(photos), *TRAIN[:-3]]
    args = [{"2": "4", "0.01": "0.001"}.get(a, a) for a in args]  # --batch 4: 2 per rank
    single = tmp_path / "single.safetensors"
    code, _, err = run_cli(capsys, *args, "--steps", "2", "--device", "cpu", "--quiet",
                           "--out", str(single))  # fmt: skip
    assert code == 0, err
    multi = tmp_path / "multi.safetensors"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "convscope", *args, "--steps", "2", "--device", "cpu", "--out", str(multi),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, info_a = load_net(single)
    b, info_b = load_net(multi)
    assert info_b.training["world_size"] == 2 and info_a.training["world_size"] == 1
    # The outputs, not the weights: a conv bias before an instance norm has no effect and a
    # true gradient of 0, so Adam turns its rounding noise (which differs when the batch's
    # gradient is summed in two halves) into steps of ±lr either way. The first step's
    # outputs agree to about 1e-5; by the second that noise grows to about 3e-4 (2 threads
    # against 1 in one process: about 3e-6).
    x = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        worst = float((a(x) - b(x)).abs().max())
    assert worst < 2e-3, worst
    first_a = info_a.training["final_losses"]["loss"]
    assert info_b.training["final_losses"]["loss"] == pytest.approx(first_a, rel=1e-5)


# ---- apply -------------------------------------------------------------------------------------
def test_apply_to_an_image_a_folder_and_a_blend_grid(
    tmp_path: Path, two_style_net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.png"
    code, _, err = run_cli(
        capsys, "stylenet", "apply", str(two_style_net), "chelsea", "--style", "grass",
        "--size", "64", "--out", str(one),
    )  # fmt: skip
    assert code == 0, err
    with Image.open(one) as im:
        assert max(im.size) == 64
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", 45, 33)
    _png(folder / "b.png", 50, 40)
    outs = tmp_path / "outs"
    outs.mkdir()
    code, _, err = run_cli(
        capsys, "stylenet", "apply", str(two_style_net), str(folder), "--blend",
        "brick=1,grass=3", "--preserve-color", "--out", str(outs),
    )  # fmt: skip
    assert code == 0, err
    assert _files(outs) == {"a.png", "b.png"}
    with Image.open(outs / "a.png") as im:
        assert im.size == (45, 33)
    grid = tmp_path / "grid.png"
    code, _, err = run_cli(
        capsys, "stylenet", "apply", str(two_style_net), str(folder / "a.png"), "--grid",
        "brick,grass", "--out", str(grid),
    )  # fmt: skip
    assert code == 0, err
    with Image.open(grid) as im:
        assert im.size[0] > 5 * 45 and im.size[1] < 2 * 33 + 20  # one row of five blends


def test_apply_to_a_video_keeps_frames_size_and_rate(
    tmp_path: Path, two_style_net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import av

    from convscope.data.video import probe_video

    src = tmp_path / "clip.mp4"
    with av.open(str(src), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(9):
            arr = torch.full((48, 64, 3), 20 * i, dtype=torch.uint8).numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "styled.mp4"
    code, _, err = run_cli(
        capsys, "stylenet", "apply", str(two_style_net), str(src), "--style", "0",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    a, b = probe_video(src), probe_video(out)
    assert (b.frames, b.width, b.height, b.fps) == (a.frames, a.width, a.height, a.fps)


def test_apply_bad_inputs_are_one_sentence_and_write_nothing(
    tmp_path: Path, two_style_net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    image = _png(tmp_path / "in.png")
    tiny = _png(tmp_path / "tiny.png", 20, 40)
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(500))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)
    out = tmp_path / "out.png"
    net = str(two_style_net)
    cases = [
        ([net, str(image), "--style", "marble"], "marble"),
        ([net, str(image), "--style", "7"], "out of range"),
        ([net, str(image)], "choose one with --style"),
        ([net, str(image), "--blend", "brick=-1,grass=1"], "0 or more"),
        ([net, str(image), "--blend", "brick=0,grass=0"], "above 0"),
        ([net, str(image), "--blend", "brick:0.5"], "NAME=WEIGHT"),
        ([net, str(image), "--blend", "brick=1,marble=1"], "marble"),
        ([net, str(image), "--style", "brick", "--blend", "brick=1"], "not both"),
        ([net, str(tiny), "--style", "0"], "32 px"),
        ([net, str(image), "--style", "0", "--size", "16"], "--size"),
        ([str(foreign), str(image)], "not a convscope style network"),
        ([str(pickled), str(image)], str(pickled.name)),
        ([str(tmp_path / "nope.safetensors"), str(image)], "does not exist"),
        (["no-such-net", str(image)], "no-such-net"),
        ([net, str(image), "--grid", "brick"], "two or four"),
    ]
    for extra, words in cases:
        code, _, err = run_cli(capsys, "stylenet", "apply", *extra, "--out", str(out))
        assert code == 2, (extra, err)
        assert words in assert_one_sentence(err), (extra, err)
    code, _, err = run_cli(
        capsys, "stylenet", "apply", net, str(corrupt), "--style", "0", "--out",
        str(tmp_path / "o.mp4"),
    )  # fmt: skip
    assert code == 2 and "broken.mp4" in assert_one_sentence(err)
    left = _files(tmp_path) - {"in.png", "tiny.png", "broken.mp4", "foreign.safetensors"}
    assert left == {"pickled.safetensors", "two.safetensors"}


# ---- export ------------------------------------------------------------------------------------
def test_export_writes_a_checked_onnx_file(
    tmp_path: Path, two_style_net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net.onnx"
    code, stdout, err = run_cli(
        capsys, "stylenet", "export", str(two_style_net), "--onnx", str(out), "--blend",
        "brick=1,grass=1",
    )  # fmt: skip
    assert code == 0, err
    assert out.is_file() and "onnxruntime within" in stdout
    for extra, words in (
        (["--onnx", str(tmp_path / "x.pt"), "--style", "0"], ".onnx"),
        (["--onnx", str(tmp_path / "y.onnx")], "choose one"),
    ):
        code, _, err = run_cli(capsys, "stylenet", "export", str(two_style_net), *extra)
        assert code == 2 and words in assert_one_sentence(err)
    assert not (tmp_path / "y.onnx").exists()
