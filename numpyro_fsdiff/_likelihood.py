r"""Log-densities by the probability-flow ODE and the instantaneous change of variables.

Everything here rests on one Diffrax solve,
[`ProbabilityFlowODE.solve`][numpyro_fsdiff.ProbabilityFlowODE.solve], of the
probability-flow ODE $\dot X_t = f(X_t, t) = -\tfrac12\beta(t)[X_t + S(X_t, t)]$ (the vector
field is [`VPSDE.probability_flow`][numpyro_fsdiff.VPSDE.probability_flow]), optionally
augmented with two scalar integrals

$$\Delta_{\mathrm{leb}} = \int_{t_0}^{t_1} \operatorname{div} f(X_t, t)\,\mathrm{d}t, \qquad
\Delta_{\mathrm{rel}} = \int_{t_0}^{t_1} \big[\operatorname{div} f(X_t, t)
- X_t^\top \Sigma_Q^{-1} f(X_t, t)\big]\,\mathrm{d}t,$$

where $\Sigma_Q$ is the pixel covariance of $N(0, Q)$, so $x^\top \Sigma_Q^{-1} f =
\langle x, Q^{-1} f\rangle_{L^2(D)}$. $\Delta_{\mathrm{leb}}$ is the log-determinant of the
flow map $X_{t_0} \mapsto X_{t_1}$ (Liouville); both the density of
[`DiffusionPrior`][numpyro_fsdiff.DiffusionPrior] and the Jacobian of
[`ProbabilityFlow`][numpyro_fsdiff.ProbabilityFlow] come from it.
"""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Field, Float, PRNGKeyArray, Scalar, ScalarLike
from ._exponential import DataPredictionTerm, is_exponential
from ._gaussian_field import GaussianField
from ._grid import Grid
from ._sde import VPSDE
from ._solvers import SolverConfig, as_config, check_t_eps

Score = Callable[[Field, Scalar], Field]

class AbstractDivergence(eqx.Module):
    r"""A rule for the divergence $\operatorname{div} F = \operatorname{tr}\,\partial F/\partial x$
    of a map $F: \mathbb{R}^{n_1 \times n_2} \to \mathbb{R}^{n_1 \times n_2}$ (pixels)."""

    @abc.abstractmethod
    def __call__(self, fn: Callable[[Field], Field], x: Field) -> tuple[Field, Scalar]:
        """Return `(fn(x), div fn(x))` (the second possibly an estimate)."""


class ExactDivergence(AbstractDivergence):
    r"""The exact divergence $\sum_{i=1}^N e_i^\top J e_i$ from $N$ Jacobian-vector products.

    The map is linearised once (`jax.linearize`) and its JVP applied to every pixel basis
    vector: cost $N$ linearised evaluations per call, memory $N$ fields at a time unless
    `chunk_size` is set. Meant for small grids (up to a few thousand pixels).

    **Arguments:**

    - `chunk_size`: evaluate the $N$ JVPs in vmapped chunks of this many (`jax.lax.map` with
      `batch_size`) to bound memory; `None` vmaps all $N$ at once.
    """

    chunk_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.chunk_size is not None and (
            not isinstance(self.chunk_size, int) or self.chunk_size < 1
        ):
            raise ValueError(f"`chunk_size` must be an int >= 1 or None; got {self.chunk_size!r}.")

    def __call__(self, fn: Callable[[Field], Field], x: Field) -> tuple[Field, Scalar]:
        value, jvp = jax.linearize(fn, x)
        n = x.size

        def diagonal(i):
            basis = jnp.zeros(n, x.dtype).at[i].set(1).reshape(x.shape)
            return jvp(basis).reshape(-1)[i]

        index = jnp.arange(n)
        if self.chunk_size is None:
            diag = jax.vmap(diagonal)(index)
        else:
            diag = jax.lax.map(diagonal, index, batch_size=self.chunk_size)
        return value, jnp.sum(diag)


class HutchinsonDivergence(AbstractDivergence):
    r"""Hutchinson's estimate $\frac1M \sum_{m=1}^M \varepsilon_m^\top J \varepsilon_m$ with
    probes fixed at construction.

    With Rademacher probes ($\pm 1$ entries, $\mathbb{E}\,\varepsilon\varepsilon^\top = I$) the
    estimate is unbiased over the draw of the probes, with variance
    $\frac{1}{M}\sum_{i \ne j} (J_{ij}^2 + J_{ij} J_{ji})$ per evaluation. Because the probes
    are *fixed*, the resulting log-density is a deterministic, smooth function of $x$ (an HMC
    potential stays consistent), but it carries the error of that one draw: a bias for this
    object, zero on average over probe draws.

    **Arguments:**

    - `probes`: the probe fields, shape `(M, n1, n2)`.
    """

    probes: Float[Array, "num n1 n2"]

    def __init__(self, probes):
        if jnp.ndim(probes) != 3 or jnp.shape(probes)[0] < 1:
            raise ValueError(
                f"`probes` must have shape (num_probes, n1, n2) with num_probes >= 1; got "
                f"shape {jnp.shape(probes)}."
            )
        self.probes = jnp.asarray(probes)

    @classmethod
    def rademacher(
        cls, key: PRNGKeyArray, shape: tuple[int, int], num_probes: int = 1
    ) -> "HutchinsonDivergence":
        """`num_probes` Rademacher probes of a field `shape`, drawn once from `key`."""
        if not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"`num_probes` must be an int >= 1; got {num_probes!r}.")
        probes = jax.random.rademacher(
            key, (num_probes,) + tuple(shape), dtype=jnp.result_type(float)
        )
        return cls(probes)

    def __call__(self, fn: Callable[[Field], Field], x: Field) -> tuple[Field, Scalar]:
        if self.probes.shape[1:] != x.shape:
            raise ValueError(
                f"`probes` have field shape {self.probes.shape[1:]} but the field has shape "
                f"{x.shape}."
            )
        value, jvp = jax.linearize(fn, x)
        probes = self.probes.astype(x.dtype)
        quadratic = jax.vmap(lambda e: jnp.vdot(e, jvp(e)))(probes)
        return value, jnp.mean(quadratic)


def resolve_divergence(
    divergence, grid: Grid, *, num_probes: int = 1, key: PRNGKeyArray | None = None
) -> AbstractDivergence:
    """Turn `"exact"`, `"hutchinson"` or an [`AbstractDivergence`] into a divergence rule."""
    if isinstance(divergence, AbstractDivergence):
        return divergence
    if divergence == "exact":
        return ExactDivergence()
    if divergence == "hutchinson":
        if key is None:
            key = jax.random.key(0)
        return HutchinsonDivergence.rademacher(key, grid.shape, num_probes)
    raise ValueError(
        f"`divergence` must be 'exact', 'hutchinson' or an AbstractDivergence; got {divergence!r}."
    )


class FlowSolution(eqx.Module):
    r"""The end point of a probability-flow solve and its two integrals.

    - `x`: $X_{t_1}$, shape `grid.shape`.
    - `log_det`: $\int_{t_0}^{t_1} \operatorname{div} f\,\mathrm{d}t
      = \log\lvert\det \partial X_{t_1}/\partial X_{t_0}\rvert$ (`None` without divergence).
    - `log_ratio`: $\int_{t_0}^{t_1} [\operatorname{div} f - \langle X, Q^{-1} f\rangle]
      \,\mathrm{d}t$ (`None` without divergence).
    """

    x: Field
    log_det: Scalar | None
    log_ratio: Scalar | None


class ProbabilityFlowODE(eqx.Module):
    r"""The probability-flow ODE of a score model on a grid, solved with Diffrax.

    This is the one place where the probability-flow ODE is integrated for densities and
    transforms; [`DiffusionPrior`][numpyro_fsdiff.DiffusionPrior] and
    [`ProbabilityFlow`][numpyro_fsdiff.ProbabilityFlow] both hold one.

    **Arguments:**

    - `score`: the Q-preconditioned score $S(x, t)$, a callable on one field of shape
      `grid.shape` and a scalar time (an Equinox network, or e.g.
      [`GaussianScore`][numpyro_fsdiff.GaussianScore]).
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE]; its covariance is $Q$.
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid] of the fields.
    - `solver`: a [`SolverConfig`][numpyro_fsdiff.SolverConfig], an ODE solver name or a
      Diffrax ODE solver (default `"tsit5"`).
    - `steps`, `rtol`, `atol`, `adjoint`, `max_steps`: shortcuts for the fields of
      `SolverConfig` (not with a `SolverConfig`): fixed steps over $[t_\varepsilon, T]$ on the
      config's time grid, or adaptive tolerances. With neither `steps` nor tolerances: adaptive
      at `rtol = atol = 1e-5` for a solver with an error estimate, else 500 fixed steps (the
      defaults of `SolverConfig`, the same as in `sample`).
    - `t_eps`: the data time $t_\varepsilon$, `0 < t_eps < T`.
    - `divergence`: an [`AbstractDivergence`][numpyro_fsdiff.AbstractDivergence].
    - `adjoint`: the Diffrax adjoint. The default `diffrax.RecursiveCheckpointAdjoint()`
      differentiates through the solver in reverse mode (what NUTS, HMC and SVI need:
      `jax.grad`, `jax.jacrev`); it cannot be forward-mode differentiated. For `jax.jvp`,
      `jax.jacfwd` or Hessians (a Laplace approximation) pass `diffrax.DirectAdjoint()`
      (both modes, more memory) or `diffrax.ForwardMode()` (forward only).
    - `max_steps`: the solver's step budget for adaptive solves.
    """

    score: Score
    sde: VPSDE
    grid: Grid = eqx.field(static=True)
    config: SolverConfig
    t_eps: float = eqx.field(static=True)
    divergence: AbstractDivergence

    def __init__(
        self,
        score,
        sde,
        grid,
        *,
        solver="tsit5",
        steps: int | np.integer | None = None,
        rtol: ScalarLike | None = None,
        atol: ScalarLike | None = None,
        t_eps: ScalarLike = 1e-3,
        divergence: AbstractDivergence | None = None,
        adjoint: diffrax.AbstractAdjoint | None = None,
        max_steps: int | np.integer | None = None,
    ):
        if not callable(score):
            raise ValueError(f"`score` must be a callable (x, t) -> S(x, t); got {score!r}.")
        if not isinstance(sde, VPSDE):
            raise ValueError(f"`sde` must be a numpyro_fsdiff.VPSDE; got {sde!r}.")
        if not isinstance(grid, Grid):
            raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
        config = as_config(solver, steps=steps, rtol=rtol, atol=atol, adjoint=adjoint,
                           max_steps=max_steps)
        t_eps = check_t_eps(t_eps, sde.T)
        # Fail now, not at the first solve, for a solver of the wrong kind or adaptive steps
        # without an error estimate.
        config.plan(sde, sde.T, t_eps, kind="ode")
        if divergence is None:
            divergence = ExactDivergence()
        if not isinstance(divergence, AbstractDivergence):
            raise ValueError(f"`divergence` must be an AbstractDivergence; got {divergence!r}.")
        self.score = score
        self.sde = sde
        self.grid = grid
        self.config = config
        self.t_eps = t_eps
        self.divergence = divergence

    @property
    def T(self) -> float:
        """The latent time $T$ of the SDE."""
        return self.sde.T

    def _score(self, x: Field, t) -> Field:
        out = self.score(x, t)
        if jnp.shape(out) != self.grid.shape:
            raise ValueError(
                f"`score` must return a field of shape {self.grid.shape} for one input field; "
                f"got shape {jnp.shape(out)}."
            )
        return out

    def _drift(self, t, x: Field) -> Field:
        return self.sde.probability_flow(t, x, self._score)

    def _augmented(self, t, y, args):
        x = y[0]
        f, div = self.divergence(lambda u: self._drift(t, u), x)
        quadratic = self.grid.inner(x, self.sde.covariance.inv_apply(f, self.grid))
        return f, div.astype(x.dtype), (div - quadratic).astype(x.dtype)

    def solve(
        self, x: Field, t0: float, t1: float, *, with_divergence: bool = True
    ) -> FlowSolution:
        r"""Integrate the probability-flow ODE from $X_{t_0} = x$ to $t_1$ (either direction).

        **Arguments:**

        - `x`: one field of shape `grid.shape`.
        - `t0`, `t1`: the start and end times in $[t_\varepsilon, T]$.
        - `with_divergence`: also integrate $\Delta_{\mathrm{leb}}$ and $\Delta_{\mathrm{rel}}$
          (one divergence per vector-field evaluation); otherwise only $X$.

        **Returns:** a [`FlowSolution`][numpyro_fsdiff.FlowSolution].
        """
        if jnp.shape(x) != self.grid.shape:
            raise ValueError(
                f"`x` must be one field of shape {self.grid.shape}; got {jnp.shape(x)}."
            )
        plan = self.config.plan(
            self.sde, t0, t1, kind="ode", default_adjoint=diffrax.RecursiveCheckpointAdjoint()
        )
        exponential = is_exponential(plan.solver)
        if with_divergence and exponential:
            raise ValueError(
                f"`solver`: the exponential integrator {type(plan.solver).__name__} solves the "
                "state only; log-densities integrate the divergence with the flow, so use a "
                "Runge-Kutta solver for them (e.g. SolverConfig('heun', steps=8, clock='log-snr'))."
            )
        if exponential:
            term = DataPredictionTerm(self._score, self.sde)
            y0 = x
        elif with_divergence:
            zero = jnp.zeros((), jnp.result_type(x))
            term = diffrax.ODETerm(self._augmented)
            y0 = (x, zero, zero)
        else:
            term = self.sde.probability_flow_term(self._score)
            y0 = x
        solution = plan.diffeqsolve(term, y0)
        ys = jax.tree.map(lambda a: a[-1], solution.ys)
        if with_divergence:
            return FlowSolution(*ys)
        return FlowSolution(ys, None, None)

    def to_latent(self, x: Field, *, with_divergence: bool = True) -> FlowSolution:
        r"""Solve from data $x$ at $t_\varepsilon$ to the latent at $T$."""
        return self.solve(x, self.t_eps, self.T, with_divergence=with_divergence)

    def to_data(self, z: Field, *, with_divergence: bool = True) -> FlowSolution:
        r"""Solve from the latent $z$ at $T$ down to the data at $t_\varepsilon$."""
        return self.solve(z, self.T, self.t_eps, with_divergence=with_divergence)

    def log_prob(self, x: Field) -> Scalar:
        r"""$\log p_{t_\varepsilon}(x) = \log \mu_Q(X_T) + \int_{t_\varepsilon}^T
        \operatorname{div} f(X_t, t)\,\mathrm{d}t$ on one field (Lebesgue density on the grid)."""
        solution = self.to_latent(x)
        base = GaussianField(self.sde.covariance, self.grid).log_prob(solution.x)
        return base + solution.log_det

    def log_prob_relative(self, x: Field) -> Scalar:
        r"""$\log (p_{t_\varepsilon}/\mu_Q)(x) = \int_{t_\varepsilon}^T [\operatorname{div} f
        - \langle X_t, Q^{-1} f\rangle]\,\mathrm{d}t$ on one field."""
        return self.to_latent(x).log_ratio


def batched(fn: Callable[[Field], object], x: Float[Array, "*batch n1 n2"]):
    """Apply a one-field function over any leading batch axes of `x` with `jax.vmap`
    (its output may be a pytree of arrays; each gains the batch axes)."""
    batch = tuple(jnp.shape(x)[:-2])
    if not batch:
        return fn(x)
    flat = jnp.reshape(x, (-1,) + tuple(jnp.shape(x)[-2:]))
    out = jax.vmap(fn)(flat)
    return jax.tree.map(lambda a: jnp.reshape(a, batch + a.shape[1:]), out)


class _Static:
    """Hashable holder of the non-array part of a Module, for NumPyro's pytree aux data.

    Compared by value when the part is hashable (an Equinox Module of static structure),
    otherwise by identity, so that `jax.jit` caches never see an unhashable treedef.
    """

    __slots__ = ("value", "_hash", "_by_value")

    def __init__(self, value):
        self.value = value
        try:
            self._hash = hash(value)
            self._by_value = True
        except TypeError:
            self._hash = id(value)
            self._by_value = False

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if not isinstance(other, _Static):
            return False
        if self.value is other.value:
            return True
        if self._by_value and other._by_value and self._hash == other._hash:
            try:
                return bool(self.value == other.value)
            except Exception:  # comparing arbitrary user structure; unequal if it cannot
                return False
        return False


def split_arrays(module) -> tuple[object, _Static]:
    """Split a Module into its arrays (pytree data) and a hashable static remainder."""
    arrays, static = eqx.partition(module, eqx.is_array)
    return arrays, _Static(static)


def join_arrays(arrays, static: _Static):
    """Inverse of [`split_arrays`]."""
    return eqx.combine(arrays, static.value)
