"""alphanb's evaluator against pyqlib's expression engine on the real A-share data (skipped when the data is absent).

Every formula Qlib can express is computed twice: by `evaluate_formula` on a Panel and by `D.features` on the
`to_qlib()` string (or, for Qlib strings, on the string itself and by alphanb on `Formula.from_qlib`). They must show
the same NaN pattern and agree to 1e-4 relative.

How values are compared, and why:
- relative 1e-4 against max(|qlib|, mean |qlib| of that formula): a value far below the formula's typical size is
  compared at that size. Qlib runs part of its arithmetic in float32 and its rolling skew/kurt/corr with pandas'
  online updates, so near-cancelling values (a kurtosis of 1e-5 where the typical one is 0.5) carry Qlib's rounding;
- the panel's seed features are Qlib's own values of their Qlib expressions, so both sides start from the same inputs;
- cells that are ill-conditioned — where alphanb's float32 evaluation, or its value on raw data moved by ±1e-7
  (float32 rounding, features recomputed), differs by more than 1e-6 (the log or the inverse of a near-zero sum, the sign of a near-zero
  difference, a tie in a time-series rank, a kurtosis of a series whose float32 log Qlib takes) — are counted and not
  compared; the detector is deliberately sensitive (about a fifth of the cells of these 200 formulas), so in addition
  more than 99.5 % of *all* cells must agree (same NaN, 1e-4) with no exclusion at all;
- ±inf counts as missing on both sides (alphanb returns NaN where a value leaves float32's range);
- Qlib's `D.features` starts six months before the compared span so that its look-back history is complete (see
  `test_qlib_delta_first_day` for why that matters), and the panel starts a year and a half before it;
- `Pow` with a non-constant exponent is left out of the random formulas: `$close ** $volume` overflows differently in
  float32 (Qlib) and float64 (alphanb), and means nothing as a factor.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from alphanb.core import FormulaError
from alphanb.data import Panel, feature_qlib_expressions, init_qlib
from alphanb.formula import Formula
from alphanb.grammar import Grammar, qlib_operators, random_formulas
from alphanb.evaluate import evaluate_formula

N_STOCKS = 30                     # a seeded subset of CSI300 keeps pyqlib's side near a minute
PANEL_START, QLIB_START, START, END = '2016-07-01', '2017-07-01', '2018-01-01', '2019-12-31'
RAW = ['$open', '$high', '$low', '$close', '$volume', '$vwap', '$amount', '$float_mktcap']


def _market(cn_data, syms, panel_start, start, end):
    "(panel, qlib D, symbols, compared slice, nudged panels) on `syms`, the panel from `panel_start`, compared over start..end."
    init_qlib(cn_data)
    from qlib.data import D
    days = pd.DatetimeIndex(D.calendar(start_time=panel_start, end_time=end))
    feats = feature_qlib_expressions()
    df = D.features(syms, RAW + list(feats.values()), start_time=days[0], end_time=days[-1])
    di = days.get_indexer(df.index.get_level_values('datetime'))
    si = pd.Index(syms).get_indexer(df.index.get_level_values('instrument'))
    arr = np.full((df.shape[1], len(days), len(syms)), np.nan, np.float32)
    arr[:, di, si] = df.to_numpy(np.float32).T
    arr[np.isinf(arr)] = np.nan
    # the seed features as Qlib computes them, so that both sides start from the same inputs
    listed = np.zeros(arr.shape[1:], bool); listed[di, si] = True          # the rows Qlib has
    panel = Panel.from_fields(dict(zip(RAW + list(feats), arr)), dates=days, symbols=syms, listed=listed)
    # the same market with every raw value moved by +-1e-7 (float32 rounding), features recomputed: cells whose value
    # this moves are ill-conditioned, and Qlib's own float32 arithmetic moves them as much
    u = 1e-7 * np.random.default_rng(1).uniform(-1, 1, (len(RAW),) + arr.shape[1:])
    nudged = [Panel.from_fields(dict(zip(RAW, (arr[:len(RAW)] * (1 + sign * u)).astype(np.float32))), dates=days, symbols=syms,
                                listed=listed) for sign in (1, -1)]
    return panel, D, syms, panel.day_slice(start, end), nudged


def _members(cn_data, universe, start, end):
    init_qlib(cn_data)
    from qlib.data import D
    return sorted(D.list_instruments(D.instruments(universe), start_time=start, end_time=end, as_list=True))


@pytest.fixture(scope='module')
def market(cn_data):
    "A seeded subset of CSI300, compared over 2018-2019."
    syms = sorted(np.random.default_rng(0).choice(_members(cn_data, 'csi300', START, END), N_STOCKS, replace=False).tolist())
    return _market(cn_data, syms, PANEL_START, START, END)


def qlib_values(market, exprs:list[str], start=QLIB_START)->np.ndarray:
    "[expr, day, stock] float64 values of Qlib expressions over the compared span, ±inf as NaN."
    panel, D, syms, s, _ = market
    days = panel.dates[s]
    df = D.features(syms, exprs, start_time=start, end_time=days[-1])
    df = df[df.index.get_level_values('datetime') >= days[0]]
    di = days.get_indexer(df.index.get_level_values('datetime'))
    si = pd.Index(syms).get_indexer(df.index.get_level_values('instrument'))
    out = np.full((len(exprs), len(days), len(syms)), np.nan)
    out[:, di, si] = df.to_numpy(np.float64).T
    out[np.isinf(out)] = np.nan
    return out


def compare(market, f:Formula, q:np.ndarray)->dict:
    "Mismatches of alphanb's values of `f` with Qlib's `q` [day, stock] on the well-conditioned cells."
    panel, _, _, s, nudged = market
    a = evaluate_formula(panel, f)[s].double().numpy()                          # float64 inside, float32 out
    na, nq = np.isnan(a), np.isnan(q)
    scale = np.nanmean(np.abs(q)) if (~nq).any() else 0.
    ill = np.zeros_like(na)
    for b in [evaluate_formula(panel, f, dtype=torch.float32),                    # float32 throughout
              *[evaluate_formula(p, f) for p in nudged]]:                         # raw inputs moved by +-1e-7
        b = b[s].double().numpy(); nb = np.isnan(b)
        with np.errstate(invalid='ignore'):
            ill |= (na != nb) | (~na & ~nb & (np.abs(a - b) > 1e-6 * np.maximum(np.abs(a), scale)))
    with np.errstate(invalid='ignore'):
        bad_val = ~na & ~nq & ~ill & (np.abs(a - q) > 1e-4 * np.maximum(np.abs(q), scale))
        agree = (na & nq) | (~na & ~nq & (np.abs(a - q) <= 1e-4 * np.maximum(np.abs(q), scale)))   # every cell
    if f.op in ('Skew', 'Kurt'):
        # the skewness or kurtosis of equal values is undefined (alphanb: NaN); pandas' online update, which Qlib uses,
        # can leave a number there after a gap in the series (a stale sum): such cells are not compared
        flat = evaluate_formula(panel, Formula('Std', f.args, window=f.window, offset=f.offset))[s].double().numpy() == 0
        ill |= flat & na & ~nq
    bad_nan = (na != nq) & ~ill
    out = {'formula': str(f), 'bad_nan': int(bad_nan.sum()), 'bad_val': int(bad_val.sum()), 'ill': int(ill.sum()),
           'cells': int(a.size), 'values': int((~na & ~nq).sum()), 'agree': int(agree.sum())}
    if bad_val.any():
        i = np.unravel_index(np.argmax(np.where(bad_val, np.abs(a - q), -1)), a.shape)
        out['worst'] = (panel.dates[s][i[0]].strftime('%Y-%m-%d'), panel.symbols[i[1]], float(a[i]), float(q[i]))
    return out


@pytest.mark.long(seconds=24)
def test_random_formulas_match_qlib(market):
    grammar = Grammar(windows=(5, 10, 20), ops='qlib')
    # IdxMax/IdxMin of a computed series are left to Alpha158 and QLIB_STRINGS: where two days of the window tie in exact
    # arithmetic (two windows with the same skewness, say) the position of the maximum is decided by the last bit of
    # each side's rounding
    computed_arg = lambda n: n.op in ('IdxMax', 'IdxMin') and n.args[0].kind not in ('feature', 'delay')
    fs = [f for f in random_formulas(260, seed=20260101, max_depth=3, qlib=True, grammar=grammar)
          if not any((n.op == 'Pow' and not n.args[1].is_const) or computed_arg(n) for n in f.nodes())][:200]
    assert len(fs) == 200
    used = {n.op for f in fs for n in f.nodes() if n.spec is not None}
    mining = {o for o in qlib_operators() if o in grammar.ops}     # conditions, Count, Qlib's WMA/EMA: in QLIB_STRINGS
    assert mining <= used, f"operators never drawn: {mining - used}"
    q = qlib_values(market, [f.to_qlib() for f in fs])
    results = [compare(market, f, q[j]) for j, f in enumerate(fs)]
    bad = [r for r in results if r['bad_nan'] or r['bad_val']]
    ill = sum(r['ill'] for r in results) / sum(r['cells'] for r in results)
    assert sum(r['values'] for r in results) > 100_000
    assert not bad, f"{len(bad)} of {len(fs)} formulas differ from Qlib: {bad[:5]}"
    agree = sum(r['agree'] for r in results) / sum(r['cells'] for r in results)
    print(f"{len(fs)} formulas, {sum(r['values'] for r in results)} values, {ill:.1%} of cells ill-conditioned, "
          f"{agree:.3%} of all cells agree (same NaN, 1e-4) without any exclusion")
    assert ill < 0.25, f"{ill:.2%} of cells are ill-conditioned"
    assert agree > 0.995, f"only {agree:.3%} of all cells agree with Qlib"


QLIB_STRINGS = [
    'Mean($close,5)/$close', 'Std($close,20)/$close', 'Max($high,10)/$close', 'Min($low,10)/$close',
    'Rank($close,20)', 'Ref($close,5)/$close', 'Corr($close,Log($volume+1),10)', 'Cov($close,$volume,10)',
    'Greater($open,$close)/$close', 'Less($open,$close)/$close', '($close-$open)/$open',
    'Sum(Greater($close-Ref($close,1),0),14)/Sum(Abs($close-Ref($close,1)),14)', 'Delta($close,5)/$close',
    'Mad($close,20)/$close', 'Med($vwap,10)/$close', 'Skew($close/Ref($close,1),20)', 'Kurt($volume,20)',
    'Var(Log($close/Ref($close,1)),20)', 'Power($close,0.5)', 'Sign($close-Ref($close,1))*Log($volume+1)',
    'Corr($close/Ref($close,1),Log($volume/Ref($volume,1)+1),10)', 'Mean(Ref($close,3),10)/Ref(Mean($close,10),3)',
    'If(Gt($close-$open,0),$high,$low)/$close', '-1*Rank($volume,10)', 'Add($high,$low)/Mul($close,2)',
    'Count(If($volume>Mean($volume,20),$close,Ref($close,100)),20)', 'Mean(($close>$open)&($volume<Ref($volume,1)),10)',
    'Sum(Not($high==$low)|($close!=Ref($close,1)),5)', 'If($close>=$open,Slope($close,10),Resi($low,10))/$close',
    'Quantile($close/Ref($close,1),20,0.5)', 'IdxMax(Ref($high,3),20)-IdxMin($low,5)', 'Rsquare(Log($volume+1),30)',
]


def test_qlib_strings_match(market):
    fs = [Formula.from_qlib(s) for s in QLIB_STRINGS]
    q = qlib_values(market, QLIB_STRINGS)
    results = [compare(market, f, q[j]) for j, f in enumerate(fs)]
    bad = [(s, r) for s, r in zip(QLIB_STRINGS, results) if r['bad_nan'] or r['bad_val']]
    assert not bad, bad


def test_qlib_delta_first_day(market):
    "Deliberate difference: Qlib's Delta(x, N) loads N-1 days of history, so the first day of a span is NaN."
    panel, _, _, s, _ = market
    q_short = qlib_values(market, ['Delta($close,5)'], start=START)[0]
    q_long = qlib_values(market, ['Delta($close,5)'])[0]
    a = evaluate_formula(panel, 'Delta($close, 5)')[s].double().numpy()
    listed = ~np.isnan(a[0])
    assert listed.any() and np.isnan(q_short[0][listed]).all()      # Qlib: NaN on the span's first day
    np.testing.assert_allclose(a[0][listed], q_long[0][listed], rtol=1e-5)   # with history, the same value
    np.testing.assert_allclose(a[1:], q_short[1:], rtol=1e-5)       # and every later day agrees


def test_qlib_wma_ema(market):
    "Qlib's WMA is nanmean(w*x) (the weighted mean / N) and its EMA has unbounded memory: read in those meanings."
    panel, _, _, s, _ = market
    q = qlib_values(market, ['WMA($close,5)'])[0]
    a = evaluate_formula(panel, 'WMA($close, 5)')[s].double().numpy()
    c = panel['$close'].double().numpy()
    full = np.stack([np.roll(~np.isnan(c), k, 0) for k in range(5)]).all(0)[s]   # windows without a missing day
    ok = full & ~np.isnan(a) & ~np.isnan(q)
    assert ok.sum() > 1000
    np.testing.assert_allclose(q[ok] * 5, a[ok], rtol=1e-4)         # on full windows: Qlib's = alphanb's / 5
    q = qlib_values(market, [Formula.parse('WMA($close, 5)').to_qlib()])[0]   # alphanb's expansion is exact
    ok = ~np.isnan(a) & ~np.isnan(q)
    np.testing.assert_allclose(q[ok], a[ok], rtol=1e-5)
    # Qlib's own WMA and EMA through from_qlib: the same values (its EMA given the same history: Qlib loads from QLIB_START,
    # the panel a year earlier, so the weight of the days before QLIB_START, (1-2/11)**125 ~ 1e-11, is all that differs)
    for text in ['WMA($close,5)', 'EMA($close,10)', 'WMA(Ref($vwap,2),10)/$close']:
        r = compare(market, Formula.from_qlib(text), qlib_values(market, [text])[0])
        assert not r['bad_nan'] and not r['bad_val'], r


@pytest.fixture(scope='module')
def market300(cn_data):
    "Every CSI300 member of 2019, the panel from mid-2017, compared over 2019."
    return _market(cn_data, _members(cn_data, 'csi300', '2019-01-01', END), '2017-07-01', '2019-01-01', END)


@pytest.mark.long(seconds=27)
def test_alpha158_matches_qlib(market300):
    "Qlib's Alpha158, all 158 expressions, read by `Formula.from_qlib` and computed by alphanb, equal pyqlib's own values."
    from qlib.contrib.data.loader import Alpha158DL
    exprs, names = Alpha158DL.get_feature_config()
    assert len(exprs) == 158
    fs = [Formula.from_qlib(e) for e in exprs]
    used = {n.op for f in fs for n in f.nodes() if n.spec is not None}
    assert {'Slope', 'Rsquare', 'Resi', 'Quantile', 'IdxMax', 'IdxMin', 'Gt', 'Lt'} <= used
    q = qlib_values(market300, exprs, start='2018-07-01')
    results = [compare(market300, f, q[j]) for j, f in enumerate(fs)]
    bad = [(n, r) for n, r in zip(names, results) if r['bad_nan'] or r['bad_val']]
    cells = sum(r['cells'] for r in results)
    agree = sum(r['agree'] for r in results) / cells
    ill = sum(r['ill'] for r in results) / cells
    print(f"Alpha158: {len(fs)} expressions x {len(market300[2])} CSI300 stocks x {market300[3].stop - market300[3].start} "
          f"days, {sum(r['values'] for r in results)} values, {ill:.2%} of cells ill-conditioned, {agree:.3%} of all cells "
          f"agree (same NaN, 1e-4) without any exclusion")
    assert not bad, f"{len(bad)} of 158 Alpha158 features differ from Qlib: {bad[:5]}"
    assert agree > 0.995, f"only {agree:.3%} of all cells agree with Qlib"
