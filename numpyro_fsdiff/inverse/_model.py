r"""The NumPyro model of a linear inverse problem with a function-space prior."""

import numpyro
import numpyro.distributions as dist

from .._grid import Grid
from ._noise import GaussianNoise
from ._operators import AbstractOperator


def model(
    y,
    operator: AbstractOperator,
    prior: dist.Distribution,
    *,
    noise: GaussianNoise,
    grid: Grid,
    name: str = "u",
):
    r"""The NumPyro model $u \sim \text{prior}$, $y \mid u, \sigma \sim N(A u, \sigma^2 I)$.

    Sample sites: `name` (the field, event shape `grid.shape`), `"sigma"` if the noise level
    is inferred, and the observed `"y"`. With `y=None` it draws from the prior predictive.

    **Arguments:**

    - `y`: the data, shape `operator.data_shape(grid)`, or `None`.
    - `operator`: an observation operator
      ([`AbstractOperator`][numpyro_fsdiff.inverse.AbstractOperator]).
    - `prior`: a NumPyro distribution on fields of shape `grid.shape`: a
      [`GaussianField`][numpyro_fsdiff.GaussianField], a `DiffusionPrior`, or
      `TransformedDistribution(GaussianField(Q, grid), ProbabilityFlow(...))`.
    - `noise`: a [`GaussianNoise`][numpyro_fsdiff.inverse.GaussianNoise].
    - `grid`: the grid the field lives on.
    - `name`: the field's site name.

    **Returns:** the field $u$.

    **Raises:** `ValueError` naming the argument that does not fit the others, or `y` if it
    holds NaN or inf (under `jit`, at run time).

    !!! example

        ```python
        from numpyro.infer import MCMC, NUTS
        from numpyro_fsdiff.covariance import Matern

        grid = fsd.Grid((8, 8))
        op = GaussianBlur(0.05)
        prior = fsd.GaussianField(Matern(2.0, 3.0), grid)
        u_true = prior.sample(jax.random.key(0))
        y = op(u_true, grid) + 0.05 * jax.random.normal(jax.random.key(1), op.data_shape(grid))
        kernel = NUTS(model, max_tree_depth=2)
        mcmc = MCMC(kernel, num_warmup=5, num_samples=5, progress_bar=False)  # real runs: 100s
        mcmc.run(jax.random.key(2), y, op, prior, noise=GaussianNoise(0.05), grid=grid)
        u_mean = mcmc.get_samples()["u"].mean(0)
        ```
    """
    y = check_problem(y, operator, prior, noise=noise, grid=grid)
    return observe(y, operator, prior, noise=noise, grid=grid, name=name)


def observe(y, operator, prior, *, noise, grid, name="u"):
    """The sample sites of [`model`][numpyro_fsdiff.inverse.model], without its checks (for
    problems checked once, e.g. by `Problem`)."""
    u = numpyro.sample(name, prior)
    sigma = noise.sample()
    mean = operator(u, grid)
    numpyro.sample("y", dist.Normal(mean, sigma).to_event(mean.ndim), obs=y)
    return u


def check_problem(y, operator, prior, *, noise, grid):
    """Return `y` checked (shape, real dtype, finite), raising a `ValueError` naming the
    argument that does not fit the others. `prior=None` (score-only samplers) is not checked."""
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
    if not isinstance(operator, AbstractOperator):
        raise ValueError(f"`operator` must be an observation operator; got {operator!r}.")
    if not isinstance(noise, GaussianNoise):
        raise ValueError(f"`noise` must be a GaussianNoise; got {noise!r}.")
    if prior is not None and (
        not isinstance(prior, dist.Distribution) or tuple(prior.event_shape) != grid.shape
    ):
        raise ValueError(
            f"`prior` must be a numpyro distribution with event shape {grid.shape} (the grid); "
            f"got {prior!r}."
        )
    if y is not None:
        y = operator.check_data(y, grid)
    return y
