"""``python -m app.gui [IMAGE.tif]``: same as ``roadseg-gui``."""
import sys

from app.gui.main import main

sys.exit(main())
