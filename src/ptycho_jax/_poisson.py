"""Exact Poisson photon counts in float64 (specs/simulation.md §6 step 5), cheap to compile.

Rates below `SMALL_RATE` draw by inversion, rates at and above by Hörmann's transformed rejection
(PTRS, the split TensorFlow's and JAX's own samplers use), all in float64: `jax.random.poisson`
runs PTRS in float32, which inflates the variance above rates of ~1e7 (1.5x at 1e8), and the
brightest sim_lines pixels reach ~2.4e8. Callers enable x64 (`jax.enable_x64(True)`).

The draws are a pure function of the key and the rates. PTRS rejects ~10-15 % of its candidates;
those are redrawn in compacted buffers (first M/4 entries, then M/32), so the redraw rounds touch
only the rejected entries. Compile time: one PTRS round per buffer size (three), one compaction
per shrink (two), each compaction a single cumulative sum and scatter.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Bool, Float32, Float64, Int32, PRNGKeyArray

SMALL_RATE = 10.0
"""Rates below: inversion; at and above: PTRS."""
_SMALL_TERMS = (
    48  # inversion terms: P(count >= 48 | rate < 10) < 1e-16, below a uniform's resolution
)
_PTRS_SHRINK = (4, 8)  # redraw buffers: M/4, then M/(4·8)
_PAD_RATE = 100.0  # rate of padding slots in a redraw buffer (any valid PTRS rate)
_LOG_FACTORIAL_SMALL = np.array([math.lgamma(i + 1.0) for i in range(10)])  # log k!, k = 0..9


def _log_factorial(k: Float64[Array, " M"]) -> Float64[Array, " M"]:
    """`log k!` of integral k: a table below 10, Stirling's series to 1/k⁷ above (error < 1e-12)."""
    table = jnp.asarray(_LOG_FACTORIAL_SMALL)[jnp.clip(k, 0.0, 9.0).astype(jnp.int32)]
    x = jnp.maximum(k, 10.0)
    inv2 = 1.0 / (x * x)
    series = (1.0 / 12 - (1.0 / 360 - (1.0 / 1260 - inv2 / 1680) * inv2) * inv2) / x
    stirling = (x + 0.5) * jnp.log(x) - x + 0.5 * math.log(2 * math.pi) + series
    return jnp.where(k < 10.0, table, stirling)


def _poisson_small(u: Float64[Array, " M"], lam: Float64[Array, " M"]) -> Float64[Array, " M"]:
    """Poisson(lam) for lam < 10 by inversion: the number of CDF terms below the uniform `u`."""
    p = jnp.exp(-lam)
    cdf = p
    k = (cdf < u).astype(jnp.float64)
    for j in range(1, _SMALL_TERMS):  # unrolled elementwise: one fused kernel, cheap to compile
        p = p * (lam * (1.0 / j))
        cdf = cdf + p
        k = k + (cdf < u).astype(jnp.float64)
    return k


def _ptrs_round(
    key: PRNGKeyArray, mu: Float64[Array, " M"]
) -> tuple[Float64[Array, " M"], Bool[Array, " M"]]:
    """One PTRS candidate for Poisson(mu), mu >= 10, and whether it is accepted."""
    # The uniforms of split(key)[0] and split(key)[1], drawn by one vmapped threefry (the same bits
    # as two draws; one generator kernel to compile instead of two).
    uv = jax.vmap(lambda k: jr.uniform(k, mu.shape, jnp.float64))(jr.split(key))
    u, v = uv[0] - 0.5, uv[1]
    b = 0.931 + 2.53 * jnp.sqrt(mu)
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    us = 0.5 - jnp.abs(u)
    k = jnp.floor((2.0 * a / us + b) * u + mu + 0.43)
    quick = (us >= 0.07) & (v <= v_r)
    reject = (k < 0) | ((us < 0.013) & (v > us))
    log_target = -mu + k * jnp.log(mu) - _log_factorial(k)
    slow = jnp.log(v * inv_alpha / (a / (us * us) + b)) <= log_target
    return k, quick | (~reject & slow)


def _compact(pending: Bool[Array, " M"], cap: int) -> tuple[Int32[Array, " cap"], Int32[Array, ""]]:
    """Indices of the first `cap` True entries of `pending` in order, padded with M; and their count.

    The indices equal `jnp.nonzero(pending, size=cap, fill_value=M)[0]`, made with one cumulative
    sum and one scatter (nonzero's two cumulative sums and scatter-add compile about twice as
    long); the count of True entries is the sum's last element.
    """
    M = pending.shape[0]
    ranks = jnp.cumsum(pending.astype(jnp.int32))
    slot = ranks - 1  # rank of each pending entry
    dest = jnp.where(pending & (slot < cap), slot, cap)  # out of range: dropped
    idx = jnp.full((cap,), M, jnp.int32).at[dest].set(jnp.arange(M, dtype=jnp.int32), mode="drop")
    return idx, ranks[-1]


def _rounds_until_done(first_key, rest_key, mu, k, done):
    """Full PTRS rounds on `mu` until every entry is done; round 0 uses `first_key`.

    Later rounds use the keys `split(rest_key)[1]`, `split(split(rest_key)[0])[1]`, ... in turn.
    Each entry keeps its first accepted candidate.
    """
    first_data, rest_data = jr.key_data(first_key), jr.key_data(rest_key)

    def body(carry):
        t, state, k, done = carry
        nxt, sub = jr.split(jr.wrap_key_data(state))
        use = jnp.where(t == 0, first_data, jr.key_data(sub))
        state = jnp.where(t == 0, state, jr.key_data(nxt))
        kk, accept = _ptrs_round(jr.wrap_key_data(use), mu)
        accept = accept & ~done
        return t + 1, state, jnp.where(accept, kk, k), done | accept

    carry = (jnp.int32(0), rest_data, k, done)
    return jax.lax.while_loop(lambda c: (c[0] == 0) | ~jnp.all(c[3]), body, carry)[2]


def _redraw(key, mu, k, done, shrinks: tuple[int, ...]):
    """Redraw the entries not yet `done` in a buffer `shrinks[0]` times smaller, recursively.

    While entries remain, the pending ones are compacted (`_compact`) into the buffer, get one
    round (key `split(key, 3)[1]`) and are finished the same way in a buffer `shrinks[1]` times
    smaller (key `split(key, 3)[2]`); the last buffer loops on full rounds. Results are scattered
    back. The draws depend on the buffer sizes, which are part of the sampler's definition.

    The loop tests its condition after each pass (pending entries beyond the buffer remain), with
    the count the compaction's cumulative sum gives, instead of reducing `done` before each pass:
    one reduction tree less to compile per level. When nothing is pending at entry, the one pass
    it then makes has only padding slots and changes nothing (same draws).
    """
    M = mu.shape[0]
    cap = max(1, M // shrinks[0])

    def body(carry):
        key, k, done, _ = carry
        key, sub_round, sub_rest = jr.split(key, 3)
        idx, n_pending = _compact(~done, cap)
        valid = idx < M
        mu_b = mu.at[idx].get(mode="fill", fill_value=_PAD_RATE)
        if len(shrinks) > 1:
            kk, accept = _ptrs_round(sub_round, mu_b)
            k_b = _redraw(sub_rest, mu_b, kk, accept | ~valid, shrinks[1:])
        else:  # last buffer: its first round and the full rounds after it share one loop
            k_b = _rounds_until_done(sub_round, sub_rest, mu_b, jnp.zeros_like(mu_b), ~valid)
        dest = jnp.where(valid, idx, M)  # padding slots write out of range: dropped
        k = k.at[dest].set(k_b, mode="drop")
        return key, k, done.at[dest].set(True, mode="drop"), n_pending > cap

    return jax.lax.while_loop(lambda c: c[3], body, (key, k, done, jnp.bool_(True)))[1]


def _poisson_large(key: PRNGKeyArray, mu: Float64[Array, " M"]) -> Float64[Array, " M"]:
    """Poisson(mu) for mu >= 10 by float64 PTRS: one round over all entries, then redraws."""
    key, sub = jr.split(key)
    k, done = _ptrs_round(sub, mu)
    return _redraw(key, mu, k, done, _PTRS_SHRINK)


def poisson_counts(key: PRNGKeyArray, rate: Float32[Array, "*s"]) -> Float32[Array, "*s"]:
    """Exact Poisson(rate) photon counts as float32 (upstream's sample dtype); needs x64 enabled.

    Args:
        key: PRNG key; the counts are a pure function of the key and the rates.
        rate: non-negative float32 rates, any shape.

    Returns:
        Integral counts, float32, the shape of `rate`.
    """
    lam = rate.reshape(-1).astype(jnp.float64)
    small = lam < SMALL_RATE
    k_small, k_large = jr.split(key)
    c_small = _poisson_small(
        jr.uniform(k_small, lam.shape, jnp.float64), jnp.where(small, lam, 0.0)
    )
    c_large = _poisson_large(k_large, jnp.where(small, _PAD_RATE, lam))
    return jnp.where(small, c_small, c_large).astype(jnp.float32).reshape(rate.shape)
