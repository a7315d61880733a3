"Training runs: configuration overrides, resume equals an uninterrupted run, the train and planted commands."
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alphanb.config import FLAT_KEYS, TrainConfig, add_config_args, config_from_args, config_paths, make_config, stored_config
from alphanb.core import ConfigError
from alphanb.synth import MarketSpec, synthetic_panel
from alphanb.train import planted, train
from alphanb.env import FormulaEnv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def small():
    panel = synthetic_panel(MarketSpec(n_stocks=40, n_days=160, seed=4))
    return panel, slice(25, 110), slice(120, 160)


def settings(out, **kw):
    return make_config({'run/out': str(out), 'ppo/batch_size': 16, 'ppo/minibatch_size': 8, 'ppo/epochs': 2, 'policy/hidden': 32, 'policy/layers': 1,
                        'policy/heads': 2, 'policy/max_len': 8, 'data/topk': 5, 'pool/size': 5, 'ppo/steps': 4, 'run/checkpoint_every': 1, **kw})


def test_overrides_share_one_path(tmp_path):
    f = tmp_path/'c.json'
    f.write_text(json.dumps({'lr': 0.01, 'reward_weights': {'ic': 0.7}}))
    import argparse
    p = argparse.ArgumentParser(); add_config_args(p)
    a = config_from_args(p.parse_args(['--config', str(f), '--set', 'ppo/gamma', '0.9', '--set', 'reward/weights/sharpe', '0.1']))
    b = make_config({'ppo/lr': 0.01, 'ppo/gamma': 0.9, 'reward/weights': {'ic': 0.7, 'sharpe': 0.1}})
    assert a == b and a.reward.weights['ic'] == 0.7 and a.ppo.gamma == 0.9   # the file is an earlier version's (flat keys)
    for bad in [lambda: make_config({'ppo/lrate': 1}), lambda: make_config(sets=[('ppo/lrate', '1')])]:
        with pytest.raises(ConfigError, match='valid keys of ppo: ppo/steps'): bad()
    with pytest.raises(ConfigError, match="config key 'lr' \\(in --set\\) is now 'ppo/lr'"): make_config(sets=[('lr', '1')])
    f.write_text(json.dumps({'lrate': 1}))
    with pytest.raises(ConfigError, match=r"unknown config key 'lrate' in config file .*valid keys"): make_config(config_file=f)
    with pytest.raises(ConfigError, match="'ppo/steps' expects int"): make_config({'ppo/steps': 'many'})


def test_resume_equals_uninterrupted(tmp_path, small):
    full = train(settings(tmp_path/'full'), data=small, progress=False, verbose=False)
    train(settings(tmp_path/'part', **{'ppo/steps': 2}), data=small, progress=False, verbose=False)
    resumed = train(settings(tmp_path/'part'), data=small, resume=True, progress=False, verbose=False)
    assert resumed['steps'] == full['steps'] == 4
    assert (tmp_path/'full'/'factors.json').read_text() == (tmp_path/'part'/'factors.json').read_text()
    a, b = np.load(tmp_path/'full'/'model.npz', allow_pickle=False), np.load(tmp_path/'part'/'model.npz', allow_pickle=False)
    assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    cols = ['reward_mean', 'best_rank_ic', 'pool_size', 'entropy', 'evaluations']
    assert full['log'][cols].equals(resumed['log'][cols])
    m = torch.load(tmp_path/'full'/'model.pt', weights_only=True)
    assert set(m['state_dict']) == {k for k in a.files if k != '__tokens__'}
    # a different setting cannot silently continue a checkpoint
    with pytest.raises(ConfigError, match='cannot resume'):
        train(settings(tmp_path/'part', **{'ppo/lr': 0.5}), data=small, resume=True, progress=False, verbose=False)


def test_resume_equals_uninterrupted_risk_seeking(tmp_path, small):
    "The same under the planted experiment's settings: the 'ic' reward and risk-seeking PPO."
    kw = {'reward/mode': 'ic', 'ppo/risk_quantile': 0.25, 'policy/name': 'lstm'}
    full = train(settings(tmp_path/'full', **kw), data=small, progress=False, verbose=False)
    train(settings(tmp_path/'part', **{**kw, 'ppo/steps': 2}), data=small, progress=False, verbose=False)
    resumed = train(settings(tmp_path/'part', **kw), data=small, resume=True, progress=False, verbose=False)
    assert (tmp_path/'full'/'factors.json').read_text() == (tmp_path/'part'/'factors.json').read_text()
    cols = ['reward_mean', 'reward_max', 'best_rank_ic', 'pool_size', 'entropy', 'evaluations', 'policy_loss']
    assert full['log'][cols].equals(resumed['log'][cols])
    for bad, msg in [({'reward/mode': 'best'}, "one of 'seed', 'pool', 'ic'"), ({'policy/sampling_prior': 'flat'}, "'kind' or 'uniform'"),
                     ({'ppo/risk_quantile': 1.0}, 'risk_quantile'), ({'reward/size_penalty': -1}, 'size_penalty'),
                     ({'search/elite_share': 0.5, 'search/mutate_share': 0.75}, 'at most 1'), ({'search/elite_from': 'top'}, "'pool' or 'best'"),
                     ({'search/mutate_share': 1.5}, r"'search/mutate_share' must be in \[0, 1\]")]:
        with pytest.raises(ConfigError, match=msg): make_config(bad)
    with pytest.raises(ConfigError, match="reward must be one of 'seed', 'pool', 'ic', got 'best'"):
        FormulaEnv(small[0], small[1], reward='best')                  # the environment used directly says the same


@pytest.mark.long(seconds=10)
def test_train_command_on_demo(tmp_path, demo_data):
    out = tmp_path/'run'
    p = subprocess.run([sys.executable, '-m', 'alphanb', 'train', '--data', str(demo_data), '--universe', 'csi300', '--steps', '1',
                        '--train', '2018-06-01:2018-12-31', '--valid', '2019-01-01:2019-06-28',
                        '--out', str(out), '--no-progress', '--set', 'ppo/batch_size', '8', '--set', 'policy/hidden', '32', '--set', 'policy/max_len', '6', '--set', 'ppo/epochs', '1'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res['steps'] == 1 and res['episodes'] == 8
    for name in ['factors.json', 'model.pt', 'model.npz', 'config.json', 'log.csv']: assert (out/name).exists(), name
    assert json.loads((out/'config.json').read_text())['ppo']['batch_size'] == 8
    from alphanb.library import alpha158
    names = dict(alpha158())
    for e in json.loads((out/'factors.json').read_text()):   # each member's closest Alpha158 feature, on the valid split
        near = e['performance']['alpha158']
        assert near['closest'] in names and 0 <= near['abs_rank_corr'] <= 1 + 1e-9, near
    p = subprocess.run([sys.executable, '-m', 'alphanb', 'train', '--data', str(demo_data), '--set', 'ppo/batchsize', '16'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and 'valid keys' in p.stderr


def test_planted_reports():
    res = planted('random', budget=64, seed=0, n_stocks=30, n_days=120, overrides={'ppo/batch_size': 32, 'policy/max_len': 8})
    assert {'policy', 'seed', 'budget', 'recovered', 'evaluations', 'best_corr'} <= set(res)
    assert res['policy'] == 'random' and res['evaluations'] <= 64 and 0 <= res['best_corr'] <= 1
    # a learned policy runs the extensions and rewrites of PLANTED_SEARCH from its second step on
    res = planted('lstm', budget=96, seed=0, n_stocks=30, n_days=120, overrides={'ppo/batch_size': 32, 'policy/max_len': 8, 'search/elite_group': 8})
    assert res['steps'] == 3 and res['distinct'] > 32


def test_target_base_mines_the_residual(tmp_path, demo_data):
    "With target_base, rewards and the pool read the label's residual on the base library's ridge prediction."
    from alphanb.train import Trainer
    from alphanb.env import load_run_data, base_residual, rank_label
    dates = {'data/dir': str(demo_data), 'data/train_end': '2018-05-31', 'data/valid_start': '2018-06-01', 'data/valid_end': '2018-12-31',
             'reward/mode': 'ic', 'reward/label': 'return'}
    plain = load_run_data(settings(tmp_path/'p', **dates))
    tr = Trainer(settings(tmp_path/'b', **{**dates, 'reward/target_base': 'classic'}))
    want = base_residual(plain[0], plain[1], 'classic').target
    torch.testing.assert_close(tr.panel.target, want, rtol=0, atol=0, equal_nan=True)
    assert not torch.equal(torch.nan_to_num(tr.panel.target), torch.nan_to_num(plain[0].target))
    assert tr.env.ctx.panel is tr.panel                                           # the rewards read the residual
    r = train(settings(tmp_path/'b', **{**dates, 'reward/target_base': 'classic'}), progress=False, verbose=False)
    assert r['steps'] == 4 and (tmp_path/'b'/'factors.json').exists()
    # with the ranked label (the default) the residual is the ranked label's, and without a base the ranked label itself
    tr = Trainer(settings(tmp_path/'rb', **{**dates, 'reward/label': 'rank', 'reward/target_base': 'classic'}))
    torch.testing.assert_close(tr.panel.target, base_residual(rank_label(plain[0]), plain[1], 'classic').target, rtol=0, atol=0, equal_nan=True)
    tr = Trainer(settings(tmp_path/'r', **{**dates, 'reward/label': 'rank'}))
    torch.testing.assert_close(tr.panel.target, rank_label(plain[0]).target, rtol=0, atol=0, equal_nan=True)
    assert tr.env.pool.ctx.panel is tr.panel


def test_defaults_are_the_measured_settings():
    "`alphanb train` without --set runs the settings of the committed walk-forward study they were chosen from (on its selection years)."
    settings = json.loads((ROOT/'nbs'/'experiments'/'walk_forward_rank'/'study.json').read_text())['settings']
    measured = config_paths(stored_config(settings))                    # flat keys or paths, as the version that made it wrote them
    keys = [FLAT_KEYS[k] for k in ['reward', 'size_penalty', 'risk_quantile', 'elite_share', 'elite_group', 'mutate_share',
            'mutate_insert', 'mutate_delete', 'mutate_near', 'elite_from', 'elite_rank', 'vocabulary', 'pool_size', 'pool_corr_max',
            'stability', 'target_base', 'label']]
    assert {'reward', 'risk_quantile', 'elite_share'} <= set(settings) or {'reward/mode', 'ppo/risk_quantile'} <= set(settings)
    d = config_paths(make_config({}))
    assert {k: d[k] for k in keys} == {k: measured[k] for k in keys}
