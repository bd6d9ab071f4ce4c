"""Observation operators: adjoints, exact values, resolution consistency, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import Grid
from numpyro_fsdiff.inverse import (
    CellAverage,
    Compose,
    GaussianBlur,
    Mask,
    MotionBlur,
    PointObservations,
    naive_inverse,
)

_RNG = np.random.default_rng(7)
_LOCATIONS = _RNG.uniform(0, 1, size=(9, 2))


def _ring(x1, x2):
    return (x1 - 0.5) ** 2 + (x2 - 0.5) ** 2 > 0.05


def _operators():
    return {
        "gauss": GaussianBlur(0.04),
        "gauss_obs": GaussianBlur(0.04, shape=(5, 4)),
        "motion": MotionBlur(0.15, 0.6),
        "motion_obs": MotionBlur(0.15, 2.0, shape=(4, 5)),
        "cells": CellAverage((3, 2)),
        "cells_odd": CellAverage((5, 3)),
        "mask": Mask(_ring),
        "mask_obs": Mask(_ring, shape=(5, 5)),
        "points": PointObservations(_LOCATIONS),
        "compose": Compose(Mask(_ring, shape=(3, 4)), MotionBlur(0.1, 1.0, shape=(5, 4))),
    }


class _BandLimited:
    """A random real trigonometric polynomial with |k_i| <= 4: resolved by every grid >= 10."""

    def __init__(self, seed=0, kmax=4):
        rng = np.random.default_rng(seed)
        self.k = np.array([(a, b) for a in range(-kmax, kmax + 1) for b in range(0, kmax + 1)])
        self.a = rng.normal(size=len(self.k)) / (1 + np.sum(self.k**2, axis=1))
        self.b = rng.normal(size=len(self.k)) / (1 + np.sum(self.k**2, axis=1))

    def __call__(self, x1, x2):
        k1, k2 = self.k[:, 0], self.k[:, 1]
        phase = 2 * np.pi * (np.multiply.outer(x1, k1) + np.multiply.outer(x2, k2))
        return np.cos(phase) @ self.a + np.sin(phase) @ self.b

    def on(self, grid):
        axes = [np.arange(n) / n for n in grid.shape]
        x1, x2 = np.meshgrid(*axes, indexing="ij")
        return jnp.asarray(self(x1, x2))


@pytest.mark.parametrize("name", list(_operators()))
def test_adjoint_dot_product(x64, name):
    op = _operators()[name]
    grid = Grid((8, 7), (1.0, 1.0))  # one even axis (Nyquist mode) and one odd
    u = jax.random.normal(jax.random.key(0), grid.shape)
    y = jax.random.normal(jax.random.key(1), op.data_shape(grid))
    lhs = jnp.sum(op(u, grid) * y)  # Euclidean on the data side
    rhs = grid.inner(u, op.adjoint(y, grid))  # L2(D) quadrature on the field side
    np.testing.assert_allclose(float(lhs), float(rhs), rtol=1e-11, atol=1e-12)
    # and the closed-form transpose matches JAX's transpose of the forward map
    (auto,) = jax.linear_transpose(lambda v: op(v, grid), u)(y)
    np.testing.assert_allclose(op.transpose(y, grid), auto, atol=1e-12)


def test_adjoint_non_unit_domain(x64):
    grid = Grid((6, 8), (2.0, 0.5))
    op = Compose(CellAverage((3, 4)), MotionBlur(0.3, 0.4))
    u = jax.random.normal(jax.random.key(2), grid.shape)
    y = jax.random.normal(jax.random.key(3), op.data_shape(grid))
    np.testing.assert_allclose(
        float(jnp.sum(op(u, grid) * y)), float(grid.inner(u, op.adjoint(y, grid))), rtol=1e-11
    )


def _consistent_operators():
    return {
        "gauss": GaussianBlur(0.03, shape=(28, 28)),
        "motion": MotionBlur(0.1, 0.5, shape=(28, 28)),
        "cells7": CellAverage((7, 7)),
        "cells14": CellAverage((14, 14)),
        "mask": Mask(_ring, shape=(28, 28)),
        "points": PointObservations(_LOCATIONS),
        "compose": Compose(Mask(_ring, shape=(14, 14)), GaussianBlur(0.05, shape=(14, 14))),
    }


@pytest.mark.parametrize("name", list(_consistent_operators()))
def test_resolution_consistency(x64, name):
    """The observation of a band-limited function is the same on 28, 56 and 64 grids."""
    op = _consistent_operators()[name]
    f = _BandLimited(seed=1)
    observations = [op(f.on(Grid((n, n))), Grid((n, n))) for n in (28, 56, 64)]
    scale = float(jnp.max(jnp.abs(observations[0])))
    for obs in observations[1:]:
        np.testing.assert_allclose(obs, observations[0], atol=1e-10 * scale)


def test_gaussian_blur_damps_each_mode(x64):
    grid = Grid((32, 32))
    x1, x2 = np.asarray(grid.coords())
    width, k = 0.05, (3, 2)
    u = jnp.cos(2 * np.pi * (k[0] * x1 + k[1] * x2))
    expected = np.exp(-2 * np.pi**2 * width**2 * (k[0] ** 2 + k[1] ** 2)) * u
    np.testing.assert_allclose(GaussianBlur(width)(u, grid), expected, atol=1e-12)


def test_motion_blur_is_the_line_average(x64):
    """(Au)(x) = (1/l) int_0^l u(x - s d) ds, by Gauss-Legendre quadrature of the exact function."""
    f = _BandLimited(seed=2)
    length, angle = 0.23, 0.9
    grid = Grid((20, 20))
    x1, x2 = np.asarray(grid.coords())
    nodes, weights = np.polynomial.legendre.leggauss(40)
    s = 0.5 * length * (nodes + 1)
    d = np.array([np.cos(angle), np.sin(angle)])
    values = f(np.subtract.outer(x1, s * d[0]), np.subtract.outer(x2, s * d[1]))
    expected = 0.5 * np.sum(values * weights, axis=-1)
    op = MotionBlur(length, angle)
    np.testing.assert_allclose(op(f.on(grid), grid), expected, atol=1e-11)
    # the kernel is not symmetric: A differs from its transpose
    matrix = np.asarray(op.matrix(Grid((6, 6))))
    assert np.max(np.abs(matrix - matrix.T)) > 1e-2


def test_cell_average_is_the_cell_integral(x64):
    f = _BandLimited(seed=3)
    shape = (5, 4)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    h1, h2 = 1 / shape[0], 1 / shape[1]
    expected = np.empty(shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            a = i * h1 + 0.5 * h1 * nodes
            b = j * h2 + 0.5 * h2 * nodes
            vals = f(*np.meshgrid(a, b, indexing="ij"))
            expected[i, j] = 0.25 * weights @ vals @ weights
    op = CellAverage(shape)
    for n in ((20, 20), (25, 24), (13, 11)):
        grid = Grid(n)
        np.testing.assert_allclose(op(f.on(grid), grid), expected, atol=1e-11)


def test_point_observations_are_point_values(x64):
    f = _BandLimited(seed=4)
    grid = Grid((12, 11))
    expected = f(_LOCATIONS[:, 0], _LOCATIONS[:, 1])
    np.testing.assert_allclose(PointObservations(_LOCATIONS)(f.on(grid), grid), expected,
                               atol=1e-11)


def test_mask_subsamples_and_naive_inverse_zero_fills(x64):
    grid = Grid((8, 8))
    u = jax.random.normal(jax.random.key(4), grid.shape)
    op = Mask(lambda x1, x2: x1 < 0.5, shape=(4, 4))
    y = op(u, grid)
    np.testing.assert_allclose(y, np.asarray(u)[::2, ::2][:2].ravel())
    same_grid = Mask(lambda x1, x2: x1 < 0.5)
    filled = naive_inverse(same_grid(u, grid), same_grid, grid)
    np.testing.assert_allclose(filled, np.where(np.asarray(grid.coords()[0]) < 0.5, u, 0.0),
                               atol=1e-10)


def test_operators_work_under_jit_and_vmap():
    grid = Grid((8, 8))
    op = Compose(Mask(_ring, shape=(4, 4)), GaussianBlur(0.1, shape=(4, 4)))
    us = jax.random.normal(jax.random.key(5), (3,) + grid.shape)
    batched = jax.jit(jax.vmap(lambda u: op(u, grid)))(us)
    np.testing.assert_allclose(batched[1], op(us[1], grid), rtol=1e-5, atol=1e-6)


def test_errors_name_the_argument():
    grid = Grid((8, 8))
    with pytest.raises(ValueError, match="observes nothing"):
        Mask(lambda x1, x2: x1 > 2.0, shape=(4, 4))
    with pytest.raises(ValueError, match="observes nothing"):
        Mask(lambda x1, x2: x1 < 0.0)(jnp.zeros(grid.shape), grid)
    with pytest.raises(ValueError, match="`y` must have shape"):
        GaussianBlur(0.1).transpose(jnp.zeros((4, 4)), grid)
    with pytest.raises(ValueError, match="`u` must have shape"):
        CellAverage((2, 2))(jnp.zeros((6, 6)), grid)
    with pytest.raises(ValueError, match="`width`"):
        GaussianBlur(-0.1)
    with pytest.raises(ValueError, match="`locations` must be an array of shape \\(M, 2\\)"):
        PointObservations(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="`observed` must be a boolean function"):
        Mask(np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_data_are_refused(bad):
    """Every entry that takes user data refuses NaN and inf, naming the argument: the data of
    `transpose`, `adjoint`, `embed` and `naive_inverse` (at run time under `jit`), and a
    concrete field passed to an operator."""
    grid = Grid((8, 8))
    u = jnp.zeros(grid.shape).at[2, 3].set(bad)
    blur, mask = GaussianBlur(0.1), Mask(_ring, shape=(4, 4))
    y = jnp.zeros(blur.data_shape(grid)).at[0, 0].set(bad)
    y_mask = jnp.zeros(mask.data_shape(grid)).at[0].set(bad)
    for call in [lambda: blur.transpose(y, grid), lambda: blur.adjoint(y, grid),
                 lambda: naive_inverse(y, blur, grid), lambda: mask.embed(y_mask, grid),
                 lambda: Compose(mask, blur).transpose(y_mask, grid)]:
        with pytest.raises(ValueError, match="`y` contains NaN or inf"):
            call()
    for op in (blur, mask, CellAverage((4, 4)), MotionBlur(0.2), Compose(mask, blur)):
        with pytest.raises(ValueError, match="`u` contains NaN or inf"):
            op(u, grid)
    with pytest.raises(Exception, match="`y` contains NaN or inf"):
        jax.block_until_ready(jax.jit(lambda y: blur.transpose(y, grid))(y))
    # finite data pass through unchanged, traced or not
    finite = jnp.ones(blur.data_shape(grid))
    np.testing.assert_allclose(jax.jit(lambda y: blur.transpose(y, grid))(finite),
                               blur.transpose(finite, grid), rtol=1e-6)
