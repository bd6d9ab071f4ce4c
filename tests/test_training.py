import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import (
    VPSDE,
    Callback,
    Grid,
    TrainingDivergedError,
    TrainingInterrupted,
    load_checkpoint,
    train,
)
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


# The loss history, learning rates and the sum of the EMA weights of two tiny runs, recorded
# with the code before the trainer was split into TrainConfig / TrainState / train_step (commit
# 469e7fc): the split changes no numbers.
REFERENCE = {
    "spectral": dict(
        losses=[0.05956226959824562, 0.045446231961250305, 0.05574876815080643,
                0.04052882641553879, 0.0480661503970623, 0.06562881171703339,
                0.04525970667600632],
        ema_sum=-4.804117921623401,
    ),
    "area_perlevel": dict(
        losses=[0.041355811059474945, 0.05808282643556595, 0.03948255255818367,
                0.07124758511781693, 0.033209770917892456, 0.044471826404333115],
        ema_sum=-4.8392565218382515,
    ),
}  # fmt: skip


def _reference_run(name, **kw):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    if name == "spectral":
        data = sde.covariance.sample(jax.random.key(7), Grid((12, 12)), (16,))
        levels = [(8, 4), (12, 3)]
    else:
        data = sde.covariance.sample(jax.random.key(8), Grid((16, 16)), (16,))
        levels = [(8, 3), (16, 3)]
    return train(
        tiny_fno(), sde, data, levels, batch_size=4, warmup_steps=2, progress=False,
        log_every=1, **kw,
    )  # fmt: skip


def _ema_sum(result):
    leaves = jax.tree.leaves(eqx.filter(result.network, eqx.is_array))
    return float(sum(np.sum(np.asarray(x, np.float64)) for x in leaves))


def test_trainer_reproduces_the_numbers_recorded_before_the_refactor():
    new = _reference_run("spectral", key=jax.random.key(5))
    with pytest.warns(DeprecationWarning, match="seed"):
        old = _reference_run("spectral", seed=5)  # the deprecated name: the same run
    for result in (new, old):
        np.testing.assert_allclose(result.losses, REFERENCE["spectral"]["losses"], rtol=1e-6)
        assert _ema_sum(result) == pytest.approx(REFERENCE["spectral"]["ema_sum"], rel=1e-6)
    with pytest.warns(DeprecationWarning, match="method"):
        area = _reference_run(
            "area", key=jax.random.key(2), method="area", lr_schedule="per-level"
        )
    np.testing.assert_allclose(area.losses, REFERENCE["area_perlevel"]["losses"], rtol=1e-6)
    assert _ema_sum(area) == pytest.approx(REFERENCE["area_perlevel"]["ema_sum"], rel=1e-6)
    # A different key gives a different run.
    other = _reference_run("spectral", key=jax.random.key(6))
    assert not np.allclose(other.losses, REFERENCE["spectral"]["losses"])


def test_key_to_seed_and_back():
    from numpyro_fsdiff import key_to_seed
    from numpyro_fsdiff._training import seed_to_key

    for s in (0, 5, 2**32 - 1):
        assert key_to_seed(jax.random.key(s)) == s
        assert np.array_equal(
            jax.random.key_data(seed_to_key(s)), jax.random.key_data(jax.random.key(s))
        )
    assert key_to_seed(jax.random.wrap_key_data(jnp.array([1, 2], jnp.uint32))) == 2**32 + 2
    with pytest.raises(ValueError, match=r"`key` must be a PRNG key such as jax.random.key\(3\)"):
        key_to_seed(3)
    with pytest.raises(ValueError, match="either `key` or the deprecated `seed`"):
        train(tiny_fno(), VPSDE(Matern(2.0, 3.0)), jnp.zeros((4, 6, 6)), [(6, 1)],
              key=jax.random.key(0), seed=0)  # fmt: skip


def _train_by_hand(sde, data, config, time_sampler=None):
    """`config.total_steps` calls of `train_step` on `BatchSchedule`'s batches, as `train`
    makes them on an 8 x 8 grid: the final state and the losses."""
    from numpyro_fsdiff import BatchSchedule, TrainState, train_step

    optimizer, _ = config.optimizer()
    state = TrainState.init(tiny_fno(), optimizer)
    schedule = BatchSchedule(config, num=data.shape[0])
    losses = []
    for n in range(config.total_steps):
        _, rows = schedule.indices(n)
        state, loss = train_step(
            state, data[rows], jax.random.fold_in(config.key, n), optimizer=optimizer, sde=sde,
            grid=Grid((8, 8)), t_eps=jnp.asarray(1e-3), ema_decay=jnp.asarray(0.999),
            batched=True, time_sampler=time_sampler,
        )  # fmt: skip
        losses.append(float(loss))
    return state, losses


def test_train_step_is_trains_step():
    """`train_step` called by hand reproduces `train`'s first steps exactly."""
    from numpyro_fsdiff import TrainConfig

    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(7), Grid((8, 8)), (16,))
    config = TrainConfig([(8, 3)], batch_size=4, warmup_steps=1, key=jax.random.key(4))
    state, losses = _train_by_hand(sde, data, config)
    result = train(tiny_fno(), sde, data, [(8, 3)], batch_size=4, warmup_steps=1,
                   key=jax.random.key(4), progress=False)  # fmt: skip
    assert int(state.step) == 3
    np.testing.assert_array_equal(result.losses, losses)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(state.ema, eqx.is_array)),
        jax.tree.leaves(eqx.filter(result.network, eqx.is_array)),
    ):
        np.testing.assert_array_equal(a, b)


def test_time_window_trains_as_train_step_with_that_sampler(tmp_path):
    """`train(time_window=...)` is `train_step` with a `TimeWindow` and the same batches; the
    window is part of the configuration a checkpoint resumes."""
    from numpyro_fsdiff import TimeWindow, TrainConfig

    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(7), Grid((8, 8)), (16,))
    window = (0.75, 0.3, 0.5)
    config = TrainConfig([(8, 3)], batch_size=4, warmup_steps=1, key=jax.random.key(4),
                         time_window=window)  # fmt: skip
    _, losses = _train_by_hand(sde, data, config, TimeWindow(*window, t_eps=1e-3, T=sde.T))
    kwargs = dict(batch_size=4, warmup_steps=1, key=jax.random.key(4), progress=False)
    result = train(tiny_fno(), sde, data, [(8, 3)], time_window=window,
                   checkpoint_dir=tmp_path / "run", **kwargs)  # fmt: skip
    np.testing.assert_array_equal(result.losses, losses)
    uniform = train(tiny_fno(), sde, data, [(8, 3)], **kwargs)
    assert not np.allclose(uniform.losses, losses)
    saved = load_checkpoint(tmp_path / "run").config["training"]["time_window"]
    assert saved == [0.75, 0.3, 0.5]
    with pytest.raises(ValueError, match="different configuration.*time_window"):
        train(tiny_fno(), sde, data, [(8, 3)], checkpoint_dir=tmp_path / "run", resume=True,
              **kwargs)  # fmt: skip


@pytest.mark.parametrize(
    "window, message",
    [
        ((0.5, 0.3), "`time_window` must be None or"),
        ((1.5, 0.3, 0.6), "0 <= fraction <= 1"),
        ((0.5, 0.6, 0.3), "low < high"),
        ((0.5, 1e-4, 0.3), "t_eps = 0.001 <= low"),
    ],
)
def test_time_window_rejects_bad_windows(window, message):
    from numpyro_fsdiff import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig([(8, 3)], time_window=window)
    # A window past the SDE's horizon T is refused when training starts.
    with pytest.raises(ValueError, match="`low` < `high` must lie in"):
        train(tiny_fno(), VPSDE(Matern(2.0, 3.0)), jnp.zeros((4, 6, 6)), [(6, 1)],
              batch_size=4, time_window=(0.5, 0.5, 1.5), progress=False)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), r"`batch_size` must be an int >= 1; got 0"),
        (dict(learning_rate=-1.0), r"`learning_rate` must be a finite number > 0.0; got -1.0"),
        (dict(ema_decay=1.0), r"`ema_decay` must be in \[0, 1\); got 1.0"),
        (dict(clip_norm=0.0), r"`clip_norm` must be a finite number > 0.0; got 0.0"),
        (dict(lr_schedule="cosine"), r"`lr_schedule` must be one of .*; got 'cosine'"),
        (dict(level_schedule="random"), r"`level_schedule` must be one of .*; got 'random'"),
        (dict(resampling="nearest"), r"`resampling` must be one of .*; got 'nearest'"),
        (dict(t_eps=float("nan")), r"`t_eps` must be a finite number > 0.0; got nan"),
        (dict(log_every=0), r"`log_every` must be an int >= 1; got 0"),
        (dict(stop_after=True), r"`stop_after` must be an int >= 1; got True"),
        (dict(level_schedule="interleaved", lr_schedule="per-level"), r"`lr_schedule` must be"),
    ],
)
def test_train_config_errors_name_the_field_and_value(kwargs, match):
    from numpyro_fsdiff import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig([(8, 2)], **kwargs)


def test_interleaved_order_is_a_deterministic_weighted_round_robin():
    from numpyro_fsdiff import level_order
    from numpyro_fsdiff._training import Level

    levels = [Level((8, 8), 3), Level((12, 12), 5), Level((16, 16), 1)]
    order = level_order(levels, "interleaved")
    assert np.bincount(order).tolist() == [3, 5, 1]
    assert np.array_equal(order, level_order(levels, "interleaved"))
    # Visits spread evenly: level i's j-th visit at the fraction (j + 1/2) / n_i of the run.
    # Visit j of level i at the fraction (j + 1/2) / n_i of the run: level 0 at 1/6, 3/6, 5/6,
    # level 1 at 1/10, 3/10, ..., 9/10, level 2 at 1/2 (ties by level index).
    assert order.tolist() == [1, 0, 1, 0, 1, 2, 1, 0, 1]
    assert level_order(levels, "sequential").tolist() == [0] * 3 + [1] * 5 + [2]


def test_interleaved_training_visits_levels_and_resumes_exactly(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((12, 12)), (16,))
    kwargs = dict(batch_size=4, progress=False, log_every=1, key=jax.random.key(3),
                  warmup_steps=1, level_schedule="interleaved")  # fmt: skip
    levels = [(8, 2), (12, 4)]
    full = train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "full", **kwargs)
    again = train(tiny_fno(), sde, data, levels, **kwargs)
    np.testing.assert_array_equal(full.losses, again.losses)
    visits = [r["resolution"][0] for r in full.history if "loss" in r]
    assert visits == [12, 8, 12, 12, 8, 12]
    compiles = [r for r in full.history if "compile_and_first_step" in r]
    assert [r["resolution"][0] for r in compiles] == [12, 8]
    # The default checkpoint of an interleaved run is at its end only.
    assert load_checkpoint(tmp_path / "full").config["step"] == 6
    # Stop after 3 steps and resume: the same losses and weights bit for bit.
    first = train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "cut", stop_after=3,
                  **kwargs)  # fmt: skip
    rest = train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "cut", resume=True,
                 **kwargs)  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([first.losses, rest.losses]), full.losses)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(rest.network, eqx.is_array)),
        jax.tree.leaves(eqx.filter(full.network, eqx.is_array)),
    ):
        np.testing.assert_array_equal(a, b)
    # A sequential checkpoint does not resume as an interleaved run.
    train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "seq", stop_after=2,
          **{**kwargs, "level_schedule": "sequential"})  # fmt: skip
    with pytest.raises(ValueError, match="different configuration.*level_schedule"):
        train(tiny_fno(), sde, data, levels, checkpoint_dir=tmp_path / "seq", resume=True,
              **kwargs)  # fmt: skip


class InterruptAt(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) once `step` steps are done."""

    def __init__(self, step):
        self.step = step

    def on_log(self, state, log):
        if log.step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_checkpoints_and_resume_equals_an_uninterrupted_run(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((12, 12)), (16,))
    kwargs = dict(batch_size=4, progress=False, log_every=1, key=jax.random.key(1),
                  warmup_steps=1)  # fmt: skip
    levels = [(8, 3), (12, 3)]
    full = train(tiny_fno(), sde, data, levels, **kwargs)
    folder = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 4; checkpoint saved in"):
        train(tiny_fno(), sde, data, levels, checkpoint_dir=folder, callbacks=[InterruptAt(4)],
              **kwargs)  # fmt: skip
    assert load_checkpoint(folder).config["step"] == 4
    rest = train(tiny_fno(), sde, data, levels, checkpoint_dir=folder, resume=True, **kwargs)
    assert rest.step == 6
    np.testing.assert_array_equal(rest.losses, full.losses[4:])
    for a, b in zip(
        jax.tree.leaves(eqx.filter((rest.network, rest.raw_network), eqx.is_array)),
        jax.tree.leaves(eqx.filter((full.network, full.raw_network), eqx.is_array)),
    ):
        np.testing.assert_array_equal(a, b)
    # Without a checkpoint_dir nothing is written, and the exception says so.
    with pytest.raises(TrainingInterrupted, match="no checkpoint written") as info:
        train(tiny_fno(), sde, data, levels, callbacks=[InterruptAt(2)], **kwargs)
    assert info.value.step == 2 and info.value.checkpoint_dir is None
    assert isinstance(info.value, KeyboardInterrupt)


def test_ctrl_c_inside_a_step_keeps_the_completed_steps(tmp_path, monkeypatch):
    """An interrupt raised by the step function itself (mid-step) checkpoints the state of
    the last completed step."""
    import numpyro_fsdiff._training as training

    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((8, 8)), (8,))
    real, calls = training.train_step, []

    def interrupted_step(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(training, "train_step", interrupted_step)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_fno(), sde, data, [(8, 5)], batch_size=4, progress=False, log_every=10,
              checkpoint_dir=tmp_path, key=jax.random.key(0))  # fmt: skip
    assert info.value.step == 2 and info.value.checkpoint_dir == tmp_path
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.config["step"] == 2
    assert [r["loss"] for r in ckpt.config["history"] if "loss" in r] != []


def test_divergence_before_the_first_checkpoint_says_none_was_written(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(2), Grid((6, 6)), (16,))
    folder = tmp_path / "run"
    with pytest.raises(
        TrainingDivergedError,
        match=r"loss became nan .*No checkpoint was written yet, so .*run holds none: the "
        r"first was due at step 50",
    ):
        train(SqrtNoise(), sde, data, [(6, 50)], batch_size=8, learning_rate=0.02,
              warmup_steps=0, clip_norm=None, checkpoint_dir=folder, log_every=1,
              progress=False)  # fmt: skip
    assert not (folder / "checkpoint.json").exists()


@pytest.mark.slow
def test_retraining_the_shipped_mnist_checkpoint_reproduces_its_heldout_loss():
    """A few steps at a tiny learning rate from numpyro_fsdiff/weights/mnist, through `train`
    with the checkpoint's own SDE, covariance and scaling, keep the held-out DSM loss recorded in
    its checkpoint.json (first 500 test images): a silent change of the data scaling, the
    covariance or the loss's normalisation would move it by far more than the tolerance.

    The held-out loss is re-estimated with fresh times and noise (one draw per image), as the
    mean of 10 chunks of 50 images; the tolerance is 4 standard errors of that mean plus the
    standard error of the recorded estimate (2,000 draws)."""
    from numpyro_fsdiff import heldout_loss, pretrained
    from numpyro_fsdiff.data import load_subset

    ckpt = pretrained("mnist")
    recorded = ckpt.config["metrics"]["heldout_dsm_loss"]
    images = ckpt.from_pixels(jnp.asarray(load_subset().images))
    heldout, train_images = images[:500], images[500:756]
    result = train(
        ckpt.network, ckpt.sde, train_images, [(28, 2)], batch_size=64, learning_rate=1e-8,
        warmup_steps=0, lengths=ckpt.lengths, key=jax.random.key(0), progress=False,
    )  # fmt: skip
    assert result.step == 2 and np.all(np.isfinite(result.losses))
    for n in (14, 28):
        chunks = np.array([
            heldout_loss(result.network, ckpt.sde, heldout[i : i + 50], shape=(n, n),
                         lengths=ckpt.lengths, key=jax.random.key(100 + i), batch_size=50)
            for i in range(0, 500, 50)
        ])  # fmt: skip
        mean, se = chunks.mean(), chunks.std(ddof=1) / np.sqrt(len(chunks))
        tolerance = 4 * (se + se * np.sqrt(500 / 2000))
        print(f"{n}x{n}: recorded {recorded[str(n)]:.5f}, now {mean:.5f} +- {se:.5f}")
        assert abs(mean - recorded[str(n)]) < tolerance, (n, mean, recorded[str(n)], se)
    # The training loss of the two steps (128 draws) agrees with the held-out level at 28 x 28.
    assert abs(result.losses.mean() - recorded["28"]) < 4 * se * np.sqrt(500 / 128)


def test_method_is_deprecated_for_resampling():
    from numpyro_fsdiff import heldout_loss

    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    data = sde.covariance.sample(jax.random.key(0), Grid((8, 8)), (4,))
    with pytest.warns(DeprecationWarning, match="`resampling="):
        old = heldout_loss(tiny_fno(), sde, data, shape=(4, 4), method="area")
    assert old == heldout_loss(tiny_fno(), sde, data, shape=(4, 4), resampling="area")
    with pytest.raises(ValueError, match="either `resampling` or the deprecated `method`"):
        heldout_loss(tiny_fno(), sde, data, resampling="area", method="area")
    with pytest.raises(ValueError, match=r"`resampling` must be one of .*; got 'fourier'"):
        train(tiny_fno(), sde, data, [(8, 1)], batch_size=2, resampling="fourier")
