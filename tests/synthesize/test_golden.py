"""Golden regression tests: every preset and recipe, at a fixed seed, against its reference
image (PSNR ≥ 35 dB). See golden_cases.py for the cases and how to regenerate them."""

from __future__ import annotations

import pytest
from golden_cases import CASES, MIN_PSNR, psnr, reference_path, render  # type: ignore[import-not-found]

from convscope.data.images import load_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(CASES))
def test_the_run_matches_its_reference(name: str) -> None:
    path = reference_path(name)
    assert path.is_file(), f"no reference for {name}; run tests/synthesize/golden_cases.py"
    got = render(name)
    want = load_image(path)
    assert got.shape == want.shape
    assert psnr(got, want) >= MIN_PSNR
