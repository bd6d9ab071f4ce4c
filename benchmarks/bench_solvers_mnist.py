"""Few-evaluation samplers against 200-step Euler-Maruyama on the shipped MNIST prior.

n draws per configuration at 28 x 28; quality against n MNIST test images (equal n):
the classifier Fréchet distance (`metrics.frechet_classifier_distance`) and the unbiased
energy distance (U-statistic, pixel intensities). The first row is the floor: n further test
images against the same n (data against data). Target (issue 17): match 200-step
Euler-Maruyama's Fréchet with <= 20 score evaluations (the final Tweedie step included).

    python benchmarks/bench_solvers_mnist.py --num-samples 256 \
        --out benchmarks/results/solvers_fast_mnist.md

`--sweep STEPS...` instead runs every solver of `SWEEP` on every time grid at each step count
(plus 200-step Euler-Maruyama) and writes `<out>.json` and `<out>.png`, the classifier
Fréchet distance against score evaluations.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fsd
from numpyro_fsdiff._io import save_figure, write_text
from numpyro_fsdiff.cli._tasks import load_checkpoint_or_pretrained
from numpyro_fsdiff.metrics import energy_distance, frechet_classifier_distance

CONFIGS = [
    ("sde", "euler", 200, "uniform"),
    ("ode", "dpm++2m", 19, "log-snr"),
    ("ode", "dpm++3m", 19, "log-snr"),
    ("ode", "dpm++3m", 19, "edm"),
    ("sde", "dpm++2m-sde", 19, "log-snr"),
    ("ode", "ddim", 19, "log-snr"),
    ("ode", "heun", 9, "log-snr"),
    ("ode", "heun", 9, "log-snr", "log-snr"),  # in the log-SNR clock
    ("sde", "dpm++2m-sde", 39, "log-snr"),
    ("sde", "dpm++2m-sde", 19, "edm"),
    ("sde", "dpm++2m-sde", 19, "uniform"),
]

SWEEP = [("sde", "euler"), ("sde", "dpm++2m-sde"), ("ode", "dpm++2m"), ("ode", "dpm++3m")]
GRIDS = ("uniform", "log-snr", "edm")


def sweep_configs(steps_list):
    configs = [("sde", "euler", 200, "uniform")]
    for method, name in SWEEP:
        for time_grid in GRIDS:
            configs += [(method, name, steps, time_grid) for steps in steps_list]
    return configs


def plot_sweep(rows, floor, path):
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (method, name), color in zip(SWEEP, ("C0", "C1", "C2", "C3")):
        for style, time_grid in zip(("-", "--", ":"), GRIDS):
            sel = sorted(
                (r for r in rows if r["solver"] == name and r["grid"] == time_grid
                 and r["evaluations"] < 200),
                key=lambda r: r["evaluations"],
            )
            ax.loglog([r["evaluations"] for r in sel], [r["frechet"] for r in sel], style,
                      color=color, marker="o", ms=3, label=f"{method} / {name} / {time_grid}")
    reference = next(r for r in rows if r["evaluations"] > 200)
    ax.axhline(reference["frechet"], color="k", lw=0.8, label="200-step Euler-Maruyama")
    ax.axhline(floor, color="k", lw=0.8, ls=":", label="data against data (floor)")
    ax.set_xlabel("score evaluations")
    ax.set_ylabel("classifier Fréchet distance")
    ax.set_title(f"MNIST prior at 28 x 28, n = {reference['num']} per point", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--checkpoint", default="mnist", help="a shipped name or a folder")
    parser.add_argument("--out", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="sampling seeds; with several, the rows give mean +- std")
    parser.add_argument("--t-eps", type=float, default=1e-3,
                        help="the final time of every solve (Tweedie denoising from there)")
    parser.add_argument("--eta", type=float, default=1.0,
                        help="the share of the noise that 'dpm++2m-sde' keeps (1: reverse SDE)")
    parser.add_argument("--time-power", type=float, default=None, metavar="RHO",
                        help="replace the uniform grids by t = t_eps + (T - t_eps) u^RHO, u "
                        "uniform (RHO > 1: steps denser near t_eps)")
    parser.add_argument("--select", nargs="+", default=None,
                        help="run only the configurations whose label contains one of these")
    parser.add_argument("--sweep", type=int, nargs="+", default=None, metavar="STEPS",
                        help="every solver x time grid at these step counts, with a plot")
    args = parser.parse_args()
    if args.sweep and not args.out:
        parser.error("--sweep needs --out (it writes <out>.json and <out>.png)")
    n = args.num_samples
    ckpt = load_checkpoint_or_pretrained(args.checkpoint)
    grid = ckpt.grid((28, 28))
    test = jnp.asarray(fsd.data.load_subset().images)  # pixels in [0, 1], first 2000 test images
    if 2 * n > test.shape[0]:
        raise ValueError(f"`--num-samples` must be <= {test.shape[0] // 2}; got {n}.")
    reference = test[:n]
    other = test[n : 2 * n]

    def quality(pixels):
        return (frechet_classifier_distance(pixels, reference),
                float(energy_distance(pixels, reference, grid=grid)))

    rows = [("data vs data (floor)", "-", 0, *quality(other), 0.0, 0.0)]
    print(rows[-1], flush=True)
    records = []
    for method, name, steps, time_grid, *clock in (
        sweep_configs(args.sweep) if args.sweep else CONFIGS
    ):
        clock = clock[0] if clock else "time"
        label = f"{method} / {name}, {steps} {time_grid} steps"
        label += ", log-SNR clock" if clock == "log-snr" else ""
        solver = name
        if name == "dpm++2m-sde" and args.eta != 1.0:
            solver = fsd.DPMSolverPPSDE(eta=args.eta)
            label += f", eta {args.eta:g}"
        if args.select and not any(part in label for part in args.select):
            continue
        if args.time_power is not None and time_grid == "uniform":
            u = np.linspace(1.0, 0.0, steps + 1)
            times = args.t_eps + (ckpt.sde.T - args.t_eps) * u**args.time_power
            times[0], times[-1] = ckpt.sde.T, args.t_eps  # the ends exact, not to rounding
            config = fsd.SolverConfig(solver, times=jnp.asarray(times), clock=clock)
            label += f", t = u^{args.time_power:g}"
        else:
            config = fsd.SolverConfig(solver, steps=steps, time_grid=time_grid, clock=clock)
        values = []
        for seed in args.seeds:
            x, info = fsd.sample(ckpt.model, ckpt.sde, grid, key=jax.random.key(seed),
                                 num_samples=n, method=method, solver=config, batch_size=64,
                                 t_eps=args.t_eps)
            values.append(quality(ckpt.to_pixels(x)))
            print(label, seed, values[-1], flush=True)
        ddof = 1 if len(values) > 1 else 0
        mean, std = np.mean(values, axis=0), np.std(values, axis=0, ddof=ddof)
        rows.append((label, time_grid, int(info.num_score_evaluations[0]), *mean, *std))
        records.append(dict(method=method, solver=name, grid=time_grid, steps=steps, num=n,
                            evaluations=rows[-1][2], frechet=mean[0], energy=mean[1]))
    spread = len(args.seeds) > 1
    lines = [
        "# Few-evaluation samplers on the MNIST prior",
        "",
        f"Checkpoint `{args.checkpoint}`. n = {n} draws per row at 28 x 28 against n = {n} "
        "MNIST test images; the floor row "
        "compares n other test images. Fréchet: the shipped classifier's features; energy: "
        "the unbiased U-statistic on pixel intensities (L2 on the grid).",
        "",
        "| sampler | evaluations | Fréchet (classifier) | energy (U) |",
        "|---|---:|---:|---:|",
        *[
            f"| {r[0]} | {r[2]} | {r[3]:.2f}" + (f" +- {r[5]:.2f}" if spread else "")
            + f" | {r[4]:.4f} |"
            for r in rows
        ],
        "",
        f"Command: `python benchmarks/bench_solvers_mnist.py --num-samples {n} "
        f"--checkpoint {args.checkpoint} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --sweep {' '.join(map(str, args.sweep))}" if args.sweep else "")
        + (f" --t-eps {args.t_eps:g}" if args.t_eps != 1e-3 else "")
        + (f" --eta {args.eta:g}" if args.eta != 1.0 else "")
        + (f" --time-power {args.time_power:g}" if args.time_power is not None else "")
        + (f" --select {' '.join(repr(x) for x in args.select)}" if args.select else "")
        + (f" --out {args.out}" if args.out else "") + "`",
        *(
            [f"Rows give the mean +- std over the {len(args.seeds)} sampling seeds (the test "
             "images fixed)."]
            if spread else []
        ),
        "",
    ]
    text = "\n".join(lines)
    if args.sweep:
        stem = os.path.splitext(args.out)[0]
        write_text(stem + ".json", json.dumps(dict(floor=rows[0][3], rows=records), indent=1))
        plot_sweep(records, rows[0][3], stem + ".png")
        text += f"\n![Fréchet against evaluations]({os.path.basename(stem)}.png)\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
