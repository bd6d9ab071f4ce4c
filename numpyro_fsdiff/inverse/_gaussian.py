r"""The exact posterior of a linear-Gaussian inverse problem, the samplers' reference."""

import jax
import jax.numpy as jnp

from .._covariance import AbstractCovariance
from .._custom_types import Array, Field, Float
from .._grid import Grid, fourier_multiply
from .._validation import check_positive
from ._operators import AbstractOperator


def gaussian_posterior(
    y: Array,
    operator: AbstractOperator,
    covariance: AbstractCovariance | Float[Array, "n1 n2"],
    grid: Grid,
    sigma,
) -> tuple[Field, Float[Array, "N N"]]:
    r"""The exact posterior of a linear-Gaussian problem, by dense linear algebra.

    With prior $u \sim N(0, \Sigma)$ ($\Sigma$ the pixel covariance on `grid` of an operator
    diagonal in the Fourier basis) and $y \sim N(Au, \sigma^2 I)$:

    $$\Sigma_{\text{post}} = \Sigma - \Sigma A^\top (A\Sigma A^\top + \sigma^2 I)^{-1}
    A\Sigma, \qquad \mu_{\text{post}} = \Sigma A^\top (A\Sigma A^\top + \sigma^2 I)^{-1} y.$$

    The reference the samplers are tested against; small grids only ($O(N^3)$).

    **Arguments:**

    - `y`: the data.
    - `operator`: the observation operator $A$.
    - `covariance`: the prior's covariance operator, or its grid eigenvalues $\lambda_k$
      (`numpy.fft.fft2` layout), e.g.
      [`GaussianScore.marginal_eigenvalues`][numpyro_fsdiff.GaussianScore.marginal_eigenvalues]
      at $t_\varepsilon$ for a diffusion prior of Gaussian data.
    - `grid`: the grid.
    - `sigma`: the noise level $\sigma > 0$.

    **Returns:** `(mean, cov)`, shapes `grid.shape` and `(N, N)`.
    """
    check_positive("sigma", sigma)
    y = operator.check_data(y, grid)
    if isinstance(covariance, AbstractCovariance):
        eigenvalues = covariance.eigenvalues(grid)
    else:
        eigenvalues = jnp.asarray(covariance)
        if eigenvalues.shape != grid.shape:
            raise ValueError(
                f"`covariance` must be a covariance operator or eigenvalues of shape "
                f"{grid.shape}; got shape {eigenvalues.shape}."
            )
    n = grid.size
    eye = jnp.eye(n).reshape((n,) + grid.shape)
    prior_cov = jax.vmap(lambda e: fourier_multiply(e, eigenvalues / grid.cell_area))(eye)
    prior_cov = prior_cov.reshape(n, n)
    a = operator.matrix(grid)
    cross = prior_cov @ a.T  # Sigma A^T
    gram = a @ cross + sigma**2 * jnp.eye(a.shape[0])
    gain = jnp.linalg.solve(gram, cross.T).T  # Sigma A^T (A Sigma A^T + s^2 I)^-1
    cov = prior_cov - gain @ cross.T
    cov = 0.5 * (cov + cov.T)
    mean = gain @ jnp.ravel(y)
    return mean.reshape(grid.shape), cov
