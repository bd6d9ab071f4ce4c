"""The band-limited construction: a learned law that is a measure on functions (issue #18)."""

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff._checkpoint import save_checkpoint
from numpyro_fsdiff._sample import sample_one
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.nn import FNO

Q = Matern(2.0, 3.0, 4.0)
C = Matern(3.0, 3.0, 8.0)  # not equivalent to Q: the unconstrained law has no limit
K = 3


class GaussianNoise(eqx.Module):
    """The exact noise predictor of data N(0, C) on any grid: sigma q / (m^2 c + sigma^2 q)."""

    data_covariance: Matern
    sde: fs.VPSDE

    def __call__(self, x, t):
        grid = fs.Grid(x.shape[-2:])
        mean, std = self.sde.marginal_coefficients(t)
        c = self.data_covariance.eigenvalues(grid)
        q = self.sde.covariance.eigenvalues(grid)
        return std * fs.fourier_multiply(x, q / (mean**2 * c + std**2 * q))


def gaussian_score(cutoff):
    sde = fs.VPSDE(Q)
    return fs.NoisePredictionScore(GaussianNoise(C, sde), sde, cutoff=cutoff), sde


def test_fno_with_cutoff_is_the_same_function_on_every_grid():
    net = FNO(modes=3, width=4, depth=1, cutoff=K, key=jax.random.key(0))
    sde = fs.VPSDE(Q)
    score = fs.NoisePredictionScore(net, sde)
    assert score.cutoff == K and net.config["cutoff"] == K
    assert fs.band_grid_shape(K) == (8, 8)
    base = fs.band_limit(jax.random.normal(jax.random.key(1), (8, 8)), K)
    ref = score(base, 0.4)
    for n in (8, 20):
        x = fs.resample(base, (n, n))
        out = score(x, 0.4)
        # Above K the score is exactly -x; on the band it is one function of the band.
        np.testing.assert_allclose(fs.band_limit(out + x, K), out + x, atol=1e-5)
        np.testing.assert_allclose(fs.resample(out, (8, 8)), ref, atol=1e-5)
    # High modes of the input do not reach the learned part.
    x = fs.resample(base, (16, 16)) + 0.5 * jnp.cos(2 * jnp.pi * 6 * fs.Grid((16, 16)).coords()[0])
    np.testing.assert_allclose(
        fs.band_limit(score(x, 0.4), K), fs.resample(ref, (16, 16)), atol=1e-5
    )
    # Without a cutoff the FNO keeps its earlier config and the score is -eps / sigma.
    plain = FNO(modes=3, width=4, depth=1, key=jax.random.key(0))
    assert "cutoff" not in plain.config
    plain_score = fs.NoisePredictionScore(plain, sde)
    assert plain_score.cutoff is None
    _, std = sde.marginal_coefficients(0.4)
    np.testing.assert_array_equal(plain_score(x, 0.4), -plain(x, 0.4) / std)


def test_dsm_loss_with_cutoff_adds_a_theta_free_high_mode_term():
    net = FNO(modes=3, width=4, depth=1, cutoff=K, key=jax.random.key(0))
    sde = fs.VPSDE(Q)
    x0 = fs.resample(fs.band_limit(C.sample(jax.random.key(1), fs.Grid((8, 8)), (6,)), K), (16, 16))
    key = jax.random.key(2)
    loss = fs.dsm_loss(net, sde, x0, key)
    # By hand: eps_eff = P_K eps(P_K x_t) + sigma_t (I - P_K) x_t.
    t_key, n_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (6,), minval=1e-3, maxval=1.0)
    xt, eta = sde.perturb(n_key, x0, t)
    _, std = sde.marginal_coefficients(t)
    low = fs.band_limit(xt, K)
    eff = jax.vmap(net)(low, t) + std[:, None, None] * (xt - low)
    grid = fs.Grid((16, 16))
    np.testing.assert_allclose(loss, jnp.mean(grid.norm_squared(eff - eta)), rtol=1e-5)

    # The high-mode part has no gradient.
    def high(n):
        return jnp.mean(grid.norm_squared((eff - eta) - fs.band_limit(eff - eta, K)))

    assert float(high(net)) > 0
    grads = eqx.filter_grad(lambda n: fs.dsm_loss(n, sde, x0, key))(net)
    grads_low = eqx.filter_grad(
        lambda n: jnp.mean(grid.norm_squared(fs.band_limit(jax.vmap(n)(low, t) - eta, K)))
    )(net)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_low)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def _shell_ratios(xs, covariance, grid, mask):
    """Mean |x_k|^2 / lambda_k per radial shell of the modes in `mask`, with its standard error."""
    power = jnp.abs(jnp.fft.fft2(xs, norm="ortho")) ** 2 / covariance.pixel_eigenvalues(grid)
    k1, k2 = grid.wavenumbers()
    radius = np.asarray(jnp.rint(jnp.sqrt(k1**2 + k2**2))).astype(int)
    out = []
    for r in np.unique(radius[np.asarray(mask) > 0]):
        sel = (radius == r) & (np.asarray(mask) > 0)
        values = np.asarray(power)[:, sel]
        # Conjugate modes are equal: about half the modes are independent.
        se = values.std() / np.sqrt(values.shape[0] * max(1, sel.sum() // 2))
        out.append((r, values.mean(), se))
    return out


def _draw(score, sde, grid, method, steps, num):
    keys = jax.random.split(jax.random.key(3), num)

    def draw(k):
        return sample_one(score, sde, grid, key=k, method=method, steps=steps, denoise=False)

    return jax.jit(jax.vmap(lambda k: draw(k)[0]))(keys)


@pytest.mark.parametrize(
    "method,steps,num", [("ode", 8, 128), pytest.param("sde", 500, 64, marks=pytest.mark.slow)]
)
def test_high_modes_of_samples_at_64_are_those_of_q(method, steps, num):
    grid = fs.Grid((64, 64))
    score, sde = gaussian_score(K)
    xs = _draw(score, sde, grid, method, steps, num)
    high = 1 - fs.band_mask(grid.shape, K)
    for r, mean, se in _shell_ratios(xs, Q, grid, high):
        assert abs(mean - 1) < 5 * se, (r, mean, se)
    # Without the construction the same modes follow C, far from Q (the test can fail).
    plain, _ = gaussian_score(None)
    xs_plain = _draw(plain, sde, grid, "ode", steps, 16)
    shells = _shell_ratios(xs_plain, Q, grid, high)
    # (Shells below 16: above them 8 fixed steps do not resolve the stiff unconstrained flow.)
    assert all(mean < 0.1 for r, mean, se in shells if r < 16)


def _closed_form_log_ratio(x, cutoff):
    """log N(x; C on the band, Q above) - log N(x; Q), summed over the band's modes."""
    grid = fs.Grid(x.shape)
    xk = jnp.abs(jnp.fft.fft2(x, norm="ortho")) ** 2
    c, q = C.pixel_eigenvalues(grid), Q.pixel_eigenvalues(grid)
    band = fs.band_mask(grid.shape, cutoff)
    return jnp.sum(band * (-0.5 * xk * (1 / c - 1 / q) - 0.5 * jnp.log(c / q)))


def test_relative_density_is_the_same_on_three_grids(x64):
    base = fs.band_limit(C.sample(jax.random.key(4), fs.Grid((8, 8))), K)
    values, plain_values = [], []
    for n in (8, 12, 16):
        grid = fs.Grid((n, n))
        x = fs.resample(base, (n, n))
        for cutoff, out in ((K, values), (None, plain_values)):
            score, sde = gaussian_score(cutoff)
            prior = fs.DiffusionPrior(score, sde, grid, solver="tsit5", steps=24)
            out.append(float(prior.log_prob_relative(x)))
    expected = float(_closed_form_log_ratio(base, K))
    np.testing.assert_allclose(values, values[0], rtol=1e-9)
    np.testing.assert_allclose(values[0], expected, rtol=1e-3)
    # Without the construction the number changes with the grid.
    assert abs(plain_values[2] - plain_values[0]) > 10 * abs(plain_values[0]) * 1e-3


def test_checkpoints_without_a_cutoff_load_and_behave_as_before(tmp_path):
    """A checkpoint of a network without a cutoff (every one saved before the construction)
    records none and its score is the plain -eps / sigma; the shipped weights carry theirs."""
    sde = fs.VPSDE(Q)
    save_checkpoint(tmp_path / "plain", FNO(modes=3, width=4, depth=1, key=jax.random.key(1)), sde)
    ckpt = fs.load_checkpoint(tmp_path / "plain")
    assert "cutoff" not in ckpt.config["network"]["config"]
    score = ckpt.model
    assert score.cutoff is None and ckpt.network.cutoff is None
    x = fs.resample(jax.random.normal(jax.random.key(5), (14, 14)), (20, 20))
    _, std = ckpt.sde.marginal_coefficients(0.3)
    np.testing.assert_array_equal(score(x, 0.3), -ckpt.network(x, 0.3) / std)
    for name in ("mnist", "fashion-mnist"):
        assert fs.pretrained(name).model.cutoff == 13
    # A network with a cutoff keeps it through a checkpoint, and so does its score.
    net = FNO(modes=3, width=4, depth=1, cutoff=K, key=jax.random.key(0))
    save_checkpoint(tmp_path / "run", net, ckpt.sde)
    loaded = fs.load_checkpoint(tmp_path / "run")
    assert loaded.config["network"]["config"]["cutoff"] == K and loaded.model.cutoff == K
    np.testing.assert_allclose(loaded.model(x, 0.3), fs.NoisePredictionScore(net, ckpt.sde)(x, 0.3))


def test_train_keeps_the_cutoff_through_its_checkpoint(tmp_path):
    sde = fs.VPSDE(Q)
    data = fs.band_limit(C.sample(jax.random.key(6), fs.Grid((8, 8)), (16,)), K)
    net = FNO(modes=2, width=4, depth=1, cutoff=K, key=jax.random.key(7))
    result = fs.train(
        net, sde, data, [(8, 2)], batch_size=4, progress=False, checkpoint_dir=tmp_path
    )
    assert result.network.cutoff == K and bool(jnp.all(jnp.isfinite(result.losses)))
    loaded = fs.load_checkpoint(tmp_path)
    assert loaded.model.cutoff == K
    x = fs.resample(data[0], (16, 16))
    np.testing.assert_allclose(
        loaded.model(x, 0.5), fs.NoisePredictionScore(result.network, sde)(x, 0.5), atol=1e-6
    )


@pytest.mark.parametrize("cutoff", [0, -3, True])
def test_fno_rejects_a_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="`cutoff` must be"):
        FNO(modes=2, width=4, depth=1, cutoff=cutoff, key=jax.random.key(0))


def test_batched_score_and_sampling_keep_the_band_construction():
    """`NoisePredictionScore.batched` (the samplers' fast path) is the per-field score with its
    cutoff: above K it is exactly -x, so the reverse SDE leaves N(0, Q) there; the batched and
    per-sample paths of `sample` give the same draws. (It once dropped the sigma (I - P_K) x
    term: S = 0 above K, and the high modes of samples grew a thousandfold.)"""
    net = FNO(modes=3, width=4, depth=1, cutoff=K, key=jax.random.key(0))
    sde = fs.VPSDE(Q)
    score = fs.NoisePredictionScore(net, sde)
    xs = jax.random.normal(jax.random.key(1), (3, 16, 16))
    ts = jnp.array([0.01, 0.3, 0.9])
    batched = score.batched(xs, ts)
    np.testing.assert_allclose(batched, jax.vmap(score)(xs, ts), rtol=1e-5, atol=1e-5)
    high = xs - fs.band_limit(xs, K)
    np.testing.assert_allclose(batched - fs.band_limit(batched, K), -high, rtol=1e-5, atol=1e-5)
    grid = fs.Grid((16, 16))
    kwargs = dict(key=jax.random.key(2), num_samples=2, solver="euler", steps=5)
    fast, _ = fs.sample(score, sde, grid, as_one_state=True, **kwargs)
    slow, _ = fs.sample(score, sde, grid, as_one_state=False, **kwargs)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)


def test_dsm_loss_at_one_time_is_the_exact_posterior_noise_variance():
    # Data N(0, C), the exact noise predictor eps = -sigma_t S: the loss at a fixed t is
    # E||eta - E[eta | x_t]||^2 = sum_k q_k m^2 c_k / (m^2 c_k + sigma^2 q_k).
    grid, t = fs.Grid((8, 8)), 0.1
    sde = fs.VPSDE(Q)
    exact_score = fs.GaussianScore(C, sde, grid)

    def noise_predictor(x, s):
        return -sde.marginal_coefficients(s)[1] * exact_score(x, s)

    def at_t(key, shape):
        return jnp.full(shape, t)

    batches = C.sample(jax.random.key(3), grid, (4000,)).reshape(40, 100, 8, 8)
    keys = jax.random.split(jax.random.key(4), 40)

    def batch_losses(sampler):
        loss = partial(fs.dsm_loss, noise_predictor, sde, grid=grid, time_sampler=sampler)
        return np.asarray(jax.jit(jax.vmap(loss))(batches, keys))

    losses = batch_losses(at_t)
    c, q = C.eigenvalues(grid), Q.eigenvalues(grid)

    def exact(time):
        m, s = sde.marginal_coefficients(jnp.asarray(time)[..., None, None])
        return np.asarray(jnp.sum(q * m**2 * c / (m**2 * c + s**2 * q), axis=(-2, -1)))

    standard_error = losses.std(ddof=1) / np.sqrt(len(losses))
    assert abs(losses.mean() - exact(t)) < 4 * standard_error
    # The default draws t ~ U(t_eps, T): the loss is the time average of the same expression.
    uniform = batch_losses(None)
    times = np.linspace(1e-3, 1.0, 4001)
    average = np.trapezoid(exact(times), times) / (1.0 - 1e-3)
    assert abs(uniform.mean() - average) < 4 * uniform.std(ddof=1) / np.sqrt(len(uniform))
    assert abs(average - exact(t)) > 0.1 * exact(t)
    # A TimeWindow puts 60 of each 100 times in [0.3, 0.7]: the loss is that mixture's average.
    windowed = batch_losses(fs.TimeWindow(0.6, 0.3, 0.7))
    inside = np.linspace(0.3, 0.7, 1601)
    mixture = 0.6 * np.trapezoid(exact(inside), inside) / 0.4 + 0.4 * average
    assert abs(windowed.mean() - mixture) < 4 * windowed.std(ddof=1) / np.sqrt(len(windowed))
    assert abs(mixture - average) > 8 * windowed.std(ddof=1) / np.sqrt(len(windowed))


def test_time_window_draws_its_share_in_the_window():
    window = fs.TimeWindow(0.25, 0.35, 0.65, t_eps=0.01, T=0.9)
    t = np.asarray(window(jax.random.key(0), (4000,)))
    inside, rest = t[:1000], t[1000:]
    assert inside.min() >= 0.35 and inside.max() <= 0.65
    assert rest.min() >= 0.01 and rest.max() <= 0.9
    # The uniform rest covers [t_eps, T]: its mean and the share outside the window.
    assert abs(rest.mean() - 0.455) < 4 * (0.89 / np.sqrt(12)) / np.sqrt(3000)
    outside = 1 - 0.3 / 0.89
    assert abs(np.mean((rest < 0.35) | (rest > 0.65)) - outside) < 4 * np.sqrt(
        outside * (1 - outside) / 3000
    )
    assert np.asarray(fs.TimeWindow(0.0, 0.3, 0.4)(jax.random.key(1), (50,))).max() > 0.5
    for kwargs, message in [
        (dict(fraction=-0.1, low=0.3, high=0.4), "`fraction` must be in"),
        (dict(fraction=0.5, low=0.4, high=0.3), "`low` < `high` must lie in"),
        (dict(fraction=0.5, low=0.3, high=1.2), "`low` < `high` must lie in"),
        (dict(fraction=0.5, low=0.3, high=0.4, t_eps=2.0), "`t_eps` must be in"),
    ]:
        with pytest.raises(ValueError, match=message):
            fs.TimeWindow(**kwargs)


def test_train_step_takes_the_time_sampler_of_its_loss():
    import optax

    class Scaled(eqx.Module):  # the smallest trainable noise predictor: eps = w x
        w: jax.Array

        def __call__(self, x, t):
            return self.w * x

    net = Scaled(jnp.asarray(0.5))
    sde, grid = fs.VPSDE(Q), fs.Grid((8, 8))
    batch = C.sample(jax.random.key(1), grid, (4,))
    optimizer = optax.adam(1e-3)
    state = fs.TrainState.init(net, optimizer)

    def late(key, shape):
        return jax.random.uniform(key, shape, minval=0.5, maxval=0.7)

    key = jax.random.key(2)
    _, loss = fs.train_step(state, batch, key, optimizer=optimizer, sde=sde, grid=grid,
                            time_sampler=late)
    expected = fs.dsm_loss(net, sde, batch, key, grid=grid, time_sampler=late)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    uniform = fs.dsm_loss(net, sde, batch, key, grid=grid)
    assert abs(float(uniform) - float(loss)) > 1e-3 * float(loss)
