"""Network definitions. Importing this package registers every builder."""
from . import dlinknet, deeplabv3, dgcnet, ddrnet, enet  # noqa: F401
