"Property tests of the formula language: round trips, canonical form, causality, action masks, repair, parse errors."
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from alphanb.core import AlphanbError, FormulaError
from alphanb.data import Panel
from alphanb.formula import Formula
from alphanb.grammar import BOS, PAD, SEP, Grammar, random_formula, random_formulas
from alphanb.evaluate import FormulaCache, _evaluate, evaluate_formula

GRAMMAR = Grammar(max_len=20)
seeds = st.integers(0, 2**32 - 1)
quick = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def formula(seed, depth=5, **kw): return random_formula(np.random.default_rng(seed), depth, GRAMMAR, **kw)


def make_panel(n_days=50, n_stocks=6, seed=0, bump_after=None):
    "A small random market; with `bump_after`, every field is changed on the days after that one."
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_days, n_stocks)), 0))
    close[:4, 0] = np.nan; close[20, 2] = np.nan
    raw = {'$open': close * (1 + rng.normal(0, .01, close.shape)), '$high': close * 1.02, '$low': close * 0.98,
           '$close': close, '$volume': rng.uniform(1e5, 1e6, close.shape), '$vwap': close * 1.001,
           '$amount': close * 1e6}
    if bump_after is not None:
        later = np.arange(n_days)[:, None] > bump_after
        raw = {k: np.where(later, v * rng.uniform(0.5, 2.0, v.shape) + 0.3, v) for k, v in raw.items()}
    member = np.ones((n_days, n_stocks), bool); member[:10, -1] = False
    return Panel.from_fields(raw, member=member)


PANEL = make_panel()


@quick
@given(seeds)
def test_text_round_trip(seed):
    f = formula(seed)
    text = str(f)
    g = Formula.parse(text)
    assert g == f and str(g) == text
    assert str(Formula.parse(str(g))) == text


@quick
@given(seeds)
def test_token_round_trip(seed):
    f = formula(seed)
    toks = GRAMMAR.to_tokens(f)
    assert GRAMMAR.from_tokens(toks) == f
    assert GRAMMAR.to_tokens(GRAMMAR.from_tokens(toks)) == toks
    assert len(toks) == sum(1 + (n.spec.arity if n.spec and n.spec.windowed and n.offset else 0) for n in f.nodes())


@quick
@given(seeds)
@pytest.mark.long(seconds=11)
def test_canonical_form_is_stable_and_keeps_values(seed):
    f = formula(seed, depth=4)
    c = f.canonical()
    assert c.canonical() == c and c.key == f.key == str(c)
    assert Formula.parse(f.key).key == f.key
    dt = torch.float64
    a = _evaluate(PANEL, f, None, {}, dt)      # the formula as written
    b = _evaluate(PANEL, c, None, {}, dt)      # its canonical form
    assert torch.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True), (str(f), str(c))


def test_equivalent_formulas_share_a_key():
    P = Formula.parse
    assert P('$open * ($close + 2 * 3)').key == P('($close + 6) * $open').key
    assert P('Mean(Delay($close, 2), 5)').key == P('Delay(Mean($close, 5), 2)').key == P('Delay(Delay(Mean($close, 5), 1), 1)').key
    assert P('Corr($open, $close, 10)').key == P('Corr($close, $open, 10)').key
    assert P('$close - $open').key != P('$open - $close').key


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds, st.integers(5, 44))
def test_no_formula_reads_the_future(seed, t):
    "Changing every field after day t leaves every value up to t unchanged."
    f = formula(seed, depth=4)
    a = evaluate_formula(PANEL, f)
    b = evaluate_formula(make_panel(bump_after=t), f)
    assert torch.equal(a[:t + 1].isnan(), b[:t + 1].isnan()), str(f)
    assert torch.allclose(a[:t + 1].nan_to_num(), b[:t + 1].nan_to_num(), rtol=1e-6, atol=1e-6), str(f)


@pytest.mark.parametrize('max_len', [1, 3, 8, 20])
def test_masked_sampling_always_gives_valid_formulas(max_len):
    "Thousands of episodes drawn at random from the masks: every one is a valid non-constant formula of <= max_len tokens."
    g = Grammar(max_len=max_len)
    gen = torch.Generator().manual_seed(max_len)
    batch = 4000
    state = g.initial_state(batch)
    seq = [torch.full((batch,), BOS)]
    for _ in range(max_len + 1):
        m = state.mask()
        assert m.any(1).all(), 'an episode has no allowed token'
        tok = torch.multinomial(m.float(), 1, generator=gen)[:, 0]
        state.step(tok)            # raises if a token the mask allowed were not allowed
        seq.append(tok)
    assert state.done.all()
    seq = torch.stack(seq, 1)      # [batch, max_len + 2]
    lengths = set()
    for row in seq.tolist():
        body = row[1:row.index(SEP)]
        assert 1 <= len(body) <= max_len
        f = g.from_tokens(body)
        assert f.op != 'Const' and f.leaves, str(f)
        assert not any(n.spec and n.spec.arity and all(a.is_const for a in n.args) for n in f.nodes()), str(f)
        assert g.to_tokens(f) == body
        lengths.add(len(body))
    assert max(lengths) == max_len or max_len == 1 or max_len > 15
    # the batched prefix form gives the same masks as the incremental state
    j = max_len // 2 + 1
    st2 = g.initial_state(batch)
    for k in range(j): st2.step(seq[:, k])
    assert torch.equal(g.action_masks(seq[:, :j]), st2.mask())


def _completable(g, prefix, depth_left):
    "Brute force: can `prefix` be completed into a valid formula with at most `depth_left` more tokens?"
    st = g.initial_state(1)
    for t in prefix: st.step(torch.tensor([t]), check=False)
    stack = g.stack(prefix)
    if len(stack) == 1 and not stack[0].is_const: return True
    if depth_left == 0: return False
    for t in range(3, g.n_tokens):
        try: s2 = g.stack(prefix + [t])
        except AlphanbError: continue
        tok = g.tokens[t]
        if tok.arity and all(a.is_const for a in s2[-1].args): continue
        if tok.kind == 2 and len(stack) and stack[-1].is_const: continue
        if _completable(g, prefix + [t], depth_left - 1): return True
    return False


def test_masks_allow_exactly_the_completable_tokens():
    "On a tiny vocabulary, a token is allowed iff the formula can still be completed (checked exhaustively)."
    g = Grammar(max_len=4, windows=(5,), offsets=(1,), constants=(0.5,), features=('$close', '$open'),
                ops=['Abs', 'Add', 'Gate', 'Mean', 'Corr'])
    def walk(prefix):
        m = g.action_masks(torch.tensor([prefix or [BOS]]))[0]
        for t in range(3, g.n_tokens):
            ok = len(prefix) < g.max_len and _completable_token(g, prefix, t)
            assert bool(m[t]) == ok, (g.decode(prefix), g.names[t], bool(m[t]))
            if m[t]: walk(prefix + [t])
    walk([])


def _completable_token(g, prefix, t):
    try: s2 = g.stack(prefix + [t])
    except AlphanbError: return False
    tok, s1 = g.tokens[t], g.stack(prefix)
    if tok.arity and all(a.is_const for a in s2[-1].args): return False
    if tok.kind == 2 and s1 and s1[-1].is_const: return False
    return _completable(g, prefix + [t], g.max_len - len(prefix) - 1)


@quick
@given(st.lists(st.integers(-2, GRAMMAR.n_tokens + 2), max_size=30))
def test_repair_gives_a_formula_that_runs(raw):
    try: toks = GRAMMAR.repair(raw)
    except FormulaError as e:
        assert 'cannot repair' in str(e); return
    f = GRAMMAR.from_tokens(toks)
    assert GRAMMAR.to_tokens(f) == toks                        # the logged formula is the one the tokens make
    kept = [t for t in raw if 0 <= t < GRAMMAR.n_tokens]
    assert all(t in kept for t in toks if GRAMMAR.names[t] != 'Add')


@quick
@given(st.text(alphabet='$()+-*/,. 0123456789abcdeMnRlsoxkDy_', max_size=40))
def test_bad_text_raises_formula_error_only(text):
    try: f = Formula.parse(text)
    except FormulaError as e:
        assert "'" in str(e)
        return
    assert str(Formula.parse(str(f))) == str(f)


@pytest.mark.parametrize('text, message', [
    ('Mean($close, 5', "expected ')', found the end at column 15"),
    ('Mean($close, 5))', "expected an operator or the end, found ')' at column 16"),
    ('Mean($close, 0)', 'window of Mean must be >= 1'),
    ('Mean($close, -3)', "whole number of days, got '-3'"),
    ('Mean($close, 2.5)', "whole number of days, got '2.5'"),
    ('Mean($close, $open)', "whole number of days, got '$open'"),
    ('Mean($close)', 'Mean takes 2 arguments (x, window), got 1'),
    ('Abs($close, $open)', 'Abs takes 1 argument (x), got 2'),
    ('Corr($close, 5)', 'Corr takes 3 arguments (x, y, window), got 2'),
    ('Kurt($close, 3)', 'window of Kurt must be >= 4'),
    ('Maen($close, 5)', "did you mean 'Mean'"),
    ('Retruns * 2', "did you mean 'Returns'"),
    ('$close(5)', "'$close' is a field, not an operator"),
    ('Mean + 1', "expected '(' after the operator 'Mean'"),
    ('$close +', 'expected a field, number or'),
    ('', 'empty formula'),
])
def test_parse_errors_say_where_and_what(text, message):
    with pytest.raises(FormulaError) as e: Formula.parse(text)
    assert message in str(e.value)


def test_cache_budget_and_reuse():
    cache = FormulaCache(max_bytes=10 * 50 * 6 * 8)
    fs = random_formulas(30, seed=5, max_depth=3)
    first = [evaluate_formula(PANEL, f, cache) for f in fs]
    assert cache.nbytes <= cache.max_bytes and len(cache) <= cache.max_bytes // (50 * 6 * 4)   # float32 at least
    again = [evaluate_formula(PANEL, f, cache) for f in fs]
    assert all(torch.allclose(a, b, equal_nan=True) for a, b in zip(first, again))
    other = make_panel(seed=1)
    assert not torch.allclose(evaluate_formula(other, fs[0], cache), first[0], equal_nan=True) or fs[0].leaves == []
