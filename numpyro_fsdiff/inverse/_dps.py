r"""Diffusion posterior sampling: the library's reverse-SDE sampler with a likelihood-guided
score."""

import time
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._covariance import AbstractCovariance
from .._custom_types import Array
from .._grid import Grid
from .._sample import sample_one, tweedie_denoise
from .._sde import VPSDE, Score
from .._sharding import check_divisible, map_blocks, shard_leading_axis
from ._operators import AbstractOperator
from ._posterior import AbstractSampler, SamplerOutput
from ._problem import Problem


def guided_score(
    score: Score,
    sde: VPSDE,
    y: Array,
    operator: AbstractOperator,
    grid: Grid,
    sigma,
    guidance,
    weighting: str = "gaussian",
) -> Score:
    r"""The DPS posterior score $S(x, t) + \gamma\, Q_{\mathrm{pix}} \nabla_x \ell(x, t)$, with
    $\hat x_0(x, t)$ Tweedie's denoised estimate and $r = y - A\hat x_0(x, t)$:

    - `weighting="gaussian"`: $\ell = -\lVert r\rVert^2 / (2\sigma^2)$, the log-likelihood
      $\log N(y; A\hat x_0, \sigma^2 I)$;
    - `weighting="normalised"`: $\ell = -\lVert r\rVert / \sigma$, whose gradient
      $J^\top A^\top r / (\sigma\lVert r\rVert)$ is the Gaussian one times
      $\sigma/\lVert r\rVert$: Chung et al.'s step normalisation
      $\zeta_i = \zeta'/\lVert r\rVert$, bounded whatever $\sigma$ (stable with few steps).

    $Q_{\mathrm{pix}} = Q / (|D|/N)$ turns the Euclidean gradient of the pixel likelihood into
    the $Q$-preconditioned $L^2(D)$ gradient, the form of the prior score; the gradient is
    taken through the score (one vector-Jacobian product per evaluation).

    **Returns:** the guided score, a callable `(x, t) -> S_y(x, t)` on one field, which
    [`sample`][numpyro_fsdiff.sample] and [`sample_one`][numpyro_fsdiff.sample_one] take in
    place of a prior score.
    """
    if weighting not in ("gaussian", "normalised"):
        raise ValueError(f"`weighting` must be 'gaussian' or 'normalised'; got {weighting!r}.")
    covariance: AbstractCovariance = sde.covariance
    guidance = jnp.asarray(guidance)

    def posterior_score(x, t):
        def log_likelihood(x):
            s = score(x, t)
            x0 = tweedie_denoise(lambda *_: s, sde, x, t)  # reuse s: one score evaluation
            residual = y - operator(x0, grid)
            if weighting == "gaussian":
                return -0.5 * jnp.sum(residual**2) / sigma**2, s
            return -jnp.sqrt(jnp.sum(residual**2) + 1e-30) / sigma, s

        gradient, s = jax.grad(log_likelihood, has_aux=True)(x)
        return s + guidance * covariance.apply(gradient, grid) / grid.cell_area

    return posterior_score


class DPS(AbstractSampler):
    r"""Diffusion posterior sampling: the reverse SDE with a likelihood-guided score.

    The reverse-time SDE of [`VPSDE.reverse_drift`][numpyro_fsdiff.VPSDE.reverse_drift] is
    solved from $T$ to $t_\varepsilon$ by the library's sampler
    ([`sample_one`][numpyro_fsdiff.sample_one], `method="sde"`), with the prior score
    replaced by

    $$S_y(x, t) = S(x, t) + \gamma\, Q_{\mathrm{pix}}\nabla_x \log N\big(y;\ A\hat x_0(x, t),\
    \sigma^2 I\big), \qquad \hat x_0(x, t) = \frac{x + \sigma_t^2 S(x, t)}{m_t},$$

    (see [`guided_score`][numpyro_fsdiff.inverse.guided_score]), then denoised once by
    Tweedie's formula at $t_\varepsilon$. With $\gamma = 1$ this is the DPS approximation
    $p(y \mid x_t) \approx N(y; A\,\mathbb{E}[X_0 \mid x_t], \sigma^2 I)$ of the likelihood of a
    noisy state; it ignores the spread of $X_0$ given $x_t$, so it is over-confident at large
    $t$ and not exact even for Gaussian priors (the tests report its error). Chung et al.
    take discrete steps $\zeta_i = \zeta'/\lVert y - A\hat x_0\rVert$ instead; $\gamma$ plays
    the role of that step scale here: larger $\gamma$ fits the data harder, smaller is closer
    to the prior; `weighting="normalised"` applies their normalisation. It needs only the
    score, never a density: the fast approximate baseline.

    **Stability.** Euler-Maruyama with the Gaussian weighting needs roughly
    $\beta(t)\,\Delta t\,\gamma\,\lVert Q_{\mathrm{pix}}^{1/2} J^\top A^\top A J
    Q_{\mathrm{pix}}^{1/2}\rVert / \sigma^2 < 2$ ($J = \partial\hat x_0/\partial x$): small
    noise levels need many steps, a smaller $\gamma$, or the normalised weighting.

    **Arguments:**

    - `score`, `sde`: the prior's Q-preconditioned score (on one field) and its VP-SDE.
    - `num_samples`: independent reverse solves.
    - `steps`: fixed steps from $T$ to $t_\varepsilon$; `solver`: an SDE solver name or
      Diffrax solver (Euler-Maruyama by default; the SRK solvers SRA1 and ShARK go through
      the same time-reversal workaround for Diffrax issue 598 as
      [`sample`][numpyro_fsdiff.sample]).
    - `guidance`: $\gamma \ge 0$ (1 by default).
    - `weighting`: `"gaussian"` or `"normalised"` (see
      [`guided_score`][numpyro_fsdiff.inverse.guided_score]).
    - `t_eps`: the final time.
    - `batch_size`: how many solves run together (vectorised) at a time.

    ??? cite "Reference"

        Chung, Kim, McCann, Klasky and Ye, *Diffusion Posterior Sampling for General Noisy
        Inverse Problems*, ICLR 2023.
    """

    score: Score
    sde: VPSDE
    num_samples: int = eqx.field(static=True, default=16)
    steps: int = eqx.field(static=True, default=200)
    solver: Any = eqx.field(static=True, default="euler")
    guidance: float = 1.0
    weighting: str = eqx.field(static=True, default="gaussian")
    t_eps: float = eqx.field(static=True, default=1e-3)
    batch_size: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        if not isinstance(self.sde, VPSDE):
            raise ValueError(f"`sde` must be a VPSDE; got {self.sde!r}.")
        for name in ("num_samples", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        if not float(self.guidance) >= 0:
            raise ValueError(f"`guidance` must be >= 0; got {self.guidance!r}.")
        if not 0 < self.t_eps < self.sde.T:
            raise ValueError(f"`t_eps` must be in (0, T={self.sde.T}); got {self.t_eps!r}.")

    uses_prior: ClassVar[bool] = False

    def run(self, problem: Problem, *, key) -> SamplerOutput:
        """`num_samples` guided reverse solves, `batch_size` at a time (one block of keys per
        device on `problem.mesh`)."""
        if problem.noise.inferred:
            raise ValueError("`noise` must have a known sigma for DPS; got an inferred one.")
        keys = jax.random.split(key, self.num_samples)
        if problem.mesh is not None:
            check_divisible("num_samples", self.num_samples, problem.mesh)
            keys = shard_leading_axis(keys, problem.mesh)
        start = time.perf_counter()
        samples, evaluations = jax.block_until_ready(_dps_solve(self, problem, keys))
        end = time.perf_counter()
        # each guided evaluation costs one score evaluation and one vector-Jacobian product,
        # plus the final Tweedie step with the prior score
        return SamplerOutput(
            samples=samples,
            diagnostics={
                "guidance": float(self.guidance),
                "weighting": self.weighting,
                "steps": self.steps,
            },
            score_evaluations=int(np.sum(2 * np.asarray(evaluations) + 1)),
            wall_time_s=end - start,
            sampling_time_s=end - start,
        )


@eqx.filter_jit
def _dps_solve(sampler: DPS, problem: Problem, keys):
    """All DPS solves, compiled once per sampler structure, problem and shapes: the library's
    reverse-SDE solve with the guided score, without its final denoising step, then Tweedie's
    step with the prior score. Returns the fields and each solve's guided-score evaluations."""
    grid, sde = problem.grid, sampler.sde
    guided = guided_score(
        sampler.score,
        sde,
        problem.y,
        problem.operator,
        grid,
        problem.noise.sigma,
        sampler.guidance,
        sampler.weighting,
    )

    def one(key):
        x, info = sample_one(
            guided,
            sde,
            grid,
            key=key,
            method="sde",
            solver=sampler.solver,
            steps=sampler.steps,
            t_eps=sampler.t_eps,
            denoise=False,
            max_steps=sampler.steps + 1,
        )
        return tweedie_denoise(sampler.score, sde, x, sampler.t_eps), info.num_score_evaluations

    def block(keys):
        return jax.lax.map(one, keys, batch_size=min(keys.shape[0], sampler.batch_size))

    # On a mesh, each device solves its own block of keys.
    return block(keys) if problem.mesh is None else map_blocks(block, problem.mesh)(keys)
