"""Sharded and unsharded computations agree (4 simulated CPU devices, in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

from numpyro_fsdiff import process_slice

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax, equinox as eqx
    assert len(jax.devices()) == 4, jax.devices()
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff._sharding import data_mesh, shard_leading_axis, replicate

    mesh = data_mesh()
    grid = fsd.Grid((8, 8))
    q = fsd.covariance.Matern(alpha=2.0, tau=3.0, scale=9.0)
    sde = fsd.VPSDE(q)
    score = fsd.GaussianScore(fsd.covariance.LaplacianPower(1.5, 4.0), sde, grid)

    # Sampling: the same keys give the same samples, sharded over the sample axis or not.
    keys = jax.random.split(jax.random.key(0), 8)
    draw = jax.jit(jax.vmap(lambda k: fsd.sample_one(score, sde, grid, k, steps=20)[0]))
    plain = draw(keys)
    sharded = draw(shard_leading_axis(keys, mesh))
    assert len(sharded.sharding.device_set) == 4, sharded.sharding
    np.testing.assert_allclose(sharded, plain, rtol=1e-5, atol=1e-6)

    # Data-parallel training step: batch sharded, parameters replicated, same loss curve.
    net = fsd.nn.FNO(modes=4, width=8, depth=2, key=jax.random.key(1))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    opt = optax.adam(1e-3)
    data = q.sample(jax.random.key(2), grid, (16,))

    @jax.jit
    def step(params, opt_state, x0, key):
        loss, grads = jax.value_and_grad(
            lambda p: fsd.dsm_loss(eqx.combine(p, static), sde, x0, key, grid=grid))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(shard):
        p, s = params, opt.init(params)
        if shard:
            p, s = replicate((p, s), mesh)
        losses = []
        for i in range(4):
            x0 = shard_leading_axis(data, mesh) if shard else data
            p, s, loss = step(p, s, x0, jax.random.key(10 + i))
            losses.append(float(loss))
        return np.array(losses)

    plain_losses, sharded_losses = run(False), run(True)
    np.testing.assert_allclose(sharded_losses, plain_losses, rtol=1e-4)
    print("OK", plain_losses)
    """
)


def test_sharded_sampling_and_training_agree_on_four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "OK" in result.stdout


def test_process_slice_splits_evenly_and_covers_everything():
    parts = [process_slice(10, i, 3) for i in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 7), (7, 10)]
    assert process_slice(5) == slice(0, 5)
    with pytest.raises(ValueError, match="process_index"):
        process_slice(5, 3, 3)
