"""Sharded and unsharded runs agree through the public functions (4 simulated CPU devices).

One subprocess (JAX's start-up costs about 10 s a process) with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, so the rest of the suite keeps one device.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from numpyro_fsdiff import data_mesh, global_batch, process_slice
from numpyro_fsdiff.data import load_subset

SETUP = """
import tempfile, time
import jax, numpy as np, equinox as eqx
assert len(jax.devices()) == 4, jax.devices()
import numpyro_fsdiff as fsd
from numpyro_fsdiff.covariance import LaplacianPower, Matern
from numpyro_fsdiff.inverse import DPS, NUTS, GaussianNoise, Mask, posterior

mesh = fsd.data_mesh()
close = np.testing.assert_allclose
clock = [time.perf_counter(), time.process_time()]

def report(part):
    now = [time.perf_counter(), time.process_time()]
    print(f"{part}: {now[0] - clock[0]:.1f} s wall, {now[1] - clock[1]:.1f} s CPU")
    clock[:] = now

def on_four_devices(x):
    assert len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated, x.sharding

def raises(fn, match):
    try:
        fn()
    except ValueError as error:
        assert match in str(error), error
    else:
        raise AssertionError(f"no ValueError mentioning {match}")

q = Matern(alpha=2.0, tau=3.0, scale=9.0)
sde = fsd.VPSDE(q)
small = fsd.Grid((4, 4))
operator = Mask(lambda x1, x2: x1 + x2 < 1.2)
truth = q.sample(jax.random.key(3), small)
y = operator(truth, small) + 0.1 * jax.random.normal(jax.random.key(4), operator.data_shape(small))
problem = dict(grid=small, noise=GaussianNoise(0.1))
"""

SAMPLE_TRAIN = """
grid = fsd.Grid((8, 8))
score = fsd.GaussianScore(LaplacianPower(1.5, 4.0), sde, grid)

# sample: the same key gives the same samples, with the sample axis on four devices.
kw = dict(steps=10, batch_size=1)
plain, _ = fsd.sample(score, sde, grid, key=jax.random.key(0), num_samples=8, **kw)
sharded, info = fsd.sample(score, sde, grid, key=jax.random.key(0), num_samples=8, mesh=mesh, **kw)
on_four_devices(sharded), on_four_devices(info.num_accepted_steps)
close(sharded, plain, rtol=1e-5, atol=1e-6)
raises(lambda: fsd.sample(score, sde, grid, key=jax.random.key(0), num_samples=6, mesh=mesh),
       "`num_samples` = 6")
report("sample")

# global_batch with one process: the host array, split across the devices.
rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
batch = fsd.global_batch(rows, mesh)
on_four_devices(batch)
assert batch.shape == (8, 3) and np.array_equal(batch, rows)

# train: the same loss curve with the batch on four devices and the weights replicated;
# an interrupted sharded run resumes from its checkpoint to the same weights.
data = q.sample(jax.random.key(2), grid, (32,))
net = fsd.nn.FNO(modes=3, width=4, depth=1, embedding_dim=8, projection_dim=8,
                 key=jax.random.key(1))
kw = dict(levels=[(8, 6)], batch_size=16, progress=False, learning_rate=1e-2)
plain = fsd.train(net, sde, data, **kw)
with tempfile.TemporaryDirectory() as folder:
    first = fsd.train(net, sde, data, mesh=mesh, checkpoint_dir=folder, stop_after=3, **kw)
    rest = fsd.train(net, sde, data, mesh=mesh, checkpoint_dir=folder, resume=True, **kw)
    saved = fsd.load_checkpoint(folder).network
losses = np.concatenate([first.losses, rest.losses])
assert losses.shape == (6,) and plain.losses[-1] < plain.losses[0]
close(losses, plain.losses, rtol=1e-4)
weights = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array))
assert all(len(w.sharding.device_set) == 4 and w.sharding.is_fully_replicated
           for w in weights(rest.network))
for a, b, c in zip(weights(rest.network), weights(plain.network), weights(saved)):
    close(a, b, rtol=1e-4, atol=1e-6), close(c, b, rtol=1e-4, atol=1e-6)
raises(lambda: fsd.train(net, sde, data, mesh=mesh, levels=[(8, 1)], batch_size=6),
       "`batch_size` = 6")
report("train")

print("OK")
"""

POSTERIOR = """
# NUTS: four chains, one a device, vectorised; the draws of the unsharded vectorised run.
nuts = NUTS(num_warmup=4, num_samples=4, num_chains=4, chain_method="vectorized",
            max_tree_depth=2)
args = (jax.random.key(5), y, operator, fsd.GaussianField(q, small), nuts)
plain = posterior(*args, **problem)
sharded = posterior(*args, mesh=mesh, **problem)
assert plain.samples.shape == (16, 4, 4) and np.ptp(plain.samples[:, 0, 0]) > 0
close(sharded.samples, plain.samples, rtol=1e-4, atol=1e-5)
raises(lambda: posterior(*args[:4], NUTS(num_chains=2), mesh=mesh, **problem),
       "`num_chains` = 2")
report("nuts")

# DPS: the solves split across the devices, the same draws.
dps = DPS(fsd.GaussianScore(LaplacianPower(1.5, 4.0), sde, small), sde, num_samples=4,
          steps=4, batch_size=1, weighting="normalised")
plain = posterior(jax.random.key(6), y, operator, None, dps, **problem)
sharded = posterior(jax.random.key(6), y, operator, None, dps, mesh=mesh, **problem)
on_four_devices(sharded.samples)
close(sharded.samples, plain.samples, rtol=1e-4, atol=1e-4)
raises(lambda: posterior(jax.random.key(6), y, operator, None,
                         DPS(dps.score, sde, num_samples=2), mesh=mesh, **problem),
       "`num_samples` = 2")
report("dps")
print("OK")
"""


def _run_on_four_devices(script: str) -> str:
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", SETUP + script], capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "OK" in result.stdout, result.stdout
    return result.stdout


def test_sharded_sampling_and_training_agree_with_unsharded_on_four_devices():
    _run_on_four_devices(SAMPLE_TRAIN)


@pytest.mark.slow
def test_sharded_nuts_chains_and_dps_solves_agree_with_unsharded_on_four_devices():
    # Slow: numpyro compiles NUTS's warm-up and sampling loops afresh for each run (about
    # 17 s of CPU for the two here), and DPS differentiates through the score.
    _run_on_four_devices(POSTERIOR)


def test_process_slice_splits_evenly_and_covers_everything():
    parts = [process_slice(10, i, 3) for i in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 7), (7, 10)]
    assert process_slice(5) == slice(0, 5)  # one process: everything
    for num, count in [(0, 2), (7, 7), (60000, 8), (5, 8)]:
        parts = [process_slice(num, i, count) for i in range(count)]
        sizes = [p.stop - p.start for p in parts]
        assert parts[0].start == 0 and parts[-1].stop == num
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="process_index"):
        process_slice(5, 3, 3)
    with pytest.raises(ValueError, match="num"):
        process_slice(-1, 0, 1)


def test_loader_keeps_this_process_part():
    whole = load_subset()
    assert np.array_equal(load_subset(process_slice=True).images, whole.images)
    parts = [load_subset(process_slice=process_slice(2000, i, 3)) for i in range(3)]
    assert np.array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
    assert [len(p.labels) for p in parts] == [667, 666, 667]


def test_global_batch_with_one_process_is_the_local_batch():
    local = np.arange(12.0).reshape(4, 3)
    batch = global_batch({"x": local}, data_mesh())
    assert batch["x"].shape == (4, 3) and np.array_equal(batch["x"], local)
    with pytest.raises(ValueError, match="axis 'data'"):
        global_batch(local, Mesh(np.array(jax.devices()), ("batch",)))


def test_fsdiff_train_devices_option_builds_a_data_mesh():
    from numpyro_fsdiff.cli._train_command import _mesh

    assert _mesh(None) is None
    mesh = _mesh(1)
    assert mesh.shape == {"data": 1} and list(mesh.devices.flat) == jax.devices()[:1]
    with pytest.raises(ValueError, match="--devices"):
        _mesh(len(jax.devices()) + 1)
