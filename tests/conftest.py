"""Shared fixtures: paths to ../shared/data, the bundled model and sample scene (each skips with a
reason where absent), a random ENet checkpoint and a chips dataset of the real Las Vegas tile.
Tiny synthetic GeoTIFFs: :mod:`gis_fixtures` (``write_geotiff``)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GLOG_v", "3")  # keep MindSpore quiet

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROADSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: the model shipped in the repository (``make demo``, the GUI's default)
BUNDLED_CHECKPOINT = ROOT / "resources" / "models" / "road_demo.ckpt"
#: the sample scene shipped in the repository (a SpaceNet Las Vegas tile, 0.3 m, lon/lat)
DEMO_SCENE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
#: the same SpaceNet tile and its road centre lines in ../shared/data
VEGAS = "geotiff/RGB-PanSharpen_AOI_2_Vegas_img0.tif"
VEGAS_LINES = ("graphs/apls_sample/gt_json_prop_wkt/ground_truth_randomized/"
               "AOI_2_Vegas_img0.geojson")


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (set ROADSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled_checkpoint() -> Path:
    """``resources/models/road_demo.ckpt`` (skips where it is absent)."""
    return _existing(BUNDLED_CHECKPOINT, "the bundled model")


@pytest.fixture(scope="session")
def demo_scene() -> Path:
    """``resources/sample/RGB-PanSharpen_AOI_2_Vegas_img0.tif`` (skips where it is absent)."""
    return _existing(DEMO_SCENE, "the sample scene")


@pytest.fixture(scope="session")
def vegas_scene(shared_data: Path) -> Path:
    """The SpaceNet Las Vegas tile in ../shared/data (skips where it is absent)."""
    return _existing(shared_data / VEGAS, "the SpaceNet Las Vegas tile")


@pytest.fixture(scope="session")
def vegas_lines(shared_data: Path) -> Path:
    """The road centre lines of :func:`vegas_scene` (GeoJSON, lon/lat)."""
    return _existing(shared_data / VEGAS_LINES, "the Las Vegas road centre lines")


@pytest.fixture(scope="session")
def enet_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised ENet (1 class, bands 1-3, tile 128 px, ``road_iou`` 0.123 in its
    metadata) saved with segcore.checkpoint; seeded, as an unlucky initialisation can predict
    no road at all. Read-only: copy it before changing it."""
    import mindspore as ms

    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.models import create_model

    ms.set_seed(7)
    d = tmp_path_factory.mktemp("enet_ckpt")
    meta = CheckpointMeta(model="enet", num_classes=1, bands=(1, 2, 3),
                          normalization={"method": "meanstd", "mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225], "scale": 255},
                          tile_size_px=128, stride=8, metrics={"road_iou": 0.123})
    return Path(save_checkpoint(create_model("enet", num_classes=1), d / "enet_random.ckpt",
                                meta))


@pytest.fixture(scope="session")
def vegas_chips_built(vegas_scene: Path, vegas_lines: Path, tmp_path_factory) -> Path:
    """256 px chips of the real Las Vegas tile and its centre lines (all ``unreviewed``), built
    once per session with the service of ``roadseg dataset build``. Read-only: use
    :func:`vegas_chips` for a copy a test may change."""
    from app.service.dataset import DatasetBuildRequest, build_chip_dataset

    out = tmp_path_factory.mktemp("vegas_chips") / "chips"
    build_chip_dataset(DatasetBuildRequest(image=str(vegas_scene), labels=str(vegas_lines),
                                           out_dir=str(out), chip_size_px=256, bands=(1, 2, 3)))
    return out


@pytest.fixture()
def vegas_chips(vegas_chips_built: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`vegas_chips_built` the test may review and edit."""
    return Path(shutil.copytree(vegas_chips_built, tmp_path / "chips"))
