"The embedded demo market: made by alphanb's generator, read through pyqlib, small, with its planted formulas recorded."
import json

import numpy as np

from alphanb.data import load_panel
from alphanb.evaluate import evaluate_formula
from alphanb.metrics import daily_ic, daily_rank_ic
from alphanb.synth import MarketSpec, demo_spec, make_market, simulate_market


def test_demo_market_is_the_generators_output(demo_data):
    info = json.loads((demo_data/'planted.json').read_text())
    spec = demo_spec(**{k: v for k, v in info['spec'].items() if k != 'weights'})
    mkt = simulate_market(spec)
    for j in [0, 7, 150, 299]:
        sym = mkt['symbols'][j]
        raw = np.fromfile(demo_data/'features'/sym.lower()/'close.day.bin', dtype='<f4')
        start = int(raw[0])
        np.testing.assert_array_equal(raw[1:], mkt['fields']['close'][start:start + len(raw) - 1, j])


def test_demo_market_loads_and_carries_its_planted_formulas(demo_data):
    size = sum(f.stat().st_size for f in demo_data.rglob('*') if f.is_file())
    assert size <= 20 * 2**20, f'data/demo is {size/2**20:.1f} MB'
    info = json.loads((demo_data/'planted.json').read_text())
    for universe in ['all', 'csi300', 'csi500']:
        p = load_panel(demo_data, universe)
        assert p.member.sum(1).min() >= 100
        for planted in info['planted']:
            f = evaluate_formula(p, planted['expression'])
            ic = np.nanmean(daily_ic(f, p.target, p.valid).numpy())
            ric = np.nanmean(daily_rank_ic(f, p.target, p.valid).numpy())
            assert ic > 0.05 and ric > 0.05, (universe, planted['expression'], ic, ric)
            # planted.json records the true IC and RankIC of the data it sits beside
            rec = planted['by_universe'][universe]
            np.testing.assert_allclose([ic, ric], [rec['ic'], rec['rank_ic']], rtol=1e-4, err_msg=f"{universe} {planted['expression']}")
        if universe == 'all': assert all((x['ic'], x['rank_ic']) == tuple(x['by_universe']['all'].values()) for x in info['planted'])


def test_generator_is_deterministic_and_rejects_bad_specs(tmp_path):
    spec = MarketSpec(n_stocks=20, n_days=80, planted=['Mean(Pressure, 5)'], seed=7)
    a, b = make_market(tmp_path/'a', spec), make_market(tmp_path/'b', spec)
    assert a == b
    for f in (tmp_path/'a'/'features').rglob('*.bin'):
        assert f.read_bytes() == (tmp_path/'b'/f.relative_to(tmp_path/'a')).read_bytes()
    import pytest
    from alphanb.core import ConfigError
    with pytest.raises(ConfigError, match='may use only'):
        simulate_market(MarketSpec(n_stocks=20, n_days=80, planted=['Mean($close, 5)']))
    with pytest.raises(ConfigError, match='one weight per formula'):
        simulate_market(MarketSpec(n_stocks=20, n_days=80, planted=['Pressure'], weights=[1, 2]))


def test_demo_factors_file_is_the_planted_pool(demo_data):
    from alphanb.factors import load_factors
    from alphanb.synth import planted_factors
    info = json.loads((demo_data/'planted.json').read_text())
    assert json.loads((demo_data/'factors.json').read_text()) == json.loads(json.dumps(planted_factors(info)))
    assert [e['expression'] for e in load_factors(demo_data/'factors.json')] == [p['expression'] for p in info['planted']]
