"""Calibration tiles for int8 quantisation: real imagery, normalised as extraction does.

:func:`calibration_provider` returns the ``calibration(meta)`` callable that
:func:`segcore.predict.load_predictor` and :func:`segcore.quantize.quantize_onnx` take: it reads
up to :data:`TILES_PER_SCENE` tiles of the network's input size from each scene, resampled to the
model's ground resolution (``gsd_m``) as extraction reads it, on a fixed, evenly spaced grid (so
the same scenes always give the same tiles and the same int8 file), and normalises them with the
checkpoint's own normalisation for that scene (:func:`app.service.extraction.input_normalizer`,
whole-scene stretch included).

Default scenes: the bundled sample scene (``resources/sample``), which ships with the program,
so the int8 network can be made at first use on any machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: the scene calibrated on when none is given (ships with the program)
DEFAULT_SCENES = (_REPO_ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif",)
TILES_PER_SCENE = 16


def _grid(size: int, tile: int, n: int) -> Sequence[int]:
    """``n`` evenly spaced tile origins along a side (one at 0 when the side is short)."""
    if size <= tile:
        return [0]
    return sorted({int(round(v)) for v in np.linspace(0, size - tile, max(n, 1))})


def calibration_tiles(meta: Any, scenes: Sequence[str], tile_hw: Tuple[int, int],
                      per_scene: int = TILES_PER_SCENE) -> Iterator[np.ndarray]:
    """Normalised float32 ``(1, C, H, W)`` tiles from ``scenes`` (fixed grid; tiles that are
    mostly outside the data are skipped)."""
    from rasterio.windows import Window

    from app.service.extraction import input_normalizer
    from app.service.grid import grid_at_gsd
    from gis.io import open_raster, read_window
    from segcore.meta import meta_get

    bands = tuple(int(b) for b in (getattr(meta, "bands", None) or (1, 2, 3)))
    th, tw = int(tile_hw[0]), int(tile_hw[1])
    gsd = meta_get(meta, "gsd_m", None)
    for scene in scenes:
        try:
            info = open_raster(scene, allow_pixel_coords=True)
            use = bands if max(bands) <= info.count else (1,) * len(bands)
            norm = input_normalizer(meta, scene, use)
            # the tiles lie on the grid extraction feeds the network: the model's ground
            # resolution (a scene without CRS is taken as it is)
            grid = grid_at_gsd(scene, info, float(gsd) if gsd and info.crs is not None
                               else None, None)
        except EXPECTED_ERRORS as exc:
            raise as_user_error(exc) from exc
        try:
            side = max(1, int(np.ceil(np.sqrt(per_scene))))
            rows = _grid(grid.info.height, th, side)
            cols = _grid(grid.info.width, tw, side)
            for r in rows:
                for c in cols:
                    raw, valid = read_window(grid.path, Window(c, r, tw, th), use)
                    if valid.mean() < 0.5:
                        continue
                    yield np.ascontiguousarray(norm(raw[None]), dtype=np.float32)
        finally:
            grid.close()


def calibration_provider(scenes: Optional[Sequence[str]] = None
                         ) -> Callable[[Any], Iterator[np.ndarray]]:
    """``calibration(meta)`` for :func:`segcore.predict.load_predictor` (``precision="int8"``)
    over ``scenes`` (default :data:`DEFAULT_SCENES`); the tile size is the metadata's
    ``tile_size_px`` rounded up to its stride."""
    chosen = [str(s) for s in (scenes or DEFAULT_SCENES)]
    for s in chosen:
        if not Path(s).is_file():
            raise UserError(f"{s}: calibration scene not found")

    def calibration(meta: Any, tile_hw: Optional[Tuple[int, int]] = None
                    ) -> Iterator[np.ndarray]:
        if tile_hw is None:
            stride = max(1, int(getattr(meta, "stride", 1) or 1))
            side = -(-int(getattr(meta, "tile_size_px", 512)) // stride) * stride
            tile_hw = (side, side)
        return calibration_tiles(meta, chosen, tile_hw)

    calibration.scenes = chosen  # type: ignore[attr-defined]
    calibration.note = describe(chosen)  # type: ignore[attr-defined]
    return calibration


def describe(scenes: Sequence[str]) -> str:
    """The calibration note recorded in the int8 network's metadata."""
    return "real tiles of " + ", ".join(Path(s).name for s in scenes)


__all__ = ["calibration_provider", "calibration_tiles", "describe", "DEFAULT_SCENES",
           "TILES_PER_SCENE"]
