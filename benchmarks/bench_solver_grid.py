"""Quality against score evaluations for every solver x time grid, on the Gaussian case.

Data $N(0, C)$ with $C$ = Matérn(1.5, 2, 2) and noise $Q$ = Matérn(2, 3) on a 16 x 16 grid; the
score is exact (`GaussianScore`), so every difference is the solver's. Quality is the
Wasserstein-2 distance between the Gaussian with the samples' empirical spectrum and the exact
law of the Tweedie-denoised $p_{t_\\varepsilon}$ (per mode $m^2 c^2/(m^2 c + \\sigma^2 q)$),
relative to $\\sqrt{\\operatorname{tr}}$ of that law, from `--num-samples` draws; the table's
first row is the floor: exact draws of the target at the same n. Also the probability-flow map
error (ODE solvers): the RMS difference to adaptive Tsit5 at rtol 1e-8 from the same latents,
relative to the RMS of the field.

    python benchmarks/bench_solver_grid.py --num-samples 1000 \
        --out benchmarks/results/solver_grid_gaussian.md
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp

import numpyro_fsdiff as fsd
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.metrics import empirical_spectrum, gaussian_w2_spectra

SOLVERS = {
    "ode": ["euler", "heun", "ddim", "dpm++2m", "dpm++3m"],
    "sde": ["euler", "dpm++2m-sde"],
}
GRIDS = ["uniform", "log-snr", "edm"]
BUDGETS = [8, 16, 32]  # score evaluations of the solve (Tweedie step not counted)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    grid = fsd.Grid((args.resolution, args.resolution))
    sde = fsd.VPSDE(Matern(2.0, 3.0))
    score = fsd.GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)
    t_eps = 1e-3
    m, _ = sde.marginal_coefficients(t_eps)
    c = score.data_covariance.eigenvalues(grid)
    target = m**2 * c**2 / score.marginal_eigenvalues(t_eps)
    scale = float(jnp.sqrt(jnp.sum(target)))

    def w2(x):
        return float(gaussian_w2_spectra(empirical_spectrum(x, grid), target)) / scale

    key = jax.random.key(0)
    # The floor: exact draws of the target law at the same n.
    noise = jax.random.normal(jax.random.key(1), (args.num_samples,) + grid.shape)
    exact = fsd.fourier_multiply(noise, jnp.sqrt(target / grid.cell_area))
    rows = [dict(method="exact draws", solver="-", grid="-", evaluations=0, w2=w2(exact),
                 map_error=None)]
    latents = jax.vmap(lambda k: sde.covariance.sample(k, grid))(
        jax.random.split(jax.random.key(2), 16)
    )
    accurate = fsd.SolverConfig("tsit5", rtol=1e-8, atol=1e-8)
    ref = jax.vmap(lambda z: fsd.sample_one(score, sde, grid, key=key, method="ode", x_T=z,
                                            solver=accurate, denoise=False)[0])(latents)
    for method, names in SOLVERS.items():
        for name in names:
            per_step = 2 if name == "heun" else 1
            for time_grid in GRIDS:
                for budget in BUDGETS:
                    config = fsd.SolverConfig(name, steps=budget // per_step,
                                              time_grid=time_grid)
                    x, info = fsd.sample(score, sde, grid, key=key, num_samples=args.num_samples,
                                         method=method, solver=config)
                    row = dict(method=method, solver=name, grid=time_grid,
                               evaluations=int(info.num_score_evaluations[0]) - 1, w2=w2(x),
                               map_error=None)
                    if method == "ode":
                        mapped = jax.vmap(lambda z, config=config: fsd.sample_one(
                            score, sde, grid, key=key, method="ode", x_T=z, solver=config,
                            denoise=False)[0])(latents)
                        row["map_error"] = float(jnp.sqrt(jnp.mean((mapped - ref) ** 2))
                                                 / jnp.sqrt(jnp.mean(ref**2)))
                    rows.append(row)
                    print(row, flush=True)
    lines = [
        "# Solvers x time grids on the Gaussian case",
        "",
        f"{args.resolution} x {args.resolution} grid, exact score, n = {args.num_samples} "
        "draws per row. `W2 rel.`: W2 of the empirical spectrum to the exact Tweedie-denoised "
        "law, relative to sqrt(trace); the first row is the floor (exact draws, same n). "
        "`map err.`: RMS error of the probability-flow map against Tsit5 at rtol 1e-8 (16 "
        "latents), relative to the field's RMS. Evaluations exclude the final Tweedie step.",
        "",
        "| method | solver | time grid | evaluations | W2 rel. | map err. |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        err = "-" if r["map_error"] is None else f"{r['map_error']:.2e}"
        lines.append(f"| {r['method']} | {r['solver']} | {r['grid']} | {r['evaluations']} | "
                     f"{r['w2']:.4f} | {err} |")
    lines += ["", f"Command: `python benchmarks/bench_solver_grid.py --num-samples "
              f"{args.num_samples} --out {args.out}`", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        stem = os.path.splitext(args.out)[0]
        for path, content in ((args.out, text), (stem + ".json", json.dumps(rows, indent=1))):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(content)
            os.replace(tmp, path)
        _plot(rows, os.path.splitext(args.out)[0] + ".png")


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    floor = rows[0]["w2"]
    for ax, method in zip(axes, ("ode", "sde")):
        for name in SOLVERS[method]:
            for style, time_grid in zip(("-", "--", ":"), GRIDS):
                sel = [r for r in rows if r["method"] == method and r["solver"] == name
                       and r["grid"] == time_grid]
                ax.loglog([r["evaluations"] for r in sel], [r["w2"] for r in sel], style,
                          marker="o", label=f"{name} / {time_grid}")
        ax.axhline(floor, color="k", lw=0.8, label="exact draws (floor)")
        ax.set_title(f"{method.upper()} (Gaussian case)")
        ax.set_xlabel("score evaluations")
        ax.set_ylabel("relative W2")
        ax.legend(fontsize=6)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
