"Cross-check of alphanb's backtest against pyqlib's own backtest on real CSI300 data (skipped without the data)."
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from alphanb.backtest import BacktestConfig, QLIB_LACKS, backtest, holding_gaps, load_benchmark, qlib_backtest, rule_effects
from alphanb.data import load_panel

# With TopkDropout's n_drop = 2 x topk and the rules Qlib lacks switched off, both engines hold the same stocks on every
# day; what separates them is lot rounding at the edge of a budget (Qlib adds 0.1 share before flooring to the lot), a
# few hundredths of a point a year. A wrong cost, lot or limit rule moves the gap by tenths of a point or more.
ANNUAL_GAP = 0.001
DAILY_GAP = 0.005
QLIB_RULES = replace(BacktestConfig(), rebalance=1, **QLIB_LACKS)


def ann(nav: pd.Series) -> float: return float((nav.iloc[-1] / 1e6) ** (252 / len(nav)) - 1)


@pytest.fixture(scope='module')
def csi300(cn_data):
    "CSI300 2016-10..2019 and its 20-day reversal signal."
    panel = load_panel(cn_data, 'csi300', '2016-10-01', '2019-12-31', fields=['$open', '$close', '$factor', '$change', '$volume'])
    close = panel['$close']
    signal = -(close / torch.cat([torch.full_like(close[:20], float('nan')), close[:-20]]) - 1)   # [day, stock]
    return panel, signal, load_benchmark(cn_data, 'SH000300', '2016-10-01', '2019-12-31')


def test_qlib_cross_check_csi300_reversal(csi300):
    panel, signal, bench = csi300
    q = qlib_backtest(panel, signal, QLIB_RULES, '2017-01-01', '2019-12-31')
    ours = backtest(panel, signal, QLIB_RULES, '2017-01-01', '2019-12-31', bench)
    seed = backtest(panel, signal, replace(BacktestConfig(), rebalance=1), '2017-01-01', '2019-12-31', bench)
    both = pd.DataFrame({'ours': ours.nav, 'seed': seed.nav, 'qlib': q['account']}).dropna()
    assert len(both) > 700
    gap = ann(both.ours) - ann(both.qlib)
    print(f"\nannual return: qlib {ann(both.qlib):.3%}, alphanb with Qlib's rules {ann(both.ours):.3%} (gap {gap:+.3%}), "
          f"alphanb with all rules {ann(both.seed):.3%}; largest daily NAV gap {(both.ours / both.qlib - 1).abs().max():.3%}")
    # the first days hold the same stocks and lots: identical to the CNY
    assert np.allclose(both.ours.iloc[:5], both.qlib.iloc[:5], rtol=0, atol=1.0)
    assert not len(holding_gaps(ours, q))                       # the same stocks on every day
    assert abs(gap) < ANNUAL_GAP
    assert (both.ours / both.qlib - 1).abs().max() < DAILY_GAP
    # each rule Qlib lacks, switched on alone from Qlib's rules
    effects = rule_effects(panel, signal, q['account'], BacktestConfig(), '2017-01-01', '2019-12-31')
    print(effects.map('{:+.2%}'.format).to_string())
    assert effects.loc['+ t_plus_1=True', 'rule effect'] == 0   # one trade a day at the open: T+1 never binds
    assert effects.loc['+ stop_loss=0.08', 'rule effect'] < -0.005
    assert effects.loc['all rules', 'annual return'] == pytest.approx(ann(both.seed), abs=1e-12)
    # the rules Qlib lacks are what separates the full-rule run from it
    assert (both.seed / both.qlib - 1).abs().max() > DAILY_GAP


def test_qlib_usual_n_drop_keeps_names_outside_the_top_k(csi300):
    "With n_drop = topk, TopkDropout weighs only 2k - (names held) new names: a book swollen by suspended stocks keeps losers."
    panel, signal, _ = csi300
    q = qlib_backtest(panel, signal, QLIB_RULES, '2017-01-01', '2017-10-31', n_drop=QLIB_RULES.topk)
    ours = backtest(panel, signal, QLIB_RULES, '2017-01-01', '2017-10-31')
    gaps = holding_gaps(ours, q)
    print('\n' + gaps.assign(held=gaps['qlib held before'].map(len)).drop(columns='qlib held before').to_string())
    assert len(gaps)
    assert (gaps['qlib held before'].map(len) > QLIB_RULES.topk).all()     # only when more than k names were held


def test_qlib_without_price_limits(csi300):
    "Qlib reads limit_threshold=None as its 9.5 % rule; 'no limits' must reach it (SZ002299 opens limit down on 2017-04-28)."
    panel, signal, _ = csi300
    off = replace(QLIB_RULES, price_limits=False)
    q = qlib_backtest(panel, signal, off, '2017-01-01', '2017-06-30')
    ours = backtest(panel, signal, off, '2017-01-01', '2017-06-30')
    tr = ours.trades
    assert 'SZ002299' in set(tr.symbol[(tr.date == pd.Timestamp('2017-04-28')) & (tr.side == 'sell')])   # sold at the open
    assert not len(holding_gaps(ours, q))
