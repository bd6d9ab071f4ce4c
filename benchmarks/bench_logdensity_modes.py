"""The log-density per empty mode against score evaluations, on the Gaussian case (issue #17).

Data $N(0, C)$ with $C$ band-limited: Matérn(1.5, 2, 2) on the box $|k_i| \\le K$ and zero
above it, so the grid's other modes are *empty*, as the modes of a finer grid are for
band-limited images. The score is exact (`GaussianScore`), the probability-flow law at
$t_\\varepsilon$ is exactly $N(0, m^2 C + \\sigma^2 Q)$, and each empty mode contributes
$-\\tfrac12\\log\\sigma^2_{t_\\varepsilon}$ ($= 4.56$ at $t_\\varepsilon = 10^{-3}$) to
$\\log(p_{t_\\varepsilon}/\\mu_Q)$ at a band-limited field. The solve there is stiff: the flow
contracts an empty mode at the rate $\\tfrac12\\beta/\\sigma_t^2$.

For each density solver x clock x time grid x budget, `DiffusionPrior.log_prob_relative`
(exact divergence) of band-limited fields, refined spectrally to finer grids, is computed on
each grid. Reported: the value each added (empty) mode contributes, the difference between a
finer grid and the coarsest over the modes it adds, against the exact
$-\\tfrac12\\log\\sigma^2_{t_\\varepsilon}$, and the relative error of the whole value.
Target: within 1% per empty mode with <= 32 score evaluations.

    python benchmarks/bench_logdensity_modes.py --out benchmarks/results/logdensity_modes.md
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fsd
from numpyro_fsdiff._io import write_text
from numpyro_fsdiff.covariance import AbstractCovariance, Matern

# (solver, evaluations per step): the density needs an ODE solver with the divergence term.
SOLVERS = {"euler": 1, "heun": 2, "midpoint": 2}
GRIDS = ["uniform", "log-snr", "edm"]
CLOCKS = ["time", "log-snr"]
BUDGETS = [8, 16, 32]


class BandLimited(AbstractCovariance):
    """`base` on the box |k_i| <= cutoff, zero above (a degenerate data covariance)."""

    base: AbstractCovariance
    cutoff: int

    def eigenvalues(self, grid):
        return self.base.eigenvalues(grid) * fsd.band_mask(grid.shape, self.cutoff)

    @property
    def is_trace_class(self):
        return True


def exact_log_ratio(x, data_cov, sde, grid, t_eps):
    """log N(x; 0, m^2 C + s^2 Q) - log N(x; 0, Q), per mode, pixel eigenvalues."""
    mean, std = sde.marginal_coefficients(t_eps)
    c = data_cov.pixel_eigenvalues(grid)
    q = sde.covariance.pixel_eigenvalues(grid)
    lam = mean**2 * c + std**2 * q
    power = jnp.abs(jnp.fft.fft2(x, norm="ortho")) ** 2
    return -0.5 * power * (1 / lam - 1 / q) - 0.5 * jnp.log(lam / q)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", default="12,16,24", help="the coarsest first")
    p.add_argument("--cutoff", type=int, default=4)
    p.add_argument("--num-fields", type=int, default=4)
    p.add_argument("--t-eps", type=float, default=1e-3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # the value is a sum of ~N terms of size 5

    sizes = [int(n) for n in args.resolutions.split(",")]
    sde = fsd.VPSDE(Matern(2.5, 3.0))
    data_cov = BandLimited(Matern(1.5, 2.0, 2.0), args.cutoff)
    coarse = fsd.Grid((sizes[0], sizes[0]))
    base = data_cov.sample(jax.random.key(0), coarse, (args.num_fields,))
    exact_empty = float(-0.5 * jnp.log(sde.marginal_coefficients(args.t_eps)[1] ** 2))
    empty, fields, exact = {}, {}, {}
    for n in sizes:
        grid = fsd.Grid((n, n))
        empty[n] = int(np.sum(1 - np.asarray(fsd.band_mask(grid.shape, args.cutoff))))
        fields[n] = fsd.resample(base, (n, n))
        exact[n] = np.asarray(jax.vmap(
            lambda x, grid=grid: exact_log_ratio(x, data_cov, sde, grid, args.t_eps).sum()
        )(fields[n]))  # fmt: skip

    rows = []
    configs = [("tsit5", None, "uniform", None, "time")]
    for clock in CLOCKS:
        for solver, per_step in SOLVERS.items():
            for kind in GRIDS if clock == "time" else ["log-snr"]:
                for budget in BUDGETS:
                    configs.append((solver, budget // per_step, kind, budget, clock))
    for solver, steps, kind, budget, clock in configs:
        if steps is None:
            config = fsd.SolverConfig(solver, rtol=1e-8, atol=1e-8, max_steps=100_000)
        else:
            config = fsd.SolverConfig(solver, steps=steps, time_grid=kind, clock=clock)
        values, seconds = {}, 0.0
        for n in sizes:
            grid = fsd.Grid((n, n))
            score = fsd.GaussianScore(data_cov, sde, grid)
            prior = fsd.DiffusionPrior(score, sde, grid, solver=config, t_eps=args.t_eps)
            tick = time.perf_counter()
            values[n] = np.asarray(jax.block_until_ready(
                jax.jit(jax.vmap(prior.log_prob_relative))(fields[n])))  # fmt: skip
            seconds += time.perf_counter() - tick
        # The value each added (empty) mode contributes, coarsest grid to each finer one.
        added = [(values[n] - values[sizes[0]]) / (empty[n] - empty[sizes[0]]) for n in sizes[1:]]
        added = np.stack(added)
        rows.append(dict(
            solver=solver, steps=steps, time_grid=kind, clock=clock, evaluations=budget,
            per_empty_mode=float(np.mean(added)),
            per_empty_mode_rel_error=float(np.max(np.abs(added / exact_empty - 1))),
            total_rel_error=float(max(np.max(np.abs(values[n] / exact[n] - 1)) for n in sizes)),
            seconds=seconds,
        ))  # fmt: skip
        r = rows[-1]
        print(f"{solver:9s} {clock:7s} {kind:8s} {budget}: per empty mode "
              f"{r['per_empty_mode']:.4f} (exact {exact_empty:.4f}), rel. err "
              f"{r['per_empty_mode_rel_error']:.3%}, total {r['total_rel_error']:.3%}",
              flush=True)  # fmt: skip

    result = dict(
        command="python benchmarks/bench_logdensity_modes.py"
        + (f" --out {args.out}" if args.out else ""),
        resolutions=sizes, cutoff=args.cutoff, num_empty={str(n): e for n, e in empty.items()},
        num_fields=args.num_fields, t_eps=args.t_eps, exact_per_empty_mode=exact_empty,
        exact_total={str(n): v.tolist() for n, v in exact.items()}, rows=rows,
    )  # fmt: skip
    if args.out:
        write_text(args.out.replace(".md", ".json"), json.dumps(result, indent=1) + "\n")
        write_text(args.out, render(result))
    return result


def render(result) -> str:
    best = {}
    for r in result["rows"]:
        if r["evaluations"] is not None and r["evaluations"] <= 32:
            if r["per_empty_mode_rel_error"] < best.get("per_empty_mode_rel_error", np.inf):
                best = r
    lines = [
        "# Log-density per empty mode against score evaluations (Gaussian case)",
        "",
        f"Command: `{result['command']}`. Grids {result['resolutions']} (square), data "
        f"band-limited to |k_i| <= {result['cutoff']} (empty modes per grid: "
        f"{result['num_empty']}), exact score, exact divergence, x64, "
        f"{result['num_fields']} band-limited fields refined spectrally from the coarsest grid. "
        "Exact value per empty mode: -log(sigma_eps^2)/2 = "
        f"{result['exact_per_empty_mode']:.4f}. Per empty mode: (log p/mu_Q on a finer grid - "
        "on the coarsest) / (the modes it adds), mean over fields and grids; errors: the "
        "largest over fields and grids. Last column: the relative error of log p/mu_Q itself "
        "(dominated by the band's modes, on which C is much rougher than Q).",
        "",
        "| solver | clock | time grid | steps | score evaluations | per empty mode | rel. error | "
        "rel. error of log p/mu_Q |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        evals = "adaptive" if r["evaluations"] is None else r["evaluations"]
        steps = "-" if r["steps"] is None else r["steps"]
        lines.append(
            f"| {r['solver']} | {r['clock']} | {r['time_grid']} | {steps} | {evals} | "
            f"{r['per_empty_mode']:.4f} | {r['per_empty_mode_rel_error']:.3%} | "
            f"{r['total_rel_error']:.3%} |"
        )
    if best:
        lines += [
            "",
            f"Best with <= 32 evaluations: {best['solver']} in the {best['clock']} clock on the "
            f"{best['time_grid']} grid, "
            f"{best['evaluations']} evaluations: {best['per_empty_mode_rel_error']:.2%} per empty "
            "mode (target: 1%).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
