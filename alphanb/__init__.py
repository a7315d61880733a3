__version__ = "0.1.0"

from .data import Panel, load_panel
from .formula import Formula, FormulaCache, Grammar, evaluate_formula, evaluate_formulas
