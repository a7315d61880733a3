"Metrics against independent computations (pandas, scipy) on the real A-share data."
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from alphanb.data import load_panel
from alphanb.metrics import (RewardContext, daily_ic, daily_rank_ic, quantile_returns, top_mask, next_returns,
                             book_returns, factor_metrics, INVALID_REWARD)

FORMULAS = ['Returns', '-Mean(Returns, 20)', 'Pressure', 'Deviation', 'Std($close, 10) / $close']


@pytest.fixture(scope='module')
def panel(cn_data):
    # late 2018 is history for the 20-day windows; 2019 is scored
    return load_panel(cn_data, 'csi300', '2018-11-15', '2019-12-31', horizon=20)


@pytest.fixture(scope='module')
def factors(panel):
    try:
        from alphanb.evaluate import evaluate_formula
        return {t: evaluate_formula(panel, t) for t in FORMULAS}
    except ImportError:   # the seed features alone still test the metrics
        return {t: panel[t] for t in ['Returns', 'Pressure', 'Deviation', 'LogVolume']}


def _frame(panel, f, s):
    "Long frame (day, stock, factor, target) over the valid cells of the span."
    d, st = torch.nonzero(panel.valid[s], as_tuple=True)
    return pd.DataFrame({'day': d.numpy(), 'stock': st.numpy(), 'f': f[s][d, st].double().numpy(),
                         'y': panel.target[s][d, st].double().numpy()})


def test_ic_rank_ic_equal_pandas_scipy(panel, factors):
    s = panel.day_slice('2019-01-01', '2019-12-31')
    ctx = RewardContext(panel, s, topk=50)
    for text, f in factors.items():
        ic, ric = ctx.ic_series(f)
        test_ic, test_ric = daily_ic(f[s], panel.target[s], panel.valid[s]), daily_rank_ic(f[s], panel.target[s], panel.valid[s])
        df = _frame(panel, f, s).replace([np.inf, -np.inf], np.nan).dropna()
        ref_ic = np.full(ctx.n_days, np.nan); ref_ric = np.full(ctx.n_days, np.nan)
        for day, g in df.groupby('day'):
            if len(g) >= 10 and g.f.nunique() > 1 and g.y.nunique() > 1:
                ref_ic[day] = g.f.corr(g.y)
                ref_ric[day] = spearmanr(g.f, g.y).statistic
        for got in [ic, test_ic]:
            np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(ref_ic), err_msg=text)
            np.testing.assert_allclose(got.numpy(), ref_ic, atol=1e-6, err_msg=text)
        for got in [ric, test_ric]:
            np.testing.assert_allclose(got.numpy(), ref_ric, atol=1e-6, err_msg=text)
        assert np.isfinite(ref_ic).sum() > 200, text


def test_decile_returns_equal_pandas_groupby(panel, factors):
    s = panel.day_slice('2019-01-01', '2019-12-31')
    for text, f in factors.items():
        got = quantile_returns(f[s], panel.target[s], panel.valid[s], n_groups=10).numpy()
        df = _frame(panel, f, s)
        df = df[np.isfinite(df.f)]
        r = df.groupby('day').f.rank(method='average')
        n = df.groupby('day').f.transform('count')
        df['g'] = np.floor((r - 1) * 10 / n).astype(int)
        ref = df.dropna(subset=['y']).groupby(['day', 'g']).y.mean().unstack().reindex(range(got.shape[0])).to_numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=text)
        np.testing.assert_allclose(got, ref, atol=1e-9, equal_nan=True, err_msg=text)


def test_top_k_book_equals_pandas(panel, factors):
    s = panel.day_slice('2019-01-01', '2019-12-31')
    f = factors['Deviation']
    k = 50
    got = book_returns(top_mask(f[s], panel.valid[s], k), next_returns(panel['$close'], 1)[s]).numpy()
    r1 = next_returns(panel['$close'], 1)[s]
    df = _frame(panel, f, s).dropna(subset=['f'])
    df['r'] = r1[torch.from_numpy(df.day.values.copy()), torch.from_numpy(df.stock.values.copy())].double().numpy()
    checked = 0
    for day, g in df.groupby('day'):
        top = g.sort_values('f', ascending=False)
        if len(top) > k and top.f.iloc[k - 1] == top.f.iloc[k]: continue   # a tie at the boundary: either choice is right
        want = top.head(k).r.mean()                                        # pandas' mean skips a suspended stock
        if np.isnan(want): assert np.isnan(got[day]); continue
        assert abs(got[day] - want) < 1e-9, (day, got[day], want)
        checked += 1
    assert checked > 200


def test_factor_metrics_and_reward(panel, factors):
    s = panel.day_slice('2019-01-01', '2019-12-31')
    m = factor_metrics(factors['Deviation'], panel, s, topk=50)
    for k in ['ic', 'rank_ic', 'icir', 'rank_icir', 'sharpe', 'sortino', 'turnover', 'ann_return', 'max_drawdown']:
        assert math.isfinite(m[k]), k
    assert 0 <= m['turnover'] <= 1 and m['max_drawdown'] <= 0
    ctx = RewardContext(panel, s)
    assert ctx.reward(torch.ones_like(panel['$close'])) == INVALID_REWARD
    assert -1 <= ctx.reward(factors['Deviation'], size=1, depth=1) <= 0.9
