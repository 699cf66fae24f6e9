"""Video input/output: probing, reading frames in batches, and transcoding through a transform
(frame count, size, rate and sound kept; odd sizes padded; errors as one sentence, no output
left behind). Every video is made here with PyAV: a dozen tiny frames, so each test is fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from av.video.stream import VideoStream
from PIL import Image
from torch import Tensor

import convscope.data.video as video
from convscope.data.video import (
    VIDEO_SUFFIXES,
    VideoInfo,
    is_video,
    probe_video,
    read_frames,
    transcode_video,
)
from convscope.errors import UserInputError
from convscope.events import Progress

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = 12
NTSC = Fraction(30000, 1001)
RATE = 8000  # audio sample rate


def _pattern(i: int, width: int, height: int) -> np.ndarray:
    """Frame `i`: smooth gradients and a red square that moves, as (H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [x / (width - 1), y / (height - 1), np.full_like(x, 0.5 + 0.4 * np.sin(i / 3))], -1
    )
    left = 4 + 3 * i
    img[8:20, left : left + 12] = (0.9, 0.2, 0.1)
    return np.round(img * 255).astype(np.uint8)


def make_video(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    fps: Fraction = Fraction(12),
    audio: str | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
) -> Path:
    """A FRAMES-frame video at `path`, with a 440 Hz sine in the codec `audio` if given and
    a display matrix that turns it `rotation` degrees counterclockwise."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(_pattern(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            n = int(RATE * FRAMES / fps)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = wave[None, start : start + 1024]
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = RATE, start, Fraction(1, RATE)
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "plain": make_video(d / "plain.mp4"),
        "ntsc": make_video(d / "ntsc.mp4", fps=NTSC, audio="aac"),
        "mkv": make_video(d / "opus.mkv", fps=NTSC, audio="libopus"),
        "odd": make_video(d / "odd.mp4", width=65, height=49, pix_fmt="yuv444p"),
    }


def _all_frames(path: Path) -> Tensor:
    return torch.cat(list(read_frames(path)))


def _stream_facts(path: Path) -> tuple[str, float, list[str]]:
    """(video codec, video duration in seconds, audio codecs) of the file at `path`."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        seconds = sum(float(p.duration * p.time_base) for p in c.demux(v) if p.size and p.duration)
        return v.codec_context.name, seconds, [a.codec_context.name for a in c.streams.audio]


def _audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def _invert(x: Tensor) -> Tensor:
    return 1.0 - x


def _identity(x: Tensor) -> Tensor:
    return x


def test_is_video_goes_by_suffix() -> None:
    assert VIDEO_SUFFIXES == (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
    assert is_video("clip.MP4") and is_video(Path("a/b.webm")) and is_video("x.m4v")
    assert not is_video("photo.png") and not is_video("mp4") and not is_video("anim.gif")


@pytest.mark.parametrize(
    ("name", "fps", "has_audio"),
    [("plain", Fraction(12), False), ("ntsc", NTSC, True), ("mkv", NTSC, True)],
)
def test_probe_reports_frames_rate_size_and_sound(
    clips: dict[str, Path], name: str, fps: Fraction, has_audio: bool
) -> None:
    # Matroska does not store a frame count: it is counted from the packets.
    info = probe_video(clips[name])
    assert info == VideoInfo(frames=FRAMES, fps=fps, width=64, height=48, has_audio=has_audio)
    assert isinstance(info.fps, Fraction)
    assert info.duration == pytest.approx(FRAMES / float(fps))


def test_read_frames_yields_every_frame_in_batches(clips: dict[str, Path]) -> None:
    batches = list(read_frames(clips["ntsc"], batch=5))
    assert [tuple(b.shape) for b in batches] == [(5, 3, 48, 64), (5, 3, 48, 64), (2, 3, 48, 64)]
    x = torch.cat(batches)
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    expected = torch.stack(
        [torch.from_numpy(_pattern(i, 64, 48)).permute(2, 0, 1).float() / 255 for i in range(12)]
    )
    assert float((x - expected).abs().mean()) < 0.05  # RGB, in order, through H.264


def test_read_frames_checks_the_file_before_the_first_batch(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        read_frames(tmp_path / "nope.mp4")  # raises at the call, not at next()


@pytest.mark.parametrize("transform", [_identity, _invert], ids=["identity", "invert"])
@pytest.mark.parametrize("name", ["plain", "ntsc"])
def test_transcode_keeps_count_size_rate_and_duration(
    clips: dict[str, Path], tmp_path: Path, name: str, transform: Callable[[Tensor], Tensor]
) -> None:
    src, dst = clips[name], tmp_path / "out.mp4"
    events: list[Progress] = []
    info = transcode_video(src, dst, transform, batch=5, on_progress=events.append)
    source = probe_video(src)
    assert info == source  # what was written: 12 frames, the same rate, size and sound
    assert probe_video(dst) == source
    codec, seconds, _ = _stream_facts(dst)
    assert codec == "h264"
    assert seconds == pytest.approx(_stream_facts(src)[1], abs=1e-6)
    error = (_all_frames(dst) - transform(_all_frames(src))).abs().mean()
    assert float(error) < 0.1
    assert [(e.task, e.done, e.total, e.unit) for e in events] == [
        ("stylize video", done, FRAMES, "frames") for done in (0, 5, 10, 12)
    ]
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # no temporary file left


def test_sound_is_copied_unchanged(clips: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    assert transcode_video(clips["ntsc"], dst, _invert).has_audio
    assert _stream_facts(dst)[2] == ["aac"]
    assert _audio_payloads(dst) == _audio_payloads(clips["ntsc"])  # remuxed, not re-encoded


@pytest.mark.parametrize(
    ("suffix", "audio"),
    [(".mov", "aac"), (".avi", "pcm_s16le"), (".webm", "opus"), (".mkv", "opus")],
)
def test_sound_is_re_encoded_where_the_container_refuses_it(
    clips: dict[str, Path], tmp_path: Path, suffix: str, audio: str
) -> None:
    # Opus: MOV's muxer refuses it (though FFmpeg lists it), AVI takes PCM; WebM and
    # Matroska copy it.
    dst = tmp_path / f"out{suffix}"
    info = transcode_video(clips["mkv"], dst, _invert)
    assert info.has_audio and info.frames == FRAMES and info.fps == NTSC
    assert probe_video(dst) == info
    assert _stream_facts(dst)[2] == [audio]
    if audio == "opus":
        assert _audio_payloads(dst) == _audio_payloads(clips["mkv"])


@pytest.mark.parametrize(
    ("name", "codec", "container"),
    [
        ("out.mkv", "h264", "matroska"),
        ("out.m4v", "h264", "mp4"),
        ("out.mov", "h264", "mov"),
        ("out.avi", "h264", "avi"),
        ("out.webm", "vp9", "webm"),
        ("out", "h264", "mp4"),
    ],
)
def test_every_output_container_keeps_count_and_rate(
    clips: dict[str, Path], tmp_path: Path, name: str, codec: str, container: str
) -> None:
    dst = tmp_path / name  # no suffix: an MP4 at exactly that path
    info = transcode_video(clips["ntsc"], dst, _identity)
    with av.open(str(dst)) as c:
        assert container in c.format.name.split(",")
    assert probe_video(dst) == info == probe_video(clips["ntsc"])
    assert _stream_facts(dst)[0] == codec
    assert float((_all_frames(dst) - _all_frames(clips["ntsc"])).abs().mean()) < 0.1
    assert os.listdir(tmp_path) == [name]


def test_a_coarse_time_base_lands_on_the_frame_grid(clips: dict[str, Path], tmp_path: Path) -> None:
    # Matroska keeps milliseconds (33 or 34 ms a frame at 29.97 fps); the MP4 made from it
    # must still say 30000/1001, not an average of the rounded times.
    dst = tmp_path / "out.mp4"
    transcode_video(clips["mkv"], dst, _identity)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].average_rate == NTSC
        assert c.streams.video[0].frames == FRAMES


def test_odd_output_sizes_are_padded_to_even(clips: dict[str, Path], tmp_path: Path) -> None:
    def grow(x: Tensor) -> Tensor:  # 64×48 → 65×49
        return F.interpolate(x, size=(49, 65), mode="bilinear", align_corners=False)

    dst = tmp_path / "out.mp4"
    info = transcode_video(clips["ntsc"], dst, grow)
    assert (info.width, info.height) == (66, 50)  # one repeated column and row
    assert probe_video(dst) == info
    assert (info.frames, info.fps, info.has_audio) == (FRAMES, NTSC, True)
    out = _all_frames(dst)
    assert float((out[..., :49, :65] - grow(_all_frames(clips["ntsc"]))).abs().mean()) < 0.1
    assert float((out[..., :, 65] - out[..., :, 64]).abs().mean()) < 0.05
    assert float((out[..., 49, :] - out[..., 48, :]).abs().mean()) < 0.05


def test_odd_sources_are_read_at_their_size(clips: dict[str, Path], tmp_path: Path) -> None:
    assert probe_video(clips["odd"]).width == 65
    assert tuple(_all_frames(clips["odd"]).shape) == (FRAMES, 3, 49, 65)
    info = transcode_video(clips["odd"], tmp_path / "out.mp4", _invert)
    assert (info.width, info.height, info.frames) == (66, 50, FRAMES)


def test_rotated_videos_are_read_upright(tmp_path: Path) -> None:
    # A phone's portrait video: 64×48 stored, shown turned a quarter counterclockwise.
    if not hasattr(VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    src = make_video(tmp_path / "portrait.mp4", rotation=90)
    assert (probe_video(src).width, probe_video(src).height) == (48, 64)
    x = _all_frames(src)
    assert tuple(x.shape) == (FRAMES, 3, 64, 48)
    upright = torch.from_numpy(np.rot90(_pattern(0, 64, 48)).copy()).permute(2, 0, 1) / 255
    assert float((x[0] - upright).abs().mean()) < 0.05
    dst = tmp_path / "upright.mp4"
    info = transcode_video(src, dst, _invert)  # written upright, with no display matrix
    assert (info.width, info.height) == (48, 64) and probe_video(dst) == info
    assert float((_all_frames(dst) - 1 + x).abs().mean()) < 0.1


def test_mpeg4_is_the_fallback_without_libx264(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choices = dict(video._VIDEO_ENCODERS)
    choices["default"] = (("no-such-encoder", {}), *choices["default"][1:])
    monkeypatch.setattr(video, "_VIDEO_ENCODERS", choices)
    dst = tmp_path / "out.mp4"
    info = transcode_video(clips["ntsc"], dst, _invert)
    assert _stream_facts(dst)[0] == "mpeg4"
    assert probe_video(dst) == info == probe_video(clips["ntsc"])
    assert float((_all_frames(dst) - 1 + _all_frames(clips["ntsc"])).abs().mean()) < 0.1


def _bad_inputs(d: Path, clips: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    (d / "random.mp4").write_bytes(rng.bytes(20_000))
    good = clips["ntsc"].read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 2])
    Image.fromarray(_pattern(0, 64, 48)).save(d / "picture.mp4", format="PNG")
    (d / "empty.mp4").write_bytes(b"")
    (d / "folder.mp4").mkdir()
    with av.open(str(d / "sound.mp4"), "w") as out:
        sound = out.add_stream("aac", rate=RATE)
        sound.layout = "mono"
        silence = np.zeros((1, 1024), np.float32)
        af = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
        af.sample_rate, af.pts = RATE, 0
        out.mux(sound.encode(af))
        out.mux(sound.encode(None))
    return {
        "missing": (d / "missing.mp4", "does not exist"),
        "random bytes": (d / "random.mp4", "truncated or corrupt"),
        "truncated": (d / "truncated.mp4", "truncated or corrupt"),
        "png renamed": (d / "picture.mp4", r"is an image \(PNG\), not a video"),
        "empty": (d / "empty.mp4", "empty"),
        "folder": (d / "folder.mp4", "is a folder"),
        "no video stream": (d / "sound.mp4", "has no video stream"),
    }


BAD = ["missing", "random bytes", "truncated", "png renamed", "empty", "folder", "no video stream"]


@pytest.mark.parametrize("case", BAD)
def test_unusable_inputs_are_one_sentence_and_leave_no_output(
    clips: dict[str, Path], tmp_path: Path, case: str
) -> None:
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    src, message = _bad_inputs(in_dir, clips)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for call in (
        lambda: probe_video(src),
        lambda: read_frames(src),
        lambda: transcode_video(src, out_dir / "out.mp4", _invert),
    ):
        with pytest.raises(UserInputError, match=message) as caught:
            call()
        text = str(caught.value)
        assert str(src) in text and text.endswith(".") and "\n" not in text
    assert os.listdir(out_dir) == []


def test_frames_smaller_than_min_side_are_refused(clips: dict[str, Path], tmp_path: Path) -> None:
    assert probe_video(clips["plain"], min_side=48).height == 48
    dst = tmp_path / "out.mp4"
    for call in (
        lambda: probe_video(clips["plain"], min_side=49),
        lambda: read_frames(clips["plain"], min_side=49),
        lambda: transcode_video(clips["plain"], dst, _invert, min_side=49),
    ):
        with pytest.raises(UserInputError, match=r"64×48 pixels; at least 49 pixels"):
            call()
    assert os.listdir(tmp_path) == []


def test_the_destination_is_checked_before_decoding(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 100)  # would fail to decode; the destination fails first
    with pytest.raises(UserInputError, match=r"out\.gif.*\.mp4, \.mov.*\.webm or \.m4v"):
        transcode_video(garbage, tmp_path / "out.gif", _invert)
    with pytest.raises(UserInputError, match="does not exist"):
        transcode_video(garbage, tmp_path / "no" / "out.mp4", _invert)
    with pytest.raises(UserInputError, match="it is a folder"):
        transcode_video(garbage, tmp_path, _invert)
    assert os.listdir(tmp_path) == ["garbage.mp4"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_transform_that_fails_midway_leaves_no_output(
    clips: dict[str, Path], tmp_path: Path, error: BaseException
) -> None:
    calls = []

    def flaky(x: Tensor) -> Tensor:
        calls.append(len(x))
        if len(calls) == 2:
            raise error
        return x

    dst = tmp_path / "out.mp4"
    with pytest.raises(type(error)):
        transcode_video(clips["ntsc"], dst, flaky, batch=4)
    assert calls == [4, 4]
    assert os.listdir(tmp_path) == []


def test_a_failed_transcode_keeps_the_old_output(clips: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"old")

    def shrink_later(x: Tensor) -> Tensor:  # a second size: not a valid video
        return x if x.shape[0] == 8 else x[..., :32, :32]

    with pytest.raises(UserInputError, match="every frame of a video must have one size"):
        transcode_video(clips["plain"], dst, shrink_later)
    with pytest.raises(UserInputError, match=r"must return a \(8, 3, H, W\) tensor"):
        transcode_video(clips["plain"], dst, lambda x: x[0])
    assert dst.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_and_min_side_must_be_whole_numbers(clips: dict[str, Path], bad: object) -> None:
    with pytest.raises(UserInputError, match="batch must be a whole number"):
        read_frames(clips["plain"], batch=bad)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="min_side must be a whole number"):
        probe_video(clips["plain"], min_side=bad)  # type: ignore[arg-type]
