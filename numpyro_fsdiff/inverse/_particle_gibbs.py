r"""Particle Gibbs: conditional SMC sweeps along the reverse diffusion, as MCMC chains."""

import time
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, PRNGKeyArray
from .._grid import Grid
from ._noise import GaussianNoise
from ._operators import AbstractOperator
from ._posterior import AbstractSampler, SamplerOutput
from ._problem import Problem
from ._smc import SMC, LogLikelihood, _smc, known_noise_likelihood, trace_path


class ParticleGibbsResult(eqx.Module):
    r"""The output of [`ParticleGibbs`][numpyro_fsdiff.inverse.ParticleGibbs].

    **Fields:**

    - `draws`: the chains' states $x_{t_\varepsilon}$ after each sweep, shape
      `(num_chains, num_sweeps, n1, n2)`.
    - `update_rate`: per chain, the fraction of sweeps whose new reference differs from the
      old one at $T$ (a chain that never leaves its reference's start does not mix).
    - `score_evaluations`: score evaluations of all sweeps and the initial runs.
    - `wall_time_s`: the wall time, compilation included.
    """

    draws: Float[Array, "C S n1 n2"]
    update_rate: Float[Array, " C"]
    score_evaluations: int = eqx.field(static=True)
    wall_time_s: float = eqx.field(static=True)

    def to_datatree(self, grid: Grid | None = None, name: str = "x"):
        r"""The draws as an ArviZ 1.x `DataTree` (posterior variable `name`, dims `("chain",
        "draw", "x1", "x2")`, point coordinates from `grid`), with the scalar summaries of
        [`default_summaries`][numpyro_fsdiff.diagnostics.default_summaries] as
        `f"{name}_{summary}"`, ready for `arviz.rhat`, `arviz.ess` or
        [`summarize`][numpyro_fsdiff.diagnostics.summarize]."""
        import arviz as az

        from .._diagnostics import IMAGE_DIMS, default_summaries, image_coords, summary_values

        grid = Grid(self.draws.shape[-2:]) if grid is None else grid
        summaries = summary_values(self.draws, default_summaries(grid))
        posterior = {name: np.asarray(self.draws)}
        posterior.update({f"{name}_{key}": value for key, value in summaries.items()})
        return az.from_dict(
            {"posterior": posterior}, dims={name: list(IMAGE_DIMS)}, coords=image_coords(grid)
        )


class ParticleGibbs(AbstractSampler):
    r"""Particle Gibbs along the reverse diffusion: chains of conditional SMC sweeps.

    Each chain keeps one reference path $x_{0:K}$ of the reverse chain (from $T$ to
    $t_\varepsilon$). A sweep runs the [`SMC`][numpyro_fsdiff.inverse.SMC] sampler
    conditionally on it: particle 0 follows the reference, and at every step the population is
    resampled multinomially with particle 0's ancestor fixed to 0. The new reference is then
    drawn from the final weights and traced back through the ancestors (Andrieu, Doucet and
    Holenstein 2010). The sweep leaves $\pi$, the target of `smc`, invariant *for any
    number of particles*, so several chains give R-hat and ESS through ArviZ like any MCMC;
    its mixing depends on how often the new reference leaves the old one early in the path
    (`update_rate`), which falls as the SMC weights degenerate. Each chain starts from a path
    drawn from one unconditional SMC run.

    **Arguments:**

    - `smc`: the [`SMC`][numpyro_fsdiff.inverse.SMC] sampler of each sweep (its score,
      proposal, twist, steps and particle count; `ess_threshold` and `resampler` are not
      used, every step is resampled multinomially).
    - `num_sweeps`: sweeps (draws) per chain after `num_warmup`.
    - `num_chains`: independent chains (>= 2 for R-hat).
    - `num_warmup`: sweeps discarded at the start of each chain.

    ??? cite "References"

        Andrieu, Doucet and Holenstein, *Particle Markov chain Monte Carlo methods*,
        JRSS B 2010.
    """

    smc: SMC
    num_sweeps: int = eqx.field(static=True, default=100)
    num_chains: int = eqx.field(static=True, default=4)
    num_warmup: int = eqx.field(static=True, default=0)

    uses_prior: ClassVar[bool] = False

    def __check_init__(self):
        if not isinstance(self.smc, SMC):
            raise ValueError(f"`smc` must be an SMC sampler; got {self.smc!r}.")
        if self.smc.num_islands != 1:
            raise ValueError(
                "`smc.num_islands` must be 1 for particle Gibbs, whose sweeps condition one "
                f"population on the reference path; got {self.smc.num_islands}."
            )
        if self.smc.move_steps:
            raise ValueError(
                "`smc.move_steps` must be 0 for particle Gibbs, whose sweeps condition on one "
                f"diffusion path (a MALA move would leave it); got {self.smc.move_steps}."
            )
        for name, low in (("num_sweeps", 1), ("num_chains", 1), ("num_warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}; got {value!r}.")

    def run_likelihood(
        self, log_likelihood: LogLikelihood, grid: Grid, *, key: PRNGKeyArray
    ) -> ParticleGibbsResult:
        r"""Run the chains on $\pi(x) \propto p_{t_\varepsilon}(x)\, e^{\ell(x)}$ (the
        arguments of [`SMC.run_likelihood`][numpyro_fsdiff.inverse.SMC.run_likelihood]).

        **Returns:** a [`ParticleGibbsResult`][numpyro_fsdiff.inverse.ParticleGibbsResult].
        """
        smc = self.smc
        smc._check_run(log_likelihood, grid)
        start = time.perf_counter()
        keys = jax.random.split(key, self.num_chains)
        draws, moved = _chains(smc, log_likelihood, grid, keys, self.num_warmup + self.num_sweeps)
        draws = jax.block_until_ready(draws[:, self.num_warmup :])
        sweeps = self.num_chains * (1 + self.num_warmup + self.num_sweeps)
        return ParticleGibbsResult(
            draws=draws,
            update_rate=jnp.mean(moved, axis=1),
            score_evaluations=sweeps * smc.score_evaluations_per_run,
            wall_time_s=time.perf_counter() - start,
        )

    def run_linear(
        self, y: Array, operator: AbstractOperator, grid: Grid, noise: GaussianNoise, *, key
    ) -> ParticleGibbsResult:
        r"""[`run_likelihood`][numpyro_fsdiff.inverse.ParticleGibbs.run_likelihood] for
        $y = A x + \sigma\varepsilon$ with a known $\sigma$."""
        likelihood = known_noise_likelihood(y, operator, grid, noise)
        return self.run_likelihood(likelihood, grid, key=key)

    def run(self, problem: Problem, *, key: PRNGKeyArray) -> SamplerOutput:
        """The entry point of [`posterior`][numpyro_fsdiff.inverse.posterior] (`prior=None`):
        all chains' draws, unweighted; diagnostics `update_rate` and the ArviZ
        [`summarize`][numpyro_fsdiff.diagnostics.summarize] of the draws (`rhat_max`,
        `ess_bulk_min` of the field and its summaries)."""
        from .._diagnostics import summarize

        out = self.run_linear(problem.y, problem.operator, problem.grid, problem.noise, key=key)
        summary = summarize(out.to_datatree(problem.grid))["variables"]
        diagnostics = {
            "update_rate": [float(r) for r in out.update_rate],
            "rhat_max": max(v["rhat_max"] for v in summary.values()),
            "ess_bulk_min": min(v["ess_bulk_min"] for v in summary.values()),
            "summary": summary,
        }
        return SamplerOutput(
            samples=out.draws.reshape((-1,) + out.draws.shape[-2:]),
            log_weights=None,
            diagnostics=diagnostics,
            score_evaluations=out.score_evaluations,
            wall_time_s=out.wall_time_s,
            sampling_time_s=out.wall_time_s,
        )


@eqx.filter_jit
def _chains(smc: SMC, log_likelihood, grid: Grid, keys, num_sweeps: int):
    """The chains (one per key, vectorised): each starts from a path of an unconditional
    run, then makes `num_sweeps` sweeps; returns the draws and whether each sweep moved the
    reference's start."""

    def chain(key):
        key_init, key_sweeps = jax.random.split(key)
        reference = _draw_path(smc, log_likelihood, grid, key_init, None)

        def sweep(reference, sweep_key):
            new = _draw_path(smc, log_likelihood, grid, sweep_key, reference)
            return new, (new[-1], jnp.any(new[0] != reference[0]))

        _, (draws, moved) = jax.lax.scan(sweep, reference, jax.random.split(key_sweeps, num_sweeps))
        return draws, moved

    return jax.vmap(chain)(keys)


def _draw_path(smc: SMC, log_likelihood, grid: Grid, key, reference):
    """One (conditional) SMC run and a path drawn from its final weights."""
    key_run, key_pick = jax.random.split(key)
    out = _smc(smc, log_likelihood, grid, key_run, None, reference=reference, keep_paths=True)
    weights, paths, indices = out[1], out[8], out[9]
    final = jax.random.choice(key_pick, weights.shape[0], p=weights)
    return trace_path(paths, indices, final)
