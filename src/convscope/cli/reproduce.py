"""`convscope reproduce`: run again the recipe a synthesized PNG carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from convscope.cli.application import app
from convscope.cli.common import check_outputs
from convscope.cli.common import out as out_console
from convscope.cli.options import QuietOpt
from convscope.cli.synthesis import RECIPE_KEY
from convscope.errors import UserInputError

__all__ = ["read_recipe", "reproduce_cmd"]


def read_recipe(path: Path) -> dict[str, Any]:
    """The recipe a PNG written by a synthesis command carries, or a one-sentence error."""
    from convscope.data.images import png_text

    text = png_text(path).get(RECIPE_KEY)
    if text is None:
        raise UserInputError(f"{path} carries no convscope recipe (it was not made by convscope).")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError:
        raise UserInputError(f"{path}'s convscope recipe is damaged (not JSON).") from None
    command = recipe.get("command") if isinstance(recipe, dict) else None
    if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
        raise UserInputError(f"{path}'s convscope recipe has no command to run.")
    return dict(recipe)


@app.command("reproduce")
def reproduce_cmd(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="A PNG written by a convscope synthesis command.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where to write the new image (default: IMAGE.reproduced.png)."
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print the recipe's command line and exit.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run again the recipe an image carries (its command, model, weights and seed), into a
    new file. On the same versions and device the result has the same bytes."""
    target = out if out is not None else image.with_name(image.stem + ".reproduced.png")
    if not show:
        check_outputs(target)
    recipe = read_recipe(image)
    command = [str(a) for a in recipe["command"]]
    if show:
        out_console.print("convscope " + " ".join(command), markup=False, highlight=False)
        return
    if target.resolve() == image.resolve():
        raise UserInputError("--out must be a new file, not the image being reproduced.")
    argv = [*command, "--out", str(target)] + (["--quiet"] if quiet else [])
    # The whole command line, run by the same command tree (its errors reach `main` as ours).
    ctx.find_root().command.main(argv, prog_name="convscope", standalone_mode=False)
