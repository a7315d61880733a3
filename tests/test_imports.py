"""The package's import graph: printed, acyclic, module-level only, and every module importable on its own."""
import ast, graphlib, subprocess, sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]/'alphanb'
SKIP = {'_modidx'}


def _imported(node:ast.AST)->list[str]:
    """The alphanb modules an import statement names: 'formula' for `from .formula import X`, `from alphanb.formula import X`,
    `from alphanb import formula` or `import alphanb.formula`."""
    if isinstance(node, ast.ImportFrom):
        name = ('alphanb.' + (node.module or '')).rstrip('.') if node.level else (node.module or '')
        if name == 'alphanb': return [a.name for a in node.names if (PKG/f'{a.name}.py').exists()]
        return [name[len('alphanb.'):]] if name.startswith('alphanb.') else []
    if isinstance(node, ast.Import): return [a.name[len('alphanb.'):] for a in node.names if a.name.startswith('alphanb.')]
    return []


def graph()->tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    "({module: alphanb modules it imports at module level}, [(module, line, imported) for imports inside functions])."
    deps, inner = {}, []
    for path in sorted(PKG.glob('*.py')):
        if path.stem in SKIP: continue
        tree = ast.parse(path.read_text(encoding='utf-8'))
        deps[path.stem] = {m for n in tree.body for m in _imported(n)}
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += [(path.stem, n.lineno, m) for n in ast.walk(fn) for m in _imported(n)]
    return deps, inner


def test_import_graph_has_no_cycle():
    deps, _ = graph()
    try: order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as e: pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
    print('\nalphanb import graph (each module after everything it imports):')
    for m in order:
        if m in deps: print(f"  {m:10s} <- {', '.join(sorted(deps[m])) or '-'}")
    assert set(order) >= set(deps) and 'core' in deps and deps['core'] == set()


def test_a_cycle_is_caught():
    deps = {'a': {'b'}, 'b': {'a'}}
    with pytest.raises(graphlib.CycleError): list(graphlib.TopologicalSorter(deps).static_order())


def test_no_alphanb_import_inside_a_function():
    _, inner = graph()
    assert inner == [], f"imports of alphanb modules inside functions (move them to the top of the module): {inner}"


def test_every_module_imports_on_its_own():
    mods = sorted(graph()[0])
    code = ("import importlib, sys\nfor m in %r:\n"
            "    for k in [k for k in sys.modules if k == 'alphanb' or k.startswith('alphanb.')]: del sys.modules[k]\n"
            "    importlib.import_module('alphanb.' + m)\nprint('ok')" % mods)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]


def test_package_names_load_their_module_on_first_use():
    code = ("import sys, alphanb\nassert 'torch' not in sys.modules\n"
            "from alphanb import Panel, Formula, load_panel, FormulaCache, Grammar, evaluate_formula, evaluate_formulas\n"
            "import alphanb.grammar, alphanb.evaluate\nassert Grammar is alphanb.grammar.Grammar and evaluate_formula is alphanb.evaluate.evaluate_formula\n"
            "import alphanb.data, alphanb.formula\nassert Panel is alphanb.data.Panel and Formula is alphanb.formula.Formula\n"
            "assert {'Panel', 'Formula'} <= set(dir(alphanb))\n"
            "try: alphanb.Nope\nexcept AttributeError as e: assert 'Nope' in str(e)\nelse: raise SystemExit('no error')\nprint('ok')")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]
