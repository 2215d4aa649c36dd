"""``roadseg-gui [IMAGE.tif]``: start RoadSeg Studio."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import List, Optional

log = logging.getLogger(__name__)
_open_dialogs: list = []


def install_excepthook(app) -> None:
    """Show uncaught exceptions (UI thread slots included) as a dialog instead of crashing."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unexpected error:\n%s", details)
        try:
            parent = app.activeWindow() or next(
                (w for w in app.topLevelWidgets() if w.isVisible() and w.inherits("QMainWindow")),
                None)
            if parent is None:  # no window left (closing): a dialog would be an orphan
                return
            box = QMessageBox(QMessageBox.Critical, "Unexpected error",
                              f"{exc_type.__name__}: {exc}\n\nThe window stays open; the "
                              "details are in the log.", QMessageBox.Ok, parent)
            box.setDetailedText(details)
            box.setAttribute(Qt.WA_DeleteOnClose)
            _open_dialogs.append(box)  # a parentless box must outlive this function
            box.finished.connect(lambda _r, b=box: _open_dialogs.remove(b)
                                 if b in _open_dialogs else None)
            box.open()
        except Exception:  # noqa: BLE001 - never raise from the hook
            sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = hook


def _parse(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="roadseg-gui", description="RoadSeg Studio desktop app")
    p.add_argument("image", nargs="?", help="GeoTIFF to open")
    p.add_argument("--settings", help="INI file for the settings (default: the user's)")
    p.add_argument("--screenshot", help="save a PNG of the window after it has drawn, then quit"
                   " (also $ROADSEG_GUI_SCREENSHOT)")
    return p.parse_known_args(argv)[0]


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``roadseg-gui``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow
    from app.gui.settings import AppSettings

    app = QApplication.instance() or QApplication([sys.argv[0]] + argv)
    app.setApplicationName("RoadSeg Studio")
    app.setOrganizationName("RoadSeg")
    install_excepthook(app)
    win = MainWindow(AppSettings(args.settings))
    # the app ends with its window, whatever else is left open
    win.closed.connect(app.quit, Qt.QueuedConnection)
    win.show()
    if args.image:
        QTimer.singleShot(0, lambda: win.open_path(args.image))
    shot = args.screenshot or os.environ.get("ROADSEG_GUI_SCREENSHOT")
    if shot:
        delay = int(os.environ.get("ROADSEG_GUI_SCREENSHOT_DELAY_MS", "2500"))

        def grab() -> None:
            win.grab().save(shot)
            log.info("screenshot saved to %s", shot)
            win.close()
            app.quit()

        QTimer.singleShot(delay, grab)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
