"""roadseg batch on Dask: inputs, blocks, manifest; and on a real cluster (a ``dask scheduler``
and two ``dask worker`` processes on 127.0.0.1): four overlapping cuts of a scene joined into the
whole scene's network, blocks of one raster, a second run that skips finished scenes, a worker
killed mid-batch and Ctrl+C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import box
from shapely.ops import unary_union

from gis_fixtures import utm_transform, write_geotiff

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
PY = sys.executable


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
class BrightnessModel:
    """A deterministic stand-in network: road probability = the first input band (the synthetic
    scenes below are white roads on black, normalised to 0..1). Picklable, so Dask ships it."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.clip(batch[:, :1], 0.0, 1.0).astype(np.float32)


def _road_scene(path: Path, size: int = 800) -> Path:
    """A 0.5 m UTM scene (size x size px) with painted roads crossing both middle lines: a
    cross with a junction, a diagonal, a curve and a T."""
    img = np.zeros((size, size), np.uint8)
    s = size / 800.0
    p = lambda pts: np.array([[int(x * s), int(y * s)] for x, y in pts], np.int32)  # noqa: E731
    cv2.line(img, (20, int(300 * s)), (size - 20, int(300 * s)), 255, 9)
    cv2.line(img, (int(520 * s), 20), (int(520 * s), size - 20), 255, 9)
    cv2.line(img, (int(40 * s), int(60 * s)), (int(760 * s), int(700 * s)), 255, 8)
    cv2.polylines(img, [p([(60 + 6 * t, 760 - 0.0045 * (6 * t - 330) ** 2) for t in range(110)])],
                  False, 255, 8)
    cv2.line(img, (int(150 * s), int(300 * s)), (int(150 * s), int(560 * s)), 255, 8)
    return write_geotiff(path, img, crs="EPSG:32611",
                         transform=utm_transform(0.5, origin=(600000.0, 4000000.0)))


def _cut_quadrants(src: Path, dst: Path, overlap: int = 0, cols=None, rows=None) -> list:
    """Four overlapping GeoTIFFs of ``src`` (2 x 2): neighbours share ``overlap`` pixels around
    the middle, or the column/row spans ``cols``/``rows`` (two ``(start, stop)`` each)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(src) as ds:
        w, h = ds.width, ds.height
        cols = cols or ((0, w // 2 + overlap // 2), (w // 2 - overlap // 2, w))
        rows = rows or ((0, h // 2 + overlap // 2), (h // 2 - overlap // 2, h))
        for r, (y0, y1) in enumerate(rows):
            for c, (x0, x1) in enumerate(cols):
                win = Window(x0, y0, x1 - x0, y1 - y0)
                prof = ds.profile.copy()
                prof.update(width=win.width, height=win.height,
                            transform=ds.window_transform(win), tiled=False)
                prof.pop("blockxsize", None), prof.pop("blockysize", None)
                p = dst / f"{src.stem}_r{r}_c{c}.tif"
                with rasterio.open(p, "w", **prof) as o:
                    o.write(ds.read(window=win))
                out.append(p)
    return out


def _vrt_of(tif: Path, dest: Path) -> Path:
    """A GDAL VRT showing the whole of ``tif`` (band 1)."""
    with rasterio.open(tif) as ds:
        w, h, t, crs, dt = ds.width, ds.height, ds.transform, ds.crs.to_wkt(), ds.dtypes[0]
    gdal_type = {"uint8": "Byte"}[dt]
    dest.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">\n'
        f"  <SRS>{crs.replace('&', '&amp;').replace('<', '&lt;')}</SRS>\n"
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="{gdal_type}" band="1"><SimpleSource>\n'
        f"    <SourceFilename relativeToVRT=\"0\">{tif}</SourceFilename>\n"
        f"    <SourceBand>1</SourceBand>\n"
        f'    <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
        f'    <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
        "  </SimpleSource></VRTRasterBand>\n</VRTDataset>\n")
    return dest


def _tile_grid_halves(length: int, tile: int):
    """Two overlapping spans of ``length`` px that start on the tile grid of ``extract``
    (tiles of ``tile`` px overlapping by ``tile // 8``), the first ending on a tile's end, so that
    each span is tiled exactly as the whole is, and the middle of their overlap falls well
    inside both."""
    stride = tile - tile // 8
    k = max(1, round((length / 2 - tile / 2) / stride))
    first = (0, min(length, k * stride + tile))
    second = (k * stride, length)
    mid = (first[1] / 2 + (second[0] + length) / 2) / 2  # between the two centres
    assert second[0] + tile // 8 < mid < first[1] - tile // 8, (first, second)
    return first, second


def _seams_and_overlaps(paths):
    """The seam lines between the files' ownership cores (where the batch cuts the networks)
    and the areas where the files overlap, in the files' CRS."""
    from gis.merge import ownership_cores

    fps = []
    for p in paths:
        with rasterio.open(p) as ds:
            fps.append(box(*ds.bounds))
    union = unary_union(fps)
    cores = ownership_cores(fps)
    size = max(union.bounds[2] - union.bounds[0], union.bounds[3] - union.bounds[1])
    seams = unary_union([c.boundary for c in cores]).difference(
        union.boundary.buffer(size * 1e-6))
    overlaps = unary_union([fps[i].intersection(fps[j]) for i in range(len(fps))
                            for j in range(i + 1, len(fps))])
    return list(getattr(seams, "geoms", [seams])), overlaps


def _check_seamless(merged: gpd.GeoDataFrame, nodes: gpd.GeoDataFrame, whole_edges, whole_nodes,
                    seams, overlaps, metric_crs, rel: float) -> None:
    """The merged network matches the whole scene's: length, no cut-induced nodes on the seams,
    no duplicates in the overlaps."""
    m = merged.to_crs(metric_crs)
    w = whole_edges.to_crs(metric_crs)
    seams = gpd.GeoSeries(seams, crs=merged.crs).to_crs(metric_crs)
    ov = gpd.GeoSeries([overlaps], crs=merged.crs).to_crs(metric_crs).iloc[0]
    lm, lw = m.length.sum(), w.length.sum()
    assert lm == pytest.approx(lw, rel=rel), f"merged {lm:.1f} m vs whole {lw:.1f} m"
    # roads crossing the cuts are single lines: no node near a seam unless the whole-scene
    # network has one there too (a real junction or end), and no degree-2 node anywhere
    n = nodes.to_crs(metric_crs)
    wn = whole_nodes.to_crs(metric_crs)
    assert not (n["degree"] == 2).any()
    near = n[n.geometry.apply(lambda g: min(s.distance(g) for s in seams) < 1.0)]
    for g in near.geometry:
        assert wn.distance(g).min() < 12.0, f"seam node at {g} has no whole-scene counterpart"
    crossing = m[m.geometry.apply(lambda g: any(g.crosses(s) for s in seams))]
    assert len(crossing) > 0
    # no duplicates: as much road inside the overlaps as the whole scene has there
    inside_m = m.geometry.intersection(ov).length.sum()
    inside_w = w.geometry.intersection(ov).length.sum()
    assert inside_m == pytest.approx(inside_w, rel=max(rel, 0.05), abs=5.0)


def _utm(path: Path) -> str:
    from gis.merge import metric_crs_for

    with rasterio.open(path) as ds:
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(
            (ds.bounds.left + ds.bounds.right) / 2, (ds.bounds.top + ds.bounds.bottom) / 2)
        return metric_crs_for(ds.crs, (lon, lat)).to_string()


# --------------------------------------------------------------------------------------------
# fast: inputs, blocks, manifest, CLI errors
# --------------------------------------------------------------------------------------------
def test_expand_inputs_folders_lists_and_vrts(tmp_path):
    from app.service.batch import expand_inputs
    from app.service.errors import UserError

    (tmp_path / "in").mkdir()
    a = write_geotiff(tmp_path / "in" / "a.tif", np.zeros((8, 8), np.uint8))
    b = write_geotiff(tmp_path / "in" / "b.tiff", np.zeros((8, 8), np.uint8))
    (tmp_path / "in" / "notes.md").write_text("x")
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text("<VRTDataset/>")
    out = tmp_path / "in" / "out"
    out.mkdir()
    write_geotiff(out / "a_prob.tif", np.zeros((8, 8), np.uint8))  # our own output: left out
    lst = tmp_path / "list.txt"
    lst.write_text("# scenes\n\nin/b.tiff\n/vsis3/bucket/scene.tif\n")
    got = expand_inputs([str(tmp_path / "in"), str(lst), str(vrt), str(a)], str(out))
    assert got == [str(a), str(b), "/vsis3/bucket/scene.tif", str(vrt)]
    with pytest.raises(UserError, match="missing.tif: input not found"):
        expand_inputs([str(tmp_path / "missing.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: folder holds no rasters"):
        expand_inputs([str(tmp_path / "empty")])


def test_blocks_cover_the_raster_with_overlap_and_map_back_to_their_windows(tmp_path):
    from app.service.batch import BatchRequest, plan_items
    from app.service.extraction import ExtractionRequest
    from gis.aoi import aoi_window, bbox_aoi
    from gis.io import open_raster

    big = write_geotiff(tmp_path / "big.tif", np.zeros((300, 600), np.uint8), crs="EPSG:32611",
                        transform=utm_transform(0.5, origin=(600000.0, 4000000.0)))
    small = write_geotiff(tmp_path / "small.tif", np.zeros((100, 100), np.uint8),
                          crs="EPSG:32611")
    req = BatchRequest(inputs=(str(big),), out_dir=str(tmp_path / "o"),
                       extraction=ExtractionRequest(image="", out_dir=""), block_size_px=256,
                       block_overlap_px=64)
    scenes, items = plan_items([str(big), str(small), str(tmp_path / "nope.tif")], req)
    assert [s.stem for s in scenes] == ["big", "small", "nope"]
    assert scenes[0].blocks == [2, 3] and len(scenes[0].items) == 6
    assert scenes[1].blocks is None and scenes[1].items == ["small"]
    assert scenes[2].error and "nope.tif" in scenes[2].error and not scenes[2].items
    info = open_raster(big)
    cover = np.zeros((300, 600), int)
    for it in items[:6]:
        x0, y0, w, h = it.block
        assert w <= 256 + 64 and h <= 256 + 64
        win = aoi_window(bbox_aoi(*it.bbox, crs=it.bbox_crs), info)
        assert (win.col_off, win.row_off, win.width, win.height) == (x0, y0, w, h)
        cover[y0:y0 + h, x0:x0 + w] += 1
    assert cover.min() == 1 and cover.max() == 4
    assert (cover[:, 200 - 32:200 + 32] >= 2).all() and (cover[:100, 100] == 1).all()


def test_gdal_virtual_paths_are_planned_like_files(tmp_path):
    """/vsi... inputs (e.g. /vsis3/ on a cluster) are opened by GDAL, not checked on disk."""
    from rasterio.io import MemoryFile

    from app.service.batch import BatchRequest, expand_inputs, plan_items
    from app.service.extraction import ExtractionRequest

    with MemoryFile() as mf:
        with mf.open(driver="GTiff", width=32, height=16, count=1, dtype="uint8",
                     crs="EPSG:32611", transform=utm_transform(0.5)) as ds:
            ds.write(np.zeros((1, 16, 32), np.uint8))
        assert expand_inputs([mf.name]) == [mf.name]
        req = BatchRequest(inputs=(mf.name,), out_dir=str(tmp_path),
                           extraction=ExtractionRequest(image="", out_dir=""))
        scenes, items = plan_items([mf.name, "/vsimem/missing.tif"], req)
    assert scenes[0].error is None and (scenes[0].width, scenes[0].height) == (32, 16)
    assert items[0].image == mf.name and items[0].stem == scenes[0].stem
    assert scenes[1].error.startswith("/vsimem/missing.tif: cannot open raster")


def test_manifest_with_other_options_is_refused(tmp_path):
    from app.service.batch import MANIFEST_NAME, BatchRequest, run_batch
    from app.service.errors import UserError
    from app.service.extraction import ExtractionRequest

    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps({"parameters": {"threshold": 0.3},
                                                 "items": {}}))
    scene = write_geotiff(tmp_path / "s.tif", np.zeros((8, 8), np.uint8), crs="EPSG:32611")
    req = BatchRequest(inputs=(str(scene),), out_dir=str(out),
                       extraction=ExtractionRequest(image="", out_dir=""))
    with pytest.raises(UserError, match="other options.*threshold"):
        run_batch(req)


def test_a_late_start_event_never_reopens_a_finished_item():
    """The defect of the VRT-in-blocks run: a worker's 'start' event and the item's result can
    reach the client in the same poll (events and results travel apart), and reading the event
    after the result put the finished block back to 'running' (saved as 'pending'), so the
    scene was never joined while the batch said completed."""
    import queue

    from app.service.batch import Item, _apply_events

    items = {k: Item(key=k, scene="s", image="/data/s.vrt", out_dir="/o", stem=k,
                     block=(0, 0, 8, 8)) for k in ("a", "b")}
    items["a"].state = "done"
    events, seen, started = queue.Queue(), [], set()
    for ev in ({"item": "a", "stage": "start", "done": 0, "total": 1},
               {"item": "a", "stage": "infer", "done": 4, "total": 4},
               {"item": "b", "stage": "start", "done": 0, "total": 1},
               {"item": "b", "stage": "infer", "done": 1, "total": 4},
               {"item": "zz", "stage": "start", "done": 0, "total": 1}):
        events.put(ev)
    _apply_events(events, items, started,
                  lambda kind, **kw: seen.append((kind, kw.get("item"), kw.get("stage"))))
    assert items["a"].state == "done" and items["b"].state == "running"
    assert seen == [("item_started", "b", None), ("item_progress", "b", "infer")]
    assert events.empty()


@pytest.mark.slow
def test_an_item_cancelled_outside_a_cancel_is_a_named_failure(tmp_path):
    """Only a batch being cancelled may leave an item unfinished: an extraction that stops as
    cancelled, or a future Dask cancels, while the batch runs on is a failure naming the
    block (so the batch cannot say 'completed' with a block left pending)."""
    from distributed import Client, wait

    from app.service.batch import Item, _finish_item, run_item

    scene = _road_scene(tmp_path / "roads.tif", size=300)
    flag = tmp_path / ".roadseg-cancel-x"
    flag.touch()  # the worker sees a cancel request the batch never made
    it = Item(key="roads_r000_c001", scene="roads", image=str(scene),
              out_dir=str(tmp_path / "o"), stem="roads_r000_c001", block=(100, 0, 200, 300))
    counts, seen = {"done": 0, "failed": 0}, []
    emit = lambda kind, **kw: seen.append((kind, kw.get("item")))  # noqa: E731
    cores_before = os.environ.get("ROADSEG_CORES")
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as client:
        fut = client.submit(run_item, it.to_dict(), _template(predict_fn=BrightnessModel(),
                                                             tile_size_px=128),
                            str(flag), None, pure=False)
        wait([fut], timeout=120)
        assert fut.result()["state"] == "cancelled"
        # the worker's one-core setting lasted for the item only: this in-process worker
        # shares os.environ with the client (it once leaked into later tests' predictors)
        assert os.environ.get("ROADSEG_CORES") == cores_before
        _finish_item(fut, it, counts, emit, cancelling=True)  # the batch asked: run again
        assert it.state == "pending" and counts == {"done": 0, "failed": 0}
        _finish_item(fut, it, counts, emit, cancelling=False)
        assert it.state == "failed" and counts["failed"] == 1
        assert it.error.startswith(f"{scene} (block roads_r000_c001): the extraction stopped "
                                   "as cancelled although the batch was not cancelled")
        assert "\n" not in it.error
        slow = client.submit(time.sleep, 30, pure=False)
        client.cancel([slow])
        deadline = time.monotonic() + 30
        while slow.status != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        it2 = Item(key="x", scene="x", image="/data/x.tif", out_dir=str(tmp_path), stem="x")
        _finish_item(slow, it2, counts, emit)
        assert it2.state == "failed" and it2.error.startswith("/data/x.tif: Dask cancelled")
    assert seen == [("item_failed", it.key), ("item_failed", "x")]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_bad_input_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([PY, "-m", "app.cli", "batch", str(tmp_path / "missing.tif"), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"roadseg: error: {tmp_path / 'missing.tif'}: input not found"]
    r = subprocess.run([PY, "-m", "app.cli", "batch", str(DEMO), "-o", str(tmp_path / "o"),
                        "--block-overlap", "9000"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("roadseg: error: block overlap")


# --------------------------------------------------------------------------------------------
# slow: a real Dask cluster
# --------------------------------------------------------------------------------------------
class _Cluster:
    def __init__(self, root: Path, n_workers: int = 2) -> None:
        self.root = root
        self.file = root / "scheduler.json"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"}
        dask = str(Path(PY).with_name("dask"))
        self.logs = []
        self.scheduler = self._start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--no-dashboard", "--scheduler-file", str(self.file)],
                                     "scheduler")
        deadline = time.monotonic() + 60
        while not self.file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            assert self.scheduler.poll() is None, self._log("scheduler")
            time.sleep(0.2)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self._start([dask, "worker", "--scheduler-file", str(self.file),
                                     "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                                     "--name", f"w{i}", "--local-directory",
                                     str(root / f"w{i}")], f"w{i}") for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=90)

    def _start(self, cmd, name):
        log = open(self.root / f"{name}.log", "w")
        self.logs.append(log)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=str(ROOT))

    def _log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()[-2000:]

    def stop(self) -> None:
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in self.workers + [self.scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "dask").mkdir()
    c = _Cluster(tmp_path / "dask")
    try:
        yield c
    finally:
        c.stop()


def _template(**kw):
    from app.service.extraction import ExtractionRequest

    return ExtractionRequest(image="", out_dir="", **kw)


def _whole(path: Path, out: Path, **kw):
    from app.service.extraction import ExtractionRequest, run_extraction

    res = run_extraction(ExtractionRequest(image=str(path), out_dir=str(out), **kw))
    assert res.ok, res.error
    gpkg = res.outputs["roads.gpkg"]
    return gpd.read_file(gpkg, layer="edges"), gpd.read_file(gpkg, layer="nodes"), res.summary


def _merged(out: Path):
    gpkg = out / "batch_roads.gpkg"
    return gpd.read_file(gpkg, layer="edges"), gpd.read_file(gpkg, layer="nodes")


@pytest.mark.slow
def test_standin_quadrants_and_blocks_join_into_the_whole_network(tmp_path, cluster):
    from app.service.batch import BatchRequest, run_batch

    scene = _road_scene(tmp_path / "roads.tif")
    quads = _cut_quadrants(scene, tmp_path / "quads", overlap=160)
    kw = dict(predict_fn=BrightnessModel(), tile_size_px=256)
    we, wn, _ = _whole(scene, tmp_path / "whole", **kw)
    seams, overlaps = _seams_and_overlaps(quads)
    broken = tmp_path / "broken.tif"  # a truncated scene: fails alone, with one line
    broken.write_bytes(quads[0].read_bytes()[:3000])
    events = []
    res = run_batch(BatchRequest(inputs=(str(tmp_path / "quads"), str(broken)),
                                 out_dir=str(tmp_path / "b"),
                                 extraction=_template(**kw), scheduler=cluster.address),
                    on_event=events.append)
    assert res.status == "completed" and res.summary["totals"]["done"] == 4, res.summary
    (bad,) = res.failed
    assert bad["scene"] == "broken" and bad["error"].startswith(str(broken))
    assert "\n" not in bad["error"]
    assert {e.kind for e in events} >= {"plan", "cluster", "item_done", "merge", "finished"}
    assert any(e.kind == "item_progress" and e.stage == "infer" for e in events)
    me, mn = _merged(tmp_path / "b")
    _check_seamless(me, mn, we, wn, seams, overlaps, "EPSG:32611", rel=0.01)
    assert me["parts"].str.contains(",").any()
    # per-scene outputs as `extract` writes them
    for q in quads:
        for suffix in ("_prob.tif", "_mask.tif", "_roads.gpkg", "_summary.json"):
            assert (tmp_path / "b" / f"{q.stem}{suffix}").exists()

    # one raster (a GDAL VRT over the scene) split into 2 x 2 blocks: joined the same way.
    # The batch's loop is held up in its poll (as in a busy or starved process) until a block
    # it has not yet seen start has finished, so that block's 'start' event is read after its
    # result: that once left a finished block 'running' (saved as 'pending') and the scene
    # unjoined while the batch said completed.
    events = []
    blocks_dir = tmp_path / "blk" / "mosaic_blocks"

    def held_poll() -> bool:
        seen = {e.item for e in events if e.kind == "item_started"}
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            if any(p.name[:-len("_summary.json")] not in seen
                   for p in blocks_dir.glob("*_summary.json")):
                time.sleep(1.0)  # and its result reaches this client
                break
            time.sleep(0.05)
        return False

    vrt = _vrt_of(scene, tmp_path / "mosaic.vrt")
    res = run_batch(BatchRequest(inputs=(str(vrt),), out_dir=str(tmp_path / "blk"),
                                 extraction=_template(**kw), scheduler=cluster.address,
                                 block_size_px=450, block_overlap_px=120),
                    on_event=events.append, should_cancel=held_poll)
    kinds = [(e.kind, e.item) for e in events]
    for key in (f"mosaic_r00{r}_c00{c}" for r in (0, 1) for c in (0, 1)):
        done_at = kinds.index(("item_done", key))
        assert ("item_started", key) not in kinds[done_at:], kinds
    sc = res.summary["scenes"][0]
    assert res.status == "completed" and sc["state"] == "done" and sc["blocks"] == 4, res.summary
    man = json.loads((tmp_path / "blk" / "batch_manifest.json").read_text())
    assert sorted(v["state"] for v in man["items"].values()) == ["done"] * 4, man["items"]
    be = gpd.read_file(tmp_path / "blk" / "mosaic_roads.gpkg", layer="edges")
    bn = gpd.read_file(tmp_path / "blk" / "mosaic_roads.gpkg", layer="nodes")
    assert len(list((tmp_path / "blk" / "mosaic_blocks").glob("*_roads.gpkg"))) == 4
    _check_seamless(be, bn, we, wn, seams, overlaps, "EPSG:32611", rel=0.01)
    with rasterio.open(tmp_path / "blk" / "mosaic_mask.vrt") as v, \
            rasterio.open(tmp_path / "whole" / "roads_mask.tif") as w:
        assert v.shape == w.shape and v.transform.almost_equals(w.transform)
        assert np.mean(v.read(1) != w.read(1)) < 0.002


@pytest.mark.slow
def test_demo_scene_in_four_cuts_matches_the_whole_scene_and_resumes(tmp_path, cluster):
    """The real bundled model. The network's output depends on where its tiles fall (measured:
    cuts at the middle with their own tile grids found twice as much road in a quadrant's core
    as the whole-scene run did there), and each cut would get its own 2-98 % stretch. So the
    scene is first put on the model's 0.5 m grid (701 px), the cuts start on the whole scene's
    tile grid (256 px tiles, stride 224 px) and every run uses the whole scene's stretch: the
    model sees the same tiles, and only the batch's cutting and joining can make a difference."""
    from app.service.batch import BatchRequest, run_batch
    from gis.io import compute_stretch
    from segcore.checkpoint import read_metadata
    from segcore.predict import normalization_from_meta

    import rasterio
    import rasterio.shutil as rio_shutil

    from app.service.grid import grid_at_gsd
    from gis.io import open_raster

    meta = read_metadata(ROOT / "resources" / "models" / "road_demo.ckpt")
    # the scene on the model's own grid first (0.5 m), so that neither the whole scene nor the
    # cuts are resampled again and their tiles coincide
    demo = tmp_path / "demo_model_gsd.tif"
    g = grid_at_gsd(str(DEMO), open_raster(str(DEMO)), float(meta.gsd_m), None)
    try:
        rio_shutil.copy(g.path, str(demo), driver="GTiff")
    finally:
        g.close()
    with rasterio.open(demo) as src:
        size = src.width
    lo, hi = compute_stretch(str(demo), tuple(meta.bands))
    norm = normalization_from_meta(meta, stretch=(lo, hi))
    tile = 256  # the 701 px scene at 0.5 m: two halves need tiles well under half of it
    spans = _tile_grid_halves(size, tile)
    quads = _cut_quadrants(demo, tmp_path / "quads", cols=spans, rows=spans)
    we, wn, ws = _whole(demo, tmp_path / "whole", normalization=norm, tile_size_px=tile)
    assert ws["road_km"] > 0.3
    seams, overlaps = _seams_and_overlaps(quads)
    gray = write_geotiff(tmp_path / "gray.tif", np.zeros((64, 64), np.uint8), crs="EPSG:32611")
    req = BatchRequest(inputs=tuple(str(q) for q in quads) + (str(gray),),
                       out_dir=str(tmp_path / "b"),
                       extraction=_template(normalization=norm, tile_size_px=tile),
                       scheduler=cluster.address)
    res = run_batch(req)
    assert res.summary["totals"]["done"] == 4, res.summary
    (bad,) = res.failed  # found out on the worker, by run_extraction: the others went on
    assert bad["scene"] == "gray" and "band 2" in bad["error"] and "\n" not in bad["error"]
    assert not list((tmp_path / "b").glob("gray_*"))
    me, mn = _merged(tmp_path / "b")
    _check_seamless(me, mn, we, wn, seams, overlaps, _utm(demo), rel=0.02)

    # the same batch again: every scene skipped, its files untouched, the joined network rebuilt
    def stamps_now():
        return {p.name: p.stat().st_mtime_ns for q in quads
                for p in (tmp_path / "b").glob(f"{q.stem}_*")}

    stamps = stamps_now()
    assert len(stamps) == 4 * 6
    events = []
    res2 = run_batch(req, on_event=events.append)
    assert res2.summary["totals"]["skipped"] == 4 and res2.summary["totals"]["done"] == 0
    assert [e.kind for e in events].count("item_skipped") == 4
    # only the failed scene ran again
    assert {e.item for e in events if e.kind in ("item_started", "item_failed")} == {"gray"}
    assert stamps_now() == stamps
    me2, _ = _merged(tmp_path / "b")
    assert me2.length.sum() == pytest.approx(me.length.sum())
    doc = json.loads((tmp_path / "b" / "batch_summary.json").read_text())
    assert [s["state"] for s in doc["scenes"]] == ["skipped"] * 4 + ["failed"]


@pytest.mark.slow
def test_cli_on_a_local_cluster(tmp_path):
    """`roadseg batch` without --scheduler starts its own cluster (one worker here), prints the
    dashboard link and the progress bar, and writes every output."""
    spans = ((0, 520), (460, 980))
    quads = _cut_quadrants(DEMO, tmp_path / "quads", cols=spans, rows=((0, 520), (0, 520)))[:2]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "out"
    r = subprocess.run([PY, "-m", "app.cli", "batch", *map(str, quads), "-o", str(out),
                        "--workers", "1", "--progress"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stderr
    assert "dask dashboard: http://" in r.stderr and "scenes [" in r.stderr
    assert "Traceback" not in r.stderr and "INFO" not in r.stderr
    assert "2 done, 0 already done, 0 failed (of 2)" in r.stdout
    doc = json.loads((out / "batch_summary.json").read_text())
    assert doc["cluster"]["local"] and doc["cluster"]["workers"] == 1
    assert [s["state"] for s in doc["scenes"]] == ["done", "done"]
    assert doc["merged"]["path"] == str(out / "batch_roads.gpkg")
    edges = gpd.read_file(out / "batch_roads.gpkg", layer="edges")
    assert len(edges) == doc["merged"]["edges"] and edges.crs.to_epsg() == 4326


@pytest.mark.slow
def test_worker_killed_mid_batch(tmp_path, cluster):
    """SIGKILL one of the two workers while scenes are under way: every scene ends done (Dask
    reruns the lost one on the other worker) or failed with its error, and no partial file is
    left under a final name."""
    from app.service.batch import BatchRequest, run_batch

    quads = _cut_quadrants(DEMO, tmp_path / "quads", overlap=256)
    out = tmp_path / "b"
    req = BatchRequest(inputs=tuple(str(q) for q in quads), out_dir=str(out),
                       extraction=_template(), scheduler=cluster.address)
    box_ = {}
    t = threading.Thread(target=lambda: box_.setdefault("res", run_batch(req)))
    t.start()
    deadline = time.monotonic() + 240
    while not list(out.glob(".roadseg-staging-*")):  # a scene is being written
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.1)
    victim = cluster.workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t.join(timeout=400)
    assert not t.is_alive()
    res = box_["res"]
    states = [s["state"] for s in res.summary["scenes"]]
    assert set(states) <= {"done", "failed"} and states.count("done") >= 3, res.summary
    for s in res.summary["scenes"]:
        files = sorted(p.name for p in out.glob(f"{s['scene']}_*"))
        if s["state"] == "done":
            assert f"{s['scene']}_summary.json" in files and f"{s['scene']}_mask.tif" in files
        else:
            assert files == [] and s["error"]
    assert not list(out.glob(".roadseg-staging-*"))
    assert (out / "batch_roads.gpkg").exists()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_finished_scenes(tmp_path, cluster):
    """SIGINT to `roadseg batch` after the first scene: exit 130, finished scenes kept in the
    manifest, nothing partial; the next run finishes the rest."""
    quads = _cut_quadrants(DEMO, tmp_path / "quads", overlap=256)
    out = tmp_path / "b"
    cmd = [PY, "-m", "app.cli", "batch", *map(str, quads), "-o", str(out), "--scheduler",
           cluster.address, "--no-progress"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*_summary.json")):
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=180)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr
    man = json.loads((out / "batch_manifest.json").read_text())
    done = [k for k, v in man["items"].items() if v["state"] == "done"]
    assert 1 <= len(done)
    for k, v in man["items"].items():
        has = (out / f"{k}_summary.json").exists()
        assert has == (v["state"] == "done"), (k, v["state"])
    assert not list(out.glob(".roadseg-staging-*")) and not list(out.glob(".roadseg-cancel-*"))
    if len(done) < 4:
        r = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True,
                           timeout=400)
        assert r.returncode == 0, r.stderr
        assert f"{len(done)} already done" in r.stdout
