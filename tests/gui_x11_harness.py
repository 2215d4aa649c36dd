"""Runs RoadSeg Studio on a real X display for ``test_gui_x11.py``: the main window as
``roadseg-gui`` builds it (``app.gui.main``: excepthook, ``closed`` ends the app), set up for one
scenario; the test drives it from outside with xdotool (real X key events) and reads what this
script writes.

``python tests/gui_x11_harness.py SCENARIO --state STATE.json [options]``

Scenarios:
    extract: open ``--image``, start an extraction with ``--checkpoint`` into ``--out``; writes
        ``STATE.ready`` at the first inference progress, a heartbeat line (monotonic time) every
        50 ms into ``STATE.beat`` while the event loop runs.
    dataset: open ``--image`` and the chips dataset ``--dataset``, show the Dataset review tab;
        writes ``STATE.ready``.

At exit it writes STATE.json: the extraction status, the dataset review state, the map tool,
the visible top-level windows left.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=("extract", "dataset"))
    ap.add_argument("--state", required=True)
    ap.add_argument("--settings", required=True)
    ap.add_argument("--image")
    ap.add_argument("--checkpoint")
    ap.add_argument("--out")
    ap.add_argument("--dataset")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)

    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui.main import install_excepthook
    from app.gui.main_window import MainWindow
    from app.gui.settings import AppSettings

    state = Path(args.state)
    app = QApplication([sys.argv[0]])
    app.setApplicationName("RoadSeg Studio")
    install_excepthook(app)
    win = MainWindow(AppSettings(args.settings))
    win.closed.connect(app.quit, Qt.QueuedConnection)
    win.resize(1400, 900)
    win.show()
    info: dict = {"platform": app.platformName(), "progress": []}

    beat = open(str(state) + ".beat", "w", buffering=1)
    hb = QTimer()
    hb.setInterval(50)
    hb.timeout.connect(lambda: beat.write(f"{time.monotonic():.3f}\n"))
    hb.start()

    def ready() -> None:
        Path(str(state) + ".ready").write_text(f"{time.monotonic():.3f}\n")

    if args.scenario == "extract":
        def on_progress(done: int, total: int, stage: str) -> None:
            info["progress"].append([done, total, stage])
            if stage == "infer" and not Path(str(state) + ".ready").exists():
                ready()

        def go() -> None:
            assert win.open_image(args.image), win.last_error
            p = win.extraction_panel
            p.select_checkpoint(args.checkpoint)
            p.backend.setCurrentText("mindspore")
            p.use_aoi.setChecked(False)
            p.tile.setValue(64)
            p.overlap.setValue(8)
            p.batch.setValue(1)
            p.out_dir.setText(args.out)
            win.runner.progress.connect(on_progress)
            assert win.start_extraction(), win.last_error

        QTimer.singleShot(300, go)
    else:
        def go() -> None:
            assert win.open_image(args.image), win.last_error
            assert win.dataset_panel.open_dataset(args.dataset)
            win.show_tab(win.TAB_DATASET)
            win.activateWindow()
            QTimer.singleShot(300, ready)

        QTimer.singleShot(300, go)

    def at_exit() -> None:
        dp = win.dataset_panel
        info.update(
            quit_at=time.monotonic(),
            result=getattr(win.result, "status", None),
            running=win.runner.is_running(),
            thread_alive=win.runner.worker is not None,
            tool=win.canvas.tool,
            dataset_current=dp.current,
            dataset_status=[dp.ds.status(i) for i in range(len(dp.ds))] if dp.ds else [],
            visible_windows=[f"{type(w).__name__}:{w.windowTitle()}"
                             for w in QApplication.topLevelWidgets() if w.isVisible()])
        state.write_text(json.dumps(info))

    app.aboutToQuit.connect(at_exit)
    rc = app.exec()
    beat.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
