r"""The posterior front end: one entry point for every sampler, and what it returns.

The samplers live one per module: [`NUTS`][numpyro_fsdiff.inverse.NUTS] in `_nuts.py`,
[`SVI`][numpyro_fsdiff.inverse.SVI] and [`MAP`][numpyro_fsdiff.inverse.MAP] in `_svi.py`,
[`DPS`][numpyro_fsdiff.inverse.DPS] in `_dps.py`; each implements
[`AbstractSampler.run`][numpyro_fsdiff.inverse.AbstractSampler.run] on a
[`Problem`][numpyro_fsdiff.inverse.Problem] and returns a
[`SamplerOutput`][numpyro_fsdiff.inverse.SamplerOutput].
"""

import abc
import functools
import inspect
import warnings
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from .._custom_types import Array, Field, Float, PRNGKeyArray
from .._grid import Grid
from .._validation import check_data
from ..metrics._image import coverage, credible_interval, psnr, ssim
from ._noise import GaussianNoise
from ._operators import AbstractOperator
from ._problem import Problem


class SamplerOutput(eqx.Module):
    r"""What a sampler's [`run`][numpyro_fsdiff.inverse.AbstractSampler.run] returns.

    **Fields:**

    - `samples`: the draws of the field, shape `(S, n1, n2)` (all chains pooled).
    - `log_weights`: unnormalised log importance weights, shape `(S,)`, for weighted
      samplers (e.g. sequential Monte Carlo); `None` when the draws are equally weighted.
    - `sigma`: draws of the noise level when it is inferred, shape `(S,)`, else `None`.
    - `diagnostics`: the sampler's diagnostics (see
      [`Posterior`][numpyro_fsdiff.inverse.Posterior]).
    - `score_evaluations`: calls of the prior's score, when the sampler uses one.
    - `gradient_evaluations`: gradients of the log-density, when the sampler takes them.
    - `wall_time_s`: the run's wall time, compilation included.
    - `sampling_time_s`: the part of it spent drawing (after warm-up or fitting).
    - `info`: further costs and timings (NUTS: `init_time_s`, `warmup_time_s`,
      `ess_per_second`).
    - `summary`: the ArviZ summary table, or `None`.
    - `inference_data`: the ArviZ `DataTree` of the draws, or `None`.
    """

    samples: Float[Array, "S n1 n2"]
    log_weights: Float[Array, " S"] | None = None
    sigma: Float[Array, " S"] | None = None
    diagnostics: dict = eqx.field(default_factory=dict)
    score_evaluations: int | None = None
    gradient_evaluations: int | None = None
    wall_time_s: float = float("nan")
    sampling_time_s: float = float("nan")
    info: dict = eqx.field(default_factory=dict)
    summary: Any = None
    inference_data: Any = None

    def __check_init__(self):
        if jnp.ndim(self.samples) != 3:
            raise ValueError(
                f"`samples` must have shape (S, n1, n2); got {jnp.shape(self.samples)}."
            )
        num = jnp.shape(self.samples)[0]
        for name in ("log_weights", "sigma"):
            value = getattr(self, name)
            if value is not None and jnp.shape(value) != (num,):
                raise ValueError(
                    f"`{name}` must have shape ({num},), one per draw; got {jnp.shape(value)}."
                )

    def costs(self) -> dict:
        """The timings and evaluation counts as one dict (`Posterior.info`)."""
        out = {"wall_time_s": self.wall_time_s, "sampling_time_s": self.sampling_time_s}
        for name in ("score_evaluations", "gradient_evaluations"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {**out, **self.info}


def _takes_keyword_key(fn) -> bool:
    """Whether `fn` has a keyword-only `key` (the current form of `run`)."""
    parameter = inspect.signature(fn).parameters.get("key")
    return parameter is not None and parameter.kind == parameter.KEYWORD_ONLY


def _accept_old_run_form(run):
    """Let `sampler.run(key, problem)`, the form before `key` became keyword-only, still work
    for one release, with a `DeprecationWarning`."""

    @functools.wraps(run)
    def wrapper(self, *args, **kwargs):
        if len(args) == 2 and "key" not in kwargs:
            warnings.warn(
                "`sampler.run(key, problem)` is deprecated; call `sampler.run(problem, key=key)`.",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["key"], args = args[0], args[1:]
        return run(self, *args, **kwargs)

    wrapper._accepts_old_run_form = True
    return wrapper


class AbstractSampler(eqx.Module):
    r"""A posterior sampler for [`posterior`][numpyro_fsdiff.inverse.posterior].

    Subclasses implement [`run`][numpyro_fsdiff.inverse.AbstractSampler.run]. `uses_prior`
    (a class variable) says whether the sampler needs the NumPyro prior of the problem
    (NUTS, SVI, MAP) or works from a score it holds (DPS: then `Problem.prior` is `None`).
    """

    uses_prior: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_accepts_old_run_form", False):
            if _takes_keyword_key(run):
                cls.run = _accept_old_run_form(run)

    @property
    def name(self) -> str:
        """The sampler's name in reports (`Posterior.method`)."""
        return type(self).__name__

    @abc.abstractmethod
    def run(self, problem: Problem, *, key: PRNGKeyArray) -> SamplerOutput:
        """Draw from the posterior of `problem`.

        **Arguments:**

        - `problem`: the [`Problem`][numpyro_fsdiff.inverse.Problem].
        - `key`: a PRNG key.

        **Returns:** a [`SamplerOutput`][numpyro_fsdiff.inverse.SamplerOutput].
        """


class Posterior(eqx.Module):
    r"""The output of [`posterior`][numpyro_fsdiff.inverse.posterior].

    **Fields:**

    - `method`: the sampler's name.
    - `samples`: posterior draws of the field, shape `(S, n1, n2)` (all chains pooled).
    - `weights`: the normalised weights of the draws, $w_i \propto e^{\ell_i}$ from the
      sampler's log-weights $\ell_i$, shape `(S,)`, summing to 1; `None` for samplers whose
      draws are equally weighted (NUTS, SVI, MAP, DPS).
    - `mean`, `std`: pixelwise posterior mean $\sum_i w_i u_i$ and standard deviation
      $(\sum_i w_i (u_i - \text{mean})^2)^{1/2}$, shape `(n1, n2)` ($w_i = 1/S$ without
      weights).
    - `sigma`: draws of the noise level when it is inferred, shape `(S,)`, else `None`.
    - `diagnostics`: a dict; for NUTS `rhat_max`, `rhat_median` (over pixels),
      `ess_bulk_min`, `ess_bulk_median`, `divergences`, `num_chains`, the adapted
      `step_size`, `mean_leapfrog_steps` and `accept_prob` of the draws, and
      `misfit_per_chain` (each chain's mean $\lVert y - Au\rVert^2/(\sigma^2 m)$: near 1
      when its draws fit the data); for SVI the final `elbo`.
    - `summary`: the ArviZ summary table (a `pandas.DataFrame`) of the scalar sites and of
      the field's diagnostics aggregated over pixels, or `None`.
    - `metrics`: when the truth is known: `psnr`, `ssim` of the mean, `coverage_90` (the
      fraction of pixels whose true value lies in the pixelwise 90% credible interval, of the
      weighted draws when there are weights).
    - `info`: `wall_time_s` (total, compilation included), `sampling_time_s` (NUTS: after
      warm-up; also `init_time_s`, `warmup_time_s`), `score_evaluations` (when the count is
      known), `gradient_evaluations` (NUTS: initialisation, warm-up and draws),
      `ess_per_second`.
    - `inference_data`: the ArviZ `DataTree` (NUTS: the field `u` and, for a whitenable
      prior, the white latent `u_base` that the chains move in), or `None`.
    """

    method: str
    samples: Float[Array, "S n1 n2"]
    mean: Field
    std: Field
    sigma: Float[Array, " S"] | None
    diagnostics: dict
    summary: Any
    metrics: dict
    info: dict
    inference_data: Any
    weights: Float[Array, " S"] | None = None

    def credible_interval(self, level: float = 0.9) -> tuple[Field, Field]:
        """The pixelwise equal-tailed credible interval `(lower, upper)` of probability
        `level`, of the weighted draws when there are `weights` (see
        [`credible_interval`][numpyro_fsdiff.metrics.credible_interval])."""
        return credible_interval(self.samples, level, weights=self.weights)

    def coverage(self, truth: Field, level: float = 0.9):
        """The fraction of pixels of `truth` inside the credible interval of probability
        `level` (weighted when there are `weights`)."""
        truth = check_data("truth", truth, ndim=2, shape=self.samples.shape[1:])
        return coverage(self.samples, truth, level, weights=self.weights)


def _is_key(x) -> bool:
    """Whether `x` is a PRNG key: typed (`jax.random.key`) or raw (`jax.random.PRNGKey`)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and jnp.shape(x) == (2,)


def _deprecated_key_first(fn):
    """Accept `fn(key, *args)`, the form before `key` became keyword-only, for one release
    with a `DeprecationWarning`."""
    positional = sum(
        p.kind == p.POSITIONAL_OR_KEYWORD for p in inspect.signature(fn).parameters.values()
    )

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "key" not in kwargs and args and (len(args) > positional or _is_key(args[0])):
            warnings.warn(
                f"`{fn.__name__}(key, ...)` is deprecated: the key is keyword-only, "
                f"`{fn.__name__}(..., key=key)`.",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["key"], args = args[0], args[1:]
        return fn(*args, **kwargs)

    return wrapper


def _summarise(samples, weights):
    """The pixelwise mean and standard deviation of (weighted) draws."""
    if weights is None:
        return jnp.mean(samples, axis=0), jnp.std(samples, axis=0)
    mean = jnp.tensordot(weights, samples, axes=1)
    variance = jnp.tensordot(weights, (samples - mean) ** 2, axes=1)
    return mean, jnp.sqrt(variance)


def _sampler_output(sampler, problem, key) -> SamplerOutput:
    """`sampler.run(problem, key=key)`; a sampler written for the old form
    `run(key, problem) -> dict` still runs, with a `DeprecationWarning`."""
    if _takes_keyword_key(sampler.run):
        return sampler.run(problem, key=key)
    warnings.warn(
        f"{type(sampler).__name__}.run(key, problem) returning a dict is deprecated: implement "
        "`run(self, problem, *, key) -> SamplerOutput`.",
        DeprecationWarning,
        stacklevel=3,
    )
    out = sampler.run(key, problem)
    info = dict(out.get("info", {}))
    return SamplerOutput(
        samples=out["samples"],
        sigma=out.get("sigma"),
        diagnostics=out.get("diagnostics", {}),
        score_evaluations=info.pop("score_evaluations", None),
        gradient_evaluations=info.pop("gradient_evaluations", None),
        wall_time_s=info.pop("wall_time_s", float("nan")),
        sampling_time_s=info.pop("sampling_time_s", float("nan")),
        info=info,
        summary=out.get("summary"),
        inference_data=out.get("inference_data"),
    )


@_deprecated_key_first
def posterior(
    y: Array,
    operator: AbstractOperator,
    prior: dist.Distribution | None,
    sampler: AbstractSampler,
    *,
    key: PRNGKeyArray,
    grid: Grid,
    noise: GaussianNoise,
    truth: Field | None = None,
    data_range=None,
    level: float = 0.9,
    mesh=None,
) -> Posterior:
    r"""Sample the posterior of $u$ given $y = A u + \sigma\varepsilon$ and summarise it.

    One entry point for every sampler: [`NUTS`][numpyro_fsdiff.inverse.NUTS] and
    [`SVI`][numpyro_fsdiff.inverse.SVI] (including [`MAP`][numpyro_fsdiff.inverse.MAP]) run
    the NumPyro [`model`][numpyro_fsdiff.inverse.model] in the prior's Gaussian latent;
    [`DPS`][numpyro_fsdiff.inverse.DPS] uses only its score (pass `prior=None` or the prior
    anyway; it is not used). Weighted samplers (log-weights in their
    [`SamplerOutput`][numpyro_fsdiff.inverse.SamplerOutput]) give `Posterior.weights`, which
    the mean, standard deviation and coverage use.

    The key is keyword-only; `posterior(key, y, operator, prior, sampler, ...)` still works
    for one release, with a `DeprecationWarning`.

    **Arguments:**

    - `y`: the data, shape `operator.data_shape(grid)`.
    - `operator`: the observation operator.
    - `prior`: the NumPyro prior on fields of shape `grid.shape` (NUTS and SVI).
    - `sampler`: a sampler instance, e.g. `NUTS(num_chains=4)`.
    - `key`: a PRNG key.
    - `grid`: the grid of the unknown field.
    - `noise`: a [`GaussianNoise`][numpyro_fsdiff.inverse.GaussianNoise].
    - `truth`: the true field on `grid` when known: fills `Posterior.metrics`.
    - `data_range`: the PSNR/SSIM range $R$ (default: the range of `truth`).
    - `level`: the credible level of the coverage figure (0.9).
    - `mesh`: a device mesh (e.g. [`data_mesh`][numpyro_fsdiff.data_mesh]()) that splits the
      work across the devices of its `"data"` axis: NUTS chains (`num_chains` a multiple of
      their number; each device runs its chains vectorised, whatever `chain_method`) and DPS
      solves (`num_samples` a multiple). The draws are those of the unsharded run with
      `chain_method="vectorized"` (NUTS) or `mesh=None` (DPS), up to float rounding. SVI and
      MAP do not use it.

    **Returns:** a [`Posterior`][numpyro_fsdiff.inverse.Posterior].

    **Raises:** `ValueError` naming the argument: a `y` or `truth` of the wrong shape or
    holding NaN or inf, a `prior` that does not fit the grid, an unknown `sampler`.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern

        grid = fsd.Grid((8, 8))
        op = GaussianBlur(0.05)
        prior = fsd.GaussianField(Matern(2.0, 3.0), grid)
        truth = prior.sample(jax.random.key(0))
        y = op(truth, grid) + 0.05 * jax.random.normal(jax.random.key(1), op.data_shape(grid))
        sde = fsd.VPSDE(Matern(2.0, 3.0))
        dps = DPS(fsd.GaussianScore(Matern(2.0, 3.0), sde, grid), sde, num_samples=4,
                  steps=20, weighting="normalised")  # score only: prior=None
        result = posterior(y, op, None, dps, key=jax.random.key(2), grid=grid,
                           noise=GaussianNoise(0.05), truth=truth)
        result.mean.shape, result.weights  # (8, 8), None: equally weighted draws
        result.metrics["coverage_90"], result.info["score_evaluations"]  # 4 x (2 x 20 + 1)
        ```
    """
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"`sampler` must be NUTS(...), SVI(...), MAP(...) or DPS(...); got {sampler!r}."
        )
    if sampler.uses_prior and not isinstance(prior, dist.Distribution):
        raise ValueError(
            f"`prior` must be a numpyro distribution with event shape {grid.shape} (the grid) "
            f"for {sampler.name}; got {prior!r}."
        )
    y = check_data("y", y)
    if truth is not None:
        truth = check_data("truth", truth, ndim=2, shape=grid.shape)
    problem = Problem(y, operator, prior if sampler.uses_prior else None, noise, grid, mesh)
    out = _sampler_output(sampler, problem, key)
    samples = out.samples
    weights = None if out.log_weights is None else jax.nn.softmax(out.log_weights)
    mean, std = _summarise(samples, weights)
    metrics = {}
    if truth is not None:
        metrics = {
            "psnr": float(psnr(mean, truth, data_range=data_range)),
            "ssim": float(ssim(mean, truth, data_range=data_range, window=min(7, *grid.shape))),
            f"coverage_{round(100 * level)}": float(
                coverage(samples, truth, level, weights=weights)
            ),
        }
    return Posterior(
        method=sampler.name,
        samples=samples,
        mean=mean,
        std=std,
        sigma=out.sigma,
        diagnostics=out.diagnostics,
        summary=out.summary,
        metrics=metrics,
        info=out.costs(),
        inference_data=out.inference_data,
        weights=weights,
    )

