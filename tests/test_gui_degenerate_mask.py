"""The main window says so when part of the mask was noise or solid road and was not traced."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

import rasterio  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from app.gui.main_window import MainWindow  # noqa: E402
from app.gui.settings import AppSettings  # noqa: E402
from app.service.extraction import ExtractionRequest, run_extraction  # noqa: E402


@pytest.mark.slow
def test_summary_shows_the_degenerate_mask_warning(qtbot, tmp_path, demo_scene: Path):
    crop = tmp_path / "crop.tif"
    with rasterio.open(demo_scene) as ds:
        win = Window(0, 0, 512, 512)
        prof = ds.profile.copy()
        prof.update(width=512, height=512, count=3, transform=ds.window_transform(win))
        with rasterio.open(crop, "w", **prof) as dst:
            dst.write(ds.read([1, 2, 3], window=win))

    def everything_is_road(batch: np.ndarray) -> np.ndarray:  # a broken network
        return np.full((batch.shape[0], 1) + batch.shape[2:], 0.9, np.float32)

    result = run_extraction(ExtractionRequest(image=str(crop), out_dir=str(tmp_path / "out"),
                                              predict_fn=everything_is_road, tile_size_px=256))
    assert result.ok, result.error
    assert result.summary["degenerate_mask"]["fraction_of_rows"] == 1.0
    w = MainWindow(AppSettings(str(tmp_path / "settings.ini")))
    qtbot.addWidget(w)
    w._on_finished(result)
    text = w.extraction_panel.summary.text()
    assert "Warning: 100 % of the mask is noise or solid road" in text
