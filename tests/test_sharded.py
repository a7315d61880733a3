"Training on a local Ray cluster (started by the tests): the same formulas, pool and figures as one process; a killed worker changes nothing."
import contextlib
import io
import json
import math
import os
import signal

import pytest

ray = pytest.importorskip('ray')

from alphanb.cli import main
from alphanb.config import make_config
from alphanb.core import ConfigError
from alphanb.train import Trainer, train


@pytest.fixture
def cluster(ray_cluster): return ray_cluster


def settings(out, **kw):
    "A short run on the demo market; formulas of at most 8 tokens read at most 7 x 40 days back."
    return make_config({'run/out': str(out), 'ppo/batch_size': 16, 'ppo/minibatch_size': 16, 'ppo/epochs': 1, 'policy/hidden': 32,
                        'policy/layers': 1, 'policy/heads': 2, 'policy/max_len': 8, 'pool/size': 6, 'ppo/steps': 3,
                        'run/checkpoint_every': 0, 'search/elite_share': 0.25, 'search/mutate_share': 0.25, **kw})


def close(a, b, tol=1e-9):
    if isinstance(a, dict): return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list): return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


@pytest.mark.long(seconds=13)
def test_sharded_training_equals_one_process(cluster, tmp_path):
    """`alphanb train --ray` over two workers writes the pool, figures and log of the same run in one process (rewards on every
    3rd train day: blocks of 280 days start off the step, so each worker's first day number matters)."""
    one = train(settings(tmp_path/'one', **{'reward/day_step': 3}), progress=False, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        main(['train', '--ray', 'local', '--workers', '2', '--block-days', '280', '--out', str(tmp_path/'ray'), '--no-progress',
              '--steps', '3', '--set', 'ppo/batch_size', '16', '--set', 'ppo/minibatch_size', '16', '--set', 'ppo/epochs', '1',
              '--set', 'policy/hidden', '32', '--set', 'policy/layers', '1', '--set', 'policy/heads', '2', '--set', 'policy/max_len', '8',
              '--set', 'pool/size', '6', '--set', 'run/checkpoint_every', '0', '--set', 'search/elite_share', '0.25',
              '--set', 'search/mutate_share', '0.25', '--set', 'reward/day_step', '3'])
    a = json.loads((tmp_path/'one'/'factors.json').read_text())
    b = json.loads((tmp_path/'ray'/'factors.json').read_text())
    assert len(a) >= 3 and [e['expression'] for e in a] == [e['expression'] for e in b]
    assert close([e['weight'] for e in a], [e['weight'] for e in b])
    assert close([e['performance'] for e in a], [e['performance'] for e in b])   # train, valid and novelty figures
    la, lb = (tmp_path/'one'/'log.csv').read_text().splitlines(), (tmp_path/'ray'/'log.csv').read_text().splitlines()
    cols = la[0].split(',')
    keep = [cols.index(k) for k in ['step', 'episodes', 'evaluations', 'reward_mean', 'reward_max', 'valid_share', 'best_rank_ic',
                                     'pool_size', 'pool_ic', 'policy_loss']]
    for x, y in zip(la[1:], lb[1:]):
        x, y = x.split(','), y.split(',')
        assert close([float(x[i]) for i in keep], [float(y[i]) for i in keep]), (x, y)
    assert len(la) == len(lb) == 4
    assert one['pool'].size == len(b)


@pytest.mark.long(seconds=14)
def test_a_killed_worker_changes_nothing(cluster, tmp_path):
    "A worker killed between steps is restarted by Ray and rebuilds its members: the run ends with the uninterrupted pool."
    ref = Trainer(settings(tmp_path/'one', **{'ppo/steps': 4}))
    for _ in range(4): ref.run_step()
    tr = Trainer(settings(tmp_path/'ray', **{'ppo/steps': 4, 'run/ray': 'local', 'run/workers': 2, 'run/block_days': 280}))
    try:
        assert len(tr.env.workers.actors) == 2 and len(tr.env.blocks) >= 3
        for _ in range(2): tr.run_step()
        assert tr.env.pool.size >= 2
        pids = tr.env.workers.call('pid')
        os.kill(pids[1], signal.SIGKILL)
        for _ in range(2): tr.run_step()
        assert tr.env.workers.call('pid')[1] != pids[1]                 # a new process holds the blocks
    finally: tr.env.close()
    assert list(map(str, ref.env.pool.formulas)) == tr.env.pool._texts()
    assert close(list(map(float, ref.env.pool.weights)), list(map(float, tr.env.pool.weights)))
    assert close(ref.env.pool.ic, tr.env.pool.ic, 1e-12)


@pytest.mark.long(seconds=15)
def test_resume_on_a_cluster_from_a_one_process_checkpoint(cluster, tmp_path):
    "A run stopped in one process continues on a cluster (and the reverse) to the same pool: the checkpoint does not depend on where it ran."
    full = train(settings(tmp_path/'full', **{'ppo/steps': 4}), progress=False, verbose=False)
    part = settings(tmp_path/'part', **{'ppo/steps': 2, 'run/checkpoint_every': 1})
    train(part, progress=False, verbose=False)
    rest = train(settings(tmp_path/'part', **{'ppo/steps': 4, 'run/ray': 'local', 'run/workers': 2, 'run/block_days': 280}),
                 resume=True, progress=False, verbose=False)
    assert list(map(str, full['pool'].formulas)) == list(map(str, rest['pool'].formulas))
    assert close(list(map(float, full['pool'].weights)), list(map(float, rest['pool'].weights)))
    with pytest.raises(ConfigError, match="workers were stopped when its training ended"):   # train() gave them back
        rest['pool'].performance({'train': None})


def test_blocks_shorter_than_the_longest_history_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r'use --block-days 280 or more'):
        Trainer(settings(tmp_path, **{'run/ray': 'local', 'run/block_days': 100}))


@pytest.mark.long(seconds=15)
def test_bench_train_scale(cluster, tmp_path):
    "`alphanb bench train --scale`: one process, then 1 and 2 workers, on the same steps; bytes per step; a projection."
    from alphanb.bench import bench_train_scale
    res = bench_train_scale(settings(tmp_path, **{'ppo/steps': 1, 'run/block_days': 280}), verbose=False)
    one, w1, w2 = res['table']
    assert [r['setting'] for r in res['table']][0] == 'one process' and (w1['workers'], w2['workers']) == (1, 2)
    assert one['distinct_per_s'] > 0 and w1['bytes_per_step'] > 0 and w2['worker_s'] > 0
    assert one['steps'] == w1['steps'] == w2['steps'] == 1
    fs = [p['formulas_per_s'] for p in res['projection']]
    assert fs == sorted(fs) and fs[0] > 0


@pytest.mark.long(seconds=31)
def test_larger_synthetic_market(cluster, tmp_path, synthetic_market):
    "A market the generator makes wider and longer than the demo (500 stocks x 1 200 days): two workers, the pool of one process."
    data = synthetic_market(500, 1200, 5)
    kw = {'data/dir': str(data), 'ppo/steps': 2}
    one = train(settings(tmp_path/'one', **kw), progress=False, verbose=False)
    two = train(settings(tmp_path/'ray', **kw, **{'run/ray': 'local', 'run/workers': 2, 'run/block_days': 280}),
                progress=False, verbose=False)
    assert len(two['trainer'].env.blocks) >= 3 and one['pool'].size >= 3
    assert list(map(str, one['pool'].formulas)) == list(map(str, two['pool'].formulas))
    assert close(list(map(float, one['pool'].weights)), list(map(float, two['pool'].weights)))
    assert close(one['valid'], two['valid'])
