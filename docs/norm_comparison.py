"""The lecture's comparison of instance and batch normalization in a feed-forward style network
(Ulyanov et al. 2016): the same style trained briefly with each, applied to the same photos.

Train the two networks first (the commands below are what made docs/images/stylenet_norms.png;
the dataset is any folder of photos), then draw the figure:

    for norm in instance batch; do
      convscope stylenet train --style starry_night.jpg --dataset PHOTOS --norm $norm \\
        --size 128 --batch 4 --steps 250 --half --out $norm.safetensors
    done
    python docs/norm_comparison.py instance.safetensors batch.safetensors \\
        --out docs/images/stylenet_norms.png
"""

from __future__ import annotations

import argparse

from convscope.data.images import save_png
from convscope.data.samples import load_sample
from convscope.render.grids import image_grid, titled
from convscope.stylenet import load_net
from convscope.stylenet.apply import stylize
from convscope.synthesize.octaves import resize
from convscope.synthesize.recipes.style import output_size

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")
SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instance")
    parser.add_argument("batch")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    photos = []
    for name in PHOTOS:
        x = load_sample(name)
        hw = output_size((int(x.shape[-2]), int(x.shape[-1])), SIZE)
        photos.append(resize(x[None], hw)[0].clamp(0, 1))
    tiles, labels = list(photos), list(PHOTOS)
    for path, norm in ((args.instance, "instance norm"), (args.batch, "batch norm")):
        net, info = load_net(path)
        steps = info.training.get("steps", "?")
        tiles += stylize(net, photos, precision="fp32")
        labels += [f"{norm}, {steps} steps"] * len(photos)
    grid = image_grid(tiles, labels=labels, ncol=len(PHOTOS), tile=SIZE, label_height=22)
    save_png(
        titled(grid, "The same style, trained with instance norm and with batch norm"), args.out
    )


if __name__ == "__main__":
    main()
