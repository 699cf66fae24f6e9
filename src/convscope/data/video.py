"""Reading and writing videos with PyAV (FFmpeg): frames ↔ (b, 3, H, W) float32 RGB in [0, 1].

    info = probe_video("clip.mp4")   # VideoInfo(frames=120, fps=Fraction(30000, 1001), ...)
    for x in read_frames("clip.mp4", batch=8):     # (b, 3, H, W), b ≤ 8, decoded as needed
        ...
    transcode_video("clip.mp4", "styled.mp4", lambda x: net(x), min_side=32)

- `read_frames` decodes frame by frame, so a long video never sits in memory. Frames come
  upright (a phone's rotation applied) and at the first frame's size.
- `transcode_video` passes every batch through a transform and writes the result with the
  source's timestamps, so the frame count, frame rate and duration are kept. The picture is
  H.264 (`libx264`, yuv420p, CRF 18) where the bundled FFmpeg has it, else MPEG-4 part 2
  (`mpeg4`); `.webm` takes VP9 (else VP8). yuv420p needs even sides, so an odd-sized output
  is padded by one row and/or column repeating the edge (65×49 is written as 66×50, and the
  returned `VideoInfo` says so): padding keeps every pixel the transform made, the frame
  count and the rate, and plays everywhere, where yuv444p would keep the size but not play
  in browsers or on phones.
- The sound (the first audio stream) is copied packet for packet when the output container
  takes its codec, else re-encoded: to AAC, to the container's own choice where it takes no
  AAC (Opus in `.webm`), and to 16-bit PCM in `.avi`, which cannot start the sound before
  the pictures as AAC's priming needs.
- Outputs are written atomically: on any error, Ctrl-C included, no file is left (and an
  older file at the destination stays as it was).

Every unusable input becomes a one-sentence `UserInputError` that names the file.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.error
import numpy as np
import torch
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray
from torch import Tensor

from convscope.data.files import atomic_path, check_writable
from convscope.errors import UserInputError, check_whole
from convscope.events import Progress, ProgressCallback, no_progress

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "is_video",
    "probe_video",
    "read_frames",
    "transcode_video",
]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
"""File suffixes (lower case) treated as videos; also the suffixes `transcode_video` writes."""

_CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".avi": "avi",
    ".webm": "webm",
    "": "mp4",  # no suffix: an MP4 file, at exactly the path given
}
_CONTAINER_OPTIONS = {"mp4": {"movflags": "+faststart"}, "mov": {"movflags": "+faststart"}}
_VIDEO_ENCODERS: dict[str, tuple[tuple[str, dict[str, str]], ...]] = {
    "default": (
        ("libx264", {"crf": "18", "preset": "medium"}),
        ("mpeg4", {"flags": "+qscale", "global_quality": str(3 * 118)}),  # -q:v 3
    ),
    "webm": (
        ("libvpx-vp9", {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
        ("libvpx", {"crf": "10", "b": "1M", "deadline": "good", "cpu-used": "4"}),
    ),
}
_PIX_FMT = "yuv420p"
_SMPTE170M = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M: the BT.601 matrix swscale converts RGB with
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited range, as swscale writes yuv420p
_TASK = "stylize video"
_AUDIO_BIT_RATE = 160_000  # re-encoded sound (AAC, Opus), bits a second
_MAX_TIMESCALE = 1_000_000  # ticks a second; MP4 stores durations of 32 bits

U8Array = NDArray[np.uint8]


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: its frame count, frame rate, frame size and whether it has sound."""

    frames: int
    fps: Fraction  # the video stream's average frame rate, e.g. Fraction(30000, 1001)
    width: int
    height: int
    has_audio: bool

    @property
    def duration(self) -> float:
        """Seconds: frames ÷ fps."""
        return float(self.frames / self.fps) if self.fps else 0.0


def is_video(path: str | Path) -> bool:
    """Whether `path` has a video suffix (`VIDEO_SUFFIXES`, any case); the file is not read."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _reason(exc: BaseException) -> str:
    """An exception's text, fit to sit inside parentheses in a sentence (for FFmpeg errors the
    plain message, without the errno and file name)."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.error.FFmpegError) else None
    text = " ".join(str(text or exc).split()).rstrip(".")
    return text or type(exc).__name__


def _fraction(value: Any) -> Fraction | None:
    """A rate or time base as a `Fraction` (PyAV 19 returns its own rational type), or None
    when unset or zero."""
    if value is None:
        return None
    try:
        out = Fraction(int(value.numerator), int(value.denominator))
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None
    return out if out > 0 else None


def _check_file(p: Path) -> None:
    """Raise a one-sentence error if `p` is not a non-empty regular file."""
    if not p.exists():
        raise UserInputError(f"Video file {p} does not exist.")
    if p.is_dir():
        raise UserInputError(f"{p} is a folder, not a video file.")
    if p.stat().st_size == 0:
        raise UserInputError(f"Video file {p} is empty (0 bytes).")


def _open_input(p: Path) -> InputContainer:
    """Open `p` for reading, with one-sentence errors for files FFmpeg cannot read."""
    _check_file(p)
    try:
        return av.open(str(p), "r")
    except PermissionError as exc:  # av.error.PermissionError is one too
        raise UserInputError(f"Video file {p} cannot be read: permission denied.") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UserInputError(
            f"{p} cannot be read as a video: it is not one, or it is truncated or corrupt "
            f"({_reason(exc)})."
        ) from exc


def _video_stream(container: InputContainer, p: Path, min_side: int) -> VideoStream:
    """The file's main video stream, after checking that the file is a video whose frames
    have at least `min_side` pixels a side."""
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in ("image2", "image2pipe"):
        kind = fmt.removesuffix("_pipe").upper()
        raise UserInputError(f"{p} is an image ({kind}), not a video.")
    if not container.streams.video:
        raise UserInputError(f"{p} has no video stream.")
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if w <= 0 or h <= 0:
        raise UserInputError(f"{p} has a video stream whose frame size FFmpeg cannot tell.")
    if min(w, h) < min_side:
        raise UserInputError(
            f"{p} has frames of {w}×{h} pixels; at least {min_side} pixels a side are needed."
        )
    return stream


def _fps(stream: VideoStream, p: Path) -> Fraction:
    """The stream's average frame rate (guessed by FFmpeg when the file does not say)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        fps = _fraction(rate)
        if fps is not None:
            return fps
    raise UserInputError(f"{p} does not say its frame rate.")


def _quarter_turns(frame: VideoFrame) -> int:
    """How many quarter turns counterclockwise show `frame` upright (its display matrix, as a
    phone writes for a portrait video)."""
    degrees = getattr(frame, "rotation", 0) or 0  # PyAV before 14 does not read it
    return round(float(degrees) / 90) % 4


def _scan(
    container: InputContainer, stream: VideoStream, p: Path, *, count: bool
) -> tuple[tuple[int, int], int]:
    """The (width, height) of the first frame as shown (decoded, its rotation applied) and,
    if `count`, the number of frames counted from the packets (one frame each) without
    decoding the rest."""
    shown: tuple[int, int] | None = None
    packets = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                packets += 1
            if shown is None:
                for frame in stream.decode(packet):
                    w, h = frame.width, frame.height
                    shown = (h, w) if _quarter_turns(frame) % 2 else (w, h)
                    break
            if shown is not None and not count:
                break
    except av.error.FFmpegError as exc:
        raise UserInputError(f"{p} is a truncated or corrupt video ({_reason(exc)}).") from exc
    if shown is None:
        raise UserInputError(f"{p} has no video frames that can be decoded.")
    return shown, packets


def probe_video(path: str | Path, *, min_side: int = 1) -> VideoInfo:
    """What the video at `path` holds: read from its header, with the first frame decoded
    (the size is as shown, a phone's rotation applied) and, when the container does not say
    how many frames there are, the packets counted without decoding them."""
    p = Path(path)
    check_whole(min_side, "min_side")
    with _open_input(p) as container:
        stream = _video_stream(container, p, min_side)
        fps = _fps(stream, p)
        stored = int(stream.frames)
        (width, height), packets = _scan(container, stream, p, count=stored <= 0)
        return VideoInfo(
            frames=stored if stored > 0 else packets,
            fps=fps,
            width=width,
            height=height,
            has_audio=bool(container.streams.audio),
        )


@dataclass
class _Frame:
    rgb: U8Array  # (H, W, 3)
    pts: int | None
    time_base: Fraction | None


def _demux(
    container: InputContainer, video: VideoStream, audio: AudioStream | None, p: Path
) -> Iterator[_Frame | Packet[AudioStream]]:
    """Decoded video frames (RGB at the first frame's size, turned upright) and, when `audio`
    is given, its raw packets, in file order."""
    streams: list[VideoStream | AudioStream] = [video] if audio is None else [video, audio]
    size: tuple[int, int] | None = None  # (width, height) as stored, of the first frame
    turns = 0
    video.thread_type = "AUTO"
    try:
        for packet in container.demux(streams):
            if packet.stream.index != video.index:
                if packet.dts is not None:  # skips the empty packet that ends a stream
                    yield cast("Packet[AudioStream]", packet)
                continue
            for frame in video.decode(packet):
                if size is None:
                    size, turns = (frame.width, frame.height), _quarter_turns(frame)
                rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                if turns:
                    rgb = np.rot90(rgb, turns)  # upright, as players show it
                yield _Frame(np.ascontiguousarray(rgb), frame.pts, _fraction(frame.time_base))
    except av.error.FFmpegError as exc:
        raise UserInputError(f"{p} is a truncated or corrupt video ({_reason(exc)}).") from exc


def _to_batch(frames: list[_Frame]) -> Tensor:
    """RGB frames as a (b, 3, H, W) float32 tensor in [0, 1]."""
    hwc = torch.from_numpy(np.stack([f.rgb for f in frames]))  # (b, H, W, 3) uint8
    return hwc.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def read_frames(path: str | Path, *, batch: int = 8, min_side: int = 1) -> Iterator[Tensor]:
    """The frames of the video at `path` as (b, 3, H, W) float32 RGB tensors in [0, 1], at most
    `batch` at a time, decoded as they are needed. The file is checked at once, before the
    first batch is asked for; frames whose size changes mid-stream are scaled to the first's."""
    p = Path(path)
    check_whole(batch, "batch")
    check_whole(min_side, "min_side")
    with _open_input(p) as container:
        _video_stream(container, p, min_side)
    return _read_batches(p, batch, min_side)


def _read_batches(p: Path, batch: int, min_side: int) -> Iterator[Tensor]:
    with _open_input(p) as container:
        stream = _video_stream(container, p, min_side)
        pending: list[_Frame] = []
        for item in _demux(container, stream, None, p):
            if isinstance(item, _Frame):
                pending.append(item)
                if len(pending) == batch:
                    yield _to_batch(pending)
                    pending = []
        if pending:
            yield _to_batch(pending)


def _container_format(target: Path) -> str:
    fmt = _CONTAINERS.get(target.suffix.lower())
    if fmt is None:
        suffixes = ", ".join(VIDEO_SUFFIXES[:-1]) + " or " + VIDEO_SUFFIXES[-1]
        raise UserInputError(
            f"Cannot tell which video format to write for {target}; use a {suffixes} suffix."
        )
    return fmt


def _encoder(fmt: str) -> tuple[str, dict[str, str]]:
    """The first video encoder of our choice that this FFmpeg has, and its options."""
    for name, options in _VIDEO_ENCODERS.get(fmt, _VIDEO_ENCODERS["default"]):
        try:
            av.codec.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
        return name, dict(options)
    wanted = " or ".join(name for name, _ in _VIDEO_ENCODERS.get(fmt, _VIDEO_ENCODERS["default"]))
    raise UserInputError(f"This FFmpeg (PyAV) build has no {wanted} encoder to write {fmt} video.")


def _even(rgb: U8Array) -> U8Array:
    """Pad an (H, W, 3) frame to even sides by repeating its last row and/or column."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _shared_tick(a: Fraction, b: Fraction) -> Fraction:
    """The largest time step that both `a` and `b` are whole multiples of."""
    return Fraction(math.gcd(a.numerator, b.numerator), math.lcm(a.denominator, b.denominator))


def _can_copy(fmt: str, audio: AudioStream) -> bool:
    """Whether a `fmt` file can hold `audio`'s packets as they are. FFmpeg's codec list per
    container is not the whole truth (it lists Opus for MOV, whose muxer refuses it), so a
    header with that one stream is written to memory to find out."""
    trial = av.open(io.BytesIO(), "w", format=fmt)
    try:
        if audio.codec_context.name not in trial.supported_codecs:
            return False
        trial.add_stream_from_template(audio)
        trial.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()
    return True


class _Writer:
    """The output side of `transcode_video`. The streams are added when the first transformed
    batch gives the frame size; audio packets that arrive before then wait."""

    def __init__(
        self,
        out: OutputContainer,
        fmt: str,
        fps: Fraction,
        time_base: Fraction | None,
        audio_in: AudioStream | None,
        source: Path,
    ) -> None:
        self.out = out
        self.source = source
        self.fmt = fmt
        self.fps = fps
        self.codec, self.options = _encoder(fmt)
        if fmt == "avi":
            self.options["bf"] = "0"  # B-frames make AVI count empty frames before the first
        # One tick per frame where the encoder or the container needs it (MPEG-4 part 2 takes
        # no time base finer than 1/65535; AVI stores a frame rate, not timestamps). Else the
        # source's timestamps, in the coarsest time base that holds both the source's ticks
        # and the frame grid, so that frames within a tick of the grid (a 1/1000 Matroska
        # time base rounds 29.97 fps to 33 or 34 ms) land on it exactly.
        self.per_frame = self.codec == "mpeg4" or fmt == "avi" or time_base is None
        self.snap = False
        self.time_base: Fraction = 1 / fps
        if not self.per_frame and time_base is not None:
            shared = _shared_tick(time_base, 1 / fps)
            self.snap = shared.denominator <= _MAX_TIMESCALE
            self.time_base = shared if self.snap else time_base
        if self.codec == "mpeg4":
            self.time_base = self.time_base.limit_denominator(65535)
        self.step = max(1, round(1 / (fps * self.time_base)))  # one frame, in ticks
        self.start: Fraction | None = None  # the first frame's time (s), where the grid starts
        self.audio_in = audio_in
        self.video: VideoStream | None = None
        self.audio: AudioStream | None = None
        self.copy_audio = False
        self.waiting: list[Packet[AudioStream]] = []
        self.size: tuple[int, int] | None = None  # (H', W') of the transform's output
        self.last_pts: int | None = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        stream = self.out.add_stream(self.codec, rate=self.fps, options=self.options)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = _PIX_FMT
        stream.time_base = self.time_base
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = _SMPTE170M
        ctx.color_range = _MPEG_RANGE
        self.video = stream
        if self.audio_in is not None:
            self._add_audio(self.audio_in)
        self.out.start_encoding()
        for packet in self.waiting:
            self._audio_packet(packet)
        self.waiting = []

    def _add_audio(self, src: AudioStream) -> None:
        if self.fmt != "avi" and _can_copy(self.fmt, src):
            self.audio = self.out.add_stream_from_template(src)
            self.copy_audio = True
            return
        # AVI has no timestamps to start the sound before the pictures, as the priming of AAC
        # (or MP3) would need: there the sound becomes 16-bit PCM, which has none.
        if self.fmt == "avi":
            codec = "pcm_s16le"
        elif "aac" in self.out.supported_codecs:
            codec = "aac"
        else:
            codec = self.out.default_audio_codec
        rate = src.codec_context.sample_rate
        rates = av.codec.Codec(codec, "w").audio_rates  # Opus takes 48 kHz and a few below
        if rates and rate not in rates:
            rate = 48_000 if 48_000 in rates else max(rates)
        stream = self.out.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.codec_context.layout = src.codec_context.layout
        if not codec.startswith("pcm_"):
            stream.bit_rate = _AUDIO_BIT_RATE
        self.audio = stream

    def audio_packet(self, packet: Packet[AudioStream]) -> None:
        """Copy (or re-encode) one packet of the source's audio stream."""
        if self.video is None:
            self.waiting.append(packet)
        else:
            self._audio_packet(packet)

    def _audio_packet(self, packet: Packet[AudioStream] | None) -> None:
        assert self.audio is not None and self.audio_in is not None
        if self.copy_audio:
            if packet is not None:
                packet.stream = self.audio
                self.out.mux(packet)
            return
        try:
            frames = self.audio_in.decode(packet)
        except av.error.FFmpegError as exc:
            raise UserInputError(
                f"{self.source} has sound that cannot be decoded ({_reason(exc)})."
            ) from exc
        for frame in frames:
            self.out.mux(self.audio.encode(frame))

    def _pts(self, frame: _Frame) -> int:
        """`frame`'s timestamp in the output time base, strictly after the last one."""
        last = self.last_pts
        if self.per_frame:
            pts = self.frames
        elif frame.pts is None or frame.time_base is None:
            pts = 0 if last is None else last + self.step
        else:
            t = frame.pts * frame.time_base  # seconds
            if self.start is None:
                self.start = t
            if self.snap:
                on_grid = self.start + round((t - self.start) * self.fps) / self.fps
                if abs(t - on_grid) < frame.time_base:
                    t = on_grid
            pts = round(t / self.time_base)
        if last is not None and pts <= last:
            pts = last + self.step
        self.last_pts = pts
        return pts

    def write(self, frames: list[_Frame], images: Tensor) -> None:
        """Encode the transform's output `images` (b, 3, H', W') for the source `frames`."""
        h, w = int(images.shape[-2]), int(images.shape[-1])
        if self.size is None:
            self.size = (h, w)
            self._open(h, w)
        elif (h, w) != self.size:
            raise UserInputError(
                f"the frame transform gave {w}×{h} frames after {self.size[1]}×{self.size[0]} "
                "ones; every frame of a video must have one size."
            )
        assert self.video is not None
        x = torch.nan_to_num(images.detach().float(), nan=0.0, posinf=1.0, neginf=0.0)
        u8 = x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        arrays = u8.cpu().numpy()  # (b, H', W', 3)
        for k, source in enumerate(frames):
            vf = VideoFrame.from_ndarray(_even(np.ascontiguousarray(arrays[k])), format="rgb24")
            vf.pts = self._pts(source)
            vf.time_base = self.time_base
            self.out.mux(self.video.encode(vf))
            self.frames += 1

    def finish(self) -> None:
        """Flush the encoders; the trailer is written when the container closes."""
        if self.video is not None:
            self.out.mux(self.video.encode(None))
        if self.audio is not None and not self.copy_audio:
            self._audio_packet(None)  # the decoder's last frames
            self.out.mux(self.audio.encode(None))


def _transformed(transform: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """`transform(x)`, checked to be a (b, 3, H', W') tensor for the (b, 3, H, W) batch `x`."""
    y = transform(x)
    b = int(x.shape[0])
    if not isinstance(y, Tensor):
        raise UserInputError(
            f"the frame transform must return a torch.Tensor, not {type(y).__name__}."
        )
    if y.dim() != 4 or y.shape[0] != b or y.shape[1] != 3 or 0 in y.shape:
        raise UserInputError(
            f"the frame transform must return a ({b}, 3, H, W) tensor for a batch of {b} "
            f"frames, got shape {tuple(y.shape)}."
        )
    return y


def transcode_video(
    src: str | Path,
    dst: str | Path,
    transform: Callable[[Tensor], Tensor],
    *,
    batch: int = 8,
    min_side: int = 1,
    on_progress: ProgressCallback = no_progress,
) -> VideoInfo:
    """Write the video `src` to `dst` with every frame passed through `transform`; return
    what was written.

    `transform` gets (b, 3, H, W) float32 RGB batches in [0, 1] (b ≤ `batch`) and returns
    (b, 3, H', W') in [0, 1], one size for the whole video. The output keeps the source's
    timestamps, frame count and frame rate, and its first audio stream (copied unchanged
    where `dst`'s container takes the codec, else re-encoded). The container follows `dst`'s
    suffix (see `VIDEO_SUFFIXES`; none means MP4). An output with an odd side is padded to
    even sides (one repeated row and/or column, as yuv420p needs): the returned `width` and
    `height` are the padded ones. `dst` is checked before anything is decoded and written
    atomically; `min_side` refuses sources with smaller frames. Progress goes to `on_progress`
    as `Progress("stylize video", done, total, "frames")`.
    """
    source, target = Path(src), Path(dst)
    check_whole(batch, "batch")
    check_whole(min_side, "min_side")
    if not callable(transform):
        raise UserInputError(f"transform must be callable, not {type(transform).__name__}.")
    fmt = _container_format(target)
    check_writable(target)
    info = probe_video(source, min_side=min_side)
    on_progress(Progress(_TASK, 0, info.frames, "frames"))
    with atomic_path(target) as tmp, _open_input(source) as inp:
        video_in = _video_stream(inp, source, min_side)
        audio_in = inp.streams.audio[0] if inp.streams.audio else None
        try:
            out = av.open(
                str(tmp), "w", format=fmt, container_options=_CONTAINER_OPTIONS.get(fmt, {})
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise UserInputError(f"Cannot write {target} ({_reason(exc)}).") from exc
        try:
            writer = _Writer(out, fmt, info.fps, _fraction(video_in.time_base), audio_in, source)
            pending: list[_Frame] = []

            def flush() -> None:
                writer.write(pending, _transformed(transform, _to_batch(pending)))
                pending.clear()
                on_progress(Progress(_TASK, writer.frames, info.frames, "frames"))

            for item in _demux(inp, video_in, audio_in, source):
                if isinstance(item, _Frame):
                    pending.append(item)
                    if len(pending) == batch:
                        flush()
                else:
                    writer.audio_packet(item)
            if pending:
                flush()
            if writer.frames == 0:
                raise UserInputError(f"{source} has no video frames that can be decoded.")
            writer.finish()
            out.close()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                out.close()
            if isinstance(exc, av.error.FFmpegError):  # decoding errors are sentences already
                raise UserInputError(f"Cannot write {target} ({_reason(exc)}).") from exc
            raise
    assert writer.video is not None
    return VideoInfo(
        frames=writer.frames,
        fps=info.fps,
        width=writer.video.width,
        height=writer.video.height,
        has_audio=writer.audio is not None,
    )
