"""Shared test helpers: dense reference objects built the slow, obvious way."""

import numpy as np


def dense_pixel_covariance(covariance, grid) -> np.ndarray:
    """The N x N pixel covariance of N(0, Q) built column by column from `colour`."""
    import jax.numpy as jnp

    n = grid.size
    eye = jnp.eye(n).reshape((n,) + grid.shape)
    columns = covariance.colour(covariance.colour(eye, grid), grid)  # Sigma = C C^T, C symmetric
    return np.asarray(columns.reshape(n, n))


def mean_tolerance(std: float, num: int, sigmas: float = 5.0) -> float:
    """A `sigmas`-standard-error tolerance for a sample mean of `num` draws of spread `std`."""
    return sigmas * std / np.sqrt(num)
