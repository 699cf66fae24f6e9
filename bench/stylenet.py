"""Fast style transfer speed: one 512×512 image, batch 1, through the same trained weights, on
our `stylize` paths against the straightforward network, in one process.

The baseline is the network written here the way pytorch/examples' fast_neural_style writes
it: ordinary `nn.Module`s (reflection pad + conv, `nn.InstanceNorm2d(affine=True)`, residual
blocks, nearest upsampling + conv), float32, NCHW, under `torch.no_grad()`, with the weights of
the chosen style copied in. Ours, each checked against the baseline's output:

- `stylize(precision="fp32")`: eager float32 under `torch.inference_mode`;
- the same in channels_last;
- `stylize(precision="bf16")`: bfloat16 autocast (the default where the CPU does bf16 natively);
- onnxruntime (`convscope stylenet export`, then `OnnxStylizer`), float32;
- `torch.compile` of the network (inductor), float32, with its compile time.

Then a 720p video (48 generated frames) through `convscope.data.video.transcode_video` with
the default path (frames per second, decoding and encoding included), and one training step
at 256 px, batch 4 (VGG16 loss network, default precision): seconds per step and the peak
resident memory it adds.

    python bench/stylenet.py [--net four-styles|FILE|random] [--size 512] [--repeats 5]
                             [--threads 0] [--no-compile] [--no-video] [--no-train]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ---- the straightforward network (pytorch/examples' fast_neural_style, in [0, 1]) ---------------
class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(x))  # type: ignore[no-any-return]


class UpsampleConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))  # type: ignore[no-any-return]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        return x + self.in2(self.conv2(y))  # type: ignore[no-any-return]


class PlainTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = ConvLayer(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*[ResidualBlock(128) for _ in range(5)])
        self.deconv1 = UpsampleConvLayer(128, 64, 3, 2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, 3, 2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = F.relu(self.in4(self.deconv1(y)))
        y = F.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)  # type: ignore[no-any-return]


def plain_copy(net: Any, style: int) -> PlainTransformerNet:
    """The straightforward network with `net`'s weights for `style` (its γ, β as the affine
    instance norms' weight and bias)."""
    plain = PlainTransformerNet()

    def norm(src: Any, dst: nn.InstanceNorm2d) -> None:
        inner = src.norm.norm
        if hasattr(inner, "scale"):  # conditional instance norm: this style's row
            dst.weight.data.copy_(inner.scale[style])
            dst.bias.data.copy_(inner.shift[style])
        else:
            dst.weight.data.copy_(inner.weight)
            dst.bias.data.copy_(inner.bias)

    def conv(src: Any, dst: Any) -> None:
        dst.conv2d.weight.data.copy_(src.conv.weight)
        dst.conv2d.bias.data.copy_(src.conv.bias)

    for layer, (c, n) in zip(
        net.down, [(plain.conv1, plain.in1), (plain.conv2, plain.in2), (plain.conv3, plain.in3)],
        strict=True,
    ):  # fmt: skip
        conv(layer.conv, c)
        norm(layer, n)
    for block, mine in zip(net.residuals, plain.res, strict=True):
        conv(block.first.conv, mine.conv1)
        norm(block.first, mine.in1)
        conv(block.second.conv, mine.conv2)
        norm(block.second, mine.in2)
    for layer, (c, n) in zip(
        net.up, [(plain.deconv1, plain.in4), (plain.deconv2, plain.in5)], strict=True
    ):
        conv(layer.conv, c)
        norm(layer, n)
    conv(net.out, plain.deconv3)
    return plain.eval()


# ---- timing ------------------------------------------------------------------------------------
def timed(fn: Callable[[], Tensor], repeats: int) -> tuple[float, Tensor]:
    """(median seconds, the last output) after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cpu_flags() -> str:
    from convscope.device import cpu_flags as flags

    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags()]
    return ", ".join(shown) or "none of avx2/avx512"


def _status_mb(field: str) -> float | None:
    """VmRSS or VmHWM (the peak) from /proc/self/status, in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _copy(net: Any) -> Any:
    import copy

    return copy.deepcopy(net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="four-styles")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--no-train", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from convscope.data.samples import load_sample
    from convscope.stylenet.apply import stylize
    from convscope.stylenet.export import OnnxStylizer, export_onnx
    from convscope.stylenet.zoo import open_net
    from convscope.synthesize.octaves import resize

    if args.net == "random":  # a seeded untrained network, for trying the script out
        from convscope.stylenet import NetInfo, TransformerNet

        torch.manual_seed(0)
        net, info = TransformerNet().eval(), NetInfo("instance", ["random"])
    else:
        net, info = open_net(args.net)
    style = 0 if net.styles > 1 else None
    x = resize(load_sample("chelsea")[None], (args.size, args.size)).clamp(0, 1)  # (1, 3, S, S)
    print(
        f"stylenet {args.net} ({info.styles[0]}), {args.size}x{args.size}, batch 1, "
        f"{torch.get_num_threads()} threads; CPU flags: {cpu_flags()}; torch {torch.__version__}"
    )
    plain = plain_copy(net, style or 0)

    def baseline() -> Tensor:
        with torch.no_grad():
            return plain(x).clamp(0, 1)

    base_s, ref = timed(baseline, args.repeats)
    rows: list[tuple[str, float, float]] = []

    def ours(name: str, fn: Callable[[], Tensor]) -> None:
        seconds, y = timed(fn, args.repeats)
        err = float((y.reshape(ref.shape).float() - ref).abs().max())
        rows.append((name, seconds, err))

    ours("stylize fp32 (inference mode)", lambda: stylize(net, x, style=style, precision="fp32")[0])
    cl = _copy(net).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def channels_last() -> Tensor:
        with torch.inference_mode():
            return cl(xcl, style=style).clamp(0, 1)

    ours("fp32 channels_last", channels_last)
    ours("stylize bf16 autocast", lambda: stylize(net, x, style=style, precision="bf16")[0])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(net, Path(tmp) / "net.onnx", style=style)
        stylizer = OnnxStylizer(path)
        export_s = time.perf_counter() - t0
        ours(f"onnxruntime fp32 (export + session {export_s:.1f} s)", lambda: stylizer(x))
    if not args.no_compile:
        t0 = time.perf_counter()
        compiled = torch.compile(_copy(net))
        with torch.inference_mode():
            compiled(x, style=style)
        compile_s = time.perf_counter() - t0

        def run_compiled() -> Tensor:
            with torch.inference_mode():
                return compiled(x, style=style).clamp(0, 1)

        ours(f"torch.compile fp32 (compile {compile_s:.0f} s)", run_compiled)

    print(f"  baseline (plain eager fp32 NCHW, no_grad): {base_s * 1000:.0f} ms/image")
    for name, seconds, err in rows:
        print(
            f"  {name}: {seconds * 1000:.0f} ms/image, {base_s / seconds:.2f}x, "
            f"max |diff| {err:.1e}"
        )
    default = stylize(net, x, style=style)[0]
    diff = (default - ref[0]).abs()
    print(
        f"  default path (precision auto): max |diff| {float(diff.max()):.3f}, "
        f"mean {float(diff.mean()):.4f} (0-1 scale)"
    )

    if not args.no_video:
        video(net, style)
    if not args.no_train:
        train_step()


def video(net: Any, style: int | None) -> None:
    import av

    from convscope.data.video import transcode_video
    from convscope.stylenet.apply import stylize

    frames = 48
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clip.mp4"
        g = torch.Generator().manual_seed(0)
        base = (torch.rand(720 // 8, 1280 // 8, 3, generator=g) * 255).to(torch.uint8)
        with av.open(str(src), "w") as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
            for i in range(frames):
                arr = base.roll(i, dims=1).repeat_interleave(8, 0).repeat_interleave(8, 1)
                frame = av.VideoFrame.from_ndarray(arr.numpy(), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

        def transform(batch: Tensor) -> Tensor:
            return torch.stack(stylize(net, batch, style=style, batch=1))

        t0 = time.perf_counter()
        transcode_video(src, Path(tmp) / "out.mp4", transform, batch=1)
        seconds = time.perf_counter() - t0
    print(
        f"  720p video, {frames} frames, default path, decode + stylize + encode: "
        f"{frames / seconds:.2f} frames/s"
    )


def train_step() -> None:
    from convscope import load_model
    from convscope.data.datasets import SampleCrops
    from convscope.data.samples import load_sample
    from convscope.events import Progress
    from convscope.stylenet.train import ContentImages, train_stylenet

    vgg = load_model("vgg16")
    contents = ContentImages(SampleCrops(16, size=288), side=256)
    for k in range(len(contents)):
        contents[k]
    times: list[float] = []
    last = [time.perf_counter()]

    def on_progress(event: Progress) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_mb("VmRSS")
    except OSError:
        before = None
    last[0] = time.perf_counter()
    train_stylenet(
        vgg, [load_sample("brick")], contents, size=256, batch=4, steps=4,
        on_progress=on_progress,
    )  # fmt: skip
    peak = _status_mb("VmHWM")
    step = statistics.median(times[1:])
    added = f", peak RSS +{peak - before:,.0f} MB" if peak and before else ""
    print(
        f"  training at 256 px, batch 4 (VGG16 loss, default precision): {step:.2f} s/step{added}"
    )


if __name__ == "__main__":
    main()
