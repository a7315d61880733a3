"PPO and the policies on a small synthetic market: every policy trains, PPO lowers its loss, masks give valid formulas, LoRD lowers the stable rank."
import math

import pytest
import torch

from alphanb.config import make_config, FLAT_KEYS
from alphanb.formula import Formula
from alphanb.grammar import Grammar
from alphanb.policies import POLICIES, make_policy
from alphanb.ppo import UniformPolicy, ppo_loss, ppo_update, prepare_states, rollout_formulas, sample_rollout, mean_stable_rank
from alphanb.synth import MarketSpec, synthetic_panel
from alphanb.train import Trainer


@pytest.fixture(scope='module')
def small():
    "A 40-stock, 160-day synthetic market, split 120/40 days."
    panel = synthetic_panel(MarketSpec(n_stocks=40, n_days=160, seed=3))
    return panel, slice(25, 110), slice(120, 160)


def cfg(**kw):
    "A small run's settings; keywords by their names in earlier versions' flat configs (`lr`, `policy`, `reward`)."
    base = dict(batch_size=16, minibatch_size=8, ppo_epochs=2, hidden=32, layers=1, heads=2, max_len=8, topk=5, steps=2,
                out='', pool_size=5)
    return make_config({FLAT_KEYS[k]: v for k, v in {**base, **kw}.items()})


@pytest.mark.parametrize('name', list(POLICIES))
def test_policy_trains_and_ppo_lowers_loss(small, name):
    tr = Trainer(cfg(policy=name), small)
    rows = [tr.run_step() for _ in range(2)]
    for r in rows:
        assert math.isfinite(r['reward_mean']) and math.isfinite(r['policy_loss']) and r['entropy'] > 0
    # a fixed batch: the PPO loss of the same states falls after a few epochs on it
    torch.manual_seed(0)
    r = sample_rollout(tr.policy, tr.grammar, 32)
    r.rewards = torch.linspace(-1, 1, 32)
    s = prepare_states(r)
    with torch.no_grad(): before, st = ppo_loss(tr.policy, s)
    assert abs(st['approx_kl']) < 1e-4                       # rollout and update score the same numbers
    opt = torch.optim.Adam(tr.policy.parameters(), lr=3e-3)
    ppo_update(tr.policy, opt, r, epochs=6, minibatch_size=16)
    with torch.no_grad(): after, _ = ppo_loss(tr.policy, s)
    assert after < before, (name, float(before), float(after))


def test_masks_give_valid_formulas():
    g = Grammar(max_len=12)
    torch.manual_seed(1)
    for pol in [UniformPolicy(g), make_policy('transformer', g, hidden=32, layers=1, heads=2)]:
        r = sample_rollout(pol, g, 1500)
        assert (r.lengths <= g.max_len + 1).all()
        assert (r.tokens[torch.arange(1500), r.lengths - 1] == g.SEP).all()
        for f in rollout_formulas(r, g):
            assert Formula.parse(str(f)) == f                 # a well-formed formula, text round trip
            assert not f.is_const


def test_lord_lowers_stable_rank(small):
    ranks = {}
    for decay in [0.0, 30.0]:
        tr = Trainer(cfg(policy='transformer', lord_decay=decay, seed=5, lr=2e-3), small)
        for _ in range(3): tr.run_step()
        ranks[decay] = mean_stable_rank(tr.lord_params)
    assert ranks[30.0] < ranks[0.0] - 0.5, ranks


@pytest.mark.parametrize('name', ['transformer', 'lstm', 'random'])
def test_risk_seeking_and_ic_reward_train(small, name):
    "The planted experiment's settings: |IC| reward, risk-seeking PPO, the kind prior; every step is finite."
    tr = Trainer(cfg(policy=name, reward='ic', risk_quantile=0.25, steps=3), small)
    for _ in range(3):
        r = tr.run_step()
        assert math.isfinite(r['reward_mean']) and r['reward_max'] <= 1
        if name != 'random': assert math.isfinite(r['policy_loss']) and r['entropy'] > 0
