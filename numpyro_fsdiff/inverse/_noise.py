r"""Gaussian observation noise $y = A u + \sigma \varepsilon$, $\varepsilon \sim N(0, I)$."""

import equinox as eqx
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from .._custom_types import Scalar
from .._validation import check_positive


class GaussianNoise(eqx.Module):
    r"""Independent Gaussian noise of standard deviation $\sigma$ on every datum.

    Either $\sigma$ is known (`GaussianNoise(0.05)`) or it is inferred jointly with the field
    under a prior (`GaussianNoise(prior=dist.HalfNormal(0.1))`), as the NumPyro sample site
    `"sigma"`. The likelihood is $y \sim N(A u, \sigma^2 I_M)$ with the Euclidean norm on the
    data, the inner product the operators' adjoints use on the data side.

    **Arguments:**

    - `sigma`: the known noise level $\sigma > 0$, or `None` when `prior` is given.
    - `prior`: a NumPyro distribution on $(0, \infty)$ with scalar event shape, or `None`.

    **Raises:** `ValueError` if both or neither are given, if `sigma <= 0`, or if `prior` is
    not a scalar distribution with positive support.
    """

    sigma: Scalar | None
    prior: dist.Distribution | None

    def __init__(self, sigma=None, *, prior=None):
        if (sigma is None) == (prior is None):
            raise ValueError(
                f"give exactly one of `sigma` (known noise) and `prior` (inferred noise); got "
                f"sigma={sigma!r}, prior={prior!r}."
            )
        if sigma is not None:
            check_positive("sigma", sigma)
            sigma = jnp.asarray(sigma, dtype=jnp.result_type(float))
        else:
            if not isinstance(prior, dist.Distribution) or prior.event_shape != () or (
                prior.batch_shape != ()
            ):
                raise ValueError(
                    f"`prior` must be a scalar numpyro distribution; got {prior!r}."
                )
            if bool(prior.support(jnp.asarray(-1.0))):
                raise ValueError(
                    f"`prior` must have positive support (noise levels are > 0); got {prior!r} "
                    f"with support {prior.support}."
                )
        self.sigma = sigma
        self.prior = prior

    @property
    def inferred(self) -> bool:
        """Whether $\\sigma$ is a latent variable."""
        return self.prior is not None

    def sample(self, name: str = "sigma") -> Scalar:
        """$\\sigma$: the known value, or the NumPyro sample site `name` under the prior."""
        if self.prior is None:
            return self.sigma
        return numpyro.sample(name, self.prior)
