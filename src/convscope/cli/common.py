"""Shared CLI plumbing: consoles, progress bars, library defaults, output checks, models.

Nothing here imports torch at module level, so `convscope --help` answers at once; the
commands import the library inside their bodies.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import json
import math
import sys
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from convscope.cli import signals
from convscope.data.files import check_writable
from convscope.errors import UserInputError

if TYPE_CHECKING:
    from convscope.events import Progress as ProgressEvent
    from convscope.events import ProgressCallback
    from convscope.models import ConvModel

__all__ = [
    "LIBRARY_DEFAULTS",
    "ProgressBars",
    "check_checkpoint_seconds",
    "check_outputs",
    "console",
    "library_constant",
    "library_default",
    "open_model",
    "out",
    "parse_floats",
    "parse_layers",
    "progress_bar",
    "resume_notice",
    "write_json",
]

console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # src/convscope

LIBRARY_DEFAULTS: list[tuple[str, str, Any]] = []
"""Every (target, parameter, value) `library_default` has read, so a test can check each one
against the imported library's real signature."""


# ---- library defaults, read without importing the library ------------------------------------
@cache
def _module_tree(module: str) -> ast.Module:
    """The parsed source of a convscope module, found by its path (importing it, or even
    `importlib.util.find_spec`, would import its packages and with them torch)."""
    parts = module.split(".")
    if parts[0] != "convscope":
        raise ValueError(f"{module} is not a convscope module")
    base = _PACKAGE_ROOT.joinpath(*parts[1:])
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level `NAME = literal` (and annotated) assignments."""
    found: dict[str, Any] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Name) and value is not None:
                with contextlib.suppress(ValueError, TypeError, SyntaxError):
                    found[t.id] = ast.literal_eval(value)
    return found


def _function(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    scope: Sequence[ast.stmt] = tree.body
    node: ast.stmt | None = None
    for part in qualname.split("."):
        node = next(
            (n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part),
            None,
        )
        if node is None:
            raise LookupError(qualname)
        scope = node.body
    if not isinstance(node, ast.FunctionDef):
        raise LookupError(qualname)
    return node


def library_default(target: str, param: str) -> Any:
    """The default of `param` of the library callable `target` ("convscope.mod:func" or
    "convscope.mod:Class.method"), read from its source, so the CLI never restates a default
    and still starts without importing torch. Defaults must be literals or module-level
    literal constants (a test checks every value against the imported signature)."""
    module, _, qualname = target.partition(":")
    tree = _module_tree(module)
    fn = _function(tree, qualname)
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [
        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    ]
    for arg, default in pairs:
        if arg.arg == param:
            if isinstance(default, ast.Name):
                value = _constants(tree)[default.id]
            else:
                value = ast.literal_eval(default)
            LIBRARY_DEFAULTS.append((target, param, value))
            return value
    raise LookupError(f"{target} has no parameter {param!r} with a default")


def library_constant(module: str, name: str) -> Any:
    """A module-level literal constant of the library (e.g. a tuple of method names)."""
    value = _constants(_module_tree(module))[name]
    LIBRARY_DEFAULTS.append((module, name, value))
    return value


# ---- parsing -----------------------------------------------------------------------------------
def return_freed_memory() -> bool:
    """Make glibc give large freed buffers back to the system at once (a fixed mmap
    threshold of 1 MB), for tiled runs; True where it took effect.

    Tiles come in several sizes; by default glibc raises its mmap threshold after the first
    large buffer is freed and then keeps freed memory for reuse, so a tiled run's resident
    memory creeps up towards an untiled one's (measured: `bench/style.py --memory`). A
    process-wide setting, so the command line makes it, never the library."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-3, 1024 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def parse_layers(spec: str) -> list[str]:
    """ "relu2_2, relu5_3" → ["relu2_2", "relu5_3"] (empty parts dropped)."""
    return [p.strip() for p in spec.split(",") if p.strip()]


def parse_floats(spec: str, option: str) -> list[float]:
    """ "3,7" → [3.0, 7.0]; anything that is not a finite number is a one-sentence error."""
    values = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        try:
            v = float(part)
        except ValueError:
            raise UserInputError(f"{option} takes numbers like 3,7, not {part!r}.") from None
        if not math.isfinite(v):
            raise UserInputError(f"{option} takes finite numbers, not {part}.")
        values.append(v)
    if not values:
        raise UserInputError(f"{option} names no number; give numbers like 3,7.")
    return values


# ---- checks ------------------------------------------------------------------------------------
def check_outputs(*paths: Path | None) -> list[Path]:
    """The one rule for output paths, applied before any work: the folder must exist (convscope
    creates none), the path must not be a folder, and no two outputs may be the same file.
    Returns the paths given (None left out)."""
    given = [p for p in paths if p is not None]
    resolved = [p.expanduser().resolve() for p in given]
    if len(set(resolved)) < len(resolved):
        raise UserInputError("the output files must be different files.")
    for p in given:
        check_writable(p)
    return given


# ---- models and output ---------------------------------------------------------------------------
def open_model(model: str, weights: str | None, device: str, seed: int | None = None) -> ConvModel:
    import torch

    from convscope.models import load_model

    if seed is not None:
        torch.manual_seed(seed)
    return load_model(model, weights=weights, device=device)


def write_json(data: Any, path: Path | None) -> None:
    from convscope.data.files import atomic_write_text

    text = json.dumps(data, indent=2)
    if path is None:
        out.print(text, markup=False, highlight=False)
    else:
        atomic_write_text(path, text + "\n")


class ProgressBars:
    """Renders the library's `Progress` events as bars with ETA on stderr, one bar per task.

    Call the object with an event (it is a `ProgressCallback`). `clear()` removes every bar but
    the ones named, so a long job (the demo) can show one overall bar plus the current step's.
    When the block ends with an exception (Ctrl-C included), the bars vanish, so the error is
    the only line left."""

    def __init__(self, quiet: bool = False) -> None:
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=quiet,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: ProgressEvent) -> None:
        signals.release()  # the library is between two units of work: Ctrl-C is safe here
        info = event.message
        if event.metrics:
            info = " ".join([info, *(f"{k}={v:.4g}" for k, v in event.metrics.items())]).strip()
        if event.task not in self.tasks:
            self.tasks[event.task] = self.bars.add_task(
                event.task, total=event.total, unit=event.unit, info=info
            )
        self.bars.update(self.tasks[event.task], completed=event.done, total=event.total, info=info)

    def clear(self, *, keep: Sequence[str] = ()) -> None:
        for name in [t for t in self.tasks if t not in keep]:
            self.bars.remove_task(self.tasks.pop(name))

    def __enter__(self) -> ProgressBars:
        self.bars.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.bars.live.transient = True  # leave only the error (or "Interrupted") behind
        self.bars.__exit__(exc_type, exc, tb)


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator[ProgressCallback]:
    """A callback that renders the library's `Progress` events as bars with ETA (on stderr)."""
    with ProgressBars(quiet) as bars:
        yield bars


def check_checkpoint_seconds(seconds: float) -> None:
    """--checkpoint-seconds must be more than 0 (inf and nan are refused for every float)."""
    if not seconds > 0:
        raise UserInputError(f"--checkpoint-seconds must be more than 0, got {seconds}.")


def resume_notice(bar: ProgressCallback, *, show: bool, share: bool = False) -> ProgressCallback:
    """`bar`, which also prints (when `show`) one line saying where a resumed run starts: the
    library's first event of a run already counts the work done before."""
    first = [True]

    def on_progress(event: ProgressEvent) -> None:
        if first[0]:
            first[0] = False
            if show and event.done > 0:
                whose = " of this rank's share" if share else ""
                console.print(f"Resuming at image {event.done} of {event.total}{whose}.")
        bar(event)

    return on_progress
