"""The prior's probability-flow map with few score evaluations, against adaptive Tsit5.

The shipped MNIST prior at 28 x 28: `ProbabilityFlow(...)(z)` for `--num-latents` latents
$z \\sim N(0, Q)$ with each fixed-step configuration, against the same map by Tsit5 at
rtol = atol = 1e-6. Error: RMS difference over pixels and latents, relative to the RMS of the
reference fields (the field's scale; data lie in [-1, 1]). Target (issue 17): <= 1% with <= 8
score evaluations.

    python benchmarks/bench_flow_map.py --out benchmarks/results/flow_map.md
"""

import argparse

import jax
import jax.numpy as jnp

import numpyro_fsdiff as fsd
from numpyro_fsdiff._io import write_text

CONFIGS = [
    ("heun", 4, "uniform"),
    ("heun", 4, "log-snr"),
    ("euler", 8, "edm"),
    ("ddim", 8, "log-snr"),
    ("dpm++2m", 8, "uniform"),
    ("dpm++2m", 8, "log-snr"),
    ("dpm++2m", 8, "edm"),
    ("dpm++3m", 8, "log-snr"),
    ("dpm++3m", 8, "edm"),
    ("dpm++2m", 16, "log-snr"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--num-latents", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.resolution, args.resolution))
    z = jax.vmap(lambda k: ckpt.sde.covariance.sample(k, grid))(
        jax.random.split(jax.random.key(0), args.num_latents)
    )

    def flow(config):
        return fsd.ProbabilityFlow(ckpt.model, ckpt.sde, grid, solver=config)

    ref = flow(fsd.SolverConfig("tsit5", rtol=1e-6, atol=1e-6))(z)
    scale = float(jnp.sqrt(jnp.mean(ref**2)))
    rows = []
    for name, steps, time_grid in CONFIGS:
        x = flow(fsd.SolverConfig(name, steps=steps, time_grid=time_grid))(z)
        evaluations = steps * (2 if name == "heun" else 1)
        error = float(jnp.sqrt(jnp.mean((x - ref) ** 2))) / scale
        rows.append((name, steps, time_grid, evaluations, error, float(x.min()), float(x.max())))
        print(rows[-1], flush=True)
    lines = [
        "# The prior's flow map with few evaluations (MNIST prior)",
        "",
        f"{args.resolution} x {args.resolution}, {args.num_latents} latents; reference: "
        "adaptive Tsit5 at rtol = atol = 1e-6 "
        f"(fields in [{float(ref.min()):.2f}, {float(ref.max()):.2f}], RMS {scale:.3f}). "
        "Error: RMS difference relative to the reference's RMS. Target: <= 1% with <= 8 "
        "evaluations.",
        "",
        "| solver | steps | time grid | evaluations | rel. RMS error | range |",
        "|---|---:|---|---:|---:|---|",
        *[f"| {n} | {s} | {g} | {e} | {err:.2%} | [{lo:.2f}, {hi:.2f}] |"
          for n, s, g, e, err, lo, hi in rows],
        "",
        f"Command: `python benchmarks/bench_flow_map.py --out {args.out}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
