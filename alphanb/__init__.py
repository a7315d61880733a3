__version__ = "0.1.0"

from .data import Panel, load_panel
