"""The extraction outputs open in real QGIS (3.22, python3-qgis) with the right CRS and style.

QGIS lives in the system Python (Debian's python3-qgis), not in our virtualenv, so the check
runs tests/qgis/open_in_qgis.py in a subprocess; it skips with a reason where QGIS is absent.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

SYSTEM_PY = "/usr/bin/python3"
SCRIPT = Path(__file__).parent / "qgis" / "open_in_qgis.py"


def _has_qgis() -> bool:
    try:
        return subprocess.run([SYSTEM_PY, "-c", "import qgis.core"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _has_qgis(), reason="QGIS not installed (apt-get install python3-qgis)")
@pytest.mark.slow
def test_outputs_open_in_qgis(tmp_path, shared_data):
    from app.service.extraction import ExtractionRequest, run_extraction

    src = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    crop = tmp_path / "crop.tif"
    with rasterio.open(src) as ds:
        win = Window(300, 300, 400, 400)
        prof = ds.profile.copy()
        prof.update(width=400, height=400, transform=ds.window_transform(win))
        with rasterio.open(crop, "w", **prof) as dst:
            dst.write(ds.read(window=win))

    def bright_grey(batch: np.ndarray) -> np.ndarray:
        # asphalt is grey: low saturation, mid brightness (a hand-made road detector)
        sat = batch.max(axis=1) - batch.min(axis=1)
        val = batch.mean(axis=1)
        p = ((sat < 0.08) & (val > 0.25) & (val < 0.6)).astype(np.float32)
        return p[:, None]

    out = tmp_path / "out"
    res = run_extraction(ExtractionRequest(
        image=str(crop), out_dir=str(out), predict_fn=bright_grey, tile_size_px=128,
        overlap_px=16, formats=("gpkg", "shp")))
    assert res.ok, res.error
    p = subprocess.run([SYSTEM_PY, str(SCRIPT), str(out)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])

    rasters = report["rasters"]
    assert {"crop_prob.tif", "crop_mask.tif"} <= set(rasters)
    for name, r in rasters.items():
        assert r["valid"] and r["crs"] == "EPSG:4326", (name, r)
        assert (r["width"], r["height"]) == (400, 400)
    vectors = report["vectors"]
    edges = vectors["crop_roads.gpkg:edges"]
    assert edges["valid"] and edges["crs"] == "EPSG:4326"
    assert edges["features"] == res.summary["edges"] > 0
    assert {"u", "v", "length_m", "width_m", "confidence", "component"} <= set(edges["fields"])
    assert edges.get("style_ok") and edges["renderer"] == "graduatedSymbol"
    assert edges["renderer_default"] == "graduatedSymbol"  # from the layer_styles table
    nodes = vectors["crop_roads.gpkg:nodes"]
    assert nodes["valid"] and nodes["features"] == res.summary["nodes"]
    shp = [v for k, v in vectors.items() if k.endswith("_edges.shp")]
    assert shp and shp[0]["valid"] and shp[0]["crs"] == "EPSG:4326"
    assert shp[0].get("style_ok")
