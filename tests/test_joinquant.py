"JoinQuant export parity: the exported strategy, run on a local stand-in of `jqdata`, computes alphanb's factor values and trades what alphanb's backtester trades."
import ast, json, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphanb.backtest import BacktestConfig, backtest, rebalance_days
from alphanb.core import AlphanbError
from alphanb.data import load_panel
from alphanb.evaluate import FormulaCache, evaluate_formula
from alphanb.joinquant import export_joinquant, formula_tree, strategy_source
from alphanb.jq_sim import LocalJoinQuant
from alphanb.jq_strategy import NP_OPERATORS, np_evaluate, np_features, qlib_symbol
from alphanb.operators import example_formulas
from alphanb.pool import combined_factor
from alphanb.factors import load_factors

ROOT = Path(__file__).resolve().parents[1]
POOLS = {u: ROOT/'data'/'results'/u/'factors.json' for u in ['csi300', 'csi500']}   # the committed mined pools

# every operator family, the seed features (Liquidity reads the float market cap), raw price and volume levels
FORMULAS = ['Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3', 'Corr($close, $volume, 10)', 'ZScore(Std(Returns, 20))',
            'Mean(Rank(Returns), 5)', 'TsRank(Liquidity, 10) + EMA(FOMO, 5)', 'Log($close) - Log(Delay($vwap, 1))',
            'Div($high, $low) * Sign(Delta($close, 5))', 'Gate(Deviation, Skew(Returns, 20), Neg(Kurt($volume, 10)))']
WEIGHTS = [0.5, -0.3, 0.2, 0.4, 0.1, -0.2, 0.3, 0.15]
RULES = {'topk': 10, 'rebalance': 5, 'benchmark': None}
TOL = 1e-5   # |strategy − evaluate_formula| / max(1, |evaluate_formula|), on the float32 factor values


def write_factors(path:Path, formulas=FORMULAS, weights=WEIGHTS)->Path:
    rows = [{'factor_name': f'jq_{i}', 'expression': e, 'qlib_expression': None, 'weight': w, 'interpretation': '',
             'performance': {}} for i, (e, w) in enumerate(zip(formulas, weights))]
    path.write_text(json.dumps(rows))
    return path


def trade_log(trades:pd.DataFrame)->pd.DataFrame:
    "One row per fill in a fixed order (the order of sells within a day does not change the cash)."
    return trades[['date', 'symbol', 'side', 'shares', 'reason']].sort_values(['date', 'side', 'symbol']).reset_index(drop=True)


def parity(tmp:Path, uri:Path, universe:str, history:str, start:str, end:str, anchor:str, factors:Path|None=None,
           rules:dict=RULES)->dict:
    "Export `factors` (the hand-written FORMULAS when None), run the strategy locally over [start, end], and measure it against alphanb."
    t0 = time.perf_counter()
    factors = factors or write_factors(tmp/'factors.json')
    rows = load_factors(factors)
    exported = export_joinquant(factors, tmp/'jq', {**rules, 'universe': universe, 'adjust_anchor': anchor})
    jq = LocalJoinQuant.from_qlib(tmp/'jq', uri, universe, history, end, anchor=anchor)
    panel = jq.panel
    run = jq.run(start, end)
    # (a) factor values on each rebalance day (the previous close) against evaluate_formula
    cache = FormulaCache()
    ref = [evaluate_formula(panel, r['expression'], cache).numpy().astype(np.float64) for r in rows]
    worst, nan_mismatch, cells = np.zeros(len(rows)), 0, 0
    for r in run['records']:
        d = panel.dates.get_loc(pd.Timestamp(r['date']))
        cols = [panel.symbols.index(qlib_symbol(c)) for c in r['codes']]
        for k, (v, full) in enumerate(zip(r['values'], ref)):
            want = full[d, cols]
            nan_mismatch += int((np.isnan(v) != np.isnan(want)).sum())
            ok = ~np.isnan(v) & ~np.isnan(want)
            cells += int(ok.sum())
            if ok.any(): worst[k] = max(worst[k], float(np.max(np.abs(v[ok] - want[ok]) / np.maximum(1, np.abs(want[ok])))))
    # (b) the book against alphanb's backtester on the same signal, cash and rules
    signal = combined_factor(panel, rows, cache).numpy()
    bt = backtest(panel, signal, BacktestConfig(**rules), start=start, end=end)
    top_ok = 0
    for r in run['records']:
        d = panel.dates.get_loc(pd.Timestamp(r['date']))
        s = signal[d]
        idx = np.flatnonzero(np.isfinite(s) & panel.member[d].numpy())
        want = [panel.symbols[i] for i in idx[np.argsort(-s[idx], kind='stable')][:rules['topk']]]
        top_ok += [qlib_symbol(c) for c in r['target']] == want
    # the strategy must rebalance on exactly the backtester's days (the records carry the signal's day, the day before)
    days = bt.nav.index
    bt_rebal = [f'{panel.dates[panel.dates.get_loc(t) - 1]:%Y-%m-%d}' for t in days[rebalance_days(days, rules['rebalance'])]]
    mine = run['positions'].reindex(index=bt.positions.index, columns=bt.positions.columns, fill_value=0.).to_numpy()
    theirs = bt.positions.to_numpy(dtype=np.float64)
    held = (mine > 0) | (theirs > 0)
    same = np.isclose(mine, theirs, rtol=1e-6, atol=1e-6) & held
    t = run['trades'].assign(symbol=run['trades']['code'].map(qlib_symbol))
    why = {(pd.Timestamp(d), c): w for d, c, w in run['sells'].itertuples(index=False)}
    t['reason'] = [why.get((d, c), 'rebalance') if s == 'sell' else 'rebalance' for d, c, s in zip(t['date'], t['code'], t['side'])]
    t_mine, t_bt = trade_log(t), trade_log(bt.trades)
    keys = ['date', 'symbol', 'side', 'reason']
    out = {'universe': universe, 'factors': len(rows), 'days': len(run['nav']), 'rebalances': len(run['records']),
           'rebalance_days_equal': [r['date'] for r in run['records']] == bt_rebal, 'factor_cells': cells,
           'max_factor_diff': float(worst.max(initial=0.)), 'worst_factor': rows[int(worst.argmax())]['expression'],
           'nan_mismatch': nan_mismatch, 'topk_matched': top_ok,
           'position_match_rate': float(same.sum() / max(held.sum(), 1)), 'held_cells': int(held.sum()),
           'trades': (len(t_mine), len(t_bt)), 'exits': t_bt['reason'].isin(['stop_loss', 'take_profit']).sum().item(),
           'trade_log_equal': len(t_mine) == len(t_bt) and (t_mine[keys].astype(str).values == t_bt[keys].astype(str).values).all()
                              and np.allclose(t_mine['shares'], t_bt['shares'].astype(float), rtol=1e-6),
           'nav_max_rel_diff': float(np.max(np.abs(run['nav']['value'].to_numpy() / bt.nav.to_numpy() - 1))),
           'seconds': round(time.perf_counter() - t0, 1), 'exported': exported}
    print(json.dumps({k: v for k, v in out.items() if k != 'exported'}))
    return out


def check(res:dict):
    "Every rebalance on the backtester's days, every factor value within TOL, and the same book."
    assert res['rebalances'] >= 1 and res['rebalance_days_equal'], res
    assert res['factor_cells'] >= 10 * res['rebalances'] * res['factors']     # at least ten stocks per factor and day
    assert res['nan_mismatch'] == 0
    assert res['max_factor_diff'] <= TOL, res['worst_factor']
    assert res['topk_matched'] == res['rebalances']
    assert res['position_match_rate'] == 1.0 and res['trade_log_equal']
    assert res['nav_max_rel_diff'] < 1e-6


def test_parity_on_real_data(cn_data, tmp_path):
    "CSI300, 2019 H1 with four months of history: factor values and the book equal alphanb's."
    res = parity(tmp_path, cn_data, 'csi300', '2018-09-01', '2019-01-02', '2019-06-28', anchor='2010-01-04')
    check(res)


@pytest.mark.parametrize('universe', [pytest.param('csi300', marks=pytest.mark.long(seconds=25)),
                                      pytest.param('csi500', marks=pytest.mark.long(seconds=50))])
def test_parity_of_the_committed_pool(cn_data, tmp_path, universe):
    "The pool alphanb mined and committed for each universe, four months of 2019 with its history, a rebalance every ten days: the same values and book."
    if not POOLS[universe].exists(): pytest.skip(f'{POOLS[universe]} is not in this checkout')
    res = parity(tmp_path, cn_data, universe, '2018-08-01', '2019-01-02', '2019-04-30', anchor='2010-01-04', factors=POOLS[universe],
                 rules={**RULES, 'rebalance': 10})
    check(res)


DEMO_RULES = [RULES,
              {'topk': 10, 'rebalance': 'M', 'benchmark': None, 'trade_price': 'close'},
              {'topk': 15, 'rebalance': 3, 'benchmark': None, 'take_profit': 0.05, 'stop_loss': 0.03, 'max_weight': 0.05,
               'min_trade': 30000, 'slippage': 0.002}]

@pytest.mark.parametrize('rules', DEMO_RULES, ids=['every-5-days', 'monthly-at-close', 'exits-and-limits'])
def test_parity_on_demo_market(demo_data, tmp_path, rules):
    "The same on the embedded demo market, under three sets of rules (monthly at the close; tight exits, caps and slippage)."
    res = parity(tmp_path, demo_data, 'csi300', '2018-10-01', '2019-03-01', '2019-06-28', anchor='2016-01-04', rules=rules)
    check(res)
    if 'take_profit' in rules: assert res['exits'] > 0      # the exit reasons were compared, not vacuous


def test_exported_files_need_no_pickle_torch_or_alphanb(tmp_path):
    "The npz loads with allow_pickle=False, the json with json, and strategy.py imports neither torch nor alphanb."
    res = export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq', RULES)
    with np.load(res['model'], allow_pickle=False) as z:
        np.testing.assert_allclose(z['weights'], WEIGHTS)
        assert int(z['history']) > 20
    spec = json.loads(Path(res['factors']).read_text())
    assert [f['factor_name'] for f in spec['factors']] == [f'jq_{i}' for i in range(len(FORMULAS))]
    assert spec['config']['topk'] == 10 and spec['config']['commission'] == 0.0003 and spec['config']['stamp_tax'] == 0.001
    tree = ast.parse(Path(res['strategy']).read_text())
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): imported |= {a.name.split('.')[0] for a in n.names}
        if isinstance(n, ast.ImportFrom): imported.add(n.module.split('.')[0])
    assert imported <= {'jqdata', 'io', 'json', 'math', 'warnings', 'numpy', 'pandas'}, imported
    assert not {'torch', 'alphanb', 'qlib'} & imported
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not {'eval', 'exec', 'compile', '__import__'} & calls
    for name in ['initialize', 'set_benchmark', 'set_option', 'set_order_cost', 'run_daily', 'get_index_stocks', 'get_price',
                 'order_target_value', 'read_file']:
        assert name in Path(res['strategy']).read_text(), name


# Runs in a fresh interpreter where torch, alphanb, qlib and fastcore cannot be imported and pickle cannot load anything:
# it reads the export as JoinQuant would (read_file from the research root) and evaluates every factor on random bars.
NO_TORCH = textwrap.dedent('''
    import sys, types, importlib.abc, importlib.util, json, pickle
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split('.')[0] in ('torch', 'alphanb', 'qlib', 'fastcore'): raise ImportError(f'blocked: {name}')
    sys.meta_path.insert(0, Block())
    def no_pickle(*a, **k): raise RuntimeError('pickle used')
    pickle.load = pickle.loads = no_pickle
    import numpy as np
    D = sys.argv[1]
    jq = types.ModuleType('jqdata'); jq.read_file = lambda p: open(f'{D}/{p}', 'rb').read(); jq.__all__ = ['read_file']
    sys.modules['jqdata'] = jq
    spec = importlib.util.spec_from_file_location('strategy', f'{D}/strategy.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    ex = m.load_export()
    rng = np.random.default_rng(0)
    T, N = ex['history'], 30
    c = 10 * np.exp(np.cumsum(rng.normal(0, .02, (T, N)), 0)); v = rng.lognormal(14, .5, (T, N))
    raw = {'$open': c * 1.001, '$high': c * 1.01, '$low': c * .99, '$close': c, '$volume': v, '$amount': v * c, '$vwap': c,
           '$factor': np.ones_like(c), '$change': np.zeros_like(c), '$mktcap': c * 1e9, '$float_mktcap': c * 5e8}
    bars = {k: m.as_f32(x) for k, x in raw.items()}; bars.update(m.np_features(bars))
    values = [m.np_evaluate(f['tree'], bars, np.ones((T, N), bool))[-1].tolist() for f in ex['factors']]
    try: import torch; torch_loaded = True
    except ImportError: torch_loaded = False
    print(json.dumps({'values': values, 'weights': ex['weights'], 'importable': torch_loaded,
                      'loaded': sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'alphanb', 'qlib', 'fastcore'))}))
''')

def test_export_loads_and_evaluates_without_torch_or_pickle(tmp_path):
    "In a process that cannot import torch/alphanb/qlib/fastcore nor unpickle, the export loads and the evaluator runs."
    res = export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq', RULES)
    (tmp_path/'probe.py').write_text(NO_TORCH)
    p = subprocess.run([sys.executable, str(tmp_path/'probe.py'), res['out']], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got['loaded'] == [] and not got['importable']      # the blocker held: nothing of alphanb's world was there
    assert got['weights'] == WEIGHTS
    # the same numbers as the evaluator here, where alphanb is importable
    rng = np.random.default_rng(0)
    T, N = int(np.load(res['model'], allow_pickle=False)['history']), 30
    c = 10 * np.exp(np.cumsum(rng.normal(0, .02, (T, N)), 0)); v = rng.lognormal(14, .5, (T, N))
    raw = {'$open': c * 1.001, '$high': c * 1.01, '$low': c * .99, '$close': c, '$volume': v, '$amount': v * c, '$vwap': c,
           '$factor': np.ones_like(c), '$change': np.zeros_like(c), '$mktcap': c * 1e9, '$float_mktcap': c * 5e8}
    bars = {k: x.astype(np.float32).astype(np.float64) for k, x in raw.items()}; bars.update(np_features(bars))
    trees = [f['tree'] for f in json.loads(Path(res['factors']).read_text())['factors']]
    want = [np_evaluate(t, bars, np.ones((T, N), bool))[-1] for t in trees]
    np.testing.assert_array_equal(np.array(got['values'], dtype=np.float64), np.array(want))
    assert all(np.isfinite(w).sum() > 0 for w in want)


def test_repo_template_is_what_the_exporter_writes(tmp_path):
    "joinquant/strategy.py in the repository is the exporter's strategy file (rewrite it with `--template`)."
    res = export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq')
    assert (ROOT/'joinquant'/'strategy.py').read_text() == Path(res['strategy']).read_text(), \
        'joinquant/strategy.py is stale: run `alphanb export-joinquant --template joinquant/strategy.py`'


def test_unknown_operator_fails_at_export(tmp_path, monkeypatch):
    "A formula whose operator the numpy evaluator lacks is an error at export time naming the factor and operator."
    monkeypatch.delitem(NP_OPERATORS, 'Kurt')
    with pytest.raises(AlphanbError, match=r"factor 'jq_7'.*operator Kurt"):
        export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq')
    assert not (tmp_path/'jq'/'strategy.py').exists()


def test_export_checks_the_tree_it_writes(tmp_path, monkeypatch):
    "`$close * -1` is written as Neg($close): the check reads the written (canonical) tree, not the text."
    monkeypatch.delitem(NP_OPERATORS, 'Neg')
    with pytest.raises(AlphanbError, match=r"factor 'jq_0'.*operator Neg"):
        export_joinquant(write_factors(tmp_path/'factors.json', ['Mul($close, -1)'], [1.]), tmp_path/'jq')


def test_cli_prints_the_result_last(tmp_path):
    "`alphanb export-joinquant` prints a summary and the result dict as its last stdout line; `--template` writes the strategy alone."
    f = write_factors(tmp_path/'factors.json')
    cli = lambda *a: subprocess.run([sys.executable, '-m', 'alphanb', 'export-joinquant', *map(str, a)], capture_output=True,
                                    text=True, cwd=ROOT, timeout=120)
    p = cli('--factors', f, '--out', tmp_path/'out', '--set', 'topk', '20')
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last['n_factors'] == len(FORMULAS) and Path(last['strategy']).exists()
    assert json.loads(Path(last['factors']).read_text())['config']['topk'] == 20
    bad = cli('--factors', tmp_path/'missing.json', '--out', tmp_path/'out2')
    assert bad.returncode == 2 and 'missing.json' in bad.stderr and 'Traceback' not in bad.stderr
    t = cli('--template', tmp_path/'strategy.py')
    assert t.returncode == 0, t.stderr
    assert (tmp_path/'strategy.py').read_text() == strategy_source() and not (tmp_path/'alphanb_model.npz').exists()
    none = cli('--out', tmp_path/'out3')
    assert none.returncode == 2 and '--factors' in none.stderr


def test_every_operator_equals_bit_for_bit(demo_data):
    "Each operator alone: the strategy's numpy value (float32) equals evaluate_formula's in every cell, NaN where it is NaN."
    panel = load_panel(demo_data, 'csi300')
    bars, member = {f: panel[f].numpy() for f in panel.fields}, panel.member.numpy()
    forms = example_formulas() + [f'Pow({x}, {e})' for x in ('$close', 'Returns', '$close - Mean($close, 5)')   # constant exponents:
                                  for e in (0.5, 2, -1, 3, -0.5, 1.5)]                                 # a number on both sides
    assert len(forms) > 100 and {f.split('(')[0] for f in forms} >= {'Std', 'Var', 'Cov', 'Corr', 'Skew', 'Kurt', 'Rank'}
    differ = []
    for text in forms:
        a, b = evaluate_formula(panel, text).numpy(), np_evaluate(formula_tree(text), bars, member)
        if not np.array_equal(a, b, equal_nan=True):
            differ.append((text, int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())))
    assert not differ, differ
