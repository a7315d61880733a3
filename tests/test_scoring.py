"Day-sharded scoring on a Ray cluster the tests start themselves: the figures of one pass, a killed worker replaced."
import json, math, os, signal

import pytest
import torch

ray = pytest.importorskip('ray')

from alphanb.data import calendar, load_panel
from alphanb.evaluate import evaluate_formula
from alphanb.metrics import RewardContext
from alphanb.pool import combine_zscores, zscore_by_day
from alphanb.scoring import ShardedEvaluator, connect_ray

FORMULAS = ['Mean(Returns, 20)', 'Rank(Std($close, 10)) - Delay(Pressure, 1)', 'Corr($close, LogVolume, 15)',
            'TsMax($high, 30) / $close', 'EMA(Liquidity, 10)']
WEIGHTS = [0.5, -0.3, 0.2, 0.1, -0.4]


@pytest.fixture
def cluster(ray_cluster): return ray_cluster


def one_pass(data, start, end, history=120, formulas=FORMULAS, weights=WEIGHTS):
    "`RewardContext.metrics` of each factor and of the combination, one panel over the whole period."
    cal = calendar(data)
    days = cal[(cal >= start) & (cal <= end)]
    panel = load_panel(data, 'csi300', cal[max(0, cal.get_loc(days[0]) - history)], days[-1])
    ctx = RewardContext(panel, panel.day_slice(days[0], days[-1]))
    fs = [evaluate_formula(panel, x) for x in formulas]
    comb = combine_zscores(torch.stack([zscore_by_day(f, panel.valid) for f in fs]), weights, panel.valid)
    return [ctx.metrics(f) for f in fs] + [ctx.metrics(comb)]


def assert_same(a_list, b_list, tol=1e-9):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list):
        assert set(a) == set(b)
        for k in a:
            same = a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
            assert same or abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])), (k, a[k], b[k])


def test_ray_blocks_equal_one_pass(cluster, demo_data):
    ev = ShardedEvaluator(demo_data, 'csi300', '2018-01-01', '2019-10-31', lookback=29, block_days=90, ray='local', workers=2)
    try:
        assert len(ev.blocks) >= 4 and len(ev.actors) == 2
        assert_same(one_pass(demo_data, '2018-01-01', '2019-10-31'), ev.metrics(FORMULAS, WEIGHTS))
        # each worker holds only its blocks: together about the period once, not once per worker
        held = ray.get([a.nbytes.remote() for a in ev.actors])
        assert all(h > 0 for h in held)
    finally: ev.close()


@pytest.mark.long(seconds=12)
def test_killed_worker_is_replaced_with_the_same_figures(cluster, demo_data):
    ev = ShardedEvaluator(demo_data, 'csi300', '2018-06-01', '2019-10-31', lookback=29, block_days=120, ray='local', workers=2)
    try:
        before = ev.metrics(FORMULAS, WEIGHTS)
        pids = ray.get([a.pid.remote() for a in ev.actors])
        os.kill(pids[0], signal.SIGKILL)                     # the worker process dies, as on a lost machine
        after = ev.metrics(FORMULAS, WEIGHTS)                # Ray restarts the actor (its blocks read again) and retries
        assert_same(before, after, tol=0)
        new = ray.get([a.pid.remote() for a in ev.actors])
        assert new[0] != pids[0] and new[1] == pids[1]
    finally: ev.close()


@pytest.mark.long(seconds=17)
def test_larger_synthetic_market(cluster, synthetic_market):
    "A market the generator makes wider and longer than the demo: blocks on two workers equal one pass."
    out = synthetic_market(400, 900, 3)
    cal = calendar(out)
    start, end = cal[200], cal[-1]
    ev = ShardedEvaluator(out, 'csi300', start, end, lookback=29, block_days=150, ray='local', workers=2)
    try:
        assert_same(one_pass(out, start, end), ev.metrics(FORMULAS, WEIGHTS))
    finally: ev.close()


@pytest.mark.long(seconds=10)
def test_evaluate_command_on_ray(cluster, demo_data, tmp_path):
    "`alphanb evaluate --ray local --block-days N` prints the figures of the command without them."
    from alphanb.cli import main
    import contextlib, io
    factors = tmp_path/'factors.json'
    factors.write_text(json.dumps([{'factor_name': f'f{i}', 'expression': x, 'weight': w} for i, (x, w) in enumerate(zip(FORMULAS, WEIGHTS))]))
    def run(*extra):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(['evaluate', '--data', str(demo_data), '--start', '2019-01-01', '--end', '2019-10-31',
                       '--factors', str(factors), *extra])
        assert rc == 0
        printed.append(out.getvalue())
        return json.loads(out.getvalue().strip().splitlines()[-1])
    printed = []
    plain, here = run(), run('--block-days', '60')
    sharded = run('--block-days', '60', '--ray', 'local', '--workers', '2')
    assert 'blocks on 2 Ray workers' in printed[-1] and 'Ray' not in printed[1]
    assert here['blocks'] == sharded['blocks'] >= 3 and 'blocks' not in plain
    for r in (here, sharded): assert_same(plain['factors'] + [plain['combined']], r['factors'] + [r['combined']])
