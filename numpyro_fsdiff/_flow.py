r"""The probability-flow ODE as a NumPyro transform from the Gaussian latent to the data."""

import diffrax
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.transforms import Transform

from ._custom_types import Array, Float, PRNGKeyArray, ScalarLike
from ._grid import Grid
from ._likelihood import (
    AbstractDivergence,
    ProbabilityFlowODE,
    batched,
    join_arrays,
    resolve_divergence,
    split_arrays,
)
from ._validation import check_field_shape


class ProbabilityFlow(Transform):
    r"""The bijection $z = X_T \mapsto x = X_{t_\varepsilon}$ of the probability-flow ODE.

    Forward (`__call__`) solves $\dot X = -\tfrac12\beta(t)[X + S(X, t)]$ from $T$ down to
    $t_\varepsilon$; `_inverse` solves it forward in time from $t_\varepsilon$ to $T$;
    `log_abs_det_jacobian` is Liouville's formula

    $$\log\Big\lvert\det \frac{\partial x}{\partial z}\Big\rvert
    = \int_T^{t_\varepsilon} \operatorname{div} f(X_t, t)\,\mathrm{d}t
    = -\int_{t_\varepsilon}^T \operatorname{div} f(X_t, t)\,\mathrm{d}t,$$

    integrated along the path through `x` (one solve, with the divergence rule of
    `divergence`). Hence
    `TransformedDistribution(GaussianField(Q, grid), ProbabilityFlow(score, sde, grid))`
    has exactly the density of [`DiffusionPrior`][numpyro_fsdiff.DiffusionPrior], and
    `numpyro.infer.reparam.TransformReparam` turns a model on $x$ into one on the Gaussian
    latent $z$: the prior density there is exact ($N(0, Q)$, no divergence), and the model
    sees $x$ through the ODE solve. `__call__` and `_inverse` solve only the state (no
    divergence), so inference in the latent costs one ODE solve per density evaluation.

    **Adjoint.** The default `diffrax.RecursiveCheckpointAdjoint()` backpropagates through the
    solver's internal operations with binomial checkpointing: exact gradients of the discretised
    flow, the reverse mode that NUTS, HMC and SVI use. It does not support forward mode
    (`jax.jvp`, `jax.jacfwd`, `jax.hessian`, so e.g. `AutoLaplaceApproximation`); for those pass
    `adjoint=diffrax.DirectAdjoint()` (forward and reverse, more memory) or
    `diffrax.ForwardMode()` (forward only).

    **Arguments:**

    - `score`: the Q-preconditioned score $S(x, t)$ on one field and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] (its covariance is $Q$, its `T` the latent time).
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid]; fields have shape `(..., n1, n2)`.
    - `solver`: a [`SolverConfig`][numpyro_fsdiff.SolverConfig], an ODE solver name or a
      Diffrax solver (`"tsit5"`).
    - `steps`, `rtol`, `atol`: shortcuts for `SolverConfig`'s fixed steps or adaptive
      tolerances, as for [`ProbabilityFlowODE`][numpyro_fsdiff.ProbabilityFlowODE] (default:
      adaptive, 1e-5).
    - `t_eps`: the data time $t_\varepsilon$.
    - `divergence`: `"exact"`, `"hutchinson"` or an
      [`AbstractDivergence`][numpyro_fsdiff.AbstractDivergence], used by
      `log_abs_det_jacobian`.
    - `num_probes`, `key`: Hutchinson probes (drawn once, here).
    - `adjoint`: the Diffrax adjoint (see above).
    - `max_steps`: the step budget of adaptive solves (default 4096).

    !!! example

        ```python
        from numpyro.infer.reparam import TransformReparam
        from numpyro_fsdiff.covariance import Matern

        sde = VPSDE(Matern(2.0, 3.0))
        grid = Grid((8, 8))
        score = GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)  # or a trained network
        flow = ProbabilityFlow(score, sde, grid, solver="heun", steps=4)
        prior = dist.TransformedDistribution(GaussianField(sde.covariance, grid), flow)

        def model():
            with numpyro.handlers.reparam(config={"x": TransformReparam()}):
                return numpyro.sample("x", prior)  # NUTS would sample the latent "x_base"

        x = numpyro.handlers.seed(model, jax.random.key(0))()
        ```
    """

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
        divergence: str | AbstractDivergence = "exact",
        num_probes: int = 1,
        key: PRNGKeyArray | None = None,
        adjoint: diffrax.AbstractAdjoint | None = None,
        max_steps: int | np.integer | None = None,
    ):
        if not isinstance(grid, Grid):
            raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
        ode = ProbabilityFlowODE(
            score,
            sde,
            grid,
            solver=solver,
            steps=steps,
            rtol=rtol,
            atol=atol,
            t_eps=t_eps,
            divergence=resolve_divergence(divergence, grid, num_probes=num_probes, key=key),
            adjoint=adjoint,
            max_steps=max_steps,
        )
        self._arrays, self._static = split_arrays(ode)

    @property
    def ode(self) -> ProbabilityFlowODE:
        """The [`ProbabilityFlowODE`][numpyro_fsdiff.ProbabilityFlowODE] this transform solves."""
        return join_arrays(self._arrays, self._static)

    @property
    def grid(self) -> Grid:
        return self._static.value.grid

    @property
    def domain(self):
        return dist.constraints.independent(dist.constraints.real, 2)

    @property
    def codomain(self):
        return dist.constraints.independent(dist.constraints.real, 2)

    def __call__(self, z: Float[Array, "*batch n1 n2"]) -> Float[Array, "*batch n1 n2"]:
        check_field_shape("z", z, self.grid.shape)
        ode = self.ode
        return batched(lambda u: ode.to_data(u, with_divergence=False).x, z)

    def _inverse(self, x: Float[Array, "*batch n1 n2"]) -> Float[Array, "*batch n1 n2"]:
        check_field_shape("x", x, self.grid.shape)
        ode = self.ode
        return batched(lambda u: ode.to_latent(u, with_divergence=False).x, x)

    def call_with_intermediates(self, z):
        r"""`(x, log|det dx/dz|)` from one solve of state and divergence, $T \to t_\varepsilon$."""
        check_field_shape("z", z, self.grid.shape)
        ode = self.ode

        def one(u):
            solution = ode.to_data(u)
            return solution.x, solution.log_det

        return batched(one, z)

    def log_abs_det_jacobian(self, z, x, intermediates=None) -> Float[Array, "*batch"]:
        r"""$\log\lvert\det \partial x / \partial z\rvert$, integrated along the path of `x`."""
        if intermediates is not None:
            return intermediates
        check_field_shape("x", x, self.grid.shape)
        ode = self.ode
        return batched(lambda u: -ode.to_latent(u).log_det, x)

    def tree_flatten(self):
        return (self._arrays,), (("_arrays",), {"_static": self._static})

    def eq(self, other, static: bool = False):
        return (
            isinstance(other, ProbabilityFlow)
            and self._static == other._static
            and (self._arrays is other._arrays)
        )
