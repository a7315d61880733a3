"""Every alphanb.ops kernel that Qlib has agrees with pyqlib's `D.features` on real A-share data.

Each kernel is applied to raw fields of a CSI300 sample loaded from 2018-07 (so every window in 2019 has its history),
and compared on 2019 with Qlib's evaluation of the kernel's Qlib spelling (`alphanb.operators.QLIB_OPS`): the same NaN
pattern, and values within 1e-4 relative. Cells are compared where Qlib has a row for the stock (its trading span);
after a stock's last trading day Qlib returns no row at all, while a rolling kernel still sees the window's last values.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from alphanb import operators
from alphanb.data import init_qlib

HISTORY, START, END = '2018-10-01', '2019-01-01', '2019-12-31'
FIELDS = ['$close', '$volume', '$change', '$vwap']
N_STOCKS = 30
RTOL, ATOL = 1e-4, 1e-9


def _cases():
    "(label, kernel, operand fields or numbers, window) for every kernel with a Qlib spelling."
    cases = []
    for name in ['ts_sum', 'ts_mean', 'ts_var', 'ts_std', 'ts_skew', 'ts_kurt', 'ts_med', 'ts_max', 'ts_min',
                 'ts_rank', 'ts_delta']:
        for field in ['$close', '$change', '$volume']:
            for w in [5, 20]:
                cases.append((name, (field,), w))
    # Qlib evaluates these slowly (Mad by a Python function per window; WMA/EMA spelled out day by day)
    cases += [('ts_mad', (f,), w) for f in ['$close', '$change'] for w in [5, 20]]
    cases += [(n, (f,), w) for n in ['ts_wma', 'ts_ema'] for f in ['$close', '$change'] for w in [3, 10]]
    cases += [('ts_zscore', (f,), w) for f in ['$close', '$change'] for w in [5, 20]]
    cases += [('delay', (f,), d) for f in ['$close', '$change'] for d in [1, 5]]
    cases += [(n, pair, w) for n in ['ts_corr', 'ts_cov'] for pair in [('$close', '$volume'), ('$change', '$vwap')]
              for w in [5, 20]]
    cases += [(n, ('$change',), None) for n in ['neg', 'abs', 'log', 'sign', 'jump', 'decay', 'max3', 'tsum20']]
    cases += [(n, ('$volume',), None) for n in ['log', 'jump']]
    cases += [(n, ('$close', '$change'), None) for n in ['add', 'sub', 'mul', 'div', 'greater', 'less', 'pow']]
    cases += [('div', ('$close', '$volume'), None), ('pow', ('$change', 2), None), ('greater', ('$change', 0), None),
              ('gate', ('$change', '$close', '$vwap'), None), ('gate', ('$change', 1, -1), None)]
    cases += [(n, (f,), w) for n in ['ts_slope', 'ts_rsquare', 'ts_resi', 'ts_quantile', 'ts_count', 'ts_argmax', 'ts_argmin',
                                     'qlib_wma'] for f in ['$close', '$change', '$volume'] for w in [5, 20]]
    cases += [('qlib_ema', (f,), w) for f in ['$close', '$change'] for w in [3, 5]]   # Qlib's memory starts w-1 days back
    cases += [(n, ('$close', '$vwap'), None) for n in ['gt', 'ge', 'lt', 'le', 'eq', 'ne', 'and_', 'or_']]
    cases += [(n, ('$change', 0), None) for n in ['gt', 'lt', 'eq', 'ne']] + [('not_', ('$change',), None)]
    return cases


CASES = _cases()
KERNEL_OP = {s.kernel: s for s in operators.OPERATORS.values()}   # kernel name -> its operator record


QUANTILE = 0.8   # the q of the ts_quantile cases


def _qlib_text(name, operands, w):
    return operators.QLIB_OPS[name](*[str(o) for o in operands], window=w, q=QUANTILE)


@pytest.fixture(scope='module')
def compared(cn_data):
    "(our values, Qlib's values, Qlib-row mask) per case, each [day, stock] over 2019."
    init_qlib(cn_data)
    from qlib.data import D
    members = sorted(D.list_instruments(D.instruments('csi300'), start_time=START, end_time=END, as_list=True))
    symbols = members[::max(1, len(members) // N_STOCKS)][:N_STOCKS]
    days = D.calendar(start_time=HISTORY, end_time=END)
    raw = D.features(symbols, FIELDS, start_time=HISTORY, end_time=END)
    di = pd.DatetimeIndex(days).get_indexer(raw.index.get_level_values('datetime'))
    si = pd.Index(symbols).get_indexer(raw.index.get_level_values('instrument'))
    arr = np.full((len(FIELDS), len(days), len(symbols)), np.nan, dtype=np.float32)
    arr[:, di, si] = raw.to_numpy(dtype=np.float32).T
    panel = {f: torch.from_numpy(arr[i]) for i, f in enumerate(FIELDS)}   # [day, stock] float32, as in a Panel
    listed = np.zeros(arr.shape[1:], bool); listed[di, si] = True           # the rows of each stock's Qlib series
    start = torch.from_numpy(listed.argmax(0))

    texts = sorted({_qlib_text(*c) for c in CASES})
    q = D.features(symbols, texts, start_time=START, end_time=END)
    first = int(np.searchsorted(np.asarray(days), np.datetime64(pd.Timestamp(START))))
    qdays = pd.DatetimeIndex(days[first:])
    qi = qdays.get_indexer(q.index.get_level_values('datetime'))
    qs = pd.Index(symbols).get_indexer(q.index.get_level_values('instrument'))
    qarr = np.full((len(texts), len(qdays), len(symbols)), np.nan)
    qarr[:, qi, qs] = q.to_numpy(dtype=np.float64).T
    present = np.zeros((len(qdays), len(symbols)), dtype=bool); present[qi, qs] = True
    col = {t: i for i, t in enumerate(texts)}

    out = {}
    for name, operands, w in CASES:
        args = [panel[o] if isinstance(o, str) else float(o) for o in operands]
        k = KERNEL_OP[name]
        more = [QUANTILE] * len(k.params) if k.windowed else []
        ours = (k.fn(*args, w, *more, **({'start': start} if k.start else {})) if k.windowed or k.family == 'delay'
                else k.fn(*args))
        ours = ours[first:].double().numpy()
        out[(name, operands, w)] = ours, qarr[col[_qlib_text(name, operands, w)]], present
    return out


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"{c[0]}({','.join(map(str, c[1]))}{',' + str(c[2]) if c[2] else ''})")
def test_kernel_matches_qlib(compared, case):
    ours, theirs, present = compared[case]
    if case[0] == 'qlib_ema':   # Qlib's EMA starts w-1 days before the span, ours months earlier: equal once that fades
        present = present.copy(); present[:30] = False      # 0.5**30 ~ 1e-9 (w = 3), 0.67**30 ~ 5e-6 (w = 5)
    ours, theirs = ours[present], theirs[present]
    assert np.isfinite(theirs[~np.isnan(theirs)]).all() or case[0] == 'pow', f'Qlib gave ±inf for {case}'
    theirs = np.where(np.isinf(theirs), np.nan, theirs)   # Qlib's ±inf is our NaN (only `pow` can still give one)
    nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
    assert (nan_ours == nan_theirs).all(), (
        f'{case}: NaN pattern differs in {(nan_ours != nan_theirs).sum()} of {ours.size} cells '
        f'(ours NaN only: {(nan_ours & ~nan_theirs).sum()}, Qlib NaN only: {(nan_theirs & ~nan_ours).sum()})')
    assert (~nan_ours).sum() > 0.2 * ours.size, f'{case}: too few values to compare'
    a, b = ours[~nan_ours], theirs[~nan_ours]
    # relative, plus a floor of ATOL times the case's largest value: a symmetric window's skewness is 0 for us and
    # a rounding residue such as 5e-12 for pandas. The spelled-out WMA/EMA run in Qlib in float32 (numpy keeps
    # float32 * number in float32), so a mean that nearly cancels carries float32 rounding of its terms (~1e-7).
    # Qlib's running sums for Slope/Rsquare/Resi drift by ~1e-9 of the series' scale over a year of updates.
    # TsZScore's x - Mean(x) is such a cancellation in Qlib's float32, then divided by a small Std: ~1e-5 of its range.
    floor = (5e-5 if case[0] == 'ts_zscore' else 1e-6 if case[0] in ('ts_wma', 'ts_ema', 'ts_slope', 'ts_rsquare', 'ts_resi')
             else ATOL) * np.abs(b).max()
    bad = np.abs(a - b) > RTOL * np.maximum(np.abs(a), np.abs(b)) + floor
    assert not bad.any(), (f'{case}: {bad.sum()} of {a.size} values differ by more than {RTOL} relative, '
                           f'e.g. ours {a[bad][:3]} vs Qlib {b[bad][:3]}')


def test_every_qlib_kernel_is_compared():
    "A kernel with a Qlib spelling cannot slip out of the comparison."
    spelled = {n for n, f in operators.QLIB_OPS.items() if f is not None}
    assert spelled == {c[0] for c in CASES}
