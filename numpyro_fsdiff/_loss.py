r"""Denoising score matching for the Q-preconditioned score, in the $L^2(D)$ norm."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, Field, Float, PRNGKeyArray, Scalar, ScalarLike
from ._grid import Grid, band_limit
from ._sde import VPSDE

NoisePredictor = Callable[[Field, Scalar], Field]
"""A network $\\varepsilon_\\theta(x, t)$ on one field that predicts the noise $\\eta$."""

TimeSampler = Callable[[PRNGKeyArray, tuple[int, ...]], Array]
"""`(key, shape) -> t`: draws the training times of a batch (see
[`dsm_loss`][numpyro_fsdiff.dsm_loss])."""


class TimeWindow(eqx.Module):
    r"""Training times with a share of every batch in a window $[a, b] \subset
    [t_\varepsilon, T]$: a `time_sampler` for [`dsm_loss`][numpyro_fsdiff.dsm_loss] and
    [`train_step`][numpyro_fsdiff.train_step], built by `train(..., time_window=(f, a, b))`.

    Of a batch of $n$ times, the first $\operatorname{round}(f n)$ are drawn from $U(a, b)$ and
    the others from $U(t_\varepsilon, T)$, so the loss averages over the mixture density

    $$p(t) = f\,\frac{\mathbb{1}_{[a, b]}(t)}{b - a} + (1 - f)\,
    \frac{\mathbb{1}_{[t_\varepsilon, T]}(t)}{T - t_\varepsilon}$$

    (exactly, when $f n$ is a whole number) instead of the uniform density: the score's errors on
    $[a, b]$ weigh more. The minimiser is the same exact score; what changes is where a finite
    network spends its capacity.

    **Arguments:**

    - `fraction`: $f \in [0, 1]$, the share of every batch in the window.
    - `low`, `high`: $a < b$, the window, inside $[t_\varepsilon, T]$.
    - `t_eps`, `T`: the uniform part's interval.

    **Raises:** `ValueError` naming the argument when `fraction` is outside $[0, 1]$ or the window
    is empty or outside $[t_\varepsilon, T]$.
    """

    fraction: float = eqx.field(static=True)
    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)
    T: float = eqx.field(static=True)

    def __init__(self, fraction: float, low: float, high: float, *, t_eps: float = 1e-3,
                 T: float = 1.0):  # fmt: skip
        self.fraction, self.low, self.high = float(fraction), float(low), float(high)
        self.t_eps, self.T = float(t_eps), float(T)
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"`fraction` must be in [0, 1]; got {fraction!r}.")
        if not 0.0 < self.t_eps < self.T:
            raise ValueError(f"`t_eps` must be in (0, T) = (0, {T!r}); got {t_eps!r}.")
        if not self.t_eps <= self.low < self.high <= self.T:
            raise ValueError(
                f"`low` < `high` must lie in [t_eps, T] = [{t_eps!r}, {T!r}]; got low = {low!r}, "
                f"high = {high!r}."
            )

    def __call__(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        window_key, uniform_key = jax.random.split(key)
        in_window = jnp.arange(shape[0]) < round(self.fraction * shape[0])
        return jnp.where(
            in_window,
            jax.random.uniform(window_key, shape, minval=self.low, maxval=self.high),
            jax.random.uniform(uniform_key, shape, minval=self.t_eps, maxval=self.T),
        )


def network_cutoff(network) -> int | None:
    """The band cutoff $K$ a network carries (`FNO(cutoff=K)`), or `None` for none."""
    cutoff = getattr(network, "cutoff", None)
    return None if cutoff is None else int(cutoff)


def band_limited_noise(
    predict: Callable[[Array], Array], x: Array, std: Array, cutoff: int | None
) -> Array:
    r"""The effective noise prediction of the band-limited construction,

    $$\varepsilon_{\mathrm{eff}}(x, t) = P_K\, \varepsilon_\theta(P_K x, t)
    + \sigma_t (I - P_K)\, x,$$

    so that $S = -\varepsilon_{\mathrm{eff}}/\sigma_t = -x + P_K R_\theta$: the residual
    $R = S + x$ vanishes on every mode above $K$, where the law is $N(0, Q)$ (see
    docs/theory.md, "A measure on functions"). With `cutoff=None` it is
    $\varepsilon_\theta(x, t)$ itself.

    **Arguments:**

    - `predict`: $x \mapsto \varepsilon_\theta(x, t)$ on fields of the shape of `x` (one field
      or a batch, the times bound).
    - `x`: the field(s), shape `(..., n1, n2)`.
    - `std`: $\sigma_t$, broadcastable against `x`.
    - `cutoff`: $K$, or `None`.

    **Returns:** $\varepsilon_{\mathrm{eff}}$, the shape of `x`.
    """
    if cutoff is None:
        return predict(x)
    low = band_limit(x, cutoff)
    return band_limit(predict(low), cutoff) + std * (x - low)


class NoisePredictionScore(eqx.Module):
    r"""The score $S_\theta(x, t) = -\varepsilon_\theta(x, t) / \sigma_t$ of a noise predictor.

    With $X_t = m_t X_0 + \sigma_t \eta$, $\eta \sim N(0, Q)$, Tweedie's formula gives
    $S(x, t) = Q\nabla\log p_t(x) = -\mathbb{E}[\eta \mid X_t = x] / \sigma_t$, so a network
    trained to predict $\eta$ (see [`dsm_loss`][numpyro_fsdiff.dsm_loss]) yields the score.

    With a band cutoff $K$ the score is band-limited (see
    [`band_limited_noise`][numpyro_fsdiff.band_limited_noise]):
    $S = -x + P_K R_\theta(P_K x, t)$, exactly $-x$ on the modes $|k_i| > K$, so the learned
    law is (learned on the modes $\le K$) $\times\, N(0, Q)$ (on the rest) and its density
    relative to $N(0, Q)$ is the same on every grid that resolves $K$.

    **Arguments:**

    - `network`: $\varepsilon_\theta$, callable on one field and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] that defines $\sigma_t$.
    - `cutoff`: the band cutoff $K$ (an int), `None` for no band; by default the network's
      own (`FNO(cutoff=K)` carries it, and so do its checkpoints), else `None`.
    """

    network: NoisePredictor
    sde: VPSDE
    cutoff: int | None = eqx.field(static=True)

    def __init__(self, network: NoisePredictor, sde: VPSDE, cutoff: int | None = None):
        self.network = network
        self.sde = sde
        self.cutoff = network_cutoff(network) if cutoff is None else int(cutoff)

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        _, std = self.sde.marginal_coefficients(t)
        eps = band_limited_noise(lambda y: self.network(y, t), x, std, self.cutoff)
        return -eps / std

    def batched(
        self, xs: Float[Array, "batch n1 n2"], ts: Float[Array, " batch"]
    ) -> Float[Array, "batch n1 n2"]:
        """The score on a batch, equal to `jax.vmap(self)(xs, ts)`: through the network's own
        `batched(xs, ts)` when it has one (e.g. the FNO, whose batched path is faster), with
        the same band construction as one field."""
        _, std = self.sde.marginal_coefficients(ts)
        std = std[:, None, None]
        predict = self.network.batched if hasattr(self.network, "batched") else jax.vmap(
            self.network
        )
        eps = band_limited_noise(lambda ys: predict(ys, ts), xs, std, self.cutoff)
        return -eps / std


def dsm_loss(
    network: NoisePredictor,
    sde: VPSDE,
    x0: Float[Array, "batch n1 n2"],
    key: PRNGKeyArray,
    *,
    grid: Grid | None = None,
    t_eps: ScalarLike = 1e-3,
    batched: bool = False,
    cutoff: int | None = None,
    time_sampler: TimeSampler | None = None,
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
    - `cutoff`: the band cutoff $K$ of the score (default the network's own, as for
      [`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore]); the prediction is then
      $\varepsilon_{\mathrm{eff}}$ of [`band_limited_noise`][numpyro_fsdiff.band_limited_noise].
    - `time_sampler`: `(key, shape) -> t`, the times of the batch drawn from another density
      $p(t)$ on $[t_\varepsilon, T]$ (the caller keeps them there), which replaces
      $t \sim U(t_\varepsilon, T)$: the loss is then $\mathbb{E}_{t \sim p}$, a different
      weighting of the times. `None` (default) is the uniform draw.

    With a cutoff, the loss is still the full $\mathbb{E}\|\varepsilon_{\mathrm{eff}} -
    \eta\|^2_{L^2(D)}$ of the score used for sampling, so numbers stay comparable with an
    unconstrained network. Its part on the modes above $K$,
    $\|(I - P_K)(\sigma_t m_t X_0 - m_t^2 \eta)\|^2$, does not depend on $\theta$ (it
    gives no gradient); for data band-limited to $K$ its mean is
    $\mathbb{E}_t[m_t^4] \sum_{|k_i| > K} \lambda_k$, zero on grids with no mode above $K$.

    **Returns:** the batch mean of the loss, a scalar.
    """
    time_key, noise_key = jax.random.split(key)
    if time_sampler is None:
        t = jax.random.uniform(time_key, x0.shape[:1], minval=t_eps, maxval=sde.T)
    else:
        t = jnp.broadcast_to(time_sampler(time_key, x0.shape[:1]), x0.shape[:1])
    xt, eta = sde.perturb(noise_key, x0, t, grid=grid)
    grid = grid if grid is not None else Grid(x0.shape[-2:])
    cutoff = network_cutoff(network) if cutoff is None else int(cutoff)
    _, std = sde.marginal_coefficients(t)

    def predict(x):
        return network.batched(x, t) if batched else jax.vmap(network)(x, t)

    prediction = band_limited_noise(predict, xt, std[:, None, None], cutoff)
    return jnp.mean(grid.norm_squared(prediction - eta))
