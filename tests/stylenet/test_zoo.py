"""The shipped style networks: each is in the package with its model card, loads by name,
and stylizes; unknown names and missing files are one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convscope.errors import UserInputError
from convscope.stylenet.apply import stylize
from convscope.stylenet.zoo import SHIPPED, card_path, net_names, net_path, open_net

FOUR = ["starry_night", "the_scream", "shipwreck", "woman-with-hat-matisse"]


def test_the_four_style_network_ships_with_its_card() -> None:
    assert net_names() == ["four-styles"]
    for name in SHIPPED:
        assert net_path(name).is_file() and net_path(name).stat().st_size < 8 * 2**20
        card = card_path(name).read_text(encoding="utf-8")
        assert "convscope stylenet train" in card and "steps" in card
    net, info = open_net("four-styles")
    assert info.styles == FOUR and info.norm == "conditional" and not net.training
    assert info.training["steps"] >= 1000 and len(info.thumbnails) == 4
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    outs = [stylize(net, x, style=k, precision="fp32")[0] for k in range(4)]
    assert all(tuple(o.shape) == (3, 40, 56) for o in outs)
    assert all(bool(torch.isfinite(o).all()) for o in outs)
    assert float((outs[0] - outs[1]).abs().mean()) > 0.01  # the styles differ


def test_names_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="four-styles"):
        open_net("four_style")  # a near miss is named
    with pytest.raises(UserInputError, match="does not exist"):
        open_net(str(tmp_path / "missing.safetensors"))
