"""Mutation matrix: a correct backend broken in one stage must be caught, with the right class named.

Two families, both on a small synthetic scan (`ptycho_jax.crosscheck.synthetic.synthetic_raw`: 64 positions,
N = 32, gridsize 2) so every cross-check takes about a second:

* output mutations of the TF reference (a stage's returned arrays rewritten; the reference and
  the unbroken port share one TF backend instance, whose memo makes repeated stages free);
* code-path mutations of the JAX port (`MutatedJax`: one `ptycho_jax` function replaced while the
  port runs, so the error flows into every later stage as in a real port), against the unmutated
  JAX backend — the classes of what real ports get wrong (specs/crosscheck.md §6).
"""

import contextlib
import dataclasses
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import ptycho_jax as pj
from ptycho_jax import _coords, _mesh, _normalize, _patches, _pipeline
from ptycho_jax.crosscheck.backends import JaxBackend
from ptycho_jax.crosscheck.render import format_failure
from ptycho_jax.crosscheck.run import run_crosscheck
from ptycho_jax.crosscheck.synthetic import synthetic_raw

N = 32
PARAMS = pj.ChainParams(N=N, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6)


class Mutated:
    """Wraps a backend and rewrites one stage's outputs with `fn(outputs) -> outputs`."""

    def __init__(self, base, stage: str, fn, name: str):
        self.base, self.stage, self.fn, self.name = base, stage, fn, name

    def __getattr__(self, item):
        attr = getattr(self.base, item)
        if item != self.stage:
            return attr

        def broken(*args, **kwargs):
            return self.fn(
                {
                    k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                    for k, v in attr(*args, **kwargs).items()
                }
            )

        return broken


@pytest.fixture(scope="module")
def raw():
    return synthetic_raw()


@pytest.fixture(scope="module")
def tf_backend():
    pytest.importorskip("tensorflow")
    from ptycho_jax.crosscheck.backends import TFBackend

    return TFBackend()


def _set(key, f):
    def apply(out):
        out[key] = f(out[key])
        return out

    return apply


def _nan_at_one(a):
    a = a.copy()
    a.flat[12345 % a.size] = np.nan
    return a


def _perturb(a):
    rng = np.random.RandomState(1)
    return (a * (1 + 1e-4 * rng.uniform(-1, 1, a.shape))).astype(a.dtype)


MUTATIONS = {
    # name: (stage, mutation, failing array, expected class, words in the message)
    "X_full_doubled": (
        "normalize",
        _set("X_full", lambda a: a * np.float32(2)),
        "X_full",
        "scale_factor",
        ["2", "double-scaling"],
    ),
    "X_full_times_N_over_2": (
        "normalize",
        _set("X_full", lambda a: a * np.float32(N / 2)),
        "X_full",
        "scale_factor",
        ["N/2"],
    ),
    "channels_permuted": (
        "grouped",
        _set("diffraction", lambda a: a[..., ::-1]),
        "diffraction",
        "channel_permutation",
        ["[3, 2, 1, 0]"],
    ),
    "xy_swapped": (
        "grouped",
        _set("coords_nn", lambda a: a[:, :, ::-1, :]),
        "coords_nn",
        "xy_swap",
        ["x↔y"],
    ),
    "relative_sign_flipped": (
        "grouped",
        _set("coords_relative", lambda a: -a),
        "coords_relative",
        "sign_flip",
        ["relative offsets"],
    ),
    "mirrored_patches": (
        "patches",
        lambda o: dict(o, Y=o["Y_member"]),
        "Y",
        "mirrored_patches",
        ["per-member"],
    ),
    "patches_shifted": (
        "patches",
        _set("Y_member", lambda a: np.roll(a, 1, axis=1)),
        "Y_member",
        "pixel_shift",
        ["+1 rows"],
    ),
    "offsets_through_float32": (
        "grouped",
        _set("coords_offsets", lambda a: a.astype(np.float32).astype(np.float64)),
        "coords_offsets",
        "float_truncation",
        ["float32"],
    ),
    "nan_injected": ("normalize", _set("X_full", _nan_at_one), "X_full", "nan_introduced", ["NaN"]),
    "relative_perturbation_1e-4": (
        "normalize",
        _set("X_full", _perturb),
        "X_full",
        "unclassified",
        ["max ulp"],
    ),
    "uniform_1e-4_scale": (
        "container",
        _set("X", lambda a: a * np.float32(1 + 1e-4)),
        "X",
        "scale_factor",
        ["1+0.0001"],
    ),
    "scaler_double_scaled": (
        "scaler",
        _set("scaler_out", lambda a: a / np.float32(2)),
        "seed_era.scaler_out",
        "scale_factor",
        ["double-scaling"],
    ),
    "gain_through_float64": (
        "normalize",
        _set("normalize_gain", lambda g: np.float64(g)),
        "normalize_gain",
        "dtype_only",
        ["dtype only: port float64 vs reference float32", "values equal"],
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught_and_named(name, raw, tf_backend):
    stage, fn, array, kind, words = MUTATIONS[name]
    port = Mutated(tf_backend, stage, fn, f"tf+{name}")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    text = format_failure(res)
    assert not res.passed, text
    failed = [s.name for s in res.stages if not s.passed]
    assert failed == [stage], text
    deltas = {a.name: a for a in res.stage(stage).arrays}
    d = deltas[array]
    assert not d.passed
    assert d.diagnosis_class == kind, text
    for w in words:
        assert w in d.diagnosis, (w, d.diagnosis)
    assert d.diagnosis in text


def test_unbroken_tf_passes(raw, tf_backend):
    port = Mutated(tf_backend, "none", None, "tf-copy")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    assert res.passed, format_failure(res)
    assert [s.name for s in res.stages] == [
        "grouping",
        "grouped",
        "normalize",
        "patches",
        "intensity_scales",
        "scaler",
        "container",
    ]
    assert all(s.skipped is None for s in res.stages)


@pytest.mark.parametrize("variant", ["main", "seed"])
def test_unbroken_jax_passes_against_tf(raw, tf_backend, variant):
    params = pj.ChainParams(
        N=N, gridsize=2, K=4, n_groups=16, seed=3, nphotons=1e6, variant=variant
    )
    res = run_crosscheck(raw, port="jax", reference=tf_backend, params=params)
    assert res.passed, format_failure(res)


def test_wrong_variant_is_a_near_one_scale_factor(raw, tf_backend):
    """A port normalising with float32 sums where float64 is expected: X_full off by a factor ≈ 1."""

    def seed_normalize(out):
        from ptycho_jax.crosscheck import tf_reference as R

        diff = tf_backend.grouped(raw, PARAMS, nn_indices=None)["diffraction"]
        out["X_full"], out["normalize_gain"] = R.normalize_data(diff, N, variant="seed")
        return out

    port = Mutated(tf_backend, "normalize", seed_normalize, "tf-seed-normalize")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    d = {a.name: a for a in res.stage("normalize").arrays}["X_full"]
    if d.passed:  # the float32 and float64 sums round to the same gain for this data
        pytest.skip("seed and main gains coincide on this synthetic input")
    assert d.diagnosis_class == "scale_factor" and "near 1" in d.diagnosis


def test_scale_family_names_the_dataset_ratio(raw, tf_backend):
    scales = tf_backend.intensity_scales(raw, PARAMS)
    ratio = (
        scales["main_head_train_pinn_calculate_intensity_scale"]
        / scales["seed_era_dataset_derived_scale_normalized_X"]
    )
    assert not math.isclose(ratio, 1, rel_tol=1e-3)
    mutation = _set("seed_era_dataset_derived_scale_normalized_X", lambda s: s * ratio)
    port = Mutated(tf_backend, "intensity_scales", mutation, "tf-wrong-scale")
    res = run_crosscheck(raw, port=port, reference=tf_backend, params=PARAMS)
    d = {a.name: a for a in res.stage("intensity_scales").arrays}[
        "seed_era_dataset_derived_scale_normalized_X"
    ]
    assert d.diagnosis_class == "scale_factor"
    assert (
        "closed-form/dataset training scale" in d.diagnosis and "wrong-scale family" in d.diagnosis
    )


# =============================================================================================
# Mutations of the JAX port's own code path
#
# A `MutatedJax` backend runs the JAX port with one of its functions replaced (a formula changed
# inside a stage), so the error flows into every later stage as in a real port; the unmutated
# JAX backend is the reference. Each case names the class and the words (factor expression,
# estimated offset, dtypes) the diagnosis must carry for the arrays where the error shows.


def _replace_everywhere(original, replacement) -> list[tuple[object, str, object]]:
    """Point every `ptycho_jax` module attribute bound to `original` at `replacement`.

    Returns the (module, name, original) triples to restore. A target bound nowhere raises, so a
    renamed internal fails the test loudly instead of leaving the port unmutated.
    """
    undo = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "ptycho_jax" or mod_name.startswith("ptycho_jax.")):
            continue
        for attr, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, attr, replacement)
                undo.append((mod, attr, original))
    if not undo:
        raise AssertionError(f"mutation target {original!r} is bound nowhere in ptycho_jax")
    return undo


def _drop_traces():
    """Forget the compiled chain kernels that call mutation targets while tracing (coordinates,
    patch centres), so that they are traced anew with (and after) the mutation."""
    _pipeline._layout_on_mesh.clear_cache()


@contextlib.contextmanager
def _mutated(mutation):
    """Apply `mutation()`'s replacements; compiled kernels are dropped on entry and exit so that
    functions called while tracing (coordinates, patch centres) are traced anew, mutated."""
    undo = []
    _drop_traces()
    try:
        for target, replacement in mutation():
            if isinstance(target, tuple):  # (owner, attribute): a method
                owner, attr = target
                undo.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, replacement)
            else:
                undo += _replace_everywhere(target, replacement)
        yield
    finally:
        for owner, attr, value in reversed(undo):
            setattr(owner, attr, value)
        _drop_traces()


def _under_mutation(method):
    def run(self, *args, **kwargs):
        with _mutated(self.mutation):
            return method(self, *args, **kwargs)

    run.__name__ = method.__name__
    return run


class MutatedJax(JaxBackend):
    """The JAX backend with functions of `ptycho_jax` replaced while its stages run.

    `mutation()` returns `[(target, replacement), ...]`: a target is a function (rebound in every
    `ptycho_jax` module that imported it) or an `(owner, attribute)` pair.
    """

    def __init__(self, label: str, mutation):
        super().__init__()
        self.name = f"jax+{label}"
        self.mutation = mutation

    grouping = _under_mutation(JaxBackend.grouping)
    grouped = _under_mutation(JaxBackend.grouped)
    normalize = _under_mutation(JaxBackend.normalize)
    patches = _under_mutation(JaxBackend.patches)
    intensity_scales = _under_mutation(JaxBackend.intensity_scales)
    scaler = _under_mutation(JaxBackend.scaler)
    container = _under_mutation(JaxBackend.container)


@pytest.fixture(scope="module")
def raw_varied():
    """The synthetic scan with per-frame brightness from 0.4 to 1.6 (raw and grouped frame
    energies then differ clearly, as on real data)."""
    r = synthetic_raw()
    M = r.diff3d.shape[0]
    gain = np.linspace(0.4, 1.6, M).astype(np.float32)[np.random.RandomState(5).permutation(M)]
    return dataclasses.replace(
        r, diff3d=(np.asarray(r.diff3d) * gain[:, None, None]).astype(np.float32)
    )


@pytest.fixture(scope="module")
def jax_reference():
    return JaxBackend()


PARAMS_G3 = pj.ChainParams(N=N, gridsize=3, K=9, n_groups=8, seed=3, nphotons=1e6)


def _frame_energy(d) -> float:
    d = np.asarray(d, np.float64)
    return float(np.mean(np.sum(d * d, axis=(1, 2))))


def _gain_rule(rule):
    """The port's normalisation gain from its energy sums: `rule(total, count, N, orig)`."""

    def mutation(raw):
        orig = _normalize.gain_of

        def gain_of(variant, *, total, count, frame_sums, N, where):
            return rule(
                total,
                count,
                N,
                lambda **kw: orig(variant, frame_sums=frame_sums, where=where, **kw),
            )

        return [(orig, gain_of)]

    return mutation


# the energy summed over the C = 9 channels of a group instead of per frame: gain off by 1/√C
_m_energy_over_channels = _gain_rule(
    lambda total, count, N, orig: orig(total=total, count=count // PARAMS_G3.gridsize**2, N=N)
)
# the normalisation target N² where upstream has (N/2)²: the rule called with 2N
_m_target_N2 = _gain_rule(lambda total, count, N, orig: orig(total=total, count=count, N=2 * N))


def _m_torch_normalisation(raw):
    # ptycho_torch's rule: target N² over the mean energy of the raw frames (not the grouped ones)
    e_raw = _frame_energy(raw.diff3d)
    return _gain_rule(lambda total, count, N, orig: np.float32(math.sqrt(float(N) ** 2 / e_raw)))(
        raw
    )


def _m_inverted_scaler(raw):
    # IntensityScaler computes x·s (its inverse) where upstream has x/s
    return [((pj.IntensityScaler, "__call__"), lambda self, x: self.inverse(x))]


def _m_unrooted_nphotons(raw):
    # the closed-form training scale with nphotons where upstream has √nphotons
    return [
        (
            pj.closed_form_intensity_scale_f32,
            lambda N, nphotons: float(np.float32(nphotons) / np.float32(N / 2)),
        )
    ]


def _patches_at(offset: float):
    # the port's patch centres moved by `offset` pixels (a sampling convention)
    def mutation(raw):
        orig = _patches.patch_centres

        def patch_centres(*args, **kwargs):
            return orig(*args, **kwargs) + np.float32(offset)

        return [(orig, patch_centres)]

    return mutation


def _m_channel_first_group(raw):
    # the port's public `group` hands its patches channel-first (B, C, N, N), as torch ports do
    # (the chain's own container keeps them channel-last, so only the patches stage sees it)
    import equinox as eqx

    orig = pj.group

    def group(*args, **kwargs):
        g = orig(*args, **kwargs)
        return eqx.tree_at(lambda t: t.Y, g, jnp.moveaxis(g.Y, -1, 1))

    return [(orig, group)]


def _frames_gathered(transform):
    # the port's gather of grouped frames, changed by `transform(orig, placed, nn, **kw)`
    def mutation(raw):
        orig = _mesh.group_frames

        def group_frames(placed, nn, gain=None, **kw):
            D = transform(orig, placed, np.asarray(nn), **kw)
            # the one-pass CPU path scales what it gathers: the wrong frames reach X too
            return D if gain is None else (D, gain * D)

        return [(orig, group_frames)]

    return mutation


def _columns(cols):
    return lambda orig, placed, nn, **kw: orig(placed, nn[:, cols], **kw)


def _transposed(orig, placed, nn, **kw):
    return jnp.swapaxes(orig(placed, nn, **kw), 1, 2)


def _background(orig, placed, nn, **kw):
    # a constant background added to every gathered frame: neither a scale nor a shift
    d = orig(placed, nn, **kw)
    return d + jnp.float32(0.01) * jnp.max(d)


def _groups(transform):
    # the port's group selection, changed by `transform(nn)` (every later stage sees it)
    def mutation(raw):
        orig = pj.select_groups
        return [(orig, lambda *a, **k: transform(np.asarray(orig(*a, **k))))]

    return mutation


def _coordinates(transform):
    # the port's coordinate kernel, changed by `transform(orig, x, y, nn, sign)`
    def mutation(raw):
        orig = _coords.coordinates_kernel

        def coordinates_kernel(x, y, nn, *, sign):
            return transform(orig, x, y, nn, sign)

        return [(orig, coordinates_kernel)]

    return mutation


def _xy_swapped(orig, x, y, nn, sign):
    return orig(y, x, nn, sign=sign)


def _relative_unnegated(orig, x, y, nn, sign):
    # relative = member − centre where upstream has −(member − centre)
    return orig(x, y, nn, sign=-sign)


def _coords_through_float32(orig, x, y, nn, sign):
    # coordinates rounded through float32 (a float32 intermediate) and handed on as float64
    return tuple(a.astype(jnp.float32).astype(jnp.float64) for a in orig(x, y, nn, sign=sign))


def _m_scaler_in_float64(raw):
    # IntensityScaler computed and returned in float64 (x / exp(float64(log_scale))) where upstream
    # stays float32: a width change, the values agree within float32 precision
    def factor(self):
        return np.exp(np.float64(np.asarray(self.log_scale)))

    return [
        (
            (pj.IntensityScaler, "__call__"),
            lambda self, x: np.asarray(x, np.float64) / factor(self),
        ),
        ((pj.IntensityScaler, "inverse"), lambda self, x: factor(self) * np.asarray(x, np.float64)),
    ]


CODE_MUTATIONS = {
    # name: (mutation, params, [(stage, array, class, words in the diagnosis), ...])
    "inverted_scaler": (
        _m_inverted_scaler,
        PARAMS,
        [
            (
                "scaler",
                "main_head.scaler_out",
                "scale_factor",
                ["3906.25", "s²", "inverted scaler"],
            ),
            ("scaler", "main_head.scaler_inv_out", "scale_factor", ["s²", "inverted scaler"]),
            ("scaler", "seed_era.scaler_out", "scale_factor", ["s²", "s = 31.25"]),
        ],
    ),
    "energy_summed_over_channels": (
        _m_energy_over_channels,
        PARAMS_G3,
        [
            ("normalize", "X_full", "scale_factor", ["0.333333", "1/√C"]),
            ("normalize", "normalize_gain", "scale_factor", ["1/√C"]),
            ("container", "X", "scale_factor", ["1/√C"]),
            (
                "intensity_scales",
                "seed_era_dataset_derived_scale_normalized_X",
                "scale_factor",
                ["√C"],
            ),
            (
                "intensity_scales",
                "normalized_X_mean_sum_sq_over_HWC",
                "scale_factor",
                ["1/C", "sum vs mean over the C channels"],
            ),
        ],
    ),
    "target_N_squared": (
        _m_target_N2,
        PARAMS,
        [
            ("normalize", "X_full", "scale_factor", ["constant scale factor 2 ", "double-scaling"]),
            (
                "intensity_scales",
                "normalized_X_mean_sum_sq_over_HWC",
                "scale_factor",
                ["4 = N²/(N/2)²", "normalisation target"],
            ),
            (
                "intensity_scales",
                "seed_era_dataset_derived_scale_normalized_X",
                "scale_factor",
                ["1/2"],
            ),
        ],
    ),
    "torch_raw_energy_normalisation": (
        _m_torch_normalisation,
        PARAMS,
        [
            (
                "normalize",
                "X_full",
                "scale_factor",
                ["2·√(E_grouped/E_raw)", "raw vs grouped energy", "E_raw = ", "E_grouped = "],
            ),
            ("normalize", "normalize_gain", "scale_factor", ["2·√(E_grouped/E_raw)"]),
            ("container", "X", "scale_factor", ["2·√(E_grouped/E_raw)"]),
            (
                "intensity_scales",
                "seed_era_dataset_derived_scale_normalized_X",
                "scale_factor",
                ["1/2·√(E_raw/E_grouped)"],
            ),
            (
                "intensity_scales",
                "normalized_X_mean_sum_sq_over_HWC",
                "scale_factor",
                ["4·E_grouped/E_raw"],
            ),
        ],
    ),
    "nphotons_not_rooted": (
        _m_unrooted_nphotons,
        PARAMS,
        [
            (
                "intensity_scales",
                "main_head_train_pinn_calculate_intensity_scale",
                "scale_factor",
                ["1000", "√nphotons", "nphotons = 1e+06"],
            ),
        ],
    ),
    "half_pixel_patch_convention": (
        _patches_at(0.5),
        PARAMS,
        [
            ("patches", "Y", "subpixel_shift", ["-0.50 rows, -0.50 cols", "half-pixel"]),
            ("patches", "Y_member", "subpixel_shift", ["half-pixel"]),
            ("container", "Y_complex", "subpixel_shift", ["-0.50 rows, -0.50 cols"]),
            ("container", "Y_I", "unclassified", ["best-fit shift -0.4", "best-fit scale factor"]),
        ],
    ),
    "patch_centres_one_pixel_off": (
        _patches_at(-1.0),
        PARAMS,
        [
            ("patches", "Y", "pixel_shift", ["+1 rows, +1 cols"]),
            ("container", "Y_I", "pixel_shift", ["+1 rows, +1 cols"]),
        ],
    ),
    "int64_groups": (
        _groups(lambda nn: nn.astype(np.int64)),
        PARAMS,
        [
            (
                "grouping",
                "nn_indices",
                "dtype_only",
                ["dtype only: port int64 vs reference int32, values equal"],
            ),
            (
                "container",
                "nn_indices",
                "dtype_only",
                ["dtype only: port int64 vs reference int32, values equal"],
            ),
        ],
    ),
    "coordinates_through_float32": (
        _coordinates(_coords_through_float32),
        PARAMS,
        [
            ("grouped", "coords_nn", "float_truncation", ["rounded through float32"]),
            ("grouped", "coords_offsets", "float_truncation", ["rounded through float32"]),
            ("container", "global_offsets", "float_truncation", ["rounded through float32"]),
        ],
    ),
    "scaler_in_float64": (
        _m_scaler_in_float64,
        PARAMS,
        [
            (
                "scaler",
                "main_head.scaler_out",
                "dtype_only",
                ["port float64 vs reference float32", "float32 precision"],
            ),
            ("scaler", "seed_era.scaler_out", "dtype_only", ["port float64 vs reference float32"]),
            (
                "scaler",
                "main_head.scaler_inv_out",
                "dtype_only",
                ["port float64 vs reference float32"],
            ),
        ],
    ),
    "transposed_frames": (
        _frames_gathered(_transposed),
        PARAMS,
        [
            ("grouped", "diffraction", "layout", ["transposed frames"]),
            ("normalize", "X_full", "layout", ["transposed frames"]),
            ("container", "X", "layout", ["transposed frames"]),
        ],
    ),
    "channel_first_patches": (
        _m_channel_first_group,
        PARAMS,
        [
            ("patches", "Y", "layout", ["channel-first (B, C, N, N)", "[0, 3, 1, 2]"]),
            ("patches", "Y_member", "layout", ["channel-first"]),
        ],
    ),
    "xy_swapped_coordinates": (
        _coordinates(_xy_swapped),
        PARAMS,
        [
            ("grouped", "coords_nn", "xy_swap", ["x↔y"]),
            ("grouped", "coords_relative", "xy_swap", ["x↔y"]),
            ("container", "coords_nominal", "xy_swap", ["x↔y"]),
            ("container", "global_offsets", "xy_swap", ["x↔y"]),
        ],
    ),
    "relative_offsets_unnegated": (
        _coordinates(_relative_unnegated),
        PARAMS,
        [
            ("grouped", "coords_relative", "sign_flip", ["relative offsets"]),
            ("container", "local_offsets", "sign_flip", ["relative offsets"]),
            ("patches", "Y", "mirrored_patches", ["per-member"]),
            ("container", "Y_complex", "mirrored_patches", ["per-member"]),
        ],
    ),
    "frames_flipped": (
        _frames_gathered(lambda orig, placed, nn, **kw: orig(placed, nn, **kw)[:, ::-1]),
        PARAMS,
        [
            ("grouped", "diffraction", "layout", ["flipped vertically"]),
            ("container", "X", "layout", ["flipped vertically"]),
        ],
    ),
    "channels_reversed": (
        _frames_gathered(_columns([3, 2, 1, 0])),
        PARAMS,
        [
            ("grouped", "diffraction", "channel_permutation", ["[3, 2, 1, 0]"]),
            ("normalize", "X_full", "channel_permutation", ["[3, 2, 1, 0]"]),
            ("container", "X", "channel_permutation", ["[3, 2, 1, 0]"]),
        ],
    ),
    "channel_duplicated": (
        _frames_gathered(_columns([0, 1, 2, 2])),
        PARAMS,
        [
            (
                "grouped",
                "diffraction",
                "channels_duplicated",
                ["reference channel 2 appears as port channels [2, 3]", "[3] missing"],
            ),
        ],
    ),
    "last_member_dropped": (
        _groups(lambda nn: nn[:, :-1]),
        PARAMS,
        [
            (
                "grouped",
                "diffraction",
                "channels_dropped",
                ["3 of the reference's 4", "[3] missing"],
            ),
            ("grouped", "coords_nn", "channels_dropped", ["[3] missing"]),
            ("container", "nn_indices", "channels_dropped", ["[3] missing"]),
            ("container", "X", "shape_mismatch", ["(16, 32, 32, 3)"]),
        ],
    ),
    "background_in_gathered_frames": (
        _frames_gathered(_background),
        PARAMS,
        [
            (
                "normalize",
                "X_full",
                "unclassified",
                ["no class fits", "best-fit scale factor", "relative residual", "best-fit shift"],
            ),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CODE_MUTATIONS))
def test_port_code_mutation_is_named(name, raw_varied, jax_reference):
    mutation, params, expected = CODE_MUTATIONS[name]
    port = MutatedJax(name, lambda: mutation(raw_varied))
    res = run_crosscheck(raw_varied, port=port, reference=jax_reference, params=params)
    text = format_failure(res)
    assert not res.passed, text
    for stage, array, kind, words in expected:
        deltas = {a.name: a for a in res.stage(stage).arrays}
        assert array in deltas, (stage, array, text)
        d = deltas[array]
        assert not d.passed, (stage, array, text)
        assert d.diagnosis_class == kind, (stage, array, d.diagnosis)
        for w in words:
            assert w in d.diagnosis, (stage, array, w, d.diagnosis)
        assert "unclassified" not in d.diagnosis or kind == "unclassified", d.diagnosis


def test_mutations_restore_the_port(raw_varied, jax_reference):
    """After every mutation the plain JAX port equals the reference again (nothing leaks)."""
    res = run_crosscheck(raw_varied, port=JaxBackend(), reference=jax_reference, params=PARAMS)
    assert res.passed, format_failure(res)


def test_torch_factor_is_the_energy_ratio(raw_varied):
    """The torch-port factor named above is 2·√(E_grouped/E_raw), with E over different frames."""
    g = pj.group(raw_varied, dataclasses.replace(PARAMS, patch_positions="member"))
    d = np.asarray(g.diffraction, np.float64)
    e_raw = _frame_energy(raw_varied.diff3d)
    e_grouped = float(np.mean(np.sum(d * d, axis=(1, 2))))
    torch_gain = math.sqrt(float(N) ** 2 / e_raw)
    f = torch_gain / float(g.normalize_gain)
    assert f == pytest.approx(2 * math.sqrt(e_grouped / e_raw), rel=1e-6)
    assert abs(e_grouped / e_raw - 1) > 0.01  # the varied brightness makes the energies differ
