r"""Whitening: write a Gaussian-latent prior as a transform of pixel white noise."""

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform

from .._covariance import AbstractCovariance
from .._gaussian_field import GaussianField
from .._grid import Grid, fourier_multiply


class ColourTransform(Transform):
    r"""The linear map $w \mapsto Q^{1/2}_{\text{pix}}\, w$ from pixel white noise to
    $N(0, Q)$ on a grid.

    $Q^{1/2}_{\text{pix}}$ is the symmetric square root of the pixel covariance
    (eigenvalues $N\lambda_k/|D|$ in the unitary DFT basis), applied by FFT as
    [`AbstractCovariance.colour`][numpyro_fsdiff.covariance.AbstractCovariance.colour] does;
    $\log|\det| = \tfrac12 \sum_k \log(N \lambda_k / |D|)$.

    **Arguments:**

    - `covariance`: the operator $Q$.
    - `grid`: the grid; the event shape is `grid.shape`.
    """

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.independent(constraints.real, 2)

    def __init__(self, covariance: AbstractCovariance, grid: Grid):
        if not isinstance(covariance, AbstractCovariance):
            raise ValueError(f"`covariance` must be a covariance operator; got {covariance!r}.")
        self.covariance = covariance
        self.grid = grid

    def __call__(self, x):
        return self.covariance.colour(x, self.grid)

    def _inverse(self, y):
        return fourier_multiply(y, 1.0 / jnp.sqrt(self.covariance.pixel_eigenvalues(self.grid)))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        shape = jnp.shape(x)[:-2]
        return jnp.broadcast_to(0.5 * self.covariance.log_det(self.grid), shape)

    def tree_flatten(self):
        return (self.covariance,), (("covariance",), {"grid": self.grid})


def white_noise(grid: Grid) -> dist.Distribution:
    """Independent standard normal pixels on `grid` (event shape `grid.shape`)."""
    return dist.Normal(jnp.zeros(grid.shape), 1.0).to_event(2)


def whiten(prior: dist.Distribution) -> dist.Distribution:
    r"""The same law written as a transform of pixel white noise, where it has a Gaussian base.

    - `GaussianField(Q, grid)` becomes `TransformedDistribution(white, ColourTransform(Q))`;
    - `TransformedDistribution(GaussianField(Q, grid), T)` (a diffusion prior through the
      probability flow) becomes `TransformedDistribution(white, [ColourTransform(Q), T])`;
    - anything else is returned unchanged.

    With `numpyro.infer.reparam.TransformReparam` on the result, NUTS and SVI then work on
    the white latent, where the prior is isotropic and needs no mass-matrix adaptation.
    """
    if isinstance(prior, GaussianField):
        return dist.TransformedDistribution(
            white_noise(prior.grid), ColourTransform(prior.covariance, prior.grid)
        )
    if isinstance(prior, dist.TransformedDistribution) and isinstance(
        prior.base_dist, GaussianField
    ):
        base = prior.base_dist
        transforms = [ColourTransform(base.covariance, base.grid), *prior.transforms]
        return dist.TransformedDistribution(white_noise(base.grid), transforms)
    return prior
