r"""Posterior sampling for linear inverse problems: NUTS, SVI/MAP and guided reverse SDE (DPS)."""

import abc
import functools
import time
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, Predictive, Trace_ELBO, autoguide
from numpyro.infer import NUTS as _NumPyroNUTS
from numpyro.infer.reparam import TransformReparam

from .._covariance import AbstractCovariance
from .._custom_types import Array, Field, Float, PRNGKeyArray
from .._grid import Grid, fourier_multiply
from .._sde import VPSDE, Score
from .._sharding import check_divisible, map_blocks, shard_leading_axis
from .._solvers import levy_area_for, resolve_solver
from .._terms import brownian_motion
from .._validation import check_positive
from ._latent import ColourTransform, whiten
from ._metrics import coverage, psnr, ssim
from ._model import check_problem, model
from ._noise import GaussianNoise
from ._operators import AbstractOperator


class Posterior(eqx.Module):
    r"""The output of [`posterior`][numpyro_fsdiff.inverse.posterior].

    **Fields:**

    - `method`: the sampler's name.
    - `samples`: posterior draws of the field, shape `(S, n1, n2)` (all chains pooled).
    - `mean`, `std`: pixelwise posterior mean and standard deviation, shape `(n1, n2)`.
    - `sigma`: draws of the noise level when it is inferred, shape `(S,)`, else `None`.
    - `diagnostics`: a dict; for NUTS `rhat_max`, `rhat_median` (over pixels),
      `ess_bulk_min`, `ess_bulk_median`, `divergences`, `num_chains`, the adapted
      `step_size`, `mean_leapfrog_steps` and `accept_prob` of the draws, and
      `misfit_per_chain` (each chain's mean $\lVert y - Au\rVert^2/(\sigma^2 m)$: near 1
      when its draws fit the data); for SVI the final `elbo`.
    - `summary`: the ArviZ summary table (a `pandas.DataFrame`) of the scalar sites and of
      the field's diagnostics aggregated over pixels, or `None`.
    - `metrics`: when the truth is known: `psnr`, `ssim` of the mean, `coverage_90` (the
      fraction of pixels whose true value lies in the pixelwise 90% credible interval).
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


class AbstractSampler(eqx.Module):
    """A posterior sampler for [`posterior`][numpyro_fsdiff.inverse.posterior]."""

    @abc.abstractmethod
    def run(self, key: PRNGKeyArray, problem: "_Problem") -> dict:
        """Draw from the posterior; returns a dict of `samples`, `sigma`, `diagnostics`,
        `summary`, `info`, `inference_data`."""


class _Problem(eqx.Module):
    y: Array
    operator: AbstractOperator
    prior: Any
    noise: GaussianNoise
    grid: Grid = eqx.field(static=True)
    mesh: Any = eqx.field(static=True, default=None)

    def latent_model(self):
        """The model with the prior written on pixel white noise and reparametrised there."""
        prior = whiten(self.prior)
        fn = functools.partial(
            model, operator=self.operator, prior=prior, noise=self.noise, grid=self.grid
        )
        if isinstance(prior, dist.TransformedDistribution):
            fn = numpyro.handlers.reparam(fn, config={"u": TransformReparam()})
        return fn


_INITS = ("uniform", "prior", "map")
_MASS_MATRICES = ("adapt", "gaussian", "gauss_newton")
DENSE_METRIC_MAX_POINTS = 4096  # the dense N x N metrics of `mass_matrix` stop here


class NUTS(AbstractSampler):
    r"""NUTS in the Gaussian latent (numpyro's `NUTS` with `TransformReparam`).

    The prior is rewritten on pixel white noise $w$ (see
    [`whiten`][numpyro_fsdiff.inverse.whiten]): for
    `TransformedDistribution(GaussianField(Q, grid), ProbabilityFlow(...))` the field is
    $u = \Phi(Q^{1/2} w)$ with $\Phi$ the probability-flow map, so the prior in $w$ is
    $N(0, I)$, exact, and the gradient of the likelihood goes through the ODE solve. The
    potential is $\tfrac12\lVert w\rVert^2 + \lVert y - A\Phi(Q^{1/2}w)\rVert^2/(2\sigma^2)$:
    no log-determinant of the flow is needed in the latent. Several chains are run and
    diagnosed with ArviZ (split R-hat, bulk ESS, divergences).

    **What it needs to mix.** In $w$ the prior directions have scale 1 but the observed ones
    have scale about $\sigma / (\lVert A\rVert \sqrt{\lambda_{\max}})$ (for MNIST deblurring
    at $\sigma = 0.05$, about 0.007): with an identity mass matrix the step size must resolve
    the latter and a trajectory needs hundreds of leapfrog steps to cross the former.
    `mass_matrix="gaussian"` fixes the inverse mass matrix to the posterior covariance of the
    problem linearised at $\Phi = I$,

    $$M^{-1} = \big(I + G^\top G / \sigma^2\big)^{-1}, \qquad G = A\, Q_{\mathrm{pix}}^{1/2},$$

    exact for a Gaussian prior and of the right scale for a learned flow, so that short
    trajectories suffice; `init="map"` starts every chain from its own prior draw moved
    `init_steps` Adam steps uphill, so that a short warm-up is spent adapting the step size
    rather than travelling to the posterior.

    A learned flow stretches some latent directions and squeezes others, so that the
    linearisation at $\Phi = I$ is off by orders of magnitude in both.
    `mass_matrix="gauss_newton"` measures the stretching instead: the first half of the
    warm-up runs with the matrix above, then the inverse mass matrix becomes the inverse of
    the Gauss-Newton metric averaged over `metric_points` warm-up draws $w_k$ per chain,

    $$M = I + \frac{1}{K}\sum_{k=1}^K J_k^\top J_k / \sigma^2, \qquad
    J_k = \frac{\partial}{\partial w} A\,\Phi(Q_{\mathrm{pix}}^{1/2} w)\Big|_{w_k},$$

    and the second half of the warm-up adapts the step size to it. For a Gaussian prior, or
    any linear flow, $M$ is the exact latent posterior precision. Each $J_k$ costs one
    vector-Jacobian product per observed value.

    **Arguments:**

    - `num_warmup`, `num_samples`: per chain.
    - `num_chains`: the number of chains (>= 2 for R-hat).
    - `chain_method`: numpyro's `"sequential"`, `"vectorized"` or `"parallel"`.
    - `target_accept_prob`, `max_tree_depth`, `dense_mass`: numpyro NUTS settings
      (`dense_mass` applies to `mass_matrix="adapt"`).
    - `init`: where chains start: `"uniform"` (numpyro's default, uniform on $(-2, 2)$ in
      every latent coordinate), `"prior"` (a prior draw per chain), `"map"` (a prior draw per
      chain, then `init_steps` Adam steps of size `init_learning_rate` on the potential), or
      a numpyro init strategy such as `numpyro.infer.init_to_value(values=...)`.
    - `init_steps`, `init_learning_rate`: the optimisation of `init="map"`.
    - `mass_matrix`: `"adapt"` (numpyro's windowed adaptation during warm-up),
      `"gaussian"` (the fixed, dense $M^{-1}$ above) or `"gauss_newton"` (the averaged
      metric above; needs `num_warmup >= 2 * metric_points`). Both need a known $\sigma$ and
      a whitenable prior, and build an $N \times N$ matrix, so grids up to 4096 points.
    - `metric_points`: the warm-up draws per chain that `"gauss_newton"` averages over,
      evenly spaced over the second quarter of the warm-up.
    """

    num_warmup: int = eqx.field(static=True, default=200)
    num_samples: int = eqx.field(static=True, default=200)
    num_chains: int = eqx.field(static=True, default=2)
    chain_method: str = eqx.field(static=True, default="sequential")
    target_accept_prob: float = eqx.field(static=True, default=0.8)
    max_tree_depth: int = eqx.field(static=True, default=8)
    dense_mass: bool = eqx.field(static=True, default=False)
    init: Any = eqx.field(static=True, default="uniform")
    init_steps: int = eqx.field(static=True, default=100)
    init_learning_rate: float = eqx.field(static=True, default=0.05)
    mass_matrix: str = eqx.field(static=True, default="adapt")
    metric_points: int = eqx.field(static=True, default=5)

    def __check_init__(self):
        for name in ("num_warmup", "num_samples", "num_chains", "max_tree_depth", "init_steps",
                     "metric_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "num_warmup" else 1):
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        if not 0 < self.target_accept_prob < 1:
            raise ValueError(
                f"`target_accept_prob` must be in (0, 1); got {self.target_accept_prob!r}."
            )
        if not (callable(self.init) or self.init in _INITS):
            raise ValueError(
                f"`init` must be one of {_INITS} or a numpyro init strategy; got {self.init!r}."
            )
        if self.mass_matrix not in _MASS_MATRICES:
            raise ValueError(
                f"`mass_matrix` must be one of {_MASS_MATRICES}; got {self.mass_matrix!r}."
            )
        check_positive("init_learning_rate", self.init_learning_rate)
        if self.mass_matrix == "gauss_newton" and self.num_warmup < 2 * self.metric_points:
            raise ValueError(
                "`mass_matrix='gauss_newton'` averages the metric over `metric_points` draws of "
                f"the first half of the warm-up, so `num_warmup` must be >= "
                f"2 * metric_points = {2 * self.metric_points}; got {self.num_warmup}."
            )

    def _mcmc(self, fn, problem, num_warmup, inverse_mass=None):
        if inverse_mass is not None:
            kwargs = dict(inverse_mass_matrix={("u_base",): inverse_mass},
                          adapt_mass_matrix=False, dense_mass=[("u_base",)])
        else:
            kwargs = dict(dense_mass=self.dense_mass)
        strategy = self.init if callable(self.init) else (
            numpyro.infer.init_to_sample if self.init in ("prior", "map")
            else numpyro.infer.init_to_uniform
        )
        kernel = _NumPyroNUTS(
            fn,
            target_accept_prob=self.target_accept_prob,
            max_tree_depth=self.max_tree_depth,
            init_strategy=strategy,
            **kwargs,
        )
        return MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=self.num_samples,
            num_chains=self.num_chains,
            chain_method=_chain_method(self, problem.mesh),
            progress_bar=False,
        )

    def run(self, key, problem):
        fn = problem.latent_model()
        inverse_mass = None
        if self.mass_matrix in ("gaussian", "gauss_newton"):
            inverse_mass = _inverse_metric(_linearised_metric(problem))
        first = self.num_warmup // 2 if self.mass_matrix == "gauss_newton" else self.num_warmup
        mcmc = self._mcmc(fn, problem, first, inverse_mass)
        key_init, key_warm, key_run = jax.random.split(key, 3)
        start = time.perf_counter()
        init_params, init_gradients = None, 0
        if self.init == "map":
            init_params = _optimised_inits(fn, problem.y, key_init, self.num_chains,
                                           self.init_steps, self.init_learning_rate)
            if self.num_chains == 1:  # numpyro takes one chain's parameters without a chain axis
                init_params = jax.tree.map(lambda a: a[0], init_params)
            init_params = jax.block_until_ready(init_params)
            init_gradients = self.num_chains * self.init_steps
        initialised = time.perf_counter()
        mcmc.warmup(key_warm, problem.y, extra_fields=("num_steps",), collect_warmup=True,
                    init_params=init_params)
        jax.block_until_ready(mcmc.last_state)
        warmup_steps = int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))
        metric_products = 0
        if self.mass_matrix == "gauss_newton":
            draws = mcmc.get_samples(group_by_chain=True)["u_base"]  # (chains, first, n1, n2)
            picked = np.linspace(first // 2, first - 1, self.metric_points).astype(int)
            points = draws[:, picked].reshape((-1,) + problem.grid.shape)
            metric = _gauss_newton_metric(problem, points)
            metric_products = points.shape[0] * problem.y.size
            last = mcmc.last_state.z
            mcmc = self._mcmc(fn, problem, self.num_warmup - first, _inverse_metric(metric))
            key_warm = jax.random.fold_in(key_warm, 1)
            mcmc.warmup(key_warm, problem.y, extra_fields=("num_steps",), init_params=last)
            jax.block_until_ready(mcmc.last_state)
            warmup_steps += int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))
        warm = time.perf_counter()
        mcmc.run(key_run, problem.y, extra_fields=("num_steps", "diverging", "accept_prob"))
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        end = time.perf_counter()
        extra = mcmc.get_extra_fields(group_by_chain=True)
        fields = np.asarray(samples["u"])  # (chains, draws, n1, n2)
        import arviz as az

        posterior_vars = {"u": fields}
        if "u_base" in samples:  # the white latent that NUTS moves in
            posterior_vars["u_base"] = np.asarray(samples["u_base"])
        if "sigma" in samples:
            posterior_vars["sigma"] = np.asarray(samples["sigma"])
        idata = az.from_dict({"posterior": posterior_vars})
        rhat = np.asarray(az.rhat(fields, chain_axis=0, draw_axis=1))
        ess = np.asarray(az.ess(fields, chain_axis=0, draw_axis=1, method="bulk"))
        divergences = int(np.sum(np.asarray(extra["diverging"])))
        misfit = _misfit_per_chain(problem, samples["u"], samples.get("sigma"))
        step_size = np.atleast_1d(np.asarray(mcmc.last_state.adapt_state.step_size))
        diagnostics = {
            "rhat_max": float(np.nanmax(rhat)) if self.num_chains > 1 else float("nan"),
            "rhat_median": float(np.nanmedian(rhat)) if self.num_chains > 1 else float("nan"),
            "ess_bulk_min": float(np.nanmin(ess)),
            "ess_bulk_median": float(np.nanmedian(ess)),
            "divergences": divergences,
            "num_chains": self.num_chains,
            "step_size": float(np.mean(step_size)),
            "mean_leapfrog_steps": float(np.mean(np.asarray(extra["num_steps"]))),
            "accept_prob": float(np.mean(np.asarray(extra["accept_prob"]))),
            "misfit_per_chain": [float(m) for m in misfit],
        }
        summary = _summary(idata, rhat, ess, "sigma" in samples)
        sampling_time = end - warm
        gradient_evaluations = int(np.sum(np.asarray(extra["num_steps"])))
        info = {
            "wall_time_s": end - start,
            "init_time_s": initialised - start,
            "warmup_time_s": warm - initialised,
            "sampling_time_s": sampling_time,
            "gradient_evaluations": (gradient_evaluations + warmup_steps + init_gradients
                                     + metric_products),
            "ess_per_second": diagnostics["ess_bulk_min"] / sampling_time,
        }
        return {
            "samples": jnp.asarray(fields.reshape((-1,) + problem.grid.shape)),
            "sigma": jnp.ravel(samples["sigma"]) if "sigma" in samples else None,
            "diagnostics": diagnostics,
            "summary": summary,
            "info": info,
            "inference_data": idata,
        }


def _whitened_forward(problem: "_Problem"):
    r"""$w \mapsto A\,\Phi(Q_{\mathrm{pix}}^{1/2} w)/\sigma$ and the colouring transform,
    after checking that the metrics of `mass_matrix` can be built for `problem`."""
    prior = whiten(problem.prior)
    grid = problem.grid
    if not (isinstance(prior, dist.TransformedDistribution)
            and isinstance(prior.transforms[0], ColourTransform)):
        raise ValueError(
            "`mass_matrix='gaussian'` and `'gauss_newton'` need a GaussianField prior or a "
            f"transform of one; got {problem.prior!r}."
        )
    if problem.noise.inferred:
        raise ValueError(
            "`mass_matrix='gaussian'` and `'gauss_newton'` need a known noise sigma; got an "
            "inferred one."
        )
    if grid.size > DENSE_METRIC_MAX_POINTS:
        raise ValueError(
            "`mass_matrix='gaussian'` and `'gauss_newton'` build a dense N x N matrix; the grid "
            f"has N = {grid.size} > {DENSE_METRIC_MAX_POINTS} points. Use mass_matrix='adapt'."
        )

    def forward(w):
        for transform in prior.transforms:
            w = transform(w)
        return problem.operator(w, grid) / problem.noise.sigma

    return forward, prior.transforms[0]


def _linearised_metric(problem: "_Problem") -> Float[Array, "N N"]:
    r"""$I + G^\top G/\sigma^2$, $G = A Q_{\mathrm{pix}}^{1/2}$: the latent posterior
    precision of the problem with the flow replaced by the identity (dense)."""
    _, colour = _whitened_forward(problem)
    grid = problem.grid
    n = grid.size
    eye = jnp.eye(n).reshape((n,) + grid.shape)
    root = jax.vmap(lambda e: colour(e))(eye).reshape(n, n).T  # u = root @ w (symmetric)
    g = problem.operator.matrix(grid) @ root / problem.noise.sigma
    return jnp.eye(n) + g.T @ g


def _gauss_newton_metric(problem: "_Problem", points: Float[Array, "K n1 n2"]
                        ) -> Float[Array, "N N"]:
    """The metric of `NUTS(mass_matrix="gauss_newton")` (its equation is in `NUTS`) at the
    white-latent `points`: each Jacobian is built row by row from one linearisation and a
    vector-Jacobian product per observed value, in blocks of 64."""
    forward, _ = _whitened_forward(problem)
    n = problem.grid.size

    def normal_matrix(w):
        out, pullback = jax.vjp(forward, w)
        rows = jnp.eye(out.size).reshape((out.size,) + out.shape)
        jacobian = jax.lax.map(lambda v: pullback(v)[0].reshape(n), rows, batch_size=64)
        return jacobian.T @ jacobian

    @jax.jit
    def average(points):
        def add(total, w):
            return total + normal_matrix(w), None

        total, _ = jax.lax.scan(add, jnp.zeros((n, n)), points)
        return jnp.eye(n) + total / points.shape[0]

    return average(points)


def _inverse_metric(metric: Float[Array, "N N"]) -> Float[Array, "N N"]:
    factor = jnp.linalg.cholesky(metric)
    inverse = jax.scipy.linalg.cho_solve((factor, True), jnp.eye(metric.shape[0]))
    return 0.5 * (inverse + inverse.T)


def _optimised_inits(fn, y, key, num_chains: int, steps: int, learning_rate: float):
    """One prior draw per chain, moved `steps` Adam steps down the potential (vectorised)."""
    from numpyro.infer.util import initialize_model

    # One call with a batch of keys: numpyro then finds every chain's start in one compiled
    # loop, where a call per chain evaluates the model's gradient op by op (seconds each).
    start = initialize_model(jax.random.split(key, num_chains), fn, model_args=(y,),
                             init_strategy=numpyro.infer.init_to_sample)
    params, potential = start.param_info.z, start.potential_fn
    optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.1))

    def descend(z):
        def step(carry, _):
            z, state = carry
            grad = jax.grad(potential)(z)
            updates, state = optimiser.update(grad, state, z)
            return (optax.apply_updates(z, updates), state), None

        (z, _), _ = jax.lax.scan(step, (z, optimiser.init(z)), None, length=steps)
        return z

    return jax.jit(jax.vmap(descend))(params)


def _misfit_per_chain(problem: "_Problem", fields, sigma) -> np.ndarray:
    r"""Per chain, the mean over draws of $\lVert y - A u\rVert^2 / (\sigma^2 m)$ ($m$ data).

    About 1 (a little less) for draws that explain the data as well as the noise allows; a
    chain far above 1 is stuck where the field does not fit the data. When chains disagree
    (R-hat above 1) but all sit near 1, they explore different fields that each fit the
    data: distinct modes, or parts of one region that they cross slowly.
    """
    predict = jax.vmap(jax.vmap(lambda u: problem.operator(u, problem.grid)))
    residual = predict(fields) - problem.y
    squares = jnp.sum(residual.reshape(residual.shape[:2] + (-1,)) ** 2, axis=-1)
    variance = problem.noise.sigma ** 2 if sigma is None else jnp.asarray(sigma) ** 2
    return np.asarray(jnp.mean(squares / variance, axis=1)) / problem.y.size


def _chain_method(sampler: NUTS, mesh):
    """numpyro's chain method: on a mesh, each device runs its block of chains vectorised."""
    if mesh is None:
        return sampler.chain_method
    check_divisible("num_chains", sampler.num_chains, mesh)
    # numpyro takes a transform of the one-chain function (like jax.vmap) as chain method.
    return lambda one_chain: jax.jit(map_blocks(jax.vmap(one_chain), mesh))


def _summary(idata, rhat, ess, has_sigma):
    """ArviZ's table for the scalar sites plus the field's diagnostics over pixels."""
    import arviz as az
    import pandas as pd

    rows = []
    if has_sigma:
        rows.append(az.summary(idata, var_names=["sigma"], round_to="none"))
    field = pd.DataFrame(
        {
            "r_hat_max": [float(np.nanmax(rhat))],
            "r_hat_median": [float(np.nanmedian(rhat))],
            "ess_bulk_min": [float(np.nanmin(ess))],
            "ess_bulk_median": [float(np.nanmedian(ess))],
        },
        index=["u (over pixels)"],
    )
    rows.append(field)
    return pd.concat(rows, axis=0)


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

    def run(self, key, problem):
        fn = problem.latent_model()
        kwargs = {"rank": self.rank} if self.guide == "lowrank" and self.rank else {}
        guide = _GUIDES[self.guide](fn, **kwargs)
        # cosine decay to 1% of the initial step: the stochastic optimum settles
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.num_steps, alpha=0.01)
        svi = numpyro.infer.SVI(
            fn, guide, optax.adam(schedule), Trace_ELBO(self.num_particles)
        )
        key_fit, key_draw = jax.random.split(key)
        start = time.perf_counter()
        result = svi.run(key_fit, self.num_steps, problem.y, progress_bar=False)
        jax.block_until_ready(result.params)
        fitted = time.perf_counter()
        predictive = Predictive(
            fn, guide=guide, params=result.params, num_samples=self.num_samples,
            return_sites=["u", "sigma"] if problem.noise.inferred else ["u"],
        )
        draws = predictive(key_draw, problem.y)
        samples = jax.block_until_ready(draws["u"])
        end = time.perf_counter()
        elbo = -float(jnp.mean(result.losses[-max(1, self.num_steps // 20):]))
        return {
            "samples": samples,
            "sigma": draws.get("sigma"),
            "diagnostics": {"elbo": elbo, "guide": self.guide},
            "summary": None,
            "info": {
                "wall_time_s": end - start,
                "sampling_time_s": fitted - start,
                "gradient_evaluations": self.num_steps * self.num_particles,
            },
            "inference_data": None,
        }


def MAP(num_steps: int = 2000, learning_rate: float = 1e-2) -> SVI:
    """Maximum a posteriori in the white latent: [`SVI`][numpyro_fsdiff.inverse.SVI] with
    `guide="delta"`."""
    return SVI(guide="delta", num_steps=num_steps, learning_rate=learning_rate, num_samples=1)


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
    """
    if weighting not in ("gaussian", "normalised"):
        raise ValueError(f"`weighting` must be 'gaussian' or 'normalised'; got {weighting!r}.")
    from .._sample import tweedie_denoise

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
    solved from $T$ to $t_\varepsilon$ with Diffrax, with the prior score replaced by

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

    def run(self, key, problem):
        if problem.noise.inferred:
            raise ValueError("`noise` must have a known sigma for DPS; got an inferred one.")
        from .._sample import score_evaluations_per_step

        solver = resolve_solver(self.solver, kind="sde")
        keys = jax.random.split(key, self.num_samples)
        if problem.mesh is not None:
            check_divisible("num_samples", self.num_samples, problem.mesh)
            keys = shard_leading_axis(keys, problem.mesh)
        start = time.perf_counter()
        samples, steps = jax.block_until_ready(_dps_solve(self, solver, problem, keys))
        end = time.perf_counter()
        per_step, initial = score_evaluations_per_step(solver)
        # each guided evaluation costs one score evaluation and one vector-Jacobian product
        evaluations = int(np.sum(2 * (initial + per_step * np.asarray(steps)) + 1))
        return {
            "samples": samples,
            "sigma": None,
            "diagnostics": {
                "guidance": float(self.guidance), "weighting": self.weighting, "steps": self.steps
            },
            "summary": None,
            "info": {
                "wall_time_s": end - start,
                "sampling_time_s": end - start,
                "score_evaluations": evaluations,
            },
            "inference_data": None,
        }


@eqx.filter_jit
def _dps_solve(sampler: DPS, solver, problem: _Problem, keys):
    """All DPS solves, compiled once per sampler structure, problem and shapes."""
    from .._sample import backward_sde_solve_args, tweedie_denoise

    grid, sde = problem.grid, sampler.sde
    guided = guided_score(
        sampler.score, sde, problem.y, problem.operator, grid, problem.noise.sigma,
        sampler.guidance, sampler.weighting,
    )
    t0, t1 = sde.T, sampler.t_eps
    dt0 = (t1 - t0) / sampler.steps

    def one(key):
        key_init, key_noise = jax.random.split(key)
        x_T = sde.covariance.sample(key_init, grid)
        brownian = brownian_motion(key_noise, grid, t0, t1, levy_area=levy_area_for(solver),
                                   dt=dt0)
        # the SRK solvers need the time-reversal workaround of `sample` (Diffrax issue 598)
        terms, s0, s1, ds0 = backward_sde_solve_args(
            sde.reverse_terms(guided, brownian, grid), solver, t0, t1, dt0
        )
        solution = diffrax.diffeqsolve(
            terms,
            solver,
            s0,
            s1,
            dt0=ds0,
            y0=x_T,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=sampler.steps + 1,
            adjoint=diffrax.ForwardMode(),
        )
        x0 = tweedie_denoise(sampler.score, sde, solution.ys[-1], t1)
        return x0, solution.stats["num_steps"]

    def block(keys):
        return jax.lax.map(one, keys, batch_size=min(keys.shape[0], sampler.batch_size))

    # On a mesh, each device solves its own block of keys.
    return block(keys) if problem.mesh is None else map_blocks(block, problem.mesh)(keys)


def posterior(
    key: PRNGKeyArray,
    y: Array,
    operator: AbstractOperator,
    prior: dist.Distribution | None,
    sampler: AbstractSampler,
    *,
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
    anyway; it is not used).

    **Arguments:**

    - `key`: a PRNG key.
    - `y`: the data, shape `operator.data_shape(grid)`.
    - `operator`: the observation operator.
    - `prior`: the NumPyro prior on fields of shape `grid.shape` (NUTS and SVI).
    - `sampler`: a sampler instance, e.g. `NUTS(num_chains=4)`.
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
    """
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"`sampler` must be NUTS(...), SVI(...), MAP(...) or DPS(...); got {sampler!r}."
        )
    y = jnp.asarray(y)
    if isinstance(sampler, DPS):
        check_problem(y, operator, dist.Normal(jnp.zeros(grid.shape)).to_event(2), noise=noise,
                      grid=grid)
    else:
        check_problem(y, operator, prior, noise=noise, grid=grid)
    if truth is not None and jnp.shape(truth) != grid.shape:
        raise ValueError(f"`truth` must have shape {grid.shape}; got {jnp.shape(truth)}.")
    out = sampler.run(key, _Problem(y, operator, prior, noise, grid, mesh))
    samples = out["samples"]
    mean = jnp.mean(samples, axis=0)
    std = jnp.std(samples, axis=0)
    metrics = {}
    if truth is not None:
        metrics = {
            "psnr": float(psnr(mean, truth, data_range=data_range)),
            "ssim": float(ssim(mean, truth, data_range=data_range, window=min(7, *grid.shape))),
            f"coverage_{round(100 * level)}": float(coverage(samples, truth, level)),
        }
    return Posterior(
        method=_method_name(sampler),
        samples=samples,
        mean=mean,
        std=std,
        sigma=out["sigma"],
        diagnostics=out["diagnostics"],
        summary=out["summary"],
        metrics=metrics,
        info=out["info"],
        inference_data=out["inference_data"],
    )


def _method_name(sampler: AbstractSampler) -> str:
    if isinstance(sampler, SVI):
        return "MAP" if sampler.guide == "delta" else f"SVI-{sampler.guide}"
    return type(sampler).__name__


def gaussian_posterior(
    y: Array,
    operator: AbstractOperator,
    covariance: AbstractCovariance | Float[Array, "n1 n2"],
    grid: Grid,
    sigma,
) -> tuple[Field, Float[Array, "N N"]]:
    r"""The exact posterior of a linear-Gaussian problem, by dense linear algebra.

    With prior $u \sim N(0, \Sigma)$ ($\Sigma$ the pixel covariance on `grid` of an operator
    diagonal in the Fourier basis) and $y \sim N(Au, \sigma^2 I)$:

    $$\Sigma_{\text{post}} = \Sigma - \Sigma A^\top (A\Sigma A^\top + \sigma^2 I)^{-1}
    A\Sigma, \qquad \mu_{\text{post}} = \Sigma A^\top (A\Sigma A^\top + \sigma^2 I)^{-1} y.$$

    The reference the samplers are tested against; small grids only ($O(N^3)$).

    **Arguments:**

    - `y`: the data.
    - `operator`: the observation operator $A$.
    - `covariance`: the prior's covariance operator, or its grid eigenvalues $\lambda_k$
      (`numpy.fft.fft2` layout), e.g.
      [`GaussianScore.marginal_eigenvalues`][numpyro_fsdiff.GaussianScore.marginal_eigenvalues]
      at $t_\varepsilon$ for a diffusion prior of Gaussian data.
    - `grid`: the grid.
    - `sigma`: the noise level $\sigma > 0$.

    **Returns:** `(mean, cov)`, shapes `grid.shape` and `(N, N)`.
    """
    check_positive("sigma", sigma)
    operator.check_data(y, grid)
    if isinstance(covariance, AbstractCovariance):
        eigenvalues = covariance.eigenvalues(grid)
    else:
        eigenvalues = jnp.asarray(covariance)
        if eigenvalues.shape != grid.shape:
            raise ValueError(
                f"`covariance` must be a covariance operator or eigenvalues of shape "
                f"{grid.shape}; got shape {eigenvalues.shape}."
            )
    n = grid.size
    eye = jnp.eye(n).reshape((n,) + grid.shape)
    prior_cov = jax.vmap(lambda e: fourier_multiply(e, eigenvalues / grid.cell_area))(eye)
    prior_cov = prior_cov.reshape(n, n)
    a = operator.matrix(grid)
    cross = prior_cov @ a.T  # Sigma A^T
    gram = a @ cross + sigma**2 * jnp.eye(a.shape[0])
    gain = jnp.linalg.solve(gram, cross.T).T  # Sigma A^T (A Sigma A^T + s^2 I)^-1
    cov = prior_cov - gain @ cross.T
    cov = 0.5 * (cov + cov.T)
    mean = gain @ jnp.ravel(y)
    return mean.reshape(grid.shape), cov
