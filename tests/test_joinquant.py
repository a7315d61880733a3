"JoinQuant export parity: the exported strategy, run on a local stand-in of `jqdata`, computes alphanb's factor values and trades what alphanb's backtester trades."
import ast, json, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphanb.backtest import BacktestConfig, backtest
from alphanb.core import AlphanbError
from alphanb.formula import FormulaCache, evaluate_formula
from alphanb.joinquant import (LocalJoinQuant, NP_OPERATORS, check_exportable, export_joinquant, qlib_symbol)
from alphanb.pool import combined_factor

ROOT = Path(__file__).resolve().parents[1]

# every operator family, the seed features (Liquidity reads the float market cap), raw price and volume levels
FORMULAS = ['Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3', 'Corr($close, $volume, 10)', 'ZScore(Std(Returns, 20))',
            'Mean(Rank(Returns), 5)', 'TsRank(Liquidity, 10) + EMA(FOMO, 5)', 'Log($close) - Log(Delay($vwap, 1))',
            'Div($high, $low) * Sign(Delta($close, 5))', 'Gate(Deviation, Skew(Returns, 20), Neg(Kurt($volume, 10)))']
WEIGHTS = [0.5, -0.3, 0.2, 0.4, 0.1, -0.2, 0.3, 0.15]
RULES = {'topk': 10, 'rebalance': 5, 'benchmark': None}


def write_factors(path:Path)->Path:
    rows = [{'factor_name': f'jq_{i}', 'expression': e, 'qlib_expression': None, 'weight': w, 'interpretation': '',
             'performance': {}} for i, (e, w) in enumerate(zip(FORMULAS, WEIGHTS))]
    path.write_text(json.dumps(rows))
    return path


def parity(tmp:Path, uri:Path, universe:str, history:str, start:str, end:str, anchor:str)->dict:
    "Export, run the strategy locally over [start, end], and measure it against evaluate_formula and the backtester."
    t0 = time.perf_counter()
    exported = export_joinquant(write_factors(tmp/'factors.json'), tmp/'jq', {**RULES, 'universe': universe, 'adjust_anchor': anchor})
    jq = LocalJoinQuant.from_qlib(tmp/'jq', uri, universe, history, end, anchor=anchor)
    panel = jq.panel
    run = jq.run(start, end)
    # (a) factor values on each rebalance day (the previous close) against evaluate_formula
    cache = FormulaCache()
    ref = [evaluate_formula(panel, f, cache).numpy().astype(np.float64) for f in FORMULAS]
    worst, nan_mismatch, cells = 0.0, 0, 0
    for r in run['records']:
        d = panel.dates.get_loc(pd.Timestamp(r['date']))
        cols = [panel.symbols.index(qlib_symbol(c)) for c in r['codes']]
        for v, full in zip(r['values'], ref):
            want = full[d, cols]
            nan_mismatch += int((np.isnan(v) != np.isnan(want)).sum())
            ok = ~np.isnan(v) & ~np.isnan(want)
            cells += int(ok.sum())
            if ok.any(): worst = max(worst, float(np.max(np.abs(v[ok] - want[ok]) / np.maximum(1, np.abs(want[ok])))))
    # (b) the book against alphanb's backtester on the same signal, cash and rules
    signal = combined_factor(panel, str(tmp/'factors.json'), cache).numpy()
    bt = backtest(panel, signal, BacktestConfig(**RULES), start=start, end=end)
    top_ok = 0
    for r in run['records']:
        d = panel.dates.get_loc(pd.Timestamp(r['date']))
        s = signal[d]
        idx = np.flatnonzero(np.isfinite(s) & panel.member[d].numpy())
        want = [panel.symbols[i] for i in idx[np.argsort(-s[idx], kind='stable')][:RULES['topk']]]
        top_ok += [qlib_symbol(c) for c in r['target']] == want
    mine = run['positions'].reindex(index=bt.positions.index, columns=bt.positions.columns, fill_value=0.).to_numpy()
    theirs = bt.positions.to_numpy(dtype=np.float64)
    held = (mine > 0) | (theirs > 0)
    same = np.isclose(mine, theirs, rtol=1e-6, atol=1e-6) & held
    log = lambda df: df[['date', 'symbol', 'side', 'shares']].sort_values(['date', 'side', 'symbol']).reset_index(drop=True)
    t_mine = log(run['trades'].assign(symbol=run['trades']['code'].map(qlib_symbol)))
    t_bt = log(bt.trades)
    out = {'universe': universe, 'days': len(run['nav']), 'rebalances': len(run['records']), 'factor_cells': cells,
           'max_factor_diff': worst, 'nan_mismatch': nan_mismatch, 'topk_match_rate': top_ok / max(len(run['records']), 1),
           'position_match_rate': float(same.sum() / max(held.sum(), 1)), 'held_cells': int(held.sum()),
           'trades': (len(t_mine), len(t_bt)),
           'trade_log_equal': len(t_mine) == len(t_bt) and (t_mine[['date', 'symbol', 'side']].astype(str).values
                                                            == t_bt[['date', 'symbol', 'side']].astype(str).values).all()
                              and np.allclose(t_mine['shares'], t_bt['shares'].astype(float), rtol=1e-6),
           'nav_max_rel_diff': float(np.max(np.abs(run['nav']['value'].to_numpy() / bt.nav.to_numpy() - 1))),
           'seconds': round(time.perf_counter() - t0, 1), 'exported': exported}
    print(json.dumps({k: v for k, v in out.items() if k != 'exported'}))
    return out


def check(res:dict):
    assert res['rebalances'] > 5 and res['factor_cells'] > 1000
    assert res['nan_mismatch'] == 0
    assert res['max_factor_diff'] <= 1e-5
    assert res['topk_match_rate'] == 1.0
    assert res['position_match_rate'] == 1.0 and res['trade_log_equal']
    assert res['nav_max_rel_diff'] < 1e-6


def test_parity_on_real_data(cn_data, tmp_path):
    "CSI300, 2019 H1 with four months of history: factor values and the book equal alphanb's."
    res = parity(tmp_path, cn_data, 'csi300', '2018-09-01', '2019-01-02', '2019-06-28', anchor='2010-01-04')
    check(res)


def test_parity_on_demo_market(demo_data, tmp_path):
    "The same on the embedded demo market."
    res = parity(tmp_path, demo_data, 'csi300', '2018-10-01', '2019-03-01', '2019-06-28', anchor='2016-01-04')
    check(res)


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


def test_repo_template_is_what_the_exporter_writes(tmp_path):
    "joinquant/strategy.py in the repository is the exporter's strategy file."
    res = export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq')
    assert (ROOT/'joinquant'/'strategy.py').read_text() == Path(res['strategy']).read_text()


def test_unknown_operator_fails_at_export(tmp_path, monkeypatch):
    "A formula whose operator the numpy evaluator lacks is an error at export time naming the factor and operator."
    monkeypatch.delitem(NP_OPERATORS, 'Kurt')
    with pytest.raises(AlphanbError, match=r"factor 'jq_7'.*operator Kurt"):
        export_joinquant(write_factors(tmp_path/'factors.json'), tmp_path/'jq')
    assert not (tmp_path/'jq'/'strategy.py').exists()


def test_cli_prints_the_result_last(tmp_path):
    "`alphanb export-joinquant` prints a summary and the result dict as its last stdout line."
    f = write_factors(tmp_path/'factors.json')
    p = subprocess.run([sys.executable, '-m', 'alphanb', 'export-joinquant', '--factors', str(f), '--out', str(tmp_path/'out'),
                        '--set', 'topk', '20'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last['n_factors'] == len(FORMULAS) and Path(last['strategy']).exists()
    assert json.loads(Path(last['factors']).read_text())['config']['topk'] == 20
    bad = subprocess.run([sys.executable, '-m', 'alphanb', 'export-joinquant', '--factors', str(tmp_path/'missing.json'),
                          '--out', str(tmp_path/'out2')], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and 'missing.json' in bad.stderr and 'Traceback' not in bad.stderr
