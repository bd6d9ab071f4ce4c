r"""The trace-class variance-preserving SDE and its Diffrax terms."""

import warnings
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._covariance import AbstractCovariance
from ._custom_types import (
    Array,
    ArrayLike,
    BatchedField,
    Field,
    Float,
    PRNGKeyArray,
    Scalar,
    ScalarLike,
)
from ._grid import Grid
from ._solvers import SolverConfig, as_config
from ._terms import ColouredNoiseTerm
from ._validation import check_field_shape, check_finite, check_positive

Score = Callable[[Field, Scalar], Field]
"""A Q-preconditioned score $S(x, t) = Q \\nabla \\log p_t(x)$ on one field."""


def grid_for(x, grid: Grid | None, name: str = "x") -> Grid:
    """`grid`, checked against the last two axes of `x`; the unit square of that shape if None."""
    if grid is None:
        if jnp.ndim(x) < 2:
            raise ValueError(f"`{name}` must have at least two axes; got shape {jnp.shape(x)}.")
        return Grid(jnp.shape(x)[-2:])
    check_field_shape(name, x, grid.shape)
    return grid


class VPSDE(eqx.Module):
    r"""The variance-preserving SDE with trace-class noise,

    $$\mathrm{d}X_t = -\tfrac12 \beta(t) X_t\,\mathrm{d}t + \sqrt{\beta(t)}\,\mathrm{d}W^Q_t,
    \qquad \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}),$$

    with $X_t \mid X_0 \sim N(m_t X_0, \sigma_t^2 Q)$,
    $m_t = \exp(-\tfrac14 t^2 (\beta_{\max}-\beta_{\min}) - \tfrac12 t \beta_{\min})$,
    $\sigma_t^2 = 1 - m_t^2$.

    Scores passed to its methods are Q-preconditioned, $S(x, t) = Q \nabla \log p_t(x)$, on a
    single field and a scalar time (vmap outside).

    **Arguments:**

    - `covariance`: the noise covariance $Q$; must be trace-class unless
      `allow_non_trace_class=True` (the finite-dimensional white-noise baseline).
    - `beta_min`, `beta_max`: the noise schedule, `0 < beta_min <= beta_max`.
    - `T`: the final time.

    ??? cite "References"

        Song et al., *Score-Based Generative Modeling through Stochastic Differential
        Equations*, ICLR 2021. Hagemann et al., *Multilevel Diffusion: Infinite Dimensional
        Score-Based Diffusion Models for Image Generation*, 2023.
    """

    covariance: AbstractCovariance
    beta_min: Scalar
    beta_max: Scalar
    T: float = eqx.field(static=True)

    def __init__(
        self,
        covariance,
        beta_min=0.1,
        beta_max=20.0,
        T: float = 1.0,
        *,
        allow_non_trace_class: bool = False,
    ):
        if not isinstance(covariance, AbstractCovariance):
            raise ValueError(f"`covariance` must be a covariance operator; got {covariance!r}.")
        if not allow_non_trace_class:
            covariance.require_trace_class("covariance")
        check_positive("beta_min", beta_min)
        check_positive("beta_max", beta_max)
        check_positive("T", T)
        if float(beta_max) < float(beta_min):
            raise ValueError(
                f"`beta_max` must be >= `beta_min`; got beta_min={beta_min}, beta_max={beta_max}."
            )
        self.covariance = covariance
        self.beta_min = jnp.asarray(beta_min, dtype=jnp.result_type(float))
        self.beta_max = jnp.asarray(beta_max, dtype=jnp.result_type(float))
        self.T = float(T)

    def beta(self, t: ArrayLike) -> Array:
        r"""$\beta(t) = \beta_{\min} + t (\beta_{\max} - \beta_{\min})$."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def diffusion(self, t: ArrayLike) -> Array:
        r"""$g(t) = \sqrt{\beta(t)}$."""
        return jnp.sqrt(self.beta(t))

    def marginal_coefficients(self, t: ArrayLike) -> tuple[Array, Array]:
        r"""$(m_t, \sigma_t)$ with $X_t \mid X_0 \sim N(m_t X_0, \sigma_t^2 Q)$."""
        log_mean = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return jnp.exp(log_mean), jnp.sqrt(-jnp.expm1(2.0 * log_mean))

    def log_snr(self, t: ArrayLike) -> Array:
        r"""$\lambda_t = \log(m_t / \sigma_t)$, half the log signal-to-noise ratio; strictly
        decreasing in $t$."""
        log_mean = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return log_mean - 0.5 * jnp.log(-jnp.expm1(2.0 * log_mean))

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        r"""The inverse of [`log_snr`][numpyro_fsdiff.VPSDE.log_snr]: the $t$ with
        $\lambda_t = \lambda$.

        From $m_t^2 = \operatorname{sigmoid}(2\lambda)$, $a = \log m_t = -\tfrac12
        \operatorname{softplus}(-2\lambda)$ and $t$ is the positive root of
        $\tfrac14 (\beta_{\max} - \beta_{\min}) t^2 + \tfrac12 \beta_{\min} t + a = 0$.
        """
        a = -0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(lam))
        slope = self.beta_max - self.beta_min
        b = 0.5 * self.beta_min
        # t = 2(-a) / (b + sqrt(b^2 - slope a)): the root without cancellation (slope may be 0).
        return -2.0 * a / (b + jnp.sqrt(b**2 - slope * a))

    def perturb(
        self, key: PRNGKeyArray, x0: BatchedField, t, *, grid: Grid | None = None
    ) -> tuple[BatchedField, BatchedField]:
        r"""Draw $X_t = m_t x_0 + \sigma_t \eta$, $\eta \sim N(0, Q)$, in closed form.

        **Arguments:**

        - `key`: a PRNG key.
        - `x0`: clean fields, shape `(..., n1, n2)`.
        - `t`: a time in $[0, T]$, a scalar or broadcastable against the batch axes.
        - `grid`: the grid of `x0` (the unit square of its shape by default).

        **Returns:** `(x_t, eta)`, both shaped like `x0`.
        """
        grid = grid_for(x0, grid, "x0")
        x0 = check_finite("x0", x0)
        eta = self.covariance.sample(key, grid, jnp.shape(x0)[:-2])
        mean, std = self.marginal_coefficients(jnp.asarray(t)[..., None, None])
        return mean * x0 + std * eta, eta

    def drift(self, t: ScalarLike, x: BatchedField) -> BatchedField:
        r"""The forward drift $-\tfrac12 \beta(t) x$."""
        return -0.5 * self.beta(t) * x

    def reverse_drift(self, t: ScalarLike, x: BatchedField, score: Score) -> BatchedField:
        r"""The reverse-SDE drift $-\tfrac12 \beta(t) x - \beta(t) S(x, t)$ (integrated from
        $T$ down to $t_\varepsilon$)."""
        return self.drift(t, x) - self.beta(t) * score(x, t)

    def probability_flow(self, t: ScalarLike, x: BatchedField, score: Score) -> BatchedField:
        r"""The probability-flow ODE's vector field $-\tfrac12 \beta(t)\,[x + S(x, t)]$."""
        return self.drift(t, x) - 0.5 * self.beta(t) * score(x, t)

    def noise_term(self, brownian: diffrax.AbstractBrownianPath, grid: Grid) -> ColouredNoiseTerm:
        r"""The noise term $\sqrt{\beta(t)}\, Q^{1/2} \mathrm{d}W$ on `grid`."""
        return ColouredNoiseTerm(self.diffusion, self.covariance, grid, brownian)

    def forward_terms(
        self, brownian: diffrax.AbstractBrownianPath, grid: Grid
    ) -> diffrax.MultiTerm:
        """Diffrax terms of the forward SDE on `grid`."""
        drift = diffrax.ODETerm(lambda t, x, args: self.drift(t, x))
        return diffrax.MultiTerm(drift, self.noise_term(brownian, grid))

    def reverse_terms(
        self, score: Score, brownian: diffrax.AbstractBrownianPath, grid: Grid
    ) -> diffrax.MultiTerm:
        """Diffrax terms of the reverse SDE on `grid`; integrate with `t0 = T > t1`.

        Diffrax 0.7.2's stochastic Runge-Kutta solvers (SRA1, ShARK, SEA) mis-sign their drift
        and space-time Lévy area when `t0 > t1` (diffrax issue 598, fixed after that release);
        [`sample`][numpyro_fsdiff.sample] re-poses the solve in the clock $s = -t$ for them.
        Euler, Heun and EulerHeun integrate backwards correctly as they are.
        """
        drift = diffrax.ODETerm(lambda t, x, args: self.reverse_drift(t, x, score))
        return diffrax.MultiTerm(drift, self.noise_term(brownian, grid))

    def probability_flow_term(self, score: Score) -> diffrax.ODETerm:
        """The Diffrax term of the probability-flow ODE."""
        return diffrax.ODETerm(lambda t, x, args: self.probability_flow(t, x, score))

    def simulate_forward(
        self,
        *args,
        key: PRNGKeyArray | None = None,
        grid: Grid | None = None,
        solver="euler",
        steps: int | np.integer | None = 100,
        t0: ScalarLike = 0.0,
    ) -> Float[Array, "n1 n2"]:
        """Solve the forward SDE from `x0` at `t0` to `t1` with Diffrax.

        Called as `sde.simulate_forward(x0, t1, key=key, ...)`; the old form
        `simulate_forward(key, x0, t1)` works for one release with a `DeprecationWarning`.

        **Arguments:**

        - `x0`: one field of shape `grid.shape` (vmap for batches).
        - `t1`: the end time, `t0 < t1 <= T`.
        - `key`: a PRNG key for the Brownian motion (keyword-only).
        - `grid`: the grid of `x0`, the unit square of its shape by default.
        - `solver`: a [`SolverConfig`][numpyro_fsdiff.SolverConfig] (fixed steps: a uniform or
          log-SNR/EDM grid, or the user's `times` from `t0` to `t1`), a name (`'euler'`,
          `'heun'`, `'euler_heun'`, `'sra1'`, `'shark'`, `'sea'`) or a Diffrax SDE solver.
        - `steps`: the number of uniform fixed steps, >= 1 (a shortcut; None with a
          `SolverConfig`).

        **Returns:** $X_{t_1}$, shape `grid.shape`.
        """
        if len(args) == 3:
            warnings.warn(
                "simulate_forward(key, x0, t1) is deprecated; use "
                "simulate_forward(x0, t1, key=key).",
                DeprecationWarning,
                stacklevel=2,
            )
            if key is not None:
                raise ValueError("`key` given both positionally and as `key=`.")
            key, x0, t1 = args
        elif len(args) == 2:
            x0, t1 = args
        else:
            raise TypeError("simulate_forward() takes the positional arguments (x0, t1).")
        if key is None:
            raise ValueError("`key` must be a PRNG key, passed as key=...; got None.")
        grid = grid_for(x0, grid, "x0")
        if jnp.ndim(x0) != 2:
            raise ValueError(f"`x0` must be one field of shape {grid.shape}; got {jnp.shape(x0)}.")
        if isinstance(solver, SolverConfig) and steps == 100:
            steps = None  # the default shortcut yields to the config
        config = as_config(solver, steps=steps)
        if config.adaptive:
            raise ValueError(
                "`solver`: simulate_forward takes fixed steps (`steps` or `times`); got rtol/atol."
            )
        if all(isinstance(v, (int, float)) for v in (t0, t1)) and not (0 <= t0 < t1 <= self.T):
            raise ValueError(f"need 0 <= t0 < t1 <= T={self.T}; got t0={t0}, t1={t1}.")
        x0 = check_finite("x0", x0)
        # A simulation, not differentiated: forward mode stores no trajectory.
        plan = config.plan(self, t0, t1, kind="sde", default_adjoint=diffrax.ForwardMode())
        brownian = plan.brownian_motion(key, grid.shape)
        solution = plan.diffeqsolve(self.forward_terms(brownian, grid), x0)
        return solution.ys[-1]
