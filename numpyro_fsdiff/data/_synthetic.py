r"""Synthetic function data with known laws: Gaussian random fields and a Gaussian mixture."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._analytic import GaussianScore
from .._covariance import AbstractCovariance, Matern
from .._custom_types import Array, Field, Float, Int, PRNGKeyArray, Scalar, ScalarLike
from .._grid import Grid, fourier_multiply, resample
from .._sde import VPSDE
from .._validation import check_field_shape


def _check_num(num) -> int:
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
        raise ValueError(f"`num` must be an int >= 1; got {num!r}.")
    return int(num)


def gaussian_fields(
    key: PRNGKeyArray, covariance: AbstractCovariance, grid: Grid, num: int
) -> Float[Array, "num n1 n2"]:
    r"""`num` independent draws of the Gaussian random field $N(0, C)$ on `grid`.

    A thin, documented data source over
    [`AbstractCovariance.sample`][numpyro_fsdiff.covariance.AbstractCovariance.sample]
    (Karhunen-Loève, truncated to the grid): training data whose exact score is
    [`GaussianScore`][numpyro_fsdiff.GaussianScore].

    **Arguments:**

    - `key`: a PRNG key.
    - `covariance`: the data covariance $C$.
    - `grid`: the grid.
    - `num`: the number of fields.

    **Returns:** an array of shape `(num, n1, n2)`.
    """
    if not isinstance(covariance, AbstractCovariance):
        raise ValueError(f"`covariance` must be a covariance operator; got {covariance!r}.")
    return covariance.sample(key, grid, (_check_num(num),))


class GaussianMixture(eqx.Module):
    r"""A mixture of Gaussian measures on functions with a shared covariance,

    $$X_0 \sim \sum_{i=1}^K w_i\, N(\mu_i, C),$$

    with $C$ diagonal in the Fourier basis. Each mean $\mu_i$ is a band-limited function,
    stored by its values on a small grid and brought to any grid with the spectral
    [`resample`][numpyro_fsdiff.resample] (exact for band-limited functions), so the law on
    a coarse grid is the spectral truncation of the law on a fine one. The default
    [`GaussianMixture.toy`][numpyro_fsdiff.data.GaussianMixture.toy] is the two-component
    $N(\pm\mu, C)$ test case.

    **Arguments:**

    - `means`: the mean functions, shape `(K, m1, m2)`, on the grid of that shape.
    - `covariance`: the shared covariance $C$.
    - `weights`: the mixture weights, shape `(K,)`, positive (normalised here); equal by
      default.
    """

    means: Float[Array, "K m1 m2"]
    covariance: AbstractCovariance
    weights: Float[Array, " K"]

    def __init__(self, means, covariance: AbstractCovariance, weights=None):
        means = jnp.asarray(means, dtype=jnp.result_type(float))
        if means.ndim != 3 or means.shape[0] < 1 or min(means.shape[1:]) < 2:
            raise ValueError(
                f"`means` must have shape (K, m1, m2) with m1, m2 >= 2; got {means.shape}."
            )
        if not isinstance(covariance, AbstractCovariance):
            raise ValueError(f"`covariance` must be a covariance operator; got {covariance!r}.")
        if weights is None:
            weights = jnp.ones(means.shape[0])
        weights = jnp.asarray(weights, dtype=means.dtype)
        if weights.shape != means.shape[:1]:
            raise ValueError(
                f"`weights` must have shape ({means.shape[0]},) to match `means`; got "
                f"{weights.shape}."
            )
        if not bool(jnp.all(weights > 0)):
            raise ValueError(f"`weights` must be positive; got {np.asarray(weights)}.")
        self.means = means
        self.covariance = covariance
        self.weights = weights / jnp.sum(weights)

    @classmethod
    def toy(cls, amplitude=1.0, covariance: AbstractCovariance | None = None) -> "GaussianMixture":
        r"""The two-component toy $\tfrac12 N(\mu, C) + \tfrac12 N(-\mu, C)$ on the unit square,

        with $\mu(x) = a \sin(2\pi x_1) \cos(2\pi x_2)$ and, by default,
        $C$ = `Matern(alpha=2, tau=3, scale=3)` (pixel standard deviation about 0.25, so the
        two modes at $\pm\mu$ are well separated).
        """
        grid = Grid((4, 4))
        x1, x2 = grid.coords()
        mu = amplitude * jnp.sin(2 * jnp.pi * x1) * jnp.cos(2 * jnp.pi * x2)
        if covariance is None:
            covariance = Matern(alpha=2.0, tau=3.0, scale=3.0)
        return cls(jnp.stack([mu, -mu]), covariance)

    def means_on(self, grid: Grid) -> Float[Array, "K n1 n2"]:
        """The mean functions on `grid` (spectral resampling)."""
        return resample(self.means, grid.shape)

    def sample(
        self, key: PRNGKeyArray, grid: Grid, num: int
    ) -> tuple[Float[Array, "num n1 n2"], Int[Array, " num"]]:
        """Draw `num` fields on `grid`.

        **Returns:** `(fields, components)`: the fields, shape `(num, n1, n2)`, and the index
        of the component each came from, shape `(num,)`.
        """
        num = _check_num(num)
        component_key, noise_key = jax.random.split(key)
        components = jax.random.choice(component_key, self.weights.shape[0], (num,), p=self.weights)
        noise = self.covariance.sample(noise_key, grid, (num,))
        return self.means_on(grid)[components] + noise, components

    def score(self, sde: VPSDE, grid: Grid) -> "GaussianMixtureScore":
        """The exact Q-preconditioned score of the mixture under `sde` on `grid`."""
        return GaussianMixtureScore(self, sde, grid)


class GaussianMixtureScore(eqx.Module):
    r"""The exact Q-preconditioned score of a
    [`GaussianMixture`][numpyro_fsdiff.data.GaussianMixture].

    Under the VP-SDE, component $i$ is carried to $N(m_t\mu_i, \Sigma_t)$ with
    $\Sigma_t = m_t^2 C + \sigma_t^2 Q$ (eigenvalues $m_t^2 c_k + \sigma_t^2 q_k$), so
    $p_t = \sum_i w_i N(m_t\mu_i, \Sigma_t)$ and

    $$S(x, t) = Q\nabla\log p_t(x) = -\sum_i r_i(x, t)\, Q\Sigma_t^{-1}(x - m_t\mu_i),
    \qquad r_i = \frac{w_i N(x; m_t\mu_i, \Sigma_t)}{\sum_j w_j N(x; m_t\mu_j, \Sigma_t)},$$

    the posterior probabilities of the components given $X_t = x$ (a softmax of
    $\log w_i - \tfrac12 \langle x - m_t\mu_i, \Sigma_t^{-1}(x - m_t\mu_i)\rangle$ in pixel
    space; the shared determinant cancels). Each term
    $-Q\Sigma_t^{-1}(\cdot)$ is the Gaussian score of
    [`GaussianScore`][numpyro_fsdiff.GaussianScore].

    **Arguments:**

    - `mixture`: the data law.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] (its covariance is $Q$).
    - `grid`: the grid the score acts on.
    """

    mixture: GaussianMixture
    sde: VPSDE
    grid: Grid = eqx.field(static=True)

    def _parts(self, x: Field, t: ScalarLike):
        check_field_shape("x", x, self.grid.shape)
        gaussian = GaussianScore(self.mixture.covariance, self.sde, self.grid)
        mean, _ = self.sde.marginal_coefficients(t)
        marginal = gaussian.marginal_eigenvalues(t)  # m_t^2 c_k + sigma_t^2 q_k
        residuals = x - mean * self.mixture.means_on(self.grid)
        # Sigma_t^{-1} in pixel space: the pixel eigenvalues are marginal / cell_area.
        whitened = fourier_multiply(residuals, self.grid.cell_area / marginal)
        quadratic = jnp.sum(residuals * whitened, axis=(-2, -1))
        logits = jnp.log(self.mixture.weights) - 0.5 * quadratic
        log_det = jnp.sum(jnp.log(marginal / self.grid.cell_area))
        return gaussian, residuals, logits, log_det

    def responsibilities(self, x: Field, t: ScalarLike) -> Float[Array, " K"]:
        """The posterior component probabilities $r_i(x, t)$."""
        _, _, logits, _ = self._parts(x, t)
        return jax.nn.softmax(logits)

    def log_prob(self, x: Field, t: ScalarLike) -> Scalar:
        r"""$\log p_t(x)$, the Lebesgue log-density of the point values on the grid."""
        _, _, logits, log_det = self._parts(x, t)
        n = self.grid.size
        return jax.nn.logsumexp(logits) - 0.5 * (log_det + n * jnp.log(2 * jnp.pi))

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        gaussian, residuals, logits, _ = self._parts(x, t)
        weights = jax.nn.softmax(logits)
        scores = jax.vmap(gaussian, in_axes=(0, None))(residuals, t)
        return jnp.tensordot(weights, scores, axes=1)
