"""Why NUTS mixes slowly with the shipped MNIST prior: the geometry of the latent posterior.

On the CI-sized problem of `bench_nuts_mixing.py` (2x super-resolution at 16 x 16, Euler
6-step flow), run `--chains` vectorised NUTS chains with `--mass-matrix`, then report

- the spectrum of the potential's Hessian at `--draws` posterior draws, preconditioned by
  the linearised mass matrix (`gaussian`) and by the Gauss-Newton metric averaged over the
  other draws of the run: eigenvalues near 1 mean the matrix fits the local curvature;
- the pixels with the largest R-hat, with every chain's mean and spread there;
- each chain's data misfit |y - A u|^2 / sigma^2 (64 observations) over its draws.

    python benchmarks/nuts_geometry.py --chains 4 --mass-matrix gauss_newton --metric-points 10

The Hessian is taken in forward-over-reverse mode through a `diffrax.DirectAdjoint` copy of
the flow (the default checkpointed adjoint has no forward mode).
"""

import argparse
import time

import numpy as np

import numpyro_fsdiff as fsd
from numpyro_fsdiff.cli import reuse_freed_memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--mass-matrix", default="gauss_newton",
                        choices=("gaussian", "gauss_newton"))
    parser.add_argument("--metric-points", type=int, default=10)
    parser.add_argument("--draws", type=int, default=3, help="draws per chain for the spectra")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import arviz as az
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import initialize_model

    from numpyro_fsdiff.cli._tasks import load_checkpoint_or_pretrained
    from numpyro_fsdiff.inverse import NUTS, CellAverage, GaussianNoise, Problem, posterior
    from numpyro_fsdiff.inverse._nuts import (
        _gauss_newton_metric,
        _inverse_metric,
        _linearised_metric,
    )

    reuse_freed_memory()
    ckpt = load_checkpoint_or_pretrained("mnist")
    grid = ckpt.grid((16, 16))
    image = fsd.data.load_subset().images[0]
    truth = fsd.resample(ckpt.from_pixels(jnp.asarray(image)), grid.shape)
    operator, sigma = CellAverage((8, 8)), 0.05
    y = operator(truth, grid) + sigma * jax.random.normal(jax.random.key(0), (8, 8))

    def problem_with(adjoint=None):
        flow = fsd.ProbabilityFlow(ckpt.model, ckpt.sde, grid, solver="euler", steps=6,
                                   **({} if adjoint is None else {"adjoint": adjoint}))
        prior = dist.TransformedDistribution(fsd.GaussianField(ckpt.covariance, grid), flow)
        return prior, Problem(y, operator, prior, GaussianNoise(sigma), grid)

    prior, problem = problem_with()
    sampler = NUTS(num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains,
                   chain_method="vectorized", max_tree_depth=args.depth, init="map",
                   init_steps=30, mass_matrix=args.mass_matrix, metric_points=args.metric_points)
    start = time.perf_counter()
    result = posterior(y, operator, prior, sampler, key=jax.random.key(args.seed), grid=grid,
                       noise=GaussianNoise(sigma), truth=truth, data_range=2.0)
    d = result.diagnostics
    print(f"NUTS {args.chains} chains x ({args.warmup} + {args.samples}), depth {args.depth}, "
          f"{args.mass_matrix}: {time.perf_counter() - start:.0f} s, R-hat {d['rhat_max']:.2f} / "
          f"{d['rhat_median']:.2f}, ESS {d['ess_bulk_min']:.1f} / {d['ess_bulk_median']:.1f}, "
          f"step {d['step_size']:.3f}, PSNR {result.metrics['psnr']:.2f} dB, coverage "
          f"{result.metrics['coverage_90']:.2f}, misfit per chain "
          + ", ".join(f"{m:.2f}" for m in d["misfit_per_chain"]))
    fields = np.asarray(result.samples).reshape((args.chains, args.samples) + grid.shape)

    latent = np.asarray(result.inference_data.posterior["u_base"])  # (chains, draws, n1, n2)
    rhat = np.asarray(az.rhat(fields, chain_axis=0, draw_axis=1))
    print("\nworst pixels (row, column): R-hat, truth, chain means (chain std)")
    for k in np.argsort(rhat.ravel())[::-1][:6]:
        i, j = divmod(int(k), grid.shape[1])
        means = ", ".join(f"{m:.2f} ({s:.2f})" for m, s in
                          zip(fields[:, :, i, j].mean(1), fields[:, :, i, j].std(1)))
        print(f"  ({i}, {j}): {rhat[i, j]:.2f}, {float(truth[i, j]):.2f}, {means}")
    print(f"  pixels with R-hat > 1.1 / 1.2 / 1.5: {int(np.sum(rhat > 1.1))} / "
          f"{int(np.sum(rhat > 1.2))} / {int(np.sum(rhat > 1.5))} of {rhat.size}")
    predict = jax.jit(jax.vmap(lambda u: jnp.sum((operator(u, grid) - y) ** 2) / sigma**2))
    for c in range(args.chains):
        chi2 = np.asarray(predict(jnp.asarray(fields[c])))
        print(f"  chain {c}: |y - Au|^2 / sigma^2 over its draws: median {np.median(chi2):.0f}, "
              f"range {chi2.min():.0f}-{chi2.max():.0f} ({y.size} observations)")

    _, problem_d = problem_with(diffrax.DirectAdjoint())
    fn = problem_d.latent_model()
    potential = initialize_model(jax.random.key(5), fn, model_args=(y,),
                                 init_strategy=numpyro.infer.init_to_sample).potential_fn
    hessian = jax.jit(jax.jacfwd(jax.grad(lambda w: potential({"u_base": w}))))
    n = grid.size
    picked = np.linspace(0, args.samples - 1, args.draws + 4).astype(int)
    held_out, averaged = picked[::2][:args.draws], picked[1::2]
    w_held = jnp.asarray(latent[:, held_out].reshape((-1,) + grid.shape))
    w_avg = jnp.asarray(latent[:, averaged].reshape((-1,) + grid.shape))
    roots = {
        "linearised": np.linalg.cholesky(np.asarray(_inverse_metric(_linearised_metric(problem)))),
        "averaged Gauss-Newton": np.linalg.cholesky(
            np.asarray(_inverse_metric(_gauss_newton_metric(problem, w_avg)))),
    }
    print(f"\npreconditioned Hessian spectra at {w_held.shape[0]} draws (the Gauss-Newton metric "
          f"averaged over {w_avg.shape[0]} other draws)")
    for name, root in roots.items():
        tops, bottoms, negatives = [], [], []
        for w in w_held:
            h = np.asarray(hessian(w)).reshape(n, n)
            eig = np.linalg.eigvalsh(root.T @ (0.5 * (h + h.T)) @ root)
            tops.append(eig[-1])
            bottoms.append(eig[0])
            negatives.append(int(np.sum(eig < 0)))
        print(f"  {name}: largest {min(tops):.3g}-{max(tops):.3g}, smallest "
              f"{min(bottoms):.3g}-{max(bottoms):.3g}, negative {min(negatives)}-{max(negatives)} "
              f"of {n}")


if __name__ == "__main__":
    main()
