__version__ = "0.1.0"

# `alphanb.Panel`, `alphanb.Formula`, ... import their module on first use, so that `import alphanb` (and `alphanb --help`)
# does not load torch.
_LAZY = {'Panel': 'data', 'load_panel': 'data', 'Formula': 'formula', 'FormulaCache': 'evaluate', 'Grammar': 'grammar',
         'evaluate_formula': 'evaluate', 'evaluate_formulas': 'evaluate'}

def __getattr__(name):
    if name not in _LAZY: raise AttributeError(f"module 'alphanb' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f'alphanb.{_LAZY[name]}'), name)

def __dir__(): return sorted([*globals(), *_LAZY])
