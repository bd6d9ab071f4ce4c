r"""NUTS in the prior's Gaussian latent, with the geometry it needs: linearised and
Gauss-Newton mass matrices, optimised chain starts, and its diagnostics."""

import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC
from numpyro.infer import NUTS as _NumPyroNUTS

from .._custom_types import Array, Float
from .._sharding import check_divisible, map_blocks
from .._validation import check_positive
from ._latent import ColourTransform, whiten
from ._posterior import AbstractSampler, SamplerOutput
from ._problem import Problem

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
        for name in (
            "num_warmup",
            "num_samples",
            "num_chains",
            "max_tree_depth",
            "init_steps",
            "metric_points",
        ):
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
            kwargs = dict(
                inverse_mass_matrix={("u_base",): inverse_mass},
                adapt_mass_matrix=False,
                dense_mass=[("u_base",)],
            )
        else:
            kwargs = dict(dense_mass=self.dense_mass)
        strategy = (
            self.init
            if callable(self.init)
            else (
                numpyro.infer.init_to_sample
                if self.init in ("prior", "map")
                else numpyro.infer.init_to_uniform
            )
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

    def run(self, problem: Problem, *, key) -> SamplerOutput:
        """Run the chains (see the class docstring) and diagnose them with ArviZ."""
        fn = problem.latent_model()
        inverse_mass = None
        if self.mass_matrix in ("gaussian", "gauss_newton"):
            inverse_mass = _inverse_metric(_linearised_metric(problem))
        first = self.num_warmup // 2 if self.mass_matrix == "gauss_newton" else self.num_warmup
        mcmc = self._mcmc(fn, problem, first, inverse_mass)
        key_init, key_warm, key_run = jax.random.split(key, 3)
        start = time.perf_counter()
        init_params, init_gradients = self._initial_params(fn, problem, key_init)
        initialised = time.perf_counter()
        mcmc.warmup(
            key_warm,
            problem.y,
            extra_fields=("num_steps",),
            collect_warmup=True,
            init_params=init_params,
        )
        warmup_steps = _leapfrog_steps(mcmc)
        metric_products = 0
        if self.mass_matrix == "gauss_newton":
            mcmc, steps, metric_products = self._switch_to_gauss_newton(
                mcmc, fn, problem, first, jax.random.fold_in(key_warm, 1)
            )
            warmup_steps += steps
        warm = time.perf_counter()
        mcmc.run(key_run, problem.y, extra_fields=("num_steps", "diverging", "accept_prob"))
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        end = time.perf_counter()
        diagnostics, idata, summary = self._diagnose(mcmc, problem, samples)
        draw_steps = int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))
        fields = np.asarray(samples["u"])  # (chains, draws, n1, n2)
        return SamplerOutput(
            samples=jnp.asarray(fields.reshape((-1,) + problem.grid.shape)),
            sigma=jnp.ravel(samples["sigma"]) if "sigma" in samples else None,
            diagnostics=diagnostics,
            gradient_evaluations=draw_steps + warmup_steps + init_gradients + metric_products,
            wall_time_s=end - start,
            sampling_time_s=end - warm,
            info={
                "init_time_s": initialised - start,
                "warmup_time_s": warm - initialised,
                "ess_per_second": diagnostics["ess_bulk_min"] / (end - warm),
            },
            summary=summary,
            inference_data=idata,
        )

    def _initial_params(self, fn, problem: Problem, key):
        """The chains' starts for `init="map"` (and the gradients they took), else `None`."""
        if self.init != "map":
            return None, 0
        params = _optimised_inits(
            fn, problem.y, key, self.num_chains, self.init_steps, self.init_learning_rate
        )
        if self.num_chains == 1:  # numpyro takes one chain's parameters without a chain axis
            params = jax.tree.map(lambda a: a[0], params)
        return jax.block_until_ready(params), self.num_chains * self.init_steps

    def _switch_to_gauss_newton(self, mcmc, fn, problem: Problem, first: int, key):
        """The second half of the warm-up of `mass_matrix="gauss_newton"`: the metric averaged
        over `metric_points` draws per chain of the first half's second half, then step-size
        adaptation with it. Returns the new `MCMC`, its warm-up leapfrog steps and the
        vector-Jacobian products the metric took."""
        draws = mcmc.get_samples(group_by_chain=True)["u_base"]  # (chains, first, n1, n2)
        picked = np.linspace(first // 2, first - 1, self.metric_points).astype(int)
        points = draws[:, picked].reshape((-1,) + problem.grid.shape)
        metric = _gauss_newton_metric(problem, points)
        last = mcmc.last_state.z
        mcmc = self._mcmc(fn, problem, self.num_warmup - first, _inverse_metric(metric))
        mcmc.warmup(key, problem.y, extra_fields=("num_steps",), init_params=last)
        return mcmc, _leapfrog_steps(mcmc), points.shape[0] * problem.y.size

    def _diagnose(self, mcmc, problem: Problem, samples):
        """`(diagnostics, inference_data, summary)` of the draws (see `Posterior`)."""
        import arviz as az

        extra = mcmc.get_extra_fields(group_by_chain=True)
        fields = np.asarray(samples["u"])  # (chains, draws, n1, n2)
        posterior_vars = {"u": fields}
        if "u_base" in samples:  # the white latent that NUTS moves in
            posterior_vars["u_base"] = np.asarray(samples["u_base"])
        if "sigma" in samples:
            posterior_vars["sigma"] = np.asarray(samples["sigma"])
        idata = az.from_dict({"posterior": posterior_vars})
        rhat = np.asarray(az.rhat(fields, chain_axis=0, draw_axis=1))
        ess = np.asarray(az.ess(fields, chain_axis=0, draw_axis=1, method="bulk"))
        misfit = _misfit_per_chain(problem, samples["u"], samples.get("sigma"))
        step_size = np.atleast_1d(np.asarray(mcmc.last_state.adapt_state.step_size))
        several = self.num_chains > 1
        diagnostics = {
            "rhat_max": float(np.nanmax(rhat)) if several else float("nan"),
            "rhat_median": float(np.nanmedian(rhat)) if several else float("nan"),
            "ess_bulk_min": float(np.nanmin(ess)),
            "ess_bulk_median": float(np.nanmedian(ess)),
            "divergences": int(np.sum(np.asarray(extra["diverging"]))),
            "num_chains": self.num_chains,
            "step_size": float(np.mean(step_size)),
            "mean_leapfrog_steps": float(np.mean(np.asarray(extra["num_steps"]))),
            "accept_prob": float(np.mean(np.asarray(extra["accept_prob"]))),
            "misfit_per_chain": [float(m) for m in misfit],
        }
        return diagnostics, idata, _summary(idata, rhat, ess, "sigma" in samples)


def _leapfrog_steps(mcmc) -> int:
    """The leapfrog steps (gradient evaluations) of the `MCMC` run just made."""
    jax.block_until_ready(mcmc.last_state)
    return int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))


def _whitened_forward(problem: Problem):
    r"""$w \mapsto A\,\Phi(Q_{\mathrm{pix}}^{1/2} w)/\sigma$ and the colouring transform,
    after checking that the metrics of `mass_matrix` can be built for `problem`."""
    prior = whiten(problem.prior)
    grid = problem.grid
    if not (
        isinstance(prior, dist.TransformedDistribution)
        and isinstance(prior.transforms[0], ColourTransform)
    ):
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


def _linearised_metric(problem: Problem) -> Float[Array, "N N"]:
    r"""$I + G^\top G/\sigma^2$, $G = A Q_{\mathrm{pix}}^{1/2}$: the latent posterior
    precision of the problem with the flow replaced by the identity (dense)."""
    _, colour = _whitened_forward(problem)
    grid = problem.grid
    n = grid.size
    eye = jnp.eye(n).reshape((n,) + grid.shape)
    root = jax.vmap(lambda e: colour(e))(eye).reshape(n, n).T  # u = root @ w (symmetric)
    g = problem.operator.matrix(grid) @ root / problem.noise.sigma
    return jnp.eye(n) + g.T @ g


def _gauss_newton_metric(problem: Problem, points: Float[Array, "K n1 n2"]) -> Float[Array, "N N"]:
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
    start = initialize_model(
        jax.random.split(key, num_chains),
        fn,
        model_args=(y,),
        init_strategy=numpyro.infer.init_to_sample,
    )
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


def _misfit_per_chain(problem: Problem, fields, sigma) -> np.ndarray:
    r"""Per chain, the mean over draws of $\lVert y - A u\rVert^2 / (\sigma^2 m)$ ($m$ data).

    About 1 (a little less) for draws that explain the data as well as the noise allows; a
    chain far above 1 is stuck where the field does not fit the data. When chains disagree
    (R-hat above 1) but all sit near 1, they explore different fields that each fit the
    data: distinct modes, or parts of one region that they cross slowly.
    """
    predict = jax.vmap(jax.vmap(lambda u: problem.operator(u, problem.grid)))
    residual = predict(fields) - problem.y
    squares = jnp.sum(residual.reshape(residual.shape[:2] + (-1,)) ** 2, axis=-1)
    variance = problem.noise.sigma**2 if sigma is None else jnp.asarray(sigma) ** 2
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
