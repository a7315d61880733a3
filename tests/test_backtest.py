"A-share trading rules of alphanb.backtest on hand-built panels, and `alphanb backtest` on the demo market."
import argparse, json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from alphanb.backtest import BacktestConfig, backtest, backtest_command, limit_rate, trading_window, _Book
from alphanb.core import AlphanbError, ConfigError, DateRangeError
from alphanb.data import Panel

PLAIN = BacktestConfig(topk=1, rebalance=1, min_trade=0, max_weight=1.0, stop_loss=None, take_profit=None, benchmark=None)


def toy(open_, close=None, volume=None):
    "[day, stock] opens (closes equal unless given); volume 0 marks a suspension."
    o = np.asarray(open_, dtype=float)
    c = o.copy() if close is None else np.asarray(close, dtype=float)
    v = np.full_like(o, 1e6) if volume is None else np.asarray(volume, dtype=float)
    return Panel.from_fields({'$open': o, '$close': c, '$volume': v}, dates=pd.bdate_range('2021-01-04', periods=len(o)))


def best_first(n_days, n=2):
    "A signal in which stock 0 always scores best."
    return np.tile(np.arange(n, 0, -1, dtype=float), (n_days, 1))


def test_limit_up_open_is_not_bought():
    p = toy([[10, 20], [11, 20], [10.5, 20], [10.5, 20]])     # stock 0 opens at its limit-up 11.00 on day 1
    first = backtest(p, best_first(4), PLAIN).trades.iloc[0]
    assert (first.date, first.symbol, first.price) == (p.dates[2], 'S0000', 10.5)
    # the same panel without the rule buys at the limit
    assert backtest(p, best_first(4), replace(PLAIN, price_limits=False)).trades.iloc[0].date == p.dates[1]


def test_limit_down_open_is_not_sold():
    p = toy([[10, 5], [10, 5], [9, 5], [9.5, 5]])              # 10 -> 9.00 is limit down on day 2
    sig = np.array([[2, 1], [2, 1], [1, 2], [1, 2]], dtype=float)
    sell = backtest(p, sig, PLAIN).trades.query("side == 'sell'").iloc[0]
    assert (sell.date, sell.price) == (p.dates[3], 9.5)


@pytest.mark.parametrize('with_change', [False, True])
def test_half_fen_limit_down_on_float32_adjusted_prices(with_change):
    "Reference 22.85 stored x $factor 2.9 in float32 reads back as 22.8499996; its limit-down is 20.57 (20.565 half up), not 20.56."
    raw = np.array([[25.0, 10], [25.0, 10], [22.85, 10], [20.57, 10], [20.60, 10]])
    adj = (raw * 2.9).astype(np.float32)
    fields = {'$open': adj, '$close': adj, '$factor': np.full_like(adj, 2.9), '$volume': np.ones_like(adj)}
    if with_change:
        chg = np.zeros_like(raw); chg[1:] = raw[1:] / raw[:-1] - 1
        fields['$change'] = chg.astype(np.float32)
    p = Panel.from_fields(fields, dates=pd.bdate_range('2021-01-04', periods=len(raw)))
    sig = np.array([[2, 1], [2, 1], [1, 2], [1, 2], [1, 2]], dtype=float)   # bought on day 1, to be sold from day 3
    sells = backtest(p, sig, PLAIN).trades.query("side == 'sell'")
    # day 3 opens at its limit-down 20.57: the sale waits for day 4
    assert (sells.iloc[0].date, round(sells.iloc[0].price, 2)) == (p.dates[4], 20.60)


def test_star_board_limits():
    rate = limit_rate(['SH600000', 'SH688001', 'SH689009', 'SZ300750'], pd.DatetimeIndex(['2020-01-02']))
    assert rate.tolist() == [[0.1, 0.2, 0.2, 0.1]]


def test_share_bought_today_is_not_sold_today():
    book = _Book(1, replace(PLAIN, initial_capital=100_000))
    px, fac = np.array([10.0]), np.ones(1)
    assert len(book.buy(np.array([0]), 3, px, fac, 50_000, 'test')) == 1
    assert len(book.sell(np.array([0]), 3, px, fac, 0.001, 'test')) == 0 and book.shares[0] == 5000
    assert len(book.sell(np.array([0]), 4, px, fac, 0.001, 'test')) == 1 and book.shares[0] == 0
    loose = _Book(1, replace(PLAIN, t_plus_1=False))
    loose.buy(np.array([0]), 3, px, fac, 50_000, 'test')
    assert len(loose.sell(np.array([0]), 3, px, fac, 0.001, 'test')) == 1


def test_stamp_tax_only_on_sells_and_minimum_commission():
    p = toy([[10, 10]] * 4)
    sig = np.array([[2, 1], [2, 1], [1, 2], [1, 2]], dtype=float)
    big = backtest(p, sig, replace(PLAIN, initial_capital=1_000_000)).trades
    buy, sell = big.iloc[0], big.iloc[1]
    assert buy.side == 'buy' and sell.side == 'sell' and sell.symbol == buy.symbol
    assert buy.cost == pytest.approx(buy.amount * 0.0003)                    # no tax on the buy
    assert sell.cost == pytest.approx(sell.amount * (0.0003 + 0.001))        # commission + stamp tax on the sell
    small = backtest(p, sig, replace(PLAIN, initial_capital=10_000)).trades
    assert small.iloc[0].amount * 0.0003 < 5 and small.iloc[0].cost == pytest.approx(5.0)
    assert small.iloc[1].cost == pytest.approx(5.0 + 0.001 * small.iloc[1].amount)


def test_stamp_tax_rate_follows_the_2023_cut():
    p = Panel.from_fields({'$open': np.full((4, 2), 10.0), '$close': np.full((4, 2), 10.0), '$volume': np.ones((4, 2))},
                          dates=pd.DatetimeIndex(['2023-08-23', '2023-08-24', '2023-08-25', '2023-08-28']))
    sig = np.array([[2, 1], [1, 2], [2, 1], [1, 2]], dtype=float)
    sells = backtest(p, sig, PLAIN).trades.query("side == 'sell'")
    tax = sells.cost - sells.amount * 0.0003
    assert tax.iloc[0] == pytest.approx(sells.amount.iloc[0] * 0.001)
    assert tax.iloc[-1] == pytest.approx(sells.amount.iloc[-1] * 0.0005)


def test_stop_loss_exits_at_next_tradable_price():
    o = np.array([[10, 5], [10, 5], [9.5, 5], [9.0, 5], [8.1, 5], [8.5, 5]])
    c = np.array([[10, 5], [10, 5], [9.0, 5], [9.0, 5], [8.2, 5], [8.6, 5]])
    v = np.ones_like(o); v[3, 0] = 0                            # close 9.0 (-10 %) on day 2, suspended day 3, limit down day 4
    r = backtest(toy(o, c, v), best_first(6), replace(PLAIN, stop_loss=0.08, rebalance=100))
    sells = r.trades.query("side == 'sell'")
    assert len(sells) == 1
    assert (sells.iloc[0].date, sells.iloc[0].price, sells.iloc[0].reason) == (r.nav.index[4], 8.5, 'stop_loss')
    assert not len(backtest(toy(o, c, v), best_first(6), replace(PLAIN, rebalance=100)).trades.query("side == 'sell'"))


def test_take_profit_exits():
    o = np.array([[10, 5], [10, 5], [12, 5], [13, 5], [13, 5]])
    r = backtest(toy(o, o * np.array([[1, 1], [1, 1], [1.05, 1], [1, 1], [1, 1]])), best_first(5),
                 replace(PLAIN, take_profit=0.25, rebalance=100))
    sell = r.trades.query("side == 'sell'").iloc[0]
    assert (sell.reason, sell.price) == ('take_profit', 13)     # 12.6 / 10 - 1 >= 25 % at day 2's close, out at day 3's open


def test_cash_never_negative_and_missing_prices_never_nan():
    rng = np.random.default_rng(1)
    o = 10 * np.exp(np.cumsum(rng.normal(0, 0.03, (80, 40)), 0))
    o[rng.random(o.shape) < 0.08] = np.nan                      # prices missing on days the stock 'traded'
    p = toy(o, o * np.exp(rng.normal(0, 0.01, o.shape)))
    for cap, slip in [(20_000, 0.0), (8_000, 0.01)]:
        r = backtest(p, rng.normal(size=o.shape), BacktestConfig(initial_capital=cap, topk=6, rebalance=1, min_trade=0,
                                                                 slippage=slip, benchmark=None))
        assert np.isfinite(r.cash).all() and (r.cash >= -1e-9).all()
        assert np.isfinite(r.nav).all() and np.isfinite(r.trades.cost).all() and len(r.trades)


def test_round_lots_cap_and_min_trade():
    p = toy(np.full((5, 12), 7.3))
    r = backtest(p, best_first(5, 12), BacktestConfig(topk=5, rebalance=100, benchmark=None))
    buys = r.trades.query("side == 'buy'")
    assert len(buys) == 5 and (buys.shares % 100 == 0).all()
    assert (buys.amount <= 0.1 * 1_000_000).all() and (buys.amount > 0.1 * 1_000_000 - 730).all()   # capped at 10 % of NAV
    r = backtest(p, best_first(5, 12), BacktestConfig(topk=5, rebalance=100, benchmark=None, initial_capital=40_000))
    assert not len(r.trades)                                    # 40 000 / 5 stocks < the 10 000 CNY minimum each
    assert len(backtest(p, best_first(5, 12), BacktestConfig(topk=5, rebalance=100, benchmark=None, initial_capital=40_000,
                                                             min_trade=0)).trades) == 5


def test_benchmark_is_indexed_by_date():
    "The NAV and benchmark series share a 'date' index, so plots and CSVs label it (the report's x-axis read '0')."
    p = toy([[10, 10]] * 4)
    bench = pd.Series([100., 101., 102., 103.], index=pd.DatetimeIndex(p.dates, name=0))
    r = backtest(p, best_first(4), PLAIN, benchmark=bench)
    assert r.nav.index.name == r.benchmark.index.name == 'date'


def test_bad_input():
    p = toy([[10, 10]] * 4)
    with pytest.raises(AlphanbError, match='empty signal'): backtest(p, np.full((4, 2), np.nan))
    with pytest.raises(ConfigError, match='rebalance'): BacktestConfig(rebalance='Q')
    with pytest.raises(DateRangeError): backtest(p, best_first(4), start='2030-01-01')


FACTORS = [{'factor_name': 'reversal_20', 'expression': '-($close/Delay($close,20)-1)', 'qlib_expression': '-($close/Ref($close,20)-1)',
            'weight': 1.0, 'interpretation': '20-day reversal', 'performance': {}}]


def _args(tmp_path, demo_data, **kw):
    f = tmp_path/'factors.json'
    if not f.exists(): f.write_text(json.dumps(FACTORS))
    a = dict(data=str(demo_data), universe='csi300', start='2019-01-01', end='2019-06-30', factors=str(f),
             out=str(tmp_path/'out'), benchmark='SH000300', topk=10, rebalance='5', warmup=30)
    a.update(kw)
    return argparse.Namespace(**a)


@pytest.mark.long(seconds=10)
def test_backtest_command_writes_results(tmp_path, demo_data, capsys):
    m = backtest_command(_args(tmp_path, demo_data))
    out = tmp_path/'out'
    nav = pd.read_csv(out/'nav.csv')
    trades = pd.read_csv(out/'trades.csv')
    assert (trades.price == trades.price.round(2)).all()                    # prices to the fen
    assert list(nav.columns) == ['date', 'nav', 'benchmark'] and nav.nav.notna().all() and nav.benchmark.notna().all()
    assert list(trades.columns[:6]) == ['date', 'symbol', 'side', 'shares', 'price', 'cost'] and len(trades)
    assert json.loads((out/'metrics.json').read_text()) == m
    assert m['final_nav'] == pytest.approx(nav.nav.iloc[-1]) and 'information_ratio' in m
    assert 'annual return' in capsys.readouterr().out


def test_backtest_command_bad_input(tmp_path, demo_data):
    with pytest.raises(ConfigError, match="unknown benchmark 'SH000301'"):
        backtest_command(_args(tmp_path, demo_data, benchmark='SH000301'))
    with pytest.raises(DateRangeError, match='outside the data'):
        backtest_command(_args(tmp_path, demo_data, start='2030-01-01', end='2030-06-30'))
    with pytest.raises(AlphanbError, match='does not exist'):
        backtest_command(_args(tmp_path, demo_data, factors=str(tmp_path/'nope.json')))


def test_period_outside_the_data_is_an_error(tmp_path, demo_data):
    "data/demo starts on 2016-01-04: a period from 2010, or a start without its warm-up, is refused, not clipped."
    with pytest.raises(DateRangeError, match=r'2010-01-01\.\.2016-03-30 reaches outside the data: .* covers 2016-01-04\.\.'):
        backtest_command(_args(tmp_path, demo_data, start='2010-01-01', end='2016-03-30'))
    with pytest.raises(DateRangeError, match='250 days of history are wanted'):
        trading_window(demo_data, '2016-03-01', '2016-06-30', 250)
    hist, first, last = trading_window(demo_data, '2016-01-01', '2016-03-30', 0)    # New Year's Day: the data's first day
    assert (hist, first) == (pd.Timestamp('2016-01-04'), pd.Timestamp('2016-01-04'))
