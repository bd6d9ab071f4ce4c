r"""Stochastic variational inference and MAP in the prior's Gaussian latent."""

import time
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import optax
from numpyro.infer import Predictive, Trace_ELBO, autoguide

from .._validation import check_positive
from ._posterior import AbstractSampler, SamplerOutput
from ._problem import Problem

_GUIDES = {
    "normal": autoguide.AutoNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "delta": autoguide.AutoDelta,
}


class SVI(AbstractSampler):
    r"""Stochastic variational inference in the Gaussian latent, with an autoguide.

    `guide="normal"` (`AutoNormal`, mean field), `"lowrank"`
    (`AutoLowRankMultivariateNormal` of the given `rank`), `"mvn"` (full covariance; small
    grids) or `"delta"` (`AutoDelta`: maximum a posteriori, the posterior mode in the white
    latent; its "samples" are that one point). The ELBO is maximised with optax's Adam.

    For a linear-Gaussian problem the latent posterior is Gaussian: `"mvn"` is then exact,
    `"normal"` finds the exact mean and the variances $1/\Lambda_{ii}$ from the diagonal of
    the posterior precision $\Lambda$ (mean-field under-dispersion), `"delta"` the mean.

    **Arguments:**

    - `guide`: `"normal"`, `"lowrank"`, `"mvn"` or `"delta"`.
    - `num_steps`: optimisation steps; `learning_rate`: Adam's step size.
    - `num_particles`: ELBO Monte Carlo particles per step.
    - `num_samples`: draws from the fitted guide.
    - `rank`: the low-rank guide's rank (`None`: numpyro's default).
    """

    guide: Literal["normal", "lowrank", "mvn", "delta"] = eqx.field(static=True, default="normal")
    num_steps: int = eqx.field(static=True, default=2000)
    learning_rate: float = eqx.field(static=True, default=1e-2)
    num_particles: int = eqx.field(static=True, default=1)
    num_samples: int = eqx.field(static=True, default=200)
    rank: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.guide not in _GUIDES:
            raise ValueError(f"`guide` must be one of {sorted(_GUIDES)}; got {self.guide!r}.")
        for name in ("num_steps", "num_particles", "num_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        check_positive("learning_rate", self.learning_rate)

    @property
    def name(self) -> str:
        return "MAP" if self.guide == "delta" else f"SVI-{self.guide}"

    def run(self, problem: Problem, *, key) -> SamplerOutput:
        """Fit the guide, then draw `num_samples` fields from it."""
        fn = problem.latent_model()
        kwargs = {"rank": self.rank} if self.guide == "lowrank" and self.rank else {}
        guide = _GUIDES[self.guide](fn, **kwargs)
        # cosine decay to 1% of the initial step: the stochastic optimum settles
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.num_steps, alpha=0.01)
        svi = numpyro.infer.SVI(fn, guide, optax.adam(schedule), Trace_ELBO(self.num_particles))
        key_fit, key_draw = jax.random.split(key)
        start = time.perf_counter()
        result = svi.run(key_fit, self.num_steps, problem.y, progress_bar=False)
        jax.block_until_ready(result.params)
        fitted = time.perf_counter()
        predictive = Predictive(
            fn,
            guide=guide,
            params=result.params,
            num_samples=self.num_samples,
            return_sites=["u", "sigma"] if problem.noise.inferred else ["u"],
        )
        draws = predictive(key_draw, problem.y)
        samples = jax.block_until_ready(draws["u"])
        end = time.perf_counter()
        elbo = -float(jnp.mean(result.losses[-max(1, self.num_steps // 20) :]))
        return SamplerOutput(
            samples=samples,
            sigma=draws.get("sigma"),
            diagnostics={"elbo": elbo, "guide": self.guide},
            gradient_evaluations=self.num_steps * self.num_particles,
            wall_time_s=end - start,
            sampling_time_s=fitted - start,
        )


def MAP(num_steps: int = 2000, learning_rate: float = 1e-2) -> SVI:
    """Maximum a posteriori in the white latent: [`SVI`][numpyro_fsdiff.inverse.SVI] with
    `guide="delta"`."""
    return SVI(guide="delta", num_steps=num_steps, learning_rate=learning_rate, num_samples=1)
