import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import VPSDE, Grid, TrainingDivergedError, load_checkpoint, train
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.data import GaussianMixture
from numpyro_fsdiff.nn import FNO


def tiny_fno(seed=0, width=4):
    return FNO(
        modes=3, width=width, depth=1, projection_dim=8, embedding_dim=8, key=jax.random.key(seed)
    )


@pytest.fixture(scope="module")
def toy():
    """The two-component Gaussian mixture with C = Q, and a small FNO trained on 8 x 8."""
    mixture = GaussianMixture.toy()
    sde = VPSDE(mixture.covariance)
    x, _ = mixture.sample(jax.random.key(1), Grid((8, 8)), 2048)
    network = FNO(
        modes=4, width=16, depth=2, projection_dim=32, embedding_dim=16, key=jax.random.key(0)
    )
    result = train(
        network,
        sde,
        x,
        [(8, 240)],
        batch_size=64,
        learning_rate=3e-3,
        ema_decay=0.99,
        progress=False,
        log_every=40,
        key=jax.random.key(0),
    )
    return mixture, sde, result


def score_relative_error(mixture, sde, network, shape, num=256):
    r"""$\sqrt{\sum \|S_\theta - S\|^2 / \sum \|S\|^2}$ over $t \in [0.05, 0.9]$, $X_t \sim p_t$."""
    grid = Grid(shape)
    exact = mixture.score(sde, grid)
    x0, _ = mixture.sample(jax.random.key(5), grid, num)
    ts = jnp.linspace(0.05, 0.9, num)
    xt, _ = sde.perturb(jax.random.key(6), x0, ts, grid=grid)

    @eqx.filter_jit
    def errors(network):
        target = jax.vmap(exact)(xt, ts)
        std = jax.vmap(lambda t: sde.marginal_coefficients(t)[1])(ts)
        learned = -network.batched(xt, ts) / std[:, None, None]
        prior = -xt  # the score of N(0, Q): the model knows nothing about the data
        err = lambda s: jnp.sqrt(jnp.sum((s - target) ** 2) / jnp.sum(target**2))  # noqa: E731
        return err(learned), err(prior)

    return tuple(float(e) for e in errors(network))


def test_loss_decreases(toy):
    _, _, result = toy
    assert result.losses.shape == (240,)
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-40:].mean() < 0.5 * result.losses[:40].mean()


def test_learned_mixture_score_at_training_resolution_and_twice_it(toy):
    """The same weights, trained on 8 x 8, against the exact mixture score on 8 x 8, on twice
    that resolution and on an odd non-square grid; the reference is the prior score -x."""
    mixture, sde, result = toy
    errors = {}
    for shape in [(8, 8), (16, 16), (11, 13)]:
        errors[shape] = score_relative_error(mixture, sde, result.network, shape)
    print("relative L2 score error (learned, prior -x):", errors)
    for shape, (learned, prior) in errors.items():
        assert learned < 0.3 and learned < 0.5 * prior, errors


def test_resume_equals_uninterrupted_run(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((12, 12)), (32,))
    kwargs = dict(batch_size=8, progress=False, log_every=1, key=jax.random.key(3), warmup_steps=2)
    levels = [(8, 4), (12, 4)]
    full = train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "full", **kwargs)
    first = train(
        tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "cut", stop_after=5, **kwargs
    )
    assert first.step == 5
    rest = train(
        tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "cut", resume=True, **kwargs
    )
    assert rest.step == 8 and rest.losses.shape == (3,)
    np.testing.assert_allclose(np.concatenate([first.losses, rest.losses]), full.losses, rtol=1e-6)
    curve = lambda h: [r["loss"] for r in h if "loss" in r]  # noqa: E731
    np.testing.assert_allclose(curve(rest.history), curve(full.history), rtol=1e-6)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(rest.network, eqx.is_array)),
        jax.tree.leaves(eqx.filter(full.network, eqx.is_array)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The same seed gives the same run; the saved model is the EMA network.
    loaded = load_checkpoint(tmp_path / "full")
    assert loaded.config["step"] == 8
    for a, b in zip(
        jax.tree.leaves(eqx.filter(loaded.network, eqx.is_array)),
        jax.tree.leaves(eqx.filter(full.network, eqx.is_array)),
    ):
        assert np.array_equal(a, b)
    # A different configuration refuses to resume.
    with pytest.raises(ValueError, match="different configuration"):
        train(
            tiny_fno(),
            sde,
            data,
            [(8, 4), (12, 5)],
            checkpoint_dir=tmp_path / "cut",
            resume=True,
            **kwargs,
        )
    # Area averaging as the coarsening method (16 -> 8 needs integer factors).
    area = train(
        tiny_fno(),
        sde,
        sde.covariance.sample(jax.random.key(4), Grid((16, 16)), (32,)),
        [(8, 2)],
        resampling="area",
        **kwargs,
    )
    assert np.all(np.isfinite(area.losses))


class SqrtNoise(eqx.Module):
    """eps = sqrt(p): Adam drives p below zero within a few steps, and the loss becomes NaN."""

    p: jax.Array

    def __init__(self, p=0.05, *, key=None):
        self.p = jnp.asarray(p)

    @property
    def config(self):
        return {"p": 0.05}

    def __call__(self, x, t):
        return jnp.sqrt(self.p) * jnp.ones_like(x)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((6, 6)), (16,))
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step (\d+).*last good"):
        train(
            SqrtNoise(),
            sde,
            data,
            [(6, 50)],
            batch_size=8,
            learning_rate=0.02,
            warmup_steps=0,
            clip_norm=None,
            checkpoint_dir=tmp_path,
            checkpoint_every=1,
            log_every=1,
            progress=False,
        )
    ckpt = load_checkpoint(tmp_path, network_cls=SqrtNoise)
    step = ckpt.config["step"]
    assert 1 <= step < 50
    assert np.isfinite(float(ckpt.network.p))
    assert all(np.isfinite(r["loss"]) for r in ckpt.config["history"] if "loss" in r)


def test_bad_arguments():
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = jnp.zeros((4, 6, 6))
    net = tiny_fno()
    with pytest.raises(ValueError, match="`levels`"):
        train(net, sde, data, [])
    with pytest.raises(ValueError, match=r"`levels\[0\]`"):
        train(net, sde, data, [(6, 0)])
    with pytest.raises(ValueError, match="`batch_size`"):
        train(net, sde, data, [(6, 1)], batch_size=5)
    with pytest.raises(ValueError, match="`data`"):
        train(net, sde, jnp.zeros((6, 6)), [(6, 1)])
    with pytest.raises(ValueError, match="`resume=True`"):
        train(net, sde, data, [(6, 1)], batch_size=2, resume=True)
    with pytest.raises(ValueError, match="`learning_rate`"):
        train(net, sde, data, [(6, 1)], batch_size=2, learning_rate=-1.0)


def test_per_level_schedule_restarts_the_warmup_and_cosine_at_each_level():
    from numpyro_fsdiff._training import make_optimizer

    settings = dict(learning_rate=1.0, warmup_steps=2, final_learning_rate=0.1,
                    weight_decay=0.0, clip_norm=None)
    _, per_level = make_optimizer((10, 6), lr_schedule="per-level", **settings)
    _, single = make_optimizer((10, 6), lr_schedule="global", **settings)
    lr = lambda schedule, n: float(schedule(n))  # noqa: E731
    # Warm-up from 0 at the start of both levels, the peak after 2 steps, the end value last.
    assert lr(per_level, 0) == 0.0 and lr(per_level, 10) == 0.0
    assert lr(per_level, 2) == pytest.approx(1.0) and lr(per_level, 12) == pytest.approx(1.0)
    assert lr(per_level, 9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 7 / 8)))
    assert lr(per_level, 16) == pytest.approx(0.1)
    # The global schedule does not restart: a cosine over all 16 steps.
    assert lr(single, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 8 / 14)))

    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = Matern(2.0, 3.0, 1.0).sample(jax.random.key(0), Grid((6, 6)), (4,))
    result = train(tiny_fno(), sde, data, [(4, 3), (6, 3)], batch_size=2, warmup_steps=1,
                   lr_schedule="per-level", log_every=1, progress=False)
    rates = [h["learning_rate"] for h in result.history if "learning_rate" in h]
    assert rates[0] == 0.0 and rates[3] == 0.0 and rates[1] > 0 and rates[4] > 0
    with pytest.raises(ValueError, match="`lr_schedule`"):
        train(tiny_fno(), sde, data, [(6, 1)], batch_size=2, lr_schedule="cosine")
