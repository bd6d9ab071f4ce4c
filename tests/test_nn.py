"""Tests of the score networks: FNO, its spectral layer and time embedding, and the UNet."""

import io
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fsd
from numpyro_fsdiff.nn import FNO, LocalConv, SpectralConv2d, TimeEmbedding, UNet, kept_modes
from numpyro_fsdiff.nn._fno import check_inputs
from numpyro_fsdiff.nn._spectral import spectral_conv_reference


def small_fno(key=0, **kwargs):
    config = dict(modes=5, width=6, depth=2, embedding_dim=8, projection_dim=8) | kwargs
    return FNO(**config, key=jax.random.key(key))


def small_unet(key=0):
    return UNet(channels=(4, 8), embedding_dim=8, key=jax.random.key(key))


def band_limited(key, shape, batch=()):
    """A random field on `shape` with no Nyquist modes (|k_i| < n_i / 2)."""
    u = jax.random.normal(key, batch + shape)
    k1, k2 = fsd.Grid(shape).wavenumbers()
    mask = (2 * jnp.abs(k1) < shape[0]) & (2 * jnp.abs(k2) < shape[1])
    return jnp.fft.ifft2(jnp.fft.fft2(u) * mask).real


@eqx.filter_jit
def call(model, *args):
    """`model(*args)` under jit (eager op-by-op dispatch is slow)."""
    return model(*args)


@eqx.filter_jit
def call_batched(model, xs, ts):
    return model.batched(xs, ts), jax.vmap(model)(xs, ts)


@eqx.filter_jit
def all_paths(model, xs, ts):
    """One example, the batch through `batched` and `vmap`, and a batch of one via vmap."""
    single = model(xs[0], ts[0])
    one = jax.vmap(model)(xs[:1], ts[:1])[0]
    return single, model.batched(xs, ts), jax.vmap(model)(xs, ts), one


def parameter_count(model):
    leaves = jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    return sum(int(np.prod(x.shape)) for x in leaves if hasattr(x, "dtype"))


@pytest.mark.parametrize("shape", [(14, 14), (28, 28), (13, 17)])
def test_fno_shapes_finite_and_batch_paths_agree(shape, key):
    model = small_fno()
    xs = jax.random.normal(key, (3,) + shape)
    ts = jnp.array([0.01, 0.5, 1.0])
    single, batched, vmapped, one = all_paths(model, xs, ts)
    assert single.shape == one.shape == shape
    assert vmapped.shape == batched.shape == (3,) + shape
    assert bool(jnp.all(jnp.isfinite(batched)))
    np.testing.assert_allclose(vmapped, batched, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vmapped[0], single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, single, rtol=1e-5, atol=1e-5)  # batch size one
    # The output is not a trivial function of the input.
    assert float(jnp.std(single)) > 1e-3


def test_one_set_of_weights_runs_on_many_grids(key):
    model = small_fno(modes=14, depth=1)
    for shape in [(14, 14), (28, 28), (64, 64), (128, 128), (15, 9), (2, 3)]:
        out = call(model, jax.random.normal(key, shape), 0.3)
        assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))


def test_kept_modes_are_clipped_below_nyquist():
    assert kept_modes(14, 32, 32) == (14, 14, 14)  # 28 x 14 = 392 modes at the reference
    assert kept_modes(14, 14, 14) == (7, 6, 7)  # |k| <= 6 on a 14-grid
    assert kept_modes(14, 13, 17) == (7, 6, 9)
    assert kept_modes(3, 2, 2) == (1, 0, 1)  # only the constant mode


@pytest.mark.parametrize("shape", [(32, 32), (13, 17), (2, 5)])
def test_spectral_conv_matches_complex_einsum_reference(shape, key, x64):
    layer = SpectralConv2d(3, 4, 14, key=jax.random.key(1))
    layer = jax.tree.map(lambda a: a.astype(jnp.float64), layer)
    batch = jax.random.normal(key, (2, 3) + shape, dtype=jnp.float64)

    @eqx.filter_jit
    def evaluate(layer, batch):
        grid_major = layer.apply_grid_major(jnp.transpose(batch, (3, 2, 0, 1)))
        return (
            layer(batch[0]),
            layer.batched(batch),
            jnp.transpose(grid_major, (2, 3, 1, 0)),
            jax.vmap(spectral_conv_reference, (None, 0))(layer, batch),
        )

    single, batched, grid_major, slow = evaluate(layer, batch)
    assert float(jnp.max(jnp.abs(slow))) > 0.1
    np.testing.assert_allclose(single, slow[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(batched, slow, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grid_major, slow, rtol=1e-12, atol=1e-12)


def test_spectral_conv_acts_on_single_frequencies(key, x64):
    """A plane wave stays on its own wavenumber; waves outside the kept band are removed."""
    layer = SpectralConv2d(1, 2, 4, key=key)
    layer = jax.tree.map(lambda a: a.astype(jnp.float64), layer)
    x1, x2 = fsd.Grid((14, 14)).coords()
    wave = jnp.cos(2 * jnp.pi * (3 * x1 - 2 * x2))[None]
    out = call(layer, wave)
    spectrum = jnp.abs(jnp.fft.fft2(out))
    k1, k2 = fsd.Grid((14, 14)).wavenumbers()
    support = ((k1 == 3) & (k2 == -2)) | ((k1 == -3) & (k2 == 2))
    assert float(jnp.min(jnp.where(support, spectrum, jnp.inf))) > 1e-3
    assert float(jnp.max(jnp.where(support, 0.0, spectrum))) < 1e-10
    for outside in [jnp.cos(2 * jnp.pi * 5 * x1), jnp.cos(2 * jnp.pi * 7 * x2)]:
        # k = 5 is beyond modes = 4; k = 7 is the Nyquist mode of the 14-grid.
        np.testing.assert_allclose(call(layer, outside[None]), 0.0, atol=1e-12)


def test_spectral_conv_commutes_with_shifts(key):
    layer = SpectralConv2d(2, 3, 5, key=key)
    v = jax.random.normal(jax.random.key(3), (2, 13, 16))
    shifted = jnp.roll(v, (4, -3), axis=(1, 2))
    np.testing.assert_allclose(
        call(layer, shifted), jnp.roll(call(layer, v), (4, -3), axis=(1, 2)), atol=1e-5
    )


def test_spectral_conv_is_exactly_resolution_consistent(key, x64):
    """On a band-limited input the fine-grid output, resampled to the coarse grid, equals the
    coarse-grid output (up to rounding)."""
    layer = SpectralConv2d(2, 3, 8, key=jax.random.key(5))
    layer = jax.tree.map(lambda a: a.astype(jnp.float64), layer)
    coarse_shape, fine_shape = (16, 12), (32, 36)
    coarse = band_limited(key, coarse_shape, (2,)).astype(jnp.float64)
    fine = fsd.resample(coarse, fine_shape)
    out_coarse = call(layer, coarse)
    out_fine = call(layer, fine)
    assert float(jnp.max(jnp.abs(out_coarse))) > 0.1
    np.testing.assert_allclose(fsd.resample(out_fine, coarse_shape), out_coarse, atol=1e-12)
    # And the fine output is the band-limited interpolant of the coarse one.
    np.testing.assert_allclose(out_fine, fsd.resample(out_coarse, fine_shape), atol=1e-12)


def test_fno_is_approximately_resolution_consistent(key):
    """The whole FNO is not exactly consistent (pointwise nonlinearities alias), but on a
    smooth input its outputs on 32 x 32 and 64 x 64 agree far better than those of a model
    whose output were unrelated across grids."""
    model = small_fno(modes=6, width=8)
    x1, x2 = fsd.Grid((32, 32)).coords()
    smooth = jnp.sin(2 * jnp.pi * x1) * jnp.cos(4 * jnp.pi * x2)
    out_coarse = call(model, smooth, 0.4)
    out_fine = call(model, fsd.resample(smooth, (64, 64)), 0.4)
    error = jnp.linalg.norm(fsd.resample(out_fine, (32, 32)) - out_coarse)
    assert float(error / jnp.linalg.norm(out_coarse)) < 0.05


def test_time_embedding_changes_the_output(key):
    model = small_fno()
    x = jax.random.normal(key, (12, 12))
    a, b = call(model, x, 0.05), call(model, x, 0.95)
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) > 0.01
    embedding = TimeEmbedding(8, key=key)
    assert float(jnp.linalg.norm(embedding(0.1) - embedding(0.9))) > 0.01


def test_gradients_are_finite_and_nonzero_for_every_leaf(key):
    """Through `dsm_loss`, with the vmap path and the batched path, which must agree."""
    model = small_fno()
    sde = fsd.VPSDE(fsd.covariance.Matern(alpha=2.0, tau=3.0))
    x0 = jax.random.normal(key, (4, 12, 12))

    @eqx.filter_jit
    def both(model):
        def loss(m, batched):
            return fsd.dsm_loss(m, sde, x0, jax.random.key(7), batched=batched)

        return (
            eqx.filter_value_and_grad(loss)(model, False),
            eqx.filter_value_and_grad(loss)(model, True),
        )

    (loss, grads), (loss_batched, grads_batched) = both(model)
    assert bool(jnp.isfinite(loss))
    np.testing.assert_allclose(loss_batched, loss, rtol=1e-5)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    for leaf, other in zip(leaves, jax.tree.leaves(eqx.filter(grads_batched, eqx.is_array))):
        assert bool(jnp.all(jnp.isfinite(leaf)))
        assert float(jnp.max(jnp.abs(leaf))) > 0
        np.testing.assert_allclose(other, leaf, rtol=1e-3, atol=1e-6 * float(jnp.max(abs(leaf))))


def test_fno_gradient_matches_finite_difference(key, x64):
    model = jax.tree.map(
        lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, small_fno()
    )
    x = jax.random.normal(key, (3, 9, 10), dtype=jnp.float64)
    ts = jnp.array([0.2, 0.5, 0.8])

    def loss(weight):
        m = eqx.tree_at(lambda m: m.spectral[0].weight_imag, model, weight)
        return jnp.sum(m.batched(x, ts) ** 2)

    loss = jax.jit(loss)

    weight = model.spectral[0].weight_imag
    grad = jax.grad(loss)(weight)
    direction = jax.random.normal(jax.random.key(9), weight.shape, dtype=jnp.float64)
    h = 1e-6
    fd = (loss(weight + h * direction) - loss(weight - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-6)


def test_no_complex_leaves():
    for make in (lambda: FNO(key=jax.random.key(0)), lambda: UNet(key=jax.random.key(0))):
        model = eqx.filter_eval_shape(make)
        leaves = jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
        arrays = [x for x in leaves if hasattr(x, "dtype")]
        assert len(arrays) > 0
        for leaf in arrays:
            assert jnp.issubdtype(leaf.dtype, jnp.floating), leaf.dtype


def small_local_fno(key=0):
    return small_fno(key, cutoff=3, local_kernel=3)


def with_random_local_weights(model, key):
    """`model` with nonzero local convolutions (they start at zero)."""
    keys = jax.random.split(key, len(model.local))
    local = tuple(
        eqx.tree_at(lambda c: c.weight, conv, 0.3 * jax.random.normal(k, conv.weight.shape))
        for conv, k in zip(model.local, keys)
    )
    return eqx.tree_at(lambda m: m.local, model, local)


def test_local_conv_is_the_periodic_stencil_sum(key):
    conv = LocalConv(3, 4, 3)
    np.testing.assert_array_equal(conv.weight, 0.0)
    weight = jax.random.normal(key, conv.weight.shape)
    conv = eqx.tree_at(lambda c: c.weight, conv, weight)
    v = jax.random.normal(jax.random.key(1), (7, 5, 2, 3))  # (n2, n1, batch, channels)
    expected = sum(
        np.roll(np.asarray(v), (-dy, -dx), axis=(0, 1)) @ np.asarray(weight[dy + 1, dx + 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    np.testing.assert_allclose(eqx.filter_jit(conv)(v), expected, rtol=1e-5, atol=1e-5)


def test_local_kernel_starts_as_the_same_function_and_stays_grid_consistent(key):
    plain, local = small_fno(cutoff=3), small_local_fno()
    assert local.config["local_kernel"] == 3 and "local_kernel" not in plain.config
    base = fsd.band_limit(jax.random.normal(key, (2, 8, 8)), 3)
    ts = jnp.array([0.2, 0.7])
    # Equal up to float rounding (adding zeros changes how XLA fuses the layer).
    np.testing.assert_allclose(
        call_batched(local, base, ts)[0], call_batched(plain, base, ts)[0], atol=1e-6
    )

    # The local weights learn: the loss has a gradient in them.
    sde = fsd.VPSDE(fsd.covariance.Matern(alpha=2.0, tau=3.0))
    grads = eqx.filter_jit(eqx.filter_grad(fsd.dsm_loss))(local, sde, base, jax.random.key(3))
    assert all(float(jnp.max(jnp.abs(c.weight))) > 0 for c in grads.local)

    # With nonzero weights the network changes, and is still one function of the band on
    # every grid (the stencil acts on the fixed band grid).
    trained = with_random_local_weights(local, jax.random.key(4))
    ref = call_batched(trained, base, ts)[0]
    assert float(jnp.linalg.norm(ref - call_batched(plain, base, ts)[0])) > 0.1
    for n in (16, 21):
        out = call_batched(trained, fsd.resample(base, (n, n)), ts)[0]
        np.testing.assert_allclose(fsd.resample(out, (8, 8)), ref, atol=1e-5)


@pytest.mark.parametrize("make", [small_fno, small_unet, small_local_fno])
def test_rebuild_from_config_and_deserialise(make, key):
    model = make(key=1)
    config = json.loads(json.dumps(model.config))
    rebuilt = type(model)(**config, key=jax.random.key(2))
    assert jax.tree.structure(rebuilt) == jax.tree.structure(model)
    x = jax.random.normal(key, (8, 8))
    assert not np.allclose(call(rebuilt, x, 0.3), call(model, x, 0.3))  # different initial weights
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    buffer.seek(0)
    loaded = eqx.tree_deserialise_leaves(buffer, rebuilt)
    np.testing.assert_array_equal(call(loaded, x, 0.3), call(model, x, 0.3))


def test_default_sizes_and_parameter_counts():
    fno = eqx.filter_eval_shape(lambda: FNO(key=jax.random.key(0)))
    assert fno.config["modes"] == 14 and fno.config["width"] == 32 and fno.config["depth"] == 4
    unet = eqx.filter_eval_shape(lambda: UNet(key=jax.random.key(0)))
    ratio = parameter_count(unet) / parameter_count(fno)
    assert 0.7 < ratio < 1.4, ratio


def test_unet_shapes_time_and_errors(key):
    model = small_unet()
    xs = jax.random.normal(key, (2, 12, 8))
    ts = jnp.array([0.1, 0.9])

    @eqx.filter_jit
    def evaluate(model):
        return model.batched(xs, ts), model(xs[0], ts[0]), model(xs[0], ts[1])

    out, first, later = evaluate(model)
    assert out.shape == (2, 12, 8) and bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[0], first, rtol=1e-5, atol=1e-6)
    assert float(jnp.linalg.norm(first - later)) > 1e-3  # the time embedding acts
    with pytest.raises(ValueError, match="divisible by 2"):
        model(jnp.zeros((13, 17)), 0.5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`modes`"):
        FNO(modes=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`embedding_dim`"):
        FNO(embedding_dim=7, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`local_kernel` must be odd"):
        FNO(cutoff=13, local_kernel=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`local_kernel` needs `cutoff`"):
        FNO(local_kernel=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`channels`"):
        UNet(channels=(), key=jax.random.key(0))
    # Wrong shapes: a ValueError naming the argument (a TypeError from the jaxtyping
    # annotations when the test suite's jaxtyping hook checks them first).
    model = small_fno()
    with pytest.raises((ValueError, TypeError), match="x"):
        model(jnp.zeros((2, 8, 8)), 0.5)
    with pytest.raises((ValueError, TypeError), match="t"):
        model(jnp.zeros((8, 8)), jnp.zeros(2))
    with pytest.raises((ValueError, TypeError), match="ts"):
        model.batched(jnp.zeros((2, 8, 8)), jnp.zeros(3))
    with pytest.raises(ValueError, match="`ts` must have shape"):
        check_inputs(jnp.zeros((2, 8, 8)), jnp.zeros(3))
    with pytest.raises(ValueError, match="`xs` must have shape"):
        check_inputs(jnp.zeros((8, 8)), jnp.zeros(8))
