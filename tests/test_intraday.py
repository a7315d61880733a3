"Intraday bars end to end, as a user runs them: demo-data --freq, train --freq, evaluate and backtest of the pool on its own bars."
import json, subprocess, sys

import numpy as np
import pandas as pd
import pytest


def alphanb(*argv):
    "Run `python -m alphanb ARGV`; (exit code, last stdout line as JSON or None, stderr)."
    p = subprocess.run([sys.executable, '-m', 'alphanb', *map(str, argv)], capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    return p.returncode, (json.loads(lines[-1]) if p.returncode == 0 and lines else None), p.stderr


@pytest.fixture(scope='module')
def market(tmp_path_factory):
    "A 30-minute market of 40 stocks over 80 days, made by the command."
    out = tmp_path_factory.mktemp('m30')/'m30'
    code, res, err = alphanb('demo-data', '--freq', '30min', '--stocks', 40, '--days', 80, '--seed', 3, '--out', out)
    assert code == 0, err
    assert (res['horizon'], res['spec']['freq']) == (8, '30min')
    return out


@pytest.fixture(scope='module')
def run(market, tmp_path_factory):
    "Two PPO steps of `alphanb train --freq 30min` on it."
    out = tmp_path_factory.mktemp('run30')
    code, res, err = alphanb('train', '--data', market, '--freq', '30min', '--universe', 'all', '--steps', 2, '--seed', 0,
                             '--set', 'ppo/batch_size', 32, '--set', 'ppo/minibatch_size', 32, '--no-progress', '--out', out)
    assert code == 0, err
    return out


def test_training_records_the_bars_of_the_pool(run):
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['data']['freq'], cfg['data']['horizon']) == ('30min', 8)      # one day of bars, as --freq implies
    entries = json.loads((run/'factors.json').read_text())
    assert entries and all(e['combination']['freq'] == '30min' and e['combination']['horizon'] == 8 for e in entries)


def test_evaluate_scores_an_intraday_pool_on_its_own_bars(market, run):
    code, res, err = alphanb('evaluate', '--data', market, '--universe', 'all', '--factors', run/'factors.json', '--start', '2016-03-01')
    assert code == 0, err
    assert (res['freq'], res['horizon']) == ('30min', 8)
    days = pd.bdate_range('2016-01-04', periods=80)
    n = int((days >= '2016-03-01').sum())
    assert (res['period']['days'], res['period']['bars']) == (n, 8 * n)
    assert np.isfinite(res['combined']['rank_ic'])
    code, _, err = alphanb('evaluate', '--data', market, '--factors', run/'factors.json', '--freq', 'day')
    assert code == 2 and 'was mined on 30min bars and cannot be applied to daily bars' in err, err
    # in blocks of whole days (each with its bars): the same figures as one pass
    code, blocks, err = alphanb('evaluate', '--data', market, '--universe', 'all', '--factors', run/'factors.json', '--start', '2016-03-01',
                                '--block-days', 15)
    assert code == 0, err
    assert blocks['blocks'] >= 2 and blocks['period'] == res['period']
    for a, b in [(res['combined'], blocks['combined'])] + list(zip(res['factors'], blocks['factors'])):
        for k in a:
            assert a[k] == b[k] or abs(a[k] - b[k]) <= 1e-9 * max(1, abs(a[k])) or (a[k] != a[k] and b[k] != b[k]), (k, a[k], b[k])


def test_a_daily_pool_is_refused_on_bars(market, demo_data):
    code, _, err = alphanb('evaluate', '--data', market, '--factors', demo_data/'factors.json', '--freq', '30min')
    assert code == 2 and 'was mined on daily bars' in err, err
    code, _, err = alphanb('evaluate', '--data', market, '--factors', demo_data/'factors.json')   # its own daily bars: not in this data
    assert code == 2 and "no calendar for frequency 'day'" in err and "'30min'" in err, err


def test_backtest_trades_bars_under_day_rules(market, run, tmp_path):
    out = tmp_path/'bt'
    code, m, err = alphanb('backtest', '--data', market, '--universe', 'csi300', '--factors', run/'factors.json',
                           '--start', '2016-03-01', '--warmup', 20, '--rebalance', 8, '--topk', 5, '--out', out)
    assert code == 0, err
    nav = pd.read_csv(out/'nav.csv', parse_dates=['date'])
    assert sorted(set(nav.date.dt.strftime('%H:%M'))) == ['09:30', '10:00', '10:30', '11:00', '13:00', '13:30', '14:00', '14:30']
    assert m['n_days'] == nav.date.dt.normalize().nunique()                  # metrics on each day's closing NAV
    trades = pd.read_csv(out/'trades.csv', parse_dates=['date'])
    buys = trades[trades.side == 'buy'].groupby('symbol').date.min()
    sells = trades[trades.side == 'sell'].groupby('symbol').date.min()
    both = buys.index.intersection(sells.index)
    assert len(both) and (sells[both].dt.normalize() > buys[both].dt.normalize()).all()   # T+1: never sold on the day bought


def test_report_notebook_reads_the_pool_bars(market, run, tmp_path):
    import papermill as pm
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path/'report'
    pm.execute_notebook(str(root/'nbs'/'report.ipynb'), str(tmp_path/'report.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(factors=str(run/'factors.json'), data=str(market), start='2016-03-01', out=str(out),
                                        topk=5, warmup=20, rebalance=8))
    nav = pd.read_csv(out/'nav.csv')
    assert nav.date.str.endswith('14:30').any() and (out/'ic.png').stat().st_size > 5_000
    metrics = json.loads((out/'metrics.json').read_text())
    assert metrics['n_days'] == pd.to_datetime(nav.date).dt.normalize().nunique() and 'excess_return' in metrics


def test_inspector_on_bars_measures_against_the_index_bars(market):
    from alphanb.data import load_panel
    from alphanb.inspect import default_benchmark, FactorInspector
    assert default_benchmark(market, 'csi300', '30min') == 'SH000300' and default_benchmark(market, 'csi300') is None
    p = load_panel(market, 'csi300', '2016-03-01', '2016-04-22', horizon=8, freq='30min')
    code, bench = FactorInspector._benchmark(type('I', (), {'_bench_cache': {}})(), p)
    assert code == 'SH000300' and len(bench) == p.n_days and bench.index.equals(p.dates)
    from alphanb.inspect import inspect_factors
    w = inspect_factors(p, [{'factor_name': 'f', 'expression': 'Mean(Pressure, 10)', 'weight': 1.0}])
    assert '30min bars' in w.status_html.value and not w.error_html.value, (w.status_html.value, w.error_html.value)
