r"""A score-based diffusion model on a grid as a NumPyro distribution."""

import math

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample

from ._custom_types import Array, Float, PRNGKeyArray, ScalarLike
from ._grid import Grid
from ._likelihood import (
    AbstractDivergence,
    ProbabilityFlowODE,
    Score,
    batched,
    join_arrays,
    resolve_divergence,
    split_arrays,
)
from ._sample import _plan, sample
from ._sde import VPSDE
from ._solvers import SolverConfig, as_config
from ._validation import check_field_shape, is_concrete


class _SamplerSettings(eqx.Module):
    """What [`numpyro_fsdiff.sample`] is called with (the config's arrays are pytree data)."""

    method: str = eqx.field(static=True)
    config: SolverConfig
    denoise: bool = eqx.field(static=True)


class DiffusionPrior(dist.Distribution):
    r"""The law $p_{t_\varepsilon}$ of a score-based diffusion model on a grid.

    `event_shape == grid.shape`, `batch_shape == ()`. Any Q-preconditioned score
    $S(x, t) = Q\nabla\log p_t(x)$ works: a trained network, or an analytic score such as
    [`GaussianScore`][numpyro_fsdiff.GaussianScore].

    **Sampling** (`sample`) calls `numpyro_fsdiff.sample` with
    `method` (`"ode"`: the probability-flow ODE, the same map as the density; `"sde"`: the
    reverse SDE; `"pc"`: predictor-corrector), `solver`, `steps`, `rtol`, `atol`. No Tweedie
    denoising step is applied unless `denoise=True`, so that samples follow the law whose
    density `log_prob` computes.

    **Density** (`log_prob`): the Lebesgue log-density of the point values on the grid by the
    instantaneous change of variables along the probability-flow ODE from $x$ at
    $t_\varepsilon$ to $X_T$,

    $$\log p_{t_\varepsilon}(x) = \log N(X_T; 0, Q) + \int_{t_\varepsilon}^T
    \operatorname{div} f(X_t, t)\,\mathrm{d}t, \qquad f = -\tfrac12\beta(t)[x + S(x, t)].$$

    The base density replaces the true $p_T = N(0, m_T^2 C + \sigma_T^2 Q)$ by $N(0, Q)$: exact
    when the model's $p_T$ is $N(0, Q)$, otherwise off by the factor
    $p_T/\mu_Q$, of order $m_T^2 \approx 4\cdot 10^{-5}$ per mode with the default schedule.
    The density is then exactly that of the probability-flow pushforward of $N(0, Q)$, which
    is also what `method="ode"` samples. The divergence is exact (`divergence="exact"`, $N$
    JVPs per step, small grids) or Hutchinson's estimate with `num_probes` Rademacher probes
    drawn once from `key` (unbiased over probe draws, variance falling like `1/num_probes`;
    fixed probes keep the potential deterministic, so NUTS and HMC see a smooth target).
    The value grows like $N$ with the grid (it is a density on $\mathbb{R}^N$).

    **Relative density** (`log_prob_relative`): the resolution-stable
    $\log(p_{t_\varepsilon}/\mu_Q)(x)$, $\mu_Q = N(0, Q)$, see
    [`log_prob_relative`][numpyro_fsdiff.DiffusionPrior.log_prob_relative].

    The density solve is the probability-flow ODE with `solver` (a
    [`SolverConfig`][numpyro_fsdiff.SolverConfig], or a name with the shortcuts `steps`, `rtol`,
    `atol`) when `method="ode"`: the same solve as sampling. For the other methods, `solver`
    and `steps` configure the SDE sampler only, and the density uses `density_solver` (a
    `SolverConfig` or a name; Tsit5 by default) with the shortcuts `rtol`/`atol` (adaptive,
    default 1e-5); give an adaptive SDE sampler as `solver=SolverConfig("shark", rtol=...)`.
    Gradients flow through the solve by `adjoint` (default
    `diffrax.RecursiveCheckpointAdjoint()`, reverse mode, which NUTS/HMC/SVI need; pass
    `diffrax.DirectAdjoint()` for forward mode too, e.g. Hessians).

    **Pytree.** NumPyro rebuilds distributions from their pytree without calling `__init__`:
    the arrays of the score, the SDE and the probes are the pytree data (`_arrays`), the rest
    (network structure, grid, solver choice) a hashable static part (`_static`). So the
    distribution can be passed through `jax.jit`, `jax.vmap` and NumPyro's inference code.

    **Arguments:**

    - `score`: the Q-preconditioned score on one field of shape `grid.shape` and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] the score belongs to.
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid] of the values.
    - `method`: `"ode"` (default), `"sde"` or `"pc"`, for `sample`.
    - `solver`, `steps`, `rtol`, `atol`: the solve (see above and `numpyro_fsdiff.sample`).
    - `t_eps`: the data time $t_\varepsilon$.
    - `divergence`: `"exact"` (default), `"hutchinson"` or an
      [`AbstractDivergence`][numpyro_fsdiff.AbstractDivergence].
    - `num_probes`, `key`: Hutchinson probes (default `key=jax.random.key(0)`).
    - `density_solver`: the ODE solve of the density when `method != "ode"` (a name or a
      `SolverConfig`).
    - `denoise`: apply the Tweedie step after sampling (the samples then no longer follow
      the law of `log_prob`).
    - `adjoint`, `max_steps`: for the density solve.

    **Raises:** `ValueError` for a wrong `score`, `sde`, `grid`, method or solver; for a value
    of the wrong shape or (outside `jit`) with NaN or inf; for a score that returns a field of
    another shape.

    !!! example

        ```python
        from numpyro.infer import Predictive
        from numpyro_fsdiff.covariance import Matern

        sde = VPSDE(Matern(2.0, 3.0))
        grid = Grid((8, 8))
        score = GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)  # or a trained network
        blur = lambda x: fsd.inverse.GaussianBlur(0.05)(x, grid)

        def model(y=None):
            x = numpyro.sample("x", DiffusionPrior(score, sde, grid, solver="heun", steps=4))
            numpyro.sample("y", dist.Normal(blur(x), 0.1).to_event(2), obs=y)

        draws = Predictive(model, num_samples=2)(jax.random.key(0))  # draws["x"]: (2, 8, 8)
        ```
    """

    arg_constraints = {}
    support = dist.constraints.independent(dist.constraints.real, 2)
    reparametrized_params = []
    pytree_data_fields = ("_arrays",)
    pytree_aux_fields = ("_static",)

    def __init__(
        self,
        score,
        sde,
        grid,
        *,
        method: str = "ode",
        solver=None,
        steps: int | np.integer | None = None,
        rtol: ScalarLike | None = None,
        atol: ScalarLike | None = None,
        t_eps: ScalarLike = 1e-3,
        divergence: str | AbstractDivergence = "exact",
        num_probes: int = 1,
        key: PRNGKeyArray | None = None,
        density_solver=None,
        denoise: bool = False,
        adjoint: diffrax.AbstractAdjoint | None = None,
        max_steps: int | np.integer | None = None,
        validate_args=None,
    ):
        if not isinstance(grid, Grid):
            raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
        if method not in ("ode", "sde", "pc"):
            raise ValueError(f"`method` must be 'ode', 'sde' or 'pc'; got {method!r}.")
        if method == "ode":
            # One probability-flow solve for sampling and density.
            config = as_config(solver, steps=steps, rtol=rtol, atol=atol)
            density = config
        else:
            # `solver`/`steps` drive the sampler; `rtol`/`atol` only the density's ODE solve.
            config = as_config(solver, steps=steps)
            density = as_config(
                "tsit5" if density_solver is None else density_solver,
                name="density_solver",
                rtol=rtol,
                atol=atol,
            )
            # Fail now, not at the first `.sample()`, for a sampler configuration that
            # cannot work (e.g. adaptive steps with a solver without an error estimate).
            _plan(sde, config, method=method, t_eps=t_eps, denoise=denoise,
                  corrector_steps=1, snr=0.16)
        ode = ProbabilityFlowODE(
            score,
            sde,
            grid,
            t_eps=t_eps,
            divergence=resolve_divergence(divergence, grid, num_probes=num_probes, key=key),
            adjoint=adjoint,
            max_steps=max_steps,
            solver=density,
        )
        sampler = _SamplerSettings(method, config, bool(denoise))
        self._arrays, self._static = split_arrays((ode, sampler))
        super().__init__(batch_shape=(), event_shape=grid.shape, validate_args=validate_args)

    @property
    def ode(self) -> ProbabilityFlowODE:
        """The [`ProbabilityFlowODE`][numpyro_fsdiff.ProbabilityFlowODE] of the density."""
        return join_arrays(self._arrays, self._static)[0]

    @property
    def _settings(self) -> _SamplerSettings:
        return join_arrays(self._arrays, self._static)[1]

    @property
    def grid(self) -> Grid:
        return self._static.value[0].grid

    @property
    def score(self) -> Score:
        return self.ode.score

    @property
    def sde(self) -> VPSDE:
        return self.ode.sde

    @property
    def t_eps(self) -> float:
        return self._static.value[0].t_eps

    def sample(self, key: PRNGKeyArray, sample_shape=()) -> Float[Array, "*sample n1 n2"]:
        settings = self._settings
        shape = tuple(int(n) for n in sample_shape) + self.batch_shape
        num = math.prod(shape)
        if num == 0:
            return jnp.zeros(shape + self.grid.shape)
        ode = self.ode
        samples, _ = sample(
            ode.score,
            ode.sde,
            self.grid,
            key=key,
            num_samples=num,
            method=settings.method,
            solver=settings.config,
            t_eps=self.t_eps,
            denoise=settings.denoise,
        )
        return jnp.reshape(samples, shape + self.grid.shape)

    def _check_value(self, value):
        check_field_shape("value", value, self.grid.shape)
        if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
            raise ValueError("`value` contains NaN or inf values.")

    @validate_sample
    def log_prob(self, value: Float[Array, "*batch n1 n2"]) -> Float[Array, "*batch"]:
        r"""$\log p_{t_\varepsilon}(x)$, the Lebesgue log-density of the point values."""
        self._check_value(value)
        return batched(self.ode.log_prob, value)

    def log_prob_relative(self, value: Float[Array, "*batch n1 n2"]) -> Float[Array, "*batch"]:
        r"""The log-density relative to $\mu_Q = N(0, Q)$, stable under grid refinement.

        With $S = -x + R$ the flow is $f = -\tfrac12\beta R$ and (DESIGN section 6)

        $$\log\frac{p_{t_\varepsilon}}{\mu_Q}(x) = \tfrac12 \int_{t_\varepsilon}^T \beta(t)
        \big[\langle X_t, Q^{-1} R(X_t, t)\rangle_{L^2(D)} - \operatorname{div} R(X_t, t)\big]
        \,\mathrm{d}t,$$

        integrated in one solve, without forming the two $N$-dependent log-densities. For
        Gaussian data $N(0, C)$ with $C$ and $Q$ equivalent it is
        $\log N(x; 0, C) - \log N(x; 0, Q)$ (up to the base-density approximation of
        `log_prob`) and converges as the grid refines.

        **Arguments:**

        - `value`: fields of shape `(..., n1, n2)`.

        **Returns:** an array of the batch shape.
        """
        self._check_value(value)
        return batched(self.ode.log_prob_relative, value)
