"The six policies: one interface, masks respected, padding ignored, gradients, seeded construction, and learning on a fixed batch."
import pytest
import torch
import torch.nn.functional as F

from alphanb.core import ConfigError
from alphanb.grammar import Grammar, profile
from alphanb.policies import POLICIES, MASKED_LOGIT, attention_weights, make_policy, rpn_tree

NAMES = list(POLICIES)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Small networks run fastest on one thread; two threads spin against each other on a busy 2-core machine."
    before = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def grammar():
    return Grammar(max_len=14)


def sample_prefixes(grammar, n, seed):
    "Random legal unfinished prefixes written through the grammar's masks: tokens [n, t], lengths [n], next masks."
    gen = torch.Generator().manual_seed(seed)
    st, target = grammar.initial_state(n), torch.randint(0, grammar.max_len, (n,), generator=gen)
    cols, lengths = [], torch.zeros(n, dtype=torch.long)
    for j in range(grammar.max_len):
        m = st.mask().clone(); m[:, grammar.sep_id] = False
        go = (j < target) & m.any(1)
        m[~go] = False; m[~go, grammar.pad_id] = True
        a = torch.multinomial(m.float(), 1, generator=gen).squeeze(1)
        st.step(a); cols.append(a); lengths += go
    return torch.stack(cols, 1), lengths, st.mask()


@pytest.fixture(scope='module')
def batch(grammar):
    return sample_prefixes(grammar, 24, seed=3)


def build(name, grammar, seed=0):
    torch.manual_seed(seed)
    return make_policy(name, grammar, hidden=32, layers=2, heads=4)


@pytest.mark.parametrize('name', NAMES)
def test_shapes_and_masks(name, grammar, batch):
    toks, lens, masks = batch
    logits, value = build(name, grammar)(toks, lens, masks)
    assert logits.shape == (len(lens), grammar.n_tokens) and value.shape == (len(lens),)
    assert torch.isfinite(logits).all() and torch.isfinite(value).all()
    p = logits.softmax(-1)
    assert (p[~masks] == 0).all()                      # a masked token never gets probability
    assert (logits[~masks] == MASKED_LOGIT).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(len(lens)))
    # sampling many times never picks a masked token
    draws = torch.distributions.Categorical(logits=logits).sample((200,))   # [200, batch]
    assert masks.gather(1, draws.T).all()


@pytest.mark.parametrize('name', NAMES)
def test_padding_and_batching_do_not_matter(name, grammar, batch):
    toks, lens, masks = batch
    pol = build(name, grammar)
    logits, value = pol(toks, lens, masks)
    junk = toks.clone(); junk[torch.arange(toks.shape[1])[None] >= lens[:, None]] = 5
    torch.testing.assert_close(pol(junk, lens, masks)[0], logits, atol=1e-5, rtol=1e-5)
    wide = torch.cat([toks, torch.zeros(len(lens), 1, dtype=torch.long)], 1)[:, :grammar.max_len]
    torch.testing.assert_close(pol(wide, lens, masks)[1], value, atol=1e-5, rtol=1e-5)
    for i in (0, int(lens.argmax())):
        one_l, one_v = pol(toks[i:i + 1, :lens[i]], lens[i:i + 1], masks[i:i + 1])
        torch.testing.assert_close(one_l, logits[i:i + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one_v, value[i:i + 1], atol=1e-5, rtol=1e-5)
    first = grammar.initial_state(3).mask()              # the first step: empty prefixes
    l0, v0 = pol(toks[:3, :0], torch.zeros(3, dtype=torch.long), first)
    assert l0.shape == (3, grammar.n_tokens) and (l0.softmax(-1)[~first] == 0).all()


@pytest.mark.parametrize('name', NAMES)
def test_gradients_flow_and_seeded_construction(name, grammar, batch):
    toks, lens, masks = batch
    pol = build(name, grammar)
    logits, value = pol(toks, lens, masks)
    act = masks.float().argmax(1)
    (F.cross_entropy(logits, act) + value.square().mean()).backward()
    missing = [n for n, p in pol.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert any(float(p.grad.abs().sum()) > 0 for p in attention_weights(pol)) or name == 'lstm_p'
    twin, other = build(name, grammar, seed=0), build(name, grammar, seed=1)
    sd, sd_twin, sd_other = pol.state_dict(), twin.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_twin[k]) for k in sd)
    assert not all(torch.equal(sd[k], sd_other[k]) for k in sd)


@pytest.mark.parametrize('name', NAMES)
def test_loss_decreases_on_fixed_batch(name, grammar, batch):
    toks, lens, masks = batch
    gen = torch.Generator().manual_seed(1)
    act = torch.multinomial(masks.float(), 1, generator=gen).squeeze(1)   # fixed legal actions
    ret = torch.randn(len(lens), generator=gen)                          # fixed value targets
    pol = build(name, grammar)
    opt = torch.optim.Adam(pol.parameters(), lr=5e-3)
    ce, total = [], []
    for _ in range(8):
        logits, value = pol(toks, lens, masks)
        c = F.cross_entropy(logits, act); loss = c + F.mse_loss(value, ret)
        ce.append(c.item()); total.append(loss.item()); opt.zero_grad(); loss.backward(); opt.step()
    assert total[-1] < 0.9 * total[0], total
    assert ce[-1] < 0.95 * ce[0], ce          # the policy itself learns, not only the value head


def test_attention_weights(grammar):
    for name in NAMES:
        pol = build(name, grammar)
        ws = attention_weights(pol)
        own = {id(p) for p in pol.parameters()}
        assert all(w.dim() == 2 and id(w) in own for w in ws)
        assert (len(ws) == 0) == (name == 'lstm_p')


def test_make_policy_errors(grammar):
    with pytest.raises(ConfigError, match="did you mean 'lstm'"): make_policy('lstn', grammar)
    with pytest.raises(ConfigError, match='transformer, lstm, lstm_p, lstm_sa, enco, lstm_ps'): make_policy('gru', grammar)
    with pytest.raises(ConfigError, match='valid options'): make_policy('enco', grammar, hiden=8)
    with pytest.raises(ConfigError, match='divisible'): make_policy('enco', grammar, hidden=30, heads=4)


def test_prefix_with_special_tokens_is_refused(grammar, batch):
    toks, lens, masks = batch
    pol = build('lstm', grammar)
    bos = torch.cat([torch.full((len(lens), 1), grammar.bos_id), toks], 1)[:, :grammar.max_len]
    with pytest.raises(ValueError, match='formula tokens only'): pol(bos, (lens + 1).clamp(max=grammar.max_len), masks)


def test_rpn_tree_agrees_with_formula_stack_and_profile(grammar):
    toks, lens, _ = sample_prefixes(grammar, 48, seed=4)
    tr = rpn_tree(toks, lens, grammar.arity)
    compared = 0
    for b in range(len(lens)):
        stack = grammar.stack(toks[b, :lens[b]])
        assert int(tr.is_root[b].sum()) == len(stack)
        if sum(f.size for f in stack) != lens[b]: continue   # Mean(Delay(x, o), w) folds two tokens into one node
        depth, parent, slot = [], [], []
        for f in stack:
            p, off = profile(f, f.size), len(depth)
            depth += p['depth'].tolist()
            parent += [q + off if q >= 0 else -1 for q in p['parent'].tolist()]
            slot += [s if q >= 0 else -1 for s, q in zip(p['slot'].tolist(), p['parent'].tolist())]
        n = int(lens[b])
        assert tr.depth[b, :n].tolist() == depth and tr.parent[b, :n].tolist() == parent and tr.slot[b, :n].tolist() == slot
        compared += 1
    assert compared > len(lens) // 2


def test_sampling_prior(grammar):
    "The kind prior: an untrained policy writes short formulas too; 'uniform' leaves the network's logits as they are."
    from alphanb.ppo import sample_rollout
    with pytest.raises(ConfigError, match='uniform'): make_policy('lstm', grammar, prior='flat')
    share = {}
    for prior in ['uniform', 'kind']:
        torch.manual_seed(0)
        pol = make_policy('transformer', grammar, prior=prior, hidden=32, layers=1, heads=2)
        r = sample_rollout(pol, grammar, 400)
        share[prior] = float(((r.lengths - 1) <= 5).float().mean())
    assert share['kind'] > 0.3 and share['kind'] > 5 * share['uniform'], share
    # the prior is a buffer outside the state dict: checkpoints keep the same keys
    a = make_policy('enco', grammar, prior='kind', hidden=32).state_dict()
    b = make_policy('enco', grammar, prior='uniform', hidden=32).state_dict()
    assert set(a) == set(b)
