"The Qlib data layer on the real A-share data (skipped when absent) and its error messages."
import numpy as np
import pandas as pd
import pytest
import torch

from alphanb.core import DataNotFoundError, DateRangeError, UnknownFieldError, UnknownUniverseError
from alphanb.data import FEATURES, feature_qlib_expressions, init_qlib, load_panel


@pytest.fixture(scope='module')
def csi300(cn_data):
    return load_panel(cn_data, 'csi300', '2010-01-01', '2019-12-31', fields=['$close', '$volume'])


def test_csi300_membership_every_day(csi300, capsys):
    n = csi300.member.sum(1).numpy()
    with capsys.disabled():                                  # the figure the README reports, shown in every run
        print(f'\nCSI300 members per day {csi300.dates[0]:%Y-%m-%d}..{csi300.dates[-1]:%Y-%m-%d} ({len(n)} days): '
              f'min {n.min()}, median {np.median(n):g}, max {n.max()}')
    assert len(csi300.dates) == 2431
    assert 280 <= n.min() and n.max() <= 300


def test_target_and_features_equal_qlib(cn_data):
    from qlib.data import D
    p = load_panel(cn_data, 'csi300', '2018-06-01', '2019-12-31')
    syms = p.symbols[::12]                                   # a spread of ~30 stocks keeps this quick
    exprs = {'target': 'Ref($close,-20)/$close-1', **feature_qlib_expressions(True)}
    df = D.features(syms, list(exprs.values()), start_time=p.dates[0], end_time=p.dates[-1])
    df.columns = list(exprs)
    cols = [p.symbols.index(s) for s in syms]
    start = 30                                              # Qlib reads history before the panel's first day
    for name in exprs:
        ours = (p.target if name == 'target' else p[name])[:, cols].numpy()
        theirs = df[name].unstack('instrument').reindex(index=p.dates, columns=syms).to_numpy()
        a, b = ours[start:], theirs[start:]
        ok = np.isfinite(a) & np.isfinite(b)
        assert (np.isfinite(a) == np.isfinite(b)).mean() > .999, name
        np.testing.assert_allclose(a[ok], b[ok], rtol=1e-5, atol=1e-5, err_msg=name)


def test_target_equals_forward_return_of_the_stored_closes(cn_data):
    "The target against a plain pandas forward return of the raw closes read from Qlib's .bin files, not through pyqlib."
    p = load_panel(cn_data, 'csi300', '2017-01-01', '2019-06-28', fields=['$close'])   # the last 20 targets read past `end`
    cal = pd.DatetimeIndex(pd.read_csv(cn_data/'calendars'/'day.txt', header=None)[0])
    closes = {}
    for s in p.symbols:                                      # float32, the first number the calendar index of the first value
        raw = np.fromfile(cn_data/'features'/s.lower()/'close.day.bin', dtype='<f4')
        closes[s] = pd.Series(raw[1:], index=cal[int(raw[0]):int(raw[0]) + len(raw) - 1])
    close = pd.DataFrame(closes).reindex(index=cal, columns=p.symbols).astype(np.float64)    # [day, stock]
    target = (close.shift(-20) / close - 1).reindex(p.dates).to_numpy()
    ours = p.target.numpy().astype(np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(target))
    ok = ~np.isnan(target)
    assert ok[-1].sum() > 250                                # the last day's targets exist: they come from after `end`
    np.testing.assert_allclose(ours[ok], target[ok], rtol=1e-5, atol=1e-5)


def test_panel_layout(cn_data):
    p = load_panel(cn_data, 'csi500', '2019-01-01', '2019-03-31')
    assert p.data.dtype == torch.float32 and p.data.shape == (len(p.fields), p.n_days, p.n_stocks)
    assert set(FEATURES) <= set(p.fields)
    # suspended days are not tradable, and traded days have prices
    assert not torch.isnan(p['$close'][p.tradable]).any()
    assert 450 <= int(p.member.sum(1).min()) <= 500


def test_bad_input_messages(cn_data, tmp_path):
    "On the real data; the same errors on data/demo and broken directories are tested in nbs/00_data.ipynb, which needs no real data."
    with pytest.raises(DataNotFoundError, match='does not exist'): load_panel(tmp_path/'nope')
    with pytest.raises(DataNotFoundError, match='not a Qlib data directory'): load_panel(tmp_path)
    with pytest.raises(UnknownUniverseError, match='csi300, csi500'): load_panel(cn_data, 'csi800')
    with pytest.raises(DateRangeError, match='2010-01-04..2019-12-31'): load_panel(cn_data, 'csi300', '2021-01-01', '2021-06-30')
    with pytest.raises(DateRangeError, match='2015-01-01..2030-12-31 reaches beyond .* 2010-01-04..2019-12-31'):
        load_panel(cn_data, 'csi300', '2015-01-01', '2030-12-31')
    with pytest.raises(DateRangeError, match='ends before it starts'): load_panel(cn_data, 'csi300', '2019-06-01', '2019-01-01')
    with pytest.raises(UnknownFieldError, match="did you mean 'Returns'"): load_panel(cn_data, 'csi300', fields=['Retrns'])


def test_env_var_default(cn_data, monkeypatch):
    monkeypatch.setenv('ALPHANB_DATA', str(cn_data))
    p = load_panel(universe='csi300', start='2019-12-02', end='2019-12-31', fields=['$close'])
    assert p.provider_uri == str(cn_data.resolve()) and p.n_days == 22
