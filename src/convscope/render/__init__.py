"""Rendering helpers: image grids and title bars."""

from __future__ import annotations

from convscope.render.grids import default_tile, grid_size, image_grid, titled

__all__ = ["default_tile", "grid_size", "image_grid", "titled"]
