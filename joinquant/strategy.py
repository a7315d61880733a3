"""alphanb factor strategy for JoinQuant.

Upload alphanb_factors.json and alphanb_model.npz (written by `alphanb export-joinquant`) to the root of
the research environment, then paste this file as a new stock strategy. It recomputes alphanb's features
and formulas from daily bars with numpy and trades the top-k stocks of the combined factor.
"""
from jqdata import *
import io, json, math, warnings
import numpy as np
import pandas as pd

DTYPE = np.float32   # alphanb stores fields and factor values in float32 and computes formulas in float64 in between
LOOP_MAX_WINDOW = 64  # alphanb.ops: windows up to this long are added in loops (sums, Var/Std/Cov/Corr deviations)

def as_f32(x):
    "`x` as float64 holding float32 values (alphanb's storage precision); beyond float32's range it is ±inf."
    with np.errstate(over='ignore'): return np.asarray(x, dtype=np.float64).astype(DTYPE).astype(np.float64)

def _quiet(fn):
    "`fn` with numpy's warnings about empty windows and 0/0 silenced: they are NaN by design."
    def run(*a):
        with warnings.catch_warnings(), np.errstate(all='ignore'):
            warnings.simplefilter('ignore', RuntimeWarning)
            return fn(*a)
    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run

def np_delay(x, d, fill=np.nan):
    "Value of `x` (`[day, stock]`) `d` days earlier, `fill` in the first `d` rows (Qlib `Ref`)."
    if d == 0: return x
    out = np.full(x.shape, fill)
    if d < x.shape[0]: out[d:] = x[:-d]
    return out

def _lags(x, w):
    "The `w` days of each window as `[day, stock]` arrays, oldest first (NaN before the first day)."
    return (np_delay(x, w - 1 - j) for j in range(w))

def _windows(x, w):
    "[day, stock] -> [day, stock, w]: the `w` rows ending at each day, oldest first, NaN before the first day."
    return np.stack(list(_lags(x, w)), axis=-1)

def _zeroed(x):
    "`x` with 0 for NaN, and ±inf as the largest float, as `torch.nan_to_num` (alphanb's window sums)."
    return np.nan_to_num(x, nan=0.)

def _window_sum(x, w):
    "Sums of the last `w` rows (fewer at the start), as alphanb adds them: oldest first, or by blocked cumulative sums above 64 days."
    if w <= LOOP_MAX_WINDOW:
        out = np.zeros(x.shape)
        for j in range(w): out = out + np_delay(x, w - 1 - j, 0.)
        return out
    days = x.shape[0]                                     # cumulative sums restarted every max(w, 128) rows
    B = max(w, 128)
    nb = -(-days // B)
    xb = np.concatenate([x, np.zeros((nb * B - days,) + x.shape[1:])]).reshape((nb, B) + x.shape[1:])
    cs = np.cumsum(xb, 1)
    out = cs.copy()
    if w < B: out[:, w:] -= cs[:, :-w]
    out[1:, :w] += cs[:-1, -1:] - cs[:-1, B - w:]
    return out.reshape((nb * B,) + x.shape[1:])[:days]

def _moments(x, w, k=1):
    "Count of present values and the window sums of x**1 .. x**k (float64)."
    n = _window_sum((~np.isnan(x)).astype(np.float64), w)
    xz, sums = _zeroed(x), []
    p = xz
    for i in range(k):
        if i: p = p * xz
        sums.append(_window_sum(p, w))
    return n, sums

def _extreme(x, w, largest):
    "Rolling maximum (`largest`) or minimum of the last `w` days, a missing day counted as ∓inf."
    fill = -np.inf if largest else np.inf
    op = np.maximum if largest else np.minimum
    p, out = np.where(np.isnan(x), fill, x), None
    for j in range(w):
        v = np_delay(p, j, fill)
        out = v if out is None else op(out, v)
    return out

def _flat_to_zero(var, x, w, scale):
    "`var` set to exactly 0 on windows of equal values (only cells whose variance is within rounding of 0 are checked)."
    cols = np.flatnonzero((var <= 1e-10 * scale).any(0))
    if len(cols):
        xs = x[:, cols]
        var = var.copy(); var[:, cols] = np.where(_extreme(xs, w, True) == _extreme(xs, w, False), 0., var[:, cols])
    return var

def _window_var(x, w):
    "Count, mean and sum of squared deviations about it of each window's present values (alphanb's compiled loop)."
    n, s = np.zeros(x.shape), np.zeros(x.shape)
    lo, hi = np.full(x.shape, np.inf), np.full(x.shape, -np.inf)
    for v in _lags(x, w):
        ok = ~np.isnan(v)
        n = n + ok; s = s + np.where(ok, v, 0.)
        lo = np.where(ok, np.minimum(lo, v), lo); hi = np.where(ok, np.maximum(hi, v), hi)
    m = np.where(n > 0, s / np.where(n > 0, n, 1.), np.nan)
    moves = lo < hi                                       # a flat window's deviations are exactly 0
    m2 = np.zeros(x.shape)
    for v in _lags(x, w):
        d = v - m
        m2 = m2 + np.where(~np.isnan(v) & moves, d * d, 0.)
    return n, m, m2

@_quiet
def np_ts_sum(x, w):
    "Rolling sum of the last `w` days, NaN skipped (Qlib `Sum`)."
    n, (s,) = _moments(x, w)
    return np.where(n > 0, s, np.nan)

@_quiet
def np_ts_mean(x, w):
    "Rolling mean of the last `w` days, NaN skipped (Qlib `Mean`)."
    n, (s,) = _moments(x, w)
    return s / n

@_quiet
def np_ts_var(x, w):
    "Rolling sample variance (ddof 1), NaN skipped, exactly 0 over equal values (Qlib `Var`)."
    if w <= LOOP_MAX_WINDOW:
        n, _, m2 = _window_var(x, w)
        return np.where(n > 1, m2 / (n - 1), np.nan)
    n, (s, s2) = _moments(x, w, 2)
    var = _flat_to_zero(np.maximum((s2 - s * s / n) / (n - 1), 0.), x, w, s2 / n)
    return np.where(n > 1, var, np.nan)

@_quiet
def np_ts_std(x, w):
    "Rolling sample standard deviation (ddof 1), NaN skipped (Qlib `Std`)."
    return np.sqrt(np_ts_var(x, w))

def _central(x, w, k):
    "Count, and window sums of (x - window mean)**2 .. **k over present values, added oldest first."
    n, (s,) = _moments(x, w)
    m = s / n
    acc = [np.zeros(x.shape) for _ in range(k - 1)]
    for v in _lags(x, w):
        ok = ~np.isnan(v)
        d = v - m; d2 = d * d
        acc[0] = acc[0] + np.where(ok, d2, 0.)
        if k >= 3: acc[1] = acc[1] + np.where(ok, d2 * d, 0.)
        if k >= 4: acc[2] = acc[2] + np.where(ok, d2 * d2, 0.)
    return n, acc

@_quiet
def np_ts_skew(x, w):
    "Rolling sample skewness, pandas' bias-corrected estimator, NaN skipped; NaN below 3 values (Qlib `Skew`)."
    n, (c2, c3) = _central(x, w, 3)
    B, C = c2 / n, c3 / n
    return np.where((n >= 3) & (B > 1e-14), np.sqrt(n * (n - 1)) * C / ((n - 2) * B ** 1.5), np.nan)

@_quiet
def np_ts_kurt(x, w):
    "Rolling sample excess kurtosis, pandas' bias-corrected estimator, NaN skipped; NaN below 4 values (Qlib `Kurt`)."
    n, (c2, c3, c4) = _central(x, w, 4)
    B, D = c2 / n, c4 / n
    return np.where((n >= 4) & (B > 1e-14), ((n * n - 1) * D / (B * B) - 3 * (n - 1) ** 2) / ((n - 2) * (n - 3)), np.nan)

@_quiet
def np_ts_mad(x, w):
    "Rolling mean absolute deviation about the window mean, NaN skipped (Qlib `Mad`)."
    n, (s,) = _moments(x, w)
    m, acc = s / n, np.zeros(x.shape)
    for v in _lags(x, w): acc = acc + np.where(np.isnan(v), 0., np.abs(v - m))
    return acc / n

@_quiet
def np_ts_med(x, w):
    "Rolling median, the mean of the middle two for an even count, NaN skipped (Qlib `Med`)."
    srt = np.sort(_windows(x, w), -1)                                   # NaN sorted last
    n = (~np.isnan(srt)).sum(-1)
    lo, hi = np.maximum(n - 1, 0)[..., None] // 2, np.minimum(n // 2, w - 1)[..., None]
    mid = (np.take_along_axis(srt, lo, -1) + np.take_along_axis(srt, hi, -1))[..., 0] / 2
    return np.where(n > 0, mid, np.nan)

@_quiet
def np_ts_max(x, w):
    "Rolling maximum, NaN skipped (Qlib `Max(x, w)`)."
    m = _extreme(x, w, True)
    return np.where(m == -np.inf, np.nan, m)

@_quiet
def np_ts_min(x, w):
    "Rolling minimum, NaN skipped (Qlib `Min(x, w)`)."
    m = _extreme(x, w, False)
    return np.where(m == np.inf, np.nan, m)

@_quiet
def np_ts_rank(x, w):
    "Percentile of today's value among the last `w` days: average rank of ties / count, NaN skipped (Qlib `Rank(x, w)`)."
    n = _moments(x, w, 0)[0]
    sgn = np.zeros(x.shape)                  # sum over the window's earlier days of sign(x_past - x_today); NaN counts 0
    for o in range(1, w):
        d = np_delay(x, o) - x
        sgn = sgn + (d > 0) - (d < 0)
    return np.where(np.isnan(x), np.nan, (n + 1 - sgn) / 2 / n)

def np_ts_delta(x, w):
    "Change over `w` days, x_t - x_{t-w} (Qlib `Delta`)."
    return x - np_delay(x, w)

@_quiet
def np_ts_wma(x, w):
    "Linearly weighted moving average of the last `w` days (weight `w` today .. 1 oldest), NaN skipped."
    t = np.arange(x.shape[0], dtype=np.float64)[:, None]                # the weight of row i at t is i - (t - w)
    xz, v = _zeroed(x), (~np.isnan(x)).astype(np.float64)
    num = _window_sum(t * xz, w) - (t - w) * _window_sum(xz, w)
    den = _window_sum(t * v, w) - (t - w) * _window_sum(v, w)
    return np.where(den > 0, num / den, np.nan)

def _decayed_sum(x, w, a):
    "Sum over k < w of a**k * x[t-k], by doubling spans as alphanb adds them (zeros for missing days)."
    out, off, span, p = None, 0, 1, x
    while True:
        if w & span:
            part = np_delay(p, off, 0.) * a ** off
            out = part if out is None else out + part
            off += span
        if 2 * span > w: return out
        p = p + np_delay(p, span, 0.) * a ** span; span *= 2

@_quiet
def np_ts_ema(x, w):
    "Exponential moving average of the last `w` days, weights (1-2/(w+1))**k for k days back, NaN skipped."
    a = 1 - 2 / (w + 1)
    num, den = _decayed_sum(_zeroed(x), w, a), _decayed_sum((~np.isnan(x)).astype(np.float64), w, a)
    return np.where(den > 0, num / den, np.nan)

def _pair_window(x, y, w):
    "Over each window's days where both are present: count and the sums of products of deviations (xy, x², y²)."
    n, sx, sy = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
    lx, hx, ly, hy = np.full(x.shape, np.inf), np.full(x.shape, -np.inf), np.full(x.shape, np.inf), np.full(x.shape, -np.inf)
    for a, b in zip(_lags(x, w), _lags(y, w)):
        ok = ~(np.isnan(a) | np.isnan(b))
        n = n + ok; sx = sx + np.where(ok, a, 0.); sy = sy + np.where(ok, b, 0.)
        lx, hx = np.where(ok, np.minimum(lx, a), lx), np.where(ok, np.maximum(hx, a), hx)
        ly, hy = np.where(ok, np.minimum(ly, b), ly), np.where(ok, np.maximum(hy, b), hy)
    mx, my = np.where(n > 0, sx / np.where(n > 0, n, 1.), 0.), np.where(n > 0, sy / np.where(n > 0, n, 1.), 0.)
    cxy, cxx, cyy = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
    for a, b in zip(_lags(x, w), _lags(y, w)):
        ok = ~(np.isnan(a) | np.isnan(b))
        da = np.where(lx < hx, a - mx, 0.); db = np.where(ly < hy, b - my, 0.)   # a flat series deviates by exactly 0
        cxy = cxy + np.where(ok, da * db, 0.); cxx = cxx + np.where(ok, da * da, 0.); cyy = cyy + np.where(ok, db * db, 0.)
    return n, cxy, cxx, cyy

def _pair_sums(x, y, w):
    "Mask of days where both are present, then the count and the window sums of x, y, xy, x², y² over them."
    ok = ~(np.isnan(x) | np.isnan(y))
    xz, yz = np.where(ok, x, 0.), np.where(ok, y, 0.)
    return ok, [_window_sum(v, w) for v in (ok.astype(np.float64), xz, yz, xz * yz, xz * xz, yz * yz)]

@_quiet
def np_ts_cov(x, y, w):
    "Rolling sample covariance (ddof 1) over the days where both are present (Qlib `Cov`)."
    if w <= LOOP_MAX_WINDOW:
        n, cxy, _, _ = _pair_window(x, y, w)
        return np.where(n > 1, cxy / (n - 1), np.nan)
    _, (n, sx, sy, sxy, _, _) = _pair_sums(x, y, w)
    return np.where(n > 1, (sxy - sx * sy / n) / (n - 1), np.nan)

@_quiet
def np_ts_corr(x, y, w):
    "Rolling Pearson correlation over the days where both are present; NaN where either barely moves (Qlib `Corr`)."
    same = np.array_equal(np.isnan(x), np.isnan(y))      # else each series' std over its own days (Qlib's rule below)
    if w <= LOOP_MAX_WINDOW:
        n, cxy, cxx, cyy = _pair_window(x, y, w)
        sdx, sdy = (np.sqrt(cxx / (n - 1)), np.sqrt(cyy / (n - 1))) if same else (np_ts_std(x, w), np_ts_std(y, w))
        r, vx, vy = cxy / np.sqrt(cxx * cyy), cxx, cyy
    else:
        ok, (n, sx, sy, sxy, sxx, syy) = _pair_sums(x, y, w)
        vx = _flat_to_zero(np.maximum((sxx - sx * sx / n) / (n - 1), 0.), np.where(ok, x, np.nan), w, sxx / n)
        vy = _flat_to_zero(np.maximum((syy - sy * sy / n) / (n - 1), 0.), np.where(ok, y, np.nan), w, syy / n)
        r = (sxy - sx * sy / n) / (n - 1) / np.sqrt(vx * vy)
        sdx, sdy = (np.sqrt(vx), np.sqrt(vy)) if same else (np_ts_std(x, w), np_ts_std(y, w))
    still = (sdx <= 2e-5) | (sdy <= 2e-5)                 # Qlib: NaN where a rolling std is within 2e-5 of 0
    return np.where((n > 1) & (vx > 0) & (vy > 0) & ~still, r, np.nan)

@_quiet
def _time_fit(x, w):
    "Least squares of each window's present values on their day index: slope, R² and the residual of today's value."
    n, mi, my = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
    for j, v in enumerate(_lags(x, w)):                   # day index relative to today: -(w-1) .. 0
        ok = ~np.isnan(v)
        n = n + ok; mi = mi + np.where(ok, float(j - w + 1), 0.); my = my + np.where(ok, v, 0.)
    mi, my = mi / n, my / n
    sxy, sxx, syy = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
    for j, v in enumerate(_lags(x, w)):
        ok = ~np.isnan(v)
        di, dy = (j - w + 1) - mi, v - my
        sxy = sxy + np.where(ok, di * dy, 0.); sxx = sxx + np.where(ok, di * di, 0.); syy = syy + np.where(ok, dy * dy, 0.)
    b = np.where(n >= 2, sxy / sxx, np.nan)
    r2 = np.where((n >= 2) & (syy > 0), sxy * sxy / (sxx * syy), np.nan)
    return b, r2, np.where(n >= 2, x - my + b * mi, np.nan)

def np_ts_slope(x, w):
    "Slope of the least-squares line through the window's values against their day index (Qlib `Slope`)."
    return _time_fit(x, w)[0]

def np_ts_rsquare(x, w):
    "R² of that line, NaN where the window's standard deviation is <= 2e-5 (Qlib `Rsquare`)."
    return np.where(np_ts_std(x, w) <= 2e-5, np.nan, _time_fit(x, w)[1])

def np_ts_resi(x, w):
    "Today's value minus that line's value today (Qlib `Resi`)."
    return _time_fit(x, w)[2]

@_quiet
def np_ts_quantile(x, w, q):
    "Rolling `q`-quantile of the present values, linear between order statistics (Qlib `Quantile`)."
    srt = np.sort(_windows(x, w), -1)                                   # NaN sorted last
    n = (~np.isnan(srt)).sum(-1)
    pos = q * (n - 1)
    lo = np.maximum(pos, 0).astype(np.int64)
    frac = pos - lo
    vl = np.take_along_axis(srt, lo[..., None], -1)[..., 0]
    vh = np.take_along_axis(srt, np.minimum(lo + 1, w - 1)[..., None], -1)[..., 0]
    return np.where(n > 0, np.where(frac > 0, vl + (vh - vl) * frac, vl), np.nan)

def np_ts_count(x, w):
    "Present values in the last `w` days (Qlib `Count`)."
    return _moments(x, w, 0)[0]

def _arg_extreme(x, w, start, largest):
    "1-based position of the window's extreme (numpy's argmax: a missing day is the extreme), from each stock's first day."
    days = x.shape[0]
    out = np.full(x.shape, np.nan)
    win = _windows(x, w)                                                # [day, stock, w], oldest first
    row = np.arange(days)[:, None, None] - (w - 1) + np.arange(w)       # data row of each slot
    inside = row >= start[None, :, None]
    nan = np.isnan(win) & inside
    vals = np.where(inside & ~nan, win, -np.inf if largest else np.inf)
    ext = vals.argmax(-1) if largest else vals.argmin(-1)
    first_nan = np.where(nan, np.arange(w), w).min(-1)
    pos = np.where(first_nan < w, first_nan, ext) - (~inside).sum(-1) + 1
    return np.where((inside & ~nan).any(-1), pos.astype(np.float64), out)

def np_ts_argmax(x, w, start):
    "Position of the window's maximum, 1 = oldest day (Qlib `IdxMax`)."
    return _arg_extreme(x, w, start, True)

def np_ts_argmin(x, w, start):
    "Position of the window's minimum, 1 = oldest day (Qlib `IdxMin`)."
    return _arg_extreme(x, w, start, False)

@_quiet
def np_qlib_wma(x, w, start):
    "Qlib's `WMA`: the mean over the present days of (weight / sum of weights) × x, weights 1 .. m over the window's m rows."
    days = x.shape[0]
    t = np.arange(days)[:, None]
    lo = np.maximum(t - w + 1, start[None])                             # [day, stock] the window's first row
    m = (t - lo + 1).astype(np.float64)
    total, n = np.zeros(x.shape), np.zeros(x.shape)
    for j, v in enumerate(_lags(x, w)):
        i = t - (w - 1) + j                                             # the row of this lag
        ok = ~np.isnan(v) & (i >= lo)
        total = total + np.where(ok, (i - lo + 1) / (m * (m + 1) / 2) * np.where(ok, v, 0.), 0.); n = n + ok
    return np.where((n > 0) & (m > 0), total / n, np.nan)

def np_qlib_ema(x, w):
    "Qlib's `EMA`: pandas' `ewm(span=w).mean()` from the first row."
    a = 1 - 2 / (w + 1)
    out, avg, old = np.full(x.shape, np.nan), x[0].copy(), np.ones(x.shape[1])
    out[0] = avg
    for t in range(1, x.shape[0]):
        v = x[t]
        had, obs = ~np.isnan(avg), ~np.isnan(v)
        old = np.where(had, old * a, old)
        upd = had & obs
        with np.errstate(all='ignore'): avg = np.where(upd & (avg != v), (old * avg + v) / (old + 1.), avg)
        old = np.where(upd, old + 1., old)
        avg = np.where(~had & obs, v, avg)
        out[t] = avg
    return out

def ema_memory(w):
    "Days of history after which Qlib's EMA of span `w` keeps less than 1e-9 of its weight: how much the strategy loads."
    return int(math.ceil(math.log(1e-9) / math.log(1 - 2 / (w + 1)))) if w > 1 else 0

def _condition(fn):
    def k(x, y): return fn(x, y).astype(np.float64)
    k.__name__ = 'np_' + fn.__name__
    return k

np_gt, np_ge, np_lt, np_le, np_eq, np_ne = map(_condition, [np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal])

def _truth(x): return x != 0   # numpy's truth: NaN holds

def np_and(x, y):
    "1 where both conditions hold (Qlib `And`)."
    return (_truth(x) & _truth(y)).astype(np.float64)

def np_or(x, y):
    "1 where either condition holds (Qlib `Or`)."
    return (_truth(x) | _truth(y)).astype(np.float64)

def np_not(x):
    "1 where the condition does not hold (Qlib `Not`)."
    return (~_truth(x)).astype(np.float64)

def np_cs_rank(x):
    "Cross-sectional percentile rank per day: average rank of ties / count, in (0, 1], NaN excluded."
    days, stocks = x.shape
    ok = ~np.isnan(x)
    order = np.argsort(x, axis=1, kind='mergesort')                     # NaN sorted last
    srt = np.take_along_axis(x, order, 1)
    pos = np.broadcast_to(np.arange(stocks), x.shape)
    starts = np.ones(x.shape, dtype=bool); starts[:, 1:] = srt[:, 1:] != srt[:, :-1]   # first of a tie group
    ends = np.ones(x.shape, dtype=bool); ends[:, :-1] = starts[:, 1:]                   # last of a tie group
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, stocks)[:, ::-1], axis=1)[:, ::-1]
    rank = np.empty(x.shape)
    np.put_along_axis(rank, order, (first + last) / 2. + 1, 1)
    with np.errstate(all='ignore'): return np.where(ok, rank / ok.sum(1, keepdims=True), np.nan)

@_quiet
def np_cs_zscore(x):
    "Cross-sectional z-score per day, (x - mean) / std with ddof 1, NaN excluded."
    ok = ~np.isnan(x)
    n = ok.sum(1, keepdims=True).astype(np.float64)
    m = np.where(ok, x, 0.).sum(1, keepdims=True) / n
    sd = np.sqrt((np.where(ok, x - m, 0.) ** 2).sum(1, keepdims=True) / (n - 1))
    return np.where(ok & (n > 1) & (sd > 0), (x - m) / sd, np.nan)

def _finite(v): return np.where(np.isinf(v), np.nan, v)

@_quiet
def np_div(x, y):
    "x / y, NaN where `y` is 0 or the result is infinite."
    return _finite(np.where(y == 0, np.nan, x / y))

@_quiet
def np_log(x):
    "Natural log, NaN where `x` <= 0."
    return np.log(np.where(x > 0, x, np.nan))

@_quiet
def np_pow(x, y):
    "x ** y (Qlib `Power`), NaN where it is infinite (beyond float64's range) or complex."
    return _finite(np.power(x, y))

def np_gate(c, x, y):
    "`x` where `c` > 0, else `y` (also where `c` is NaN)."
    return np.where(c > 0, x, y)

@_quiet
def np_jump(x):
    "Size of a jump: the 20-day z-score above 3, as z - 3, else 0."
    return np.maximum(np_div(x - np_ts_mean(x, 20), np_ts_std(x, 20)) - 3, 0.)

def np_decay(x):
    "x + 0.8 x_{t-1} + 0.6 x_{t-2}."
    return x + 0.8 * np_delay(x, 1) + 0.6 * np_delay(x, 2)

def np_max3(x):
    "Maximum of the last 3 days."
    return np_ts_max(x, 3)

def np_tsum20(x):
    "Sum of the last 20 days."
    return np_ts_sum(x, 20)

@_quiet
def np_ts_zscore(x, w):
    "(x − rolling mean) / rolling standard deviation of the last `w` days; NaN where the deviation is 0."
    return np_div(x - np_ts_mean(x, w), np_ts_std(x, w))

NP_OPERATORS = {   # name -> (family, numpy kernel, days of history read beyond today; None: the window)
    'Abs': ('unary', np.abs, 0),
    'Log': ('unary', np_log, 0),
    'Sign': ('unary', np.sign, 0),
    'Neg': ('unary', np.negative, 0),
    'Jump': ('unary', np_jump, 19),
    'Decay': ('unary', np_decay, 2),
    'Max3': ('unary', np_max3, 2),
    'TSum20': ('unary', np_tsum20, 19),
    'Add': ('binary', np.add, 0),
    'Sub': ('binary', np.subtract, 0),
    'Mul': ('binary', np.multiply, 0),
    'Div': ('binary', np_div, 0),
    'Pow': ('binary', np_pow, 0),
    'Greater': ('binary', np.maximum, 0),
    'Less': ('binary', np.minimum, 0),
    'Gt': ('binary', np_gt, 0),
    'Ge': ('binary', np_ge, 0),
    'Lt': ('binary', np_lt, 0),
    'Le': ('binary', np_le, 0),
    'Eq': ('binary', np_eq, 0),
    'Ne': ('binary', np_ne, 0),
    'And': ('binary', np_and, 0),
    'Or': ('binary', np_or, 0),
    'Not': ('unary', np_not, 0),
    'Gate': ('ternary', np_gate, 0),
    'Mean': ('rolling', np_ts_mean, None),
    'Sum': ('rolling', np_ts_sum, None),
    'Std': ('rolling', np_ts_std, None),
    'Var': ('rolling', np_ts_var, None),
    'Skew': ('rolling', np_ts_skew, None),
    'Kurt': ('rolling', np_ts_kurt, None),
    'Med': ('rolling', np_ts_med, None),
    'Mad': ('rolling', np_ts_mad, None),
    'TsMax': ('rolling', np_ts_max, None),
    'TsMin': ('rolling', np_ts_min, None),
    'TsRank': ('rolling', np_ts_rank, None),
    'Delta': ('rolling', np_ts_delta, None),
    'WMA': ('rolling', np_ts_wma, None),
    'EMA': ('rolling', np_ts_ema, None),
    'Slope': ('rolling', np_ts_slope, None),
    'Rsquare': ('rolling', np_ts_rsquare, None),
    'Resi': ('rolling', np_ts_resi, None),
    'Quantile': ('rolling', np_ts_quantile, None),
    'IdxMax': ('rolling', np_ts_argmax, None),
    'IdxMin': ('rolling', np_ts_argmin, None),
    'Count': ('rolling', np_ts_count, None),
    'QlibWMA': ('rolling', np_qlib_wma, None),
    'QlibEMA': ('rolling', np_qlib_ema, None),
    'Corr': ('pair_rolling', np_ts_corr, None),
    'Cov': ('pair_rolling', np_ts_cov, None),
    'Rank': ('cross_section', np_cs_rank, 0),
    'ZScore': ('cross_section', np_cs_zscore, 0),
    'Delay': ('delay', np_delay, None),
    'TsZScore': ('rolling', np_ts_zscore, None),
}
SHIFTED = {'Std', 'Var', 'Corr', 'Cov', 'TsZScore'}   # inputs minus each stock's first value (fewer digits lost)
SPAN = {'Gt', 'Ge', 'Lt', 'Le', 'Eq', 'Ne', 'And', 'Or', 'Not', 'IdxMax', 'IdxMin', 'Count', 'QlibWMA'}   # kept within each stock's data
START = {'IdxMax', 'IdxMin', 'QlibWMA'}   # count from each stock's first day of data
FEATURE_LOOKBACK = {'Returns': 1, 'Liquidity': 59, 'Pressure': 0, 'FOMO': 19, 'Deviation': 19, 'LogVolume': 0}

def tree_lookback(tree):
    "Days before today that the value of formula `tree` today reads (0: today only)."
    op = tree['op']
    if op == 'Const': return 0
    if op not in NP_OPERATORS: return FEATURE_LOOKBACK.get(op, 0)
    fam, _, extra = NP_OPERATORS[op]
    inner = max(tree_lookback(a) for a in tree['args'])
    if fam == 'delay': return inner + tree['offset']
    if op == 'QlibEMA': return inner + tree['offset'] + ema_memory(tree['window'])   # its memory has no end
    if fam in ('rolling', 'pair_rolling'): return inner + tree['offset'] + tree['window'] - (0 if op == 'Delta' else 1)
    return inner + extra

def data_span(bars):
    "Each stock's first row with a close, and `[day, stock]` True from it to its last row with one (alphanb's `data_span`)."
    present = ~np.isnan(bars['$close'])
    return present.argmax(0), np.maximum.accumulate(present, 0) & np.maximum.accumulate(present[::-1], 0)[::-1]

def _shifted(x):
    "`x` minus each stock's first non-NaN value (0 when it has none), known from that day on."
    first = (~np.isnan(x)).argmax(0)
    return x - np.nan_to_num(x[first, np.arange(x.shape[1])], nan=0.)

def _node(tree, bars, member, cache):
    "Float64 value `[day, stock]` of one node of a formula tree, as alphanb computes it on the CPU."
    key = json.dumps(tree, sort_keys=True)
    if key in cache: return cache[key]
    op = tree['op']
    if op == 'Const': out = np.full(next(iter(bars.values())).shape, float(tree['value']))
    elif op not in NP_OPERATORS:
        if op not in bars: raise KeyError("no data for the field or feature '%s'" % op)
        out = as_f32(bars[op])                                        # alphanb's fields are float32
    else:
        fam, fn, _ = NP_OPERATORS[op]
        args = [_node(a, bars, member, cache) for a in tree['args']]
        if fam == 'cross_section' and member is not None: args = [np.where(member, args[0], np.nan)]
        if op in SHIFTED: args = [_shifted(a) for a in args]
        with np.errstate(all='ignore'):
            if fam in ('rolling', 'pair_rolling'):   # a lag of the inputs is a lag of the rolling value
                more = [tree['q']] if 'q' in tree else [data_span(bars)[0]] if op in START else []   # (START: never lagged)
                out = np_delay(fn(*(args + [tree['window']] + more)), tree.get('offset', 0))
            elif fam == 'delay': out = fn(args[0], tree['offset'])
            else: out = fn(*args)
        if op in SPAN: out = np.where(data_span(bars)[1], out, np.nan)
    cache[key] = out
    return out

def np_evaluate(tree, bars, member=None, cache=None):
    "Value `[day, stock]` of formula `tree` on `bars` as `evaluate_formula` gives it: float32, NaN beyond its range."
    out = as_f32(_node(tree, bars, member, {} if cache is None else cache))
    return np.where(np.isinf(out), np.nan, out)

@_quiet
def np_features(raw):
    "The seed features (name -> `[day, stock]`) from the raw fields '$open' .. '$amount' (and '$float_mktcap' if given)."
    # computed in float64 and rounded to float32 once at the end, as alphanb computes them
    f = as_f32
    o, h, l, c, v = (raw[k] for k in ['$open', '$high', '$low', '$close', '$volume'])
    liq = raw['$amount'] / raw['$float_mktcap'] if '$float_mktcap' in raw else v / np_ts_mean(v, 60)
    return {'Returns': f(np.log(c / np_delay(c, 1))),
            'Liquidity': f(liq),
            'Pressure': f(np.where(h <= l, 0., (c - o) / (h - l))),   # no range, no pressure; a missing bar stays NaN
            'FOMO': f((v - 2 * np_delay(v, 1) + np_delay(v, 2)) / np_ts_mean(v, 20)),
            'Deviation': f((c - np_ts_mean(c, 20)) / np_ts_std(c, 20)),
            'LogVolume': f(np.log(v + 1))}

FACTORS_FILE, MODEL_FILE = 'alphanb_factors.json', 'alphanb_model.npz'
RAW_BAR_FIELDS = ['open', 'close', 'high', 'low', 'volume', 'money', 'pre_close', 'paused']
RECORD = None   # a list the local stand-in sets to collect each rebalance's numbers; None on JoinQuant
SELLS = None    # a list the local stand-in sets to collect each sale as (day, code, reason); None on JoinQuant

def jq_code(symbol):
    "JoinQuant's code of a Qlib symbol: 'SH600000' -> '600000.XSHG', 'SZ000001' -> '000001.XSHE'."
    return symbol[2:] + ('.XSHG' if symbol[:2].upper() == 'SH' else '.XSHE')

def qlib_symbol(code):
    "The Qlib symbol of a JoinQuant code: '600000.XSHG' -> 'SH600000'."
    num, ex = code.split('.')
    return ('SH' if ex == 'XSHG' else 'SZ') + num

def _wide(df, fields, dates, codes):
    "[day, stock] float64 arrays of `fields` from a long get_price / get_valuation frame."
    day = 'time' if 'time' in df.columns else 'day'   # get_price names it 'time', get_valuation 'day'
    i = dates.get_indexer(pd.DatetimeIndex(df[day]).normalize())
    j = pd.Index(codes).get_indexer(df['code'])
    keep = (i >= 0) & (j >= 0)
    out = {}
    for f in fields:
        a = np.full((len(dates), len(codes)), np.nan)
        a[i[keep], j[keep]] = df[f].values.astype(np.float64)[keep]
        out[f] = a
    return out

def anchor_factors(codes, anchor, end_date, chunk=50):
    "JoinQuant's back-adjustment factor of each code on its first trading day on or after `anchor` (years of rows: asked in chunks)."
    out = {}
    for k in range(0, len(codes), chunk):
        df = get_price(codes[k:k + chunk], start_date=anchor, end_date=end_date, frequency='daily', fields=['factor', 'paused'],
                       fq='post', skip_paused=False, panel=False)
        df = df[(df['paused'] == 0) & df['factor'].notnull()].sort_values('time')
        out.update(df.groupby('code')['factor'].first().to_dict())
    return {c: float(out[c]) for c in codes if c in out}

def load_bars(codes, end_date, count, anchor, need_cap=False):
    "The dates, and Qlib-style fields (name -> `[day, stock]`) of `codes` over the `count` trading days up to `end_date`."
    df = get_price(codes, end_date=end_date, count=count, frequency='daily', fields=RAW_BAR_FIELDS, fq=None,
                   skip_paused=False, panel=False)
    fq = get_price(codes, end_date=end_date, count=count, frequency='daily', fields=['factor'], fq='post',
                   skip_paused=False, panel=False)
    dates = pd.DatetimeIndex(df['time']).normalize().unique().sort_values()
    raw = _wide(df, RAW_BAR_FIELDS, dates, codes)
    base = np.array([anchor.get(c, np.nan) for c in codes])
    with np.errstate(all='ignore'):
        fac = _wide(fq, ['factor'], dates, codes)['factor'] / base                 # [day, stock] 1 on the anchor day
        gone = (raw['paused'] != 0) | np.isnan(raw['close'])              # suspended: no bar in Qlib's data
        f = lambda a: as_f32(np.where(gone, np.nan, a))
        vol = raw['volume']
        bars = {'$open': f(raw['open'] * fac), '$high': f(raw['high'] * fac), '$low': f(raw['low'] * fac),
                '$close': f(raw['close'] * fac), '$volume': f(vol / fac), '$amount': f(raw['money']),
                '$vwap': f(np.where(vol > 0, raw['money'] / vol, np.nan) * fac), '$factor': f(fac),
                '$change': f(raw['close'] / raw['pre_close'] - 1)}
        if need_cap:
            cap = get_valuation(codes, end_date=end_date, count=count, fields=['market_cap', 'circulating_market_cap'])
            cap = _wide(cap, ['market_cap', 'circulating_market_cap'], dates, codes)      # JoinQuant reports 1e8 CNY
            bars['$mktcap'], bars['$float_mktcap'] = f(cap['market_cap'] * 1e8), f(cap['circulating_market_cap'] * 1e8)
    return dates, bars

def needed_rows(tree, rows=1, out=None):
    "Rows of history on which each cross-sectional node of `tree` is evaluated when `rows` of `tree` are needed."
    out = [] if out is None else out
    op = tree['op']
    if op in NP_OPERATORS:
        fam, _, extra = NP_OPERATORS[op]
        if fam == 'cross_section': out.append(rows)
        if fam == 'delay': inner = rows + tree['offset']
        elif fam in ('rolling', 'pair_rolling'): inner = rows + tree['offset'] + tree['window'] - (0 if op == 'Delta' else 1)
        else: inner = rows + extra
        for a in tree['args']: needed_rows(a, inner, out)
    return out

def member_mask(dates, codes, members):
    "[day, stock] bool: index membership of `codes` on `dates`, from `members` (date -> set of codes)."
    return np.array([[c in members.get(d, ()) for c in codes] for d in dates], dtype=bool)

def zscore_day(x, valid):
    "Cross-sectional z-score (ddof 0) of one day's values `[stock]` over the `valid` finite ones, summed in stock order as `alphanb.pool` does."
    m = np.isfinite(x) & valid
    n = int(m.sum())
    out = np.full(x.shape, np.nan)
    if n == 0: return out
    x0 = np.where(m, x, 0.)
    mu = np.cumsum(x0)[-1] / n                          # cumsum: one value after the other, as alphanb's loop adds them
    d = np.where(m, x - mu, 0.)
    sd = math.sqrt(np.cumsum(d * d)[-1] / n)
    if not sd > 1e-10 * math.sqrt(np.cumsum(x0 * x0)[-1] / n): return out   # a constant day has no z-score
    with np.errstate(all='ignore'): return as_f32(np.where(m, d / sd, np.nan))

def combine_signal(values, weights, valid):
    "The traded signal `[stock]`: the sum of weight × z-score of each factor, a missing z-score counted as 0 (as alphanb.pool)."
    zs = [zscore_day(v, valid) for v in values]
    fin = np.any([np.isfinite(z) for z in zs], axis=0)
    total = np.zeros(valid.shape, dtype=DTYPE)
    for z, w in zip(zs, weights): total = total + DTYPE(w) * np.where(np.isfinite(z), z, 0.).astype(DTYPE)
    return np.where(fin & valid, total.astype(np.float64), np.nan)

def top_k(signal, k):
    "Indices of the `k` largest finite values of `signal`, best first (ties by position)."
    idx = np.flatnonzero(~np.isnan(signal))
    return idx[np.argsort(-signal[idx], kind='stable')][:k]

def load_export():
    "The exported factors, trees, weights and trading rules, read from the research environment's root."
    spec = json.loads(read_file(FACTORS_FILE))
    with np.load(io.BytesIO(read_file(MODEL_FILE)), allow_pickle=False) as z:
        spec['weights'] = [float(w) for w in z['weights']]
        spec['history'] = int(z['history'])
    return spec

def stamp_tax_on(cfg, day):
    "The stamp-tax rate in force on `day` (the rate changed on 2023-08-28)."
    rate = cfg['stamp_tax']
    for first, r in sorted(cfg['stamp_tax_changes']):
        if pd.Timestamp(day) >= pd.Timestamp(first): rate = r
    return rate

def _set_costs(cfg, tax):
    set_order_cost(OrderCost(open_tax=0, close_tax=tax, open_commission=cfg['commission'], close_commission=cfg['commission'],
                             close_today_commission=0, min_commission=cfg['min_commission']), type='stock')

def initialize(context):
    "JoinQuant's start-up hook: the exported files, benchmark, real prices, costs, and the daily handler."
    g.export = load_export()
    cfg = g.export['config']
    set_benchmark(cfg['benchmark'])
    set_option('use_real_price', True)          # orders at the day's real price; signals use re-adjusted bars
    set_option('avoid_future_data', True)
    g.tax = stamp_tax_on(cfg, context.current_dt)
    _set_costs(cfg, g.tax)
    set_slippage(PriceRelatedSlippage(2 * cfg['slippage']), type='stock')   # JoinQuant charges half of it on each side
    g.day, g.period, g.anchor, g.members = 0, None, {}, {}
    g.entry, g.raw_bought, g.adj_shares, g.bought_on, g.pending, g.shares = {}, {}, {}, {}, {}, {}
    run_daily(trade, time='open' if cfg['trade_price'] == 'open' else 'close')

def _is_rebalance_day(cfg, day):
    "Every `rebalance` trading days from the first, or the first trading day of each week ('W') or month ('M')."
    r = cfg['rebalance']
    if r in ('W', 'M'):
        key = pd.Timestamp(day).to_period(r)
        yes, g.period = key != g.period, key
        return yes
    yes = g.day % int(r) == 0
    g.day += 1
    return yes

def _marks(codes, prev):
    "Raw close (JoinQuant fills suspended days with the last one) and back-adjustment factor of `codes` at the previous close."
    if not codes: return {}, {}
    df = get_price(codes, end_date=prev, count=1, frequency='daily', fields=['close', 'factor'], fq='post',
                   skip_paused=False, panel=False)
    close = dict(zip(df['code'], df['close'] / df['factor']))
    return close, dict(zip(df['code'], df['factor']))

def _deal_price(cfg, quote):
    return quote.day_open if cfg['trade_price'] == 'open' else quote.last_price

def fen(price):
    "`price` in whole fen (0.01 CNY): limit tests compare prices on the exchange's grid, as alphanb's backtester does."
    return np.rint(np.float64(price) * 100)

def _sellable(cfg, c, quote, today):
    "Held before today (T+1), trading, and not at the limit-down price."
    px = _deal_price(cfg, quote)
    return (g.bought_on.get(c) != today and not quote.paused and px == px and px > 0
            and not fen(px) <= fen(quote.low_limit))

def _buyable(cfg, quote):
    "Trading, and not at the limit-up price."
    px = _deal_price(cfg, quote)
    return not quote.paused and px == px and px > 0 and not fen(px) >= fen(quote.high_limit)

def _sell(c, reason, today, log_rows):
    o = order_target_value(c, 0)
    if o is None: return False
    for d in (g.entry, g.raw_bought, g.adj_shares, g.bought_on): d.pop(c, None)
    g.pending.pop(c, None)
    log_rows.append((c, reason))
    if SELLS is not None: SELLS.append((str(today.date()), c, reason))
    return True

def buy_sizes(cfg, prices, budget, cash):
    "Raw shares to buy at raw `prices` `[stock]` with `budget` CNY each and `cash` in all, as alphanb's backtester sizes them."
    unit = max(int(cfg['lot'] or 1), 1)
    px = np.asarray(prices, dtype=np.float64) * (1 + cfg['slippage'])
    fee = lambda amt: np.where(amt > 0, np.maximum(amt * cfg['commission'], cfg['min_commission']), 0.)
    n = np.floor(budget / px / unit + 1e-9) * unit                      # whole lots within the budget; fees on top
    n[n * px < max(cfg['min_trade'], 1e-9)] = 0                          # below the minimum trade: skipped
    amount = n * px; cost = fee(amount)
    short = np.cumsum(amount + cost) > cash + 1e-6
    if short.any():                                                     # cash runs out: the last buys shrink
        left = cash - float((amount + cost)[~short].sum())
        for i in np.flatnonzero(short):
            fit = np.floor(max(left - cfg['min_commission'], 0) / (px[i] * (1 + cfg['commission'])) / unit) * unit
            n[i] = fit if fit * px[i] >= max(cfg['min_trade'], 1e-9) else 0
            amount[i] = n[i] * px[i]; cost[i] = fee(amount[i])
            left -= amount[i] + cost[i]
    return n, amount

def _members(cfg, day):
    "Index members on `day` (cached: each day's constituents are fetched once over the whole backtest)."
    key = pd.Timestamp(day).normalize()
    if key not in g.members: g.members[key] = set(get_index_stocks(cfg['index'], date=key.strftime('%Y-%m-%d')))
    return g.members[key]

def factor_values(context, held):
    "Each factor's values, the combined signal and the valid mask `[stock]` at the previous close, and the stocks."
    spec, cfg = g.export, g.export['config']
    prev = context.previous_date
    trees = [f['tree'] for f in spec['factors']]
    dates = pd.DatetimeIndex(get_trade_days(end_date=prev, count=spec['history'])).normalize()
    cs_rows = max([r for t in trees for r in needed_rows(t)] + [1])     # days on which cross-sections are read
    codes = set(_members(cfg, prev)) | set(held)
    for d in dates[-cs_rows:]: codes |= _members(cfg, d)
    codes = sorted(codes, key=qlib_symbol)                              # alphanb's stock order, so ties rank alike
    new = [c for c in codes if c not in g.anchor]
    if new: g.anchor.update(anchor_factors(new, cfg['adjust_anchor'], prev))
    leaves = {n for f in spec['factors'] for n in f['leaves']}
    need_cap = bool(leaves & {'$mktcap', '$float_mktcap'}) or (cfg['has_float_mktcap'] and 'Liquidity' in leaves)
    dates, bars = load_bars(codes, prev, spec['history'], g.anchor, need_cap)
    raw = dict(bars) if cfg['has_float_mktcap'] else {k: v for k, v in bars.items() if k != '$float_mktcap'}
    bars.update(np_features(raw))
    member = member_mask(dates, codes, g.members)
    cache = {}
    values = [np_evaluate(t, bars, member, cache)[-1] for t in trees]   # [factor][stock] at the previous close
    valid = member[-1] & (bars['$volume'][-1] > 0)                       # members that traded at the previous close
    return codes, values, combine_signal(values, spec['weights'], valid), valid

def trade(context):
    "The daily handler: exits decided at the previous close, then on rebalance days sell what left the top-k and buy what entered."
    _trade(context)
    # the shares held tonight: tomorrow's holdings are valued at tonight's close in these, not in shares split overnight
    g.shares = {c: p.total_amount for c, p in context.portfolio.positions.items() if p.total_amount > 0}

def _trade(context):
    cfg = g.export['config']
    pf = context.portfolio
    today, prev = pd.Timestamp(context.current_dt).normalize(), context.previous_date
    tax = stamp_tax_on(cfg, today)
    if tax != g.tax: _set_costs(cfg, tax); g.tax = tax
    held = sorted([c for c, p in pf.positions.items() if p.total_amount > 0], key=qlib_symbol)
    close, post = _marks(held, prev)
    for c in held:                                   # yesterday's buys get their adjusted share count
        if c not in g.adj_shares and c in g.raw_bought: g.adj_shares[c] = g.raw_bought[c] / post[c]
    sl, tp = cfg['stop_loss'], cfg['take_profit']
    for c in held:                                   # stop loss / take profit on the previous close, total return since entry
        if c not in g.entry or c in g.pending: continue   # a pending exit keeps the reason it was decided with
        ret = g.adj_shares[c] * close[c] * post[c] / g.entry[c] - 1
        if sl is not None and ret <= -sl: g.pending[c] = 'stop_loss'
        if tp is not None and ret >= tp: g.pending[c] = 'take_profit'
    quotes = get_current_data()
    sold, log_rows = set(), []
    for c in sorted(g.pending, key=qlib_symbol):
        if c in held and _sellable(cfg, c, quotes[c], today) and _sell(c, g.pending[c], today, log_rows): sold.add(c)
    if not _is_rebalance_day(cfg, today): return
    codes, values, signal, valid = factor_values(context, held)
    target = [codes[i] for i in top_k(signal, cfg['topk'])]
    for c in held:
        if c not in target and c not in sold and _sellable(cfg, c, quotes[c], today) and _sell(c, 'rebalance', today, log_rows):
            sold.add(c)
    holding = {c for c, p in pf.positions.items() if p.total_amount > 0}
    new = [c for c in target if c not in holding and c not in sold]
    buys = {}
    if new:
        # a blocked buy (limit up, suspended) keeps its share of cash until the next rebalance
        nav_before = pf.available_cash + sum(g.shares.get(c, pf.positions[c].total_amount) * close[c] for c in holding)
        budget = min(pf.available_cash / len(new), cfg['max_weight'] * nav_before)
        ok = [c for c in new if _buyable(cfg, quotes[c])]
        n, amount = buy_sizes(cfg, [_deal_price(cfg, quotes[c]) for c in ok], budget, pf.available_cash)
        for c, k, amt in zip(ok, n, amount):
            if k <= 0: continue
            if order(c, int(k)) is None: continue
            g.entry[c], g.raw_bought[c], g.bought_on[c] = float(amt), float(k), today
            buys[c] = int(k)
    if RECORD is not None:
        RECORD.append({'date': str(pd.Timestamp(prev).date()), 'codes': codes, 'values': values, 'signal': signal,
                       'valid': valid, 'target': target, 'sold': log_rows, 'buys': buys})
