"The factor inspector driven without a browser: controls in, figures, tables and messages out."
from dataclasses import replace

import numpy as np
import pytest

from alphanb.data import universes
from alphanb.inspect import inspect_factors, cached_panel, forward_return
from alphanb.interpret import interpret
from alphanb.synth import synthetic_panel, demo_spec

MINED = [{'factor_name': 'alpha_01', 'expression': 'Mean(Pressure, 10)', 'weight': 0.8},
         {'factor_name': 'alpha_02', 'expression': '-Mean(LogVolume, 20)', 'weight': -0.3}]


@pytest.fixture(scope='module')
def panel():
    return synthetic_panel(demo_spec(n_stocks=50, n_days=260, seed=3))


def _lines(fig):
    "The y data of every line of a figure, to tell two drawings apart."
    return [np.asarray(l.get_ydata(), dtype=float) for ax in fig.axes for l in ax.get_lines()]


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, equal_nan=True) for x, y in zip(a, b))


def test_dropdown_and_text_change_the_view(panel):
    w = inspect_factors(panel, MINED, start=panel.dates[60])
    assert w.error_html.value == '' and w.formula_text.value == MINED[0]['expression']
    ic0, table0, png0 = _lines(w.figures['ic']), w.table.copy(), w.ic_image.value
    deciles0 = w.series['deciles'].to_numpy()
    assert png0[:4] == b'\x89PNG'
    assert 'Core logic' in w.interpretation_html.value and 'Mean (window 10)' in w.tree_html.value

    w.factor_dropdown.value = MINED[1]['expression']          # pick the second mined factor
    assert w.formula_text.value == MINED[1]['expression']
    assert not _same(_lines(w.figures['ic']), ic0)
    assert not np.allclose(w.series['deciles'].to_numpy(), deciles0)
    assert not w.table['value'].equals(table0['value'])
    assert w.ic_image.value != png0
    assert 'lowest values' in w.status_html.value              # negative pool weight: the book buys the low end

    before = w.table.copy()
    w.formula_text.value = 'Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3'   # type a formula of one's own
    assert w.factor_dropdown.value == ''
    assert str(w.formula) == 'Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3'
    assert not w.table['value'].equals(before['value'])
    assert 'cross-sectional' in w.qlib_html.value               # no Qlib expression, and why
    assert w.error_html.value == ''


def test_malformed_formula_shows_an_error_instead_of_raising(panel):
    w = inspect_factors(panel, MINED)
    good = w.table.copy()
    w.formula_text.value = 'Mean(Pressure 10)'               # missing comma: FormulaError at column 15
    assert 'FormulaError' in w.error_html.value and 'column 15' in w.error_html.value
    assert '              ^' in w.error_html.value             # the caret under the column
    assert w.table.equals(good)                                # the last good result stays
    w.formula_text.value = 'Mean(Pressure, 10) + NoSuchField'
    assert 'NoSuchField' in w.error_html.value
    w.formula_text.value = ''
    assert 'empty formula' in w.error_html.value
    w.formula_text.value = 'Mean(Pressure, 10)'
    assert w.error_html.value == ''


def test_controls_redraw(panel):
    w = inspect_factors(panel, MINED, topk=10)
    sharpe10 = w.table.loc[('backtest', 'Sharpe'), 'value']
    w.topk.value = 3
    assert w.table.loc[('backtest', 'Sharpe'), 'value'] != sharpe10
    dec20 = w.series['deciles'].to_numpy()
    w.horizon.value = 5                                        # in-memory panel: target recomputed from $close
    assert w.panel.horizon == 5 and not np.allclose(w.series['deciles'].to_numpy(), dec20)
    w.start.value = panel.dates[100].date()
    assert w.series['ic'].index[0] == panel.dates[100]
    w.end.value = panel.dates[50].date()                       # before the start: a message, no exception
    assert 'after the last day' in w.error_html.value


def test_universe_change_reloads_through_the_cache(panel, demo_data):
    calls = []
    def loader(uri, universe, start, end, horizon=20):
        calls.append((universe, horizon))
        return replace(panel, universe=universe, provider_uri=str(uri), horizon=horizon,
                       target=forward_return(panel['$close'], horizon)).sel(start, end)
    w = inspect_factors(replace(panel, universe='csi300', provider_uri=str(demo_data)), MINED, loader=loader)
    assert list(w.universe.options) == universes(demo_data)
    w.universe.value = 'csi500'
    w.universe.value = 'csi300'
    w.universe.value = 'csi500'
    assert calls == [('csi500', 20)]                           # going back to a universe shown before loads nothing
    assert w.panel.universe == 'csi500' and w.error_html.value == ''
    assert cached_panel(str(demo_data), 'csi500', w.panel.dates[0], w.panel.dates[-1], 20, loader) is w.panel
    w.horizon.value = 10                                       # a new horizon is a new load, then cached
    assert calls[-1] == ('csi500', 10) and w.panel.horizon == 10
    w2 = inspect_factors(replace(panel, universe='csi300', provider_uri=str(demo_data)), MINED, loader=loader)
    w2.universe.value = 'csi500'                               # another inspector: the module cache answers
    assert len(calls) == 2 and w2.panel is cached_panel(str(demo_data), 'csi500', w2.panel.dates[0], w2.panel.dates[-1], 20, loader)


def test_interpretation_is_deterministic_and_follows_the_weight():
    t = interpret('Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3')
    assert t == interpret('Rank(Mean(LogVolume, 5)) - Delay(Pressure, 1) * 0.3')
    assert t.splitlines()[0].startswith('Core logic:') and 'Market meaning:' in t
    assert 'Mean(LogVolume, 5) = the average log volume over 5 days (trading activity)' in t
    assert interpret('Mean(Pressure, 10)', weight=-1) != interpret('Mean(Pressure, 10)', weight=1)
