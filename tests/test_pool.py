"FactorPool: rejection of near-duplicates, eviction, the combined fit, factors.json round trip and bad files."
import json

import numpy as np
import pytest
import torch

from alphanb.core import AlphanbError
from alphanb.data import Panel
from alphanb.metrics import RewardContext, POOL_INVALID_REWARD, daily_ic
from alphanb.pool import FactorPool, combined_factor, zscore_by_day, combine_zscores
from alphanb.factors import COMBINE_RULE, FactorsFileError, load_factors


@pytest.fixture(scope='module')
def market():
    "Sixty stocks over 400 days whose forward return is driven by three hidden signals."
    g = torch.Generator().manual_seed(7)
    n_days, n_stocks = 400, 60
    signals = torch.randn(3, n_days, n_stocks, generator=g)
    close = 10 * torch.exp(torch.cumsum(0.02 * torch.randn(n_days, n_stocks, generator=g), 0))
    target = 0.01 * signals.sum(0) + 0.05 * torch.randn(n_days, n_stocks, generator=g)
    target[-5:] = float('nan')
    p = Panel.from_fields({'$close': close, '$volume': torch.ones(n_days, n_stocks)}, target=target, horizon=5)
    noise = lambda a: a * torch.randn(n_days, n_stocks, generator=g)
    return p, signals, noise


def _train(p): return RewardContext(p, p.day_slice(None, p.dates[299]), topk=10, min_stocks=10)


def test_near_duplicate_rejected(market):
    p, sig, noise = market
    pool = FactorPool(_train(p), capacity=5)
    base = sig[0] + noise(1.0)
    assert pool.try_add(base, 'base') > 0
    near = base + noise(0.05)                     # correlation ~0.999 with base
    assert pool.try_add(near, 'near') == POOL_INVALID_REWARD and pool.size == 1
    assert 'correlation' in pool.last_reason
    farther = base + noise(0.5)                   # correlation ~0.9: allowed
    pool.try_add(farther, 'farther')
    assert pool.size == 2 and abs(pool.corr[0, 1]) < 0.99


def test_eviction_keeps_capacity(market):
    p, sig, noise = market
    pool = FactorPool(_train(p), capacity=3)
    sizes = []
    for i in range(8):
        pool.try_add(sig[i % 3] + noise(1.0 + i), f'f{i}')
        sizes.append(pool.size)
    assert max(sizes) == 3 and pool.size == 3 and len(pool.weights) == 3
    assert pool.n_offered == 8


def test_combined_ic_at_least_best_member(market):
    p, sig, noise = market
    ctx = _train(p)
    pool = FactorPool(ctx, capacity=4)
    for i in range(4): pool.try_add(sig[i % 3] + noise(1.5), f'f{i}')
    singles = [ctx.ic_series(f, rank=False)[0].nanmean().item() for f in pool.factors]
    assert pool.ic >= max(singles)
    zs = torch.stack([zscore_by_day(f, p.valid) for f in pool.factors])
    comb = combine_zscores(zs, pool.weights, p.valid)[ctx.days]
    assert abs(daily_ic(comb, ctx.target, ctx.valid, 10).nanmean().item() - pool.ic) < 1e-6


def test_factors_json_round_trip(market, tmp_path):
    from alphanb.formula import Formula
    from alphanb.evaluate import evaluate_formula
    p, _, _ = market
    ctx = _train(p)
    pool = FactorPool(ctx, capacity=3)
    for text in ['Mean($close, 5)', 'Std($close, 10)', 'Delta($close, 3)', 'Rank(Delta($close, 10))']:
        pool.try_add(evaluate_formula(p, text), Formula.parse(text))
    path = pool.save(tmp_path/'factors.json', {'train': ctx.days, 'valid': (p.dates[300], None)})
    recs = load_factors(path)
    assert len(recs) == pool.size
    assert set(recs[0]) == {'factor_name', 'expression', 'qlib_expression', 'weight', 'interpretation', 'performance', 'combination'}
    d0, d1 = ctx.dates[0].strftime('%Y-%m-%d'), ctx.dates[-1].strftime('%Y-%m-%d')
    assert recs[0]['combination'] == {'rule': COMBINE_RULE, 'weights_fitted_on': f'{d0}..{d1}'}   # how the pool combines
    assert sorted(r['expression'] for r in recs) == sorted(str(f) for f in pool.formulas)
    assert sorted(abs(r['weight']) for r in recs) == pytest.approx(sorted(np.abs(pool.weights)))
    for r in recs:
        assert {'ic', 'rank_ic', 'icir', 'rank_icir', 'sharpe'} <= set(r['performance']['valid'])
        if r['expression'].startswith('Rank'): assert r['qlib_expression'] is None
        assert r['interpretation'].startswith('Core logic:') and 'Market meaning:' in r['interpretation']
    again = FactorPool.load(path, ctx)
    assert again.ic == pytest.approx(pool.ic, abs=1e-6)
    v = p.valid
    assert torch.allclose(combined_factor(p, path)[v], pool.combined()[v], atol=1e-5)


@pytest.mark.parametrize('content,needle', [
    (None, 'does not exist'),
    ('{oops', 'not valid JSON'),
    ('{"factor_name": "a"}', 'not a list'),
    ('[]', 'has no factor'),
    ('[{"factor_name": "a", "expression": "$close", "weight": 1}, {"factor_name": "b", "weight": 1}]', "entry 1 ('b') has no expression"),
    ('[{"factor_name": "a", "expression": "$close", "weight": "heavy"}]', "entry 0 ('a'): weight must be a finite number"),
    ('[{"factor_name": "mom", "expression": "Mean($close, 5", "weight": 1}]', "entry 0 ('mom'): the expression does not parse"),
    ('[{"factor_name": "x", "expression": "Mean($clsoe, 5)", "weight": 1}]', "entry 0 ('x'): the expression does not parse"),
])
def test_bad_factors_file(tmp_path, content, needle):
    path = tmp_path/'factors.json'
    if content is not None: path.write_text(content)
    with pytest.raises(FactorsFileError) as e: load_factors(path)
    assert needle in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value, AlphanbError)


def test_qlib_expression_is_null_when_impractical():
    from alphanb.formula import Formula
    from alphanb.factors import QLIB_MAX_CHARS, _qlib_of
    assert _qlib_of(Formula.parse('Mean($close, 5)')) == Formula.parse('Mean($close, 5)').to_qlib()
    nested = Formula.parse('EMA(EMA(EMA($close, 40), 40), 40)')
    assert len(nested.to_qlib()) > QLIB_MAX_CHARS and _qlib_of(nested) is None
    assert _qlib_of(Formula.parse('Rank($close)')) is None
