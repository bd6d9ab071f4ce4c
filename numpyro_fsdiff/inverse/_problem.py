r"""The inverse problem a posterior sampler is given: data, operator, prior, noise and grid."""

import functools
from typing import Any

import equinox as eqx
import numpyro
import numpyro.distributions as dist
from numpyro.infer.reparam import TransformReparam

from .._custom_types import Array
from .._grid import Grid
from ._latent import whiten
from ._model import check_problem, observe
from ._noise import GaussianNoise
from ._operators import AbstractOperator


class Problem(eqx.Module):
    r"""A linear inverse problem: recover $u$ on `grid` from $y = A u + \sigma \varepsilon$,
    $\varepsilon \sim N(0, I)$, under a prior on $u$.

    What [`AbstractSampler.run`][numpyro_fsdiff.inverse.AbstractSampler.run] receives;
    [`posterior`][numpyro_fsdiff.inverse.posterior] builds it from its arguments. The
    likelihood is $N(y;\ A u, \sigma^2 I)$, the model that of
    [`model`][numpyro_fsdiff.inverse.model].

    **Fields:**

    - `y`: the data, shape `operator.data_shape(grid)`.
    - `operator`: the observation operator $A$.
    - `prior`: a NumPyro distribution on fields of shape `grid.shape` (NUTS, SVI, MAP), or
      `None` for samplers that use a score instead (DPS).
    - `noise`: a [`GaussianNoise`][numpyro_fsdiff.inverse.GaussianNoise].
    - `grid`: the grid of the unknown field.
    - `mesh`: a device mesh that splits the sampler's work, or `None`.

    **Raises:** `ValueError` naming the argument that does not fit the others, and `y` when
    it holds NaN or inf.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern
        from numpyro_fsdiff.inverse import MAP, GaussianNoise, Mask, Problem

        grid = fsd.Grid((8, 8))
        op = Mask(lambda x1, x2: x1 < 0.5)
        y = jnp.zeros(op.data_shape(grid))
        problem = Problem(y, op, fsd.GaussianField(Matern(2.0, 3.0), grid), GaussianNoise(0.1),
                          grid)
        out = MAP(num_steps=20).run(problem, key=jax.random.key(0))  # a SamplerOutput
        out.samples.shape  # (1, 8, 8)
        ```
    """

    y: Array
    operator: AbstractOperator
    prior: dist.Distribution | None
    noise: GaussianNoise
    grid: Grid = eqx.field(static=True)
    mesh: Any = eqx.field(static=True, default=None)

    def __check_init__(self):
        check_problem(self.y, self.operator, self.prior, noise=self.noise, grid=self.grid)

    def latent_model(self):
        """The NumPyro model, with the prior written on pixel white noise (see
        [`whiten`][numpyro_fsdiff.inverse.whiten]) and reparametrised there: a function of
        the data `y`, with sample sites `"u_base"` (the white latent) and `"u"` for a
        whitenable prior, `"sigma"` when it is inferred, and the observed `"y"`."""
        if self.prior is None:
            raise ValueError("`prior` must be a numpyro distribution for a model; got None.")
        prior = whiten(self.prior)
        fn = functools.partial(
            observe, operator=self.operator, prior=prior, noise=self.noise, grid=self.grid
        )
        if isinstance(prior, dist.TransformedDistribution):
            fn = numpyro.handlers.reparam(fn, config={"u": TransformReparam()})
        return fn
