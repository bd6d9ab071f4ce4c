r"""The Gaussian measure $N(0, Q)$ on a grid as a NumPyro distribution."""

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample

from ._covariance import AbstractCovariance
from ._custom_types import Array, Float, PRNGKeyArray
from ._grid import Grid
from ._validation import check_field_shape, is_concrete


class GaussianField(dist.Distribution):
    r"""Point values of $u \sim N(0, Q)$ on a grid, an exact NumPyro distribution.

    The pixel covariance is diagonal in the unitary DFT basis with eigenvalues
    $\mu_k = N \lambda_k / |D|$, so

    $$\log p(x) = -\tfrac12 \sum_k \frac{|\hat x_k|^2}{\mu_k} - \tfrac12 \sum_k \log \mu_k
    - \tfrac N2 \log 2\pi, \qquad \hat x = \mathrm{FFT}_{\mathrm{ortho}}(x).$$

    This is the Lebesgue density on $\mathbb{R}^N$; it changes with $N$.

    **Arguments:**

    - `covariance`: the operator $Q$, any
      [`AbstractCovariance`][numpyro_fsdiff.covariance.AbstractCovariance].
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid]; `event_shape == grid.shape`.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern

        prior = GaussianField(Matern(alpha=2.0, tau=3.0), Grid((32, 32)))
        u = prior.sample(jax.random.key(0), (4,))  # four fields of shape (32, 32)
        log_density = prior.log_prob(u)            # exact, shape (4,)
        ```
    """

    arg_constraints = {}
    support = dist.constraints.independent(dist.constraints.real, 2)
    reparametrized_params = []
    pytree_data_fields = ("covariance",)
    pytree_aux_fields = ("grid",)

    def __init__(self, covariance, grid, *, validate_args=None):
        if not isinstance(covariance, AbstractCovariance):
            raise ValueError(f"`covariance` must be a covariance operator; got {covariance!r}.")
        if not isinstance(grid, Grid):
            raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
        self.covariance = covariance
        self.grid = grid
        super().__init__(batch_shape=(), event_shape=grid.shape, validate_args=validate_args)

    def sample(self, key: PRNGKeyArray, sample_shape=()) -> Float[Array, "*sample n1 n2"]:
        return self.covariance.sample(key, self.grid, tuple(sample_shape) + self.batch_shape)

    @validate_sample
    def log_prob(self, value: Float[Array, "*batch n1 n2"]) -> Float[Array, "*batch"]:
        check_field_shape("value", value, self.grid.shape)
        # Concrete values only: inside jit a NaN log-density is how NumPyro's samplers see a
        # diverging trajectory, so a traced check would turn a rejected step into a crash.
        if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
            raise ValueError("`value` contains NaN or inf values.")
        coeffs = jnp.fft.fft2(value, norm="ortho")
        mu = self.covariance.pixel_eigenvalues(self.grid)
        quadratic = jnp.sum(jnp.abs(coeffs) ** 2 / mu, axis=(-2, -1))
        return -0.5 * (quadratic + jnp.sum(jnp.log(mu)) + self.grid.size * jnp.log(2 * jnp.pi))

    @property
    def mean(self):
        return jnp.zeros(self.grid.shape)

    @property
    def variance(self):
        r"""The pixel variance $\sum_{k \in K_n} \lambda_k / |D|$ at every point."""
        return jnp.full(self.grid.shape, self.covariance.trace(self.grid) / self.grid.area)
