r"""Exact scores of Gaussian data, the reference against which everything is tested."""

import equinox as eqx

from ._covariance import AbstractCovariance
from ._custom_types import Field, ScalarLike, Spectrum
from ._grid import Grid, fourier_multiply
from ._sde import VPSDE
from ._validation import check_field_shape


class GaussianScore(eqx.Module):
    r"""The exact Q-preconditioned score of data $X_0 \sim N(0, C)$ under a VP-SDE.

    With $C e_k = c_k e_k$ and $Q e_k = q_k e_k$, $X_t \sim N(0, m_t^2 C + \sigma_t^2 Q)$ and

    $$S(x, t)_k = -\frac{q_k}{m_t^2 c_k + \sigma_t^2 q_k}\, x_k.$$

    If $C = Q$ then $S(x, t) = -x$ and the probability-flow ODE is the identity.

    **Arguments:**

    - `data_covariance`: the data covariance $C$.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] (its covariance is $Q$).
    - `grid`: the grid the score acts on.
    """

    data_covariance: AbstractCovariance
    sde: VPSDE
    grid: Grid = eqx.field(static=True)

    def _spectra(self, t: ScalarLike) -> tuple[Spectrum, Spectrum]:
        mean, std = self.sde.marginal_coefficients(t)
        c = self.data_covariance.eigenvalues(self.grid)
        q = self.sde.covariance.eigenvalues(self.grid)
        return q, mean**2 * c + std**2 * q

    def marginal_eigenvalues(self, t: ScalarLike) -> Spectrum:
        r"""The grid eigenvalues $m_t^2 c_k + \sigma_t^2 q_k$ of the law of $X_t$."""
        return self._spectra(t)[1]

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        check_field_shape("x", x, self.grid.shape)
        q, marginal = self._spectra(t)  # Q's eigenvalues once per call, not twice
        return fourier_multiply(x, -q / marginal)
