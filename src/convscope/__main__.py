"""`python -m convscope ...` (also what `torchrun -m convscope` runs)."""

from convscope.cli import run

run()
