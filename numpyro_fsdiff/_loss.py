r"""Denoising score matching for the Q-preconditioned score, in the $L^2(D)$ norm."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, Field, Float, PRNGKeyArray, Scalar, ScalarLike
from ._grid import Grid
from ._sde import VPSDE

NoisePredictor = Callable[[Field, Scalar], Field]
"""A network $\\varepsilon_\\theta(x, t)$ on one field that predicts the noise $\\eta$."""


class NoisePredictionScore(eqx.Module):
    r"""The score $S_\theta(x, t) = -\varepsilon_\theta(x, t) / \sigma_t$ of a noise predictor.

    With $X_t = m_t X_0 + \sigma_t \eta$, $\eta \sim N(0, Q)$, Tweedie's formula gives
    $S(x, t) = Q\nabla\log p_t(x) = -\mathbb{E}[\eta \mid X_t = x] / \sigma_t$, so a network
    trained to predict $\eta$ (see [`dsm_loss`][numpyro_fsdiff.dsm_loss]) yields the score.

    **Arguments:**

    - `network`: $\varepsilon_\theta$, callable on one field and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] that defines $\sigma_t$.
    """

    network: NoisePredictor
    sde: VPSDE

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        _, std = self.sde.marginal_coefficients(t)
        return -self.network(x, t) / std

    def batched(
        self, xs: Float[Array, "batch n1 n2"], ts: Float[Array, " batch"]
    ) -> Float[Array, "batch n1 n2"]:
        """The score on a batch, equal to `jax.vmap(self)(xs, ts)`: through the network's own
        `batched(xs, ts)` when it has one (e.g. the FNO, whose batched path is faster)."""
        _, std = self.sde.marginal_coefficients(ts)
        if hasattr(self.network, "batched"):
            eps = self.network.batched(xs, ts)
        else:
            eps = jax.vmap(self.network)(xs, ts)
        return -eps / std[:, None, None]


def dsm_loss(
    network: NoisePredictor,
    sde: VPSDE,
    x0: Float[Array, "batch n1 n2"],
    key: PRNGKeyArray,
    *,
    grid: Grid | None = None,
    t_eps: ScalarLike = 1e-3,
    batched: bool = False,
) -> Scalar:
    r"""The denoising score-matching loss with weight $w(t) = \sigma_t^2$ (noise prediction),

    $$L(\theta) = \mathbb{E}_{t, X_0, \eta}\, \big\| \varepsilon_\theta(m_t X_0 + \sigma_t\eta, t)
    - \eta \big\|^2_{L^2(D)}, \qquad t \sim U(t_\varepsilon, T),\ \eta \sim N(0, Q),$$

    which equals $\mathbb{E}\, \sigma_t^2 \| S_\theta + \eta/\sigma_t \|^2_{L^2(D)}$ for
    $S_\theta = -\varepsilon_\theta/\sigma_t$. The norm is the grid quadrature
    ([`Grid.norm_squared`][numpyro_fsdiff.Grid.norm_squared]): because $Q$ is trace-class the
    target $\eta$ has $\mathbb{E}\|\eta\|^2 = \operatorname{tr} Q$ on every grid, so losses are
    comparable across resolutions (with white noise the same target grows like $N$).

    **Arguments:**

    - `network`: the noise predictor, on one field and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE].
    - `x0`: a batch of clean fields, shape `(batch, n1, n2)`.
    - `key`: a PRNG key for the times and the noise.
    - `grid`: the grid of `x0` (the unit square of its shape by default).
    - `t_eps`: the smallest training time.
    - `batched`: evaluate the batch with the network's own `network.batched(xs, ts)` (equal
      to `jax.vmap(network)(xs, ts)`, often faster) instead of `jax.vmap`.

    **Returns:** the batch mean of the loss, a scalar.
    """
    time_key, noise_key = jax.random.split(key)
    t = jax.random.uniform(time_key, x0.shape[:1], minval=t_eps, maxval=sde.T)
    xt, eta = sde.perturb(noise_key, x0, t, grid=grid)
    grid = grid if grid is not None else Grid(x0.shape[-2:])
    prediction = network.batched(xt, t) if batched else jax.vmap(network)(xt, t)
    return jnp.mean(grid.norm_squared(prediction - eta))
