"`alphanb baseline` end to end: the CLI on the demo market (last stdout line is JSON), bad input, and a small run on the real data."
import json, subprocess, sys

import numpy as np
import pandas as pd
import pytest
import torch

from alphanb.baseline import baseline_panel, feature_matrix, fit_baseline, robust_zscore_by_day
from alphanb.data import init_qlib
from alphanb.library import alpha158, library_formulas

DEMO_SPANS = ['--train', '2016-06-01:2018-05-31', '--valid', '2018-06-01:2018-12-31', '--test', '2019-01-01:2019-10-31']


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'alphanb', 'baseline', *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.long(seconds=15)
def test_cli_demo_last_line_is_json(demo_data):
    p = _cli('--data', demo_data, *DEMO_SPANS, '--features', 'classic', '--model', 'linear')
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r['model'] == 'linear' and r['n_features'] == 10
    assert {'ic', 'rank_ic', 'icir', 'rank_icir', 'sharpe'} <= set(r['test']) <= set(r['valid']) | set(r['test'])
    assert np.isfinite(r['test']['rank_ic']) and r['peak_rss_gb'] > 0
    assert r['spans']['fit']['end'] < r['spans']['valid']['start'] and r['spans']['select']['end'] < r['spans']['test']['start']
    assert 'ridge alpha' in p.stdout


def test_cli_bad_input_is_one_line(demo_data):
    p = _cli('--data', demo_data, *DEMO_SPANS, '--features', 'alpha185')
    assert p.returncode == 2 and p.stdout == ''
    assert p.stderr.strip().splitlines() == ["alphanb baseline: error: unknown feature set 'alpha185' (did you mean 'alpha158'?): give "
                                             "alpha158, alpha360, classic or the path of a factors.json (no file alpha185 exists), "
                                             "or several joined by commas, e.g. alpha158,factors.json"]


@pytest.fixture(scope='module')
def csi300(cn_data):
    "Classic factors on CSI300, fitted on 2016-2017, chosen on 2018H1, scored on 2018H2."
    feats = library_formulas('classic')
    panel, splits = baseline_panel(cn_data, 'csi300', '2016-01-01:2017-12-31', '2018-01-01:2018-06-30', '2018-07-01:2018-12-31', feats)
    return panel, splits, feats


def test_real_data_linear(csi300):
    panel, splits, feats = csi300
    r = fit_baseline(panel, splits, feats, 'linear', progress=False)
    per_day = r.rows['fit'] / (splits.fit.stop - splits.fit.start)
    assert 250 < per_day <= 300                                    # CSI300 members with a label, each fit day
    assert splits.fit.stop == splits.valid.start - 20
    for split in ['valid', 'test']:
        assert all(np.isfinite(r.metrics[split][k]) for k in ['ic', 'rank_ic', 'icir', 'rank_icir', 'sharpe'])
    assert abs(r.metrics['test']['rank_ic']) < 0.3


def test_real_data_features_match_qlib_preprocessed(cn_data, csi300):
    "A day of Alpha158 features: alphanb's evaluation and per-day robust z-score against Qlib's values, normalised in pandas."
    panel, splits, _ = csi300
    names = ['KMID', 'ROC5', 'STD20', 'CORR20', 'CNTP10']
    exprs = dict(alpha158())
    from alphanb.formula import Formula
    feats = [(n, Formula.from_qlib(exprs[n])) for n in names]
    day = splits.test.start + 10
    mask = torch.zeros_like(panel.valid); mask[day] = panel.valid[day]
    fm = feature_matrix(panel, feats, mask, progress=False)
    syms = [panel.symbols[j] for j in fm.stock]
    init_qlib(cn_data)
    from qlib.data import D
    date = panel.dates[day]
    q = D.features(syms, [exprs[n] for n in names], start_time=panel.dates[day - 80], end_time=date)
    q = q.xs(date, level='datetime').reindex(syms).astype('float64')
    q.columns = names
    med = q.median(); mad = (q - med).abs().median()
    z = ((q - med) / (1.4826 * (mad + 1e-12))).clip(-3, 3).fillna(0)
    np.testing.assert_allclose(fm.X, z.to_numpy(np.float32), atol=2e-3)
