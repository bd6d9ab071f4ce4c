"""SMC against DPS when the truths are draws of the prior itself: sampler error or prior misfit?

On the test images DPS keeps a higher PSNR than SMC on inpainting, sparse points and
super-resolution (benchmarks/results/smc.md). SMC targets the posterior of the learned
prior (the reverse chain of the shipped score); on truths drawn from that prior, the
posterior mean of a sampler that gets the posterior right has the least mean-square error
of any estimator, so there a correct SMC cannot lose to DPS by more than its own Monte Carlo
error. If SMC wins on model draws and loses on test images, the gap on test images is the
prior's misfit to MNIST, not the sampler's. `--checkpoint` names the prior (`mnist`, the
default, `fashion-mnist`, or a checkpoint folder).

Each truth is a draw of the Euler-Maruyama chain of `--steps` log-SNR steps on the 28 x 28
grid (no denoising: SMC's target), observed with the task's operator and noise
(`numpyro_fsdiff.cli.task_operator`), then inverted by SMC (`--particles` in `--islands`
islands, `--move-steps` MALA moves per step, twist variance `--twist-variance`; the same
chain) and DPS (`--dps-samples` x `--dps-steps`, normalised guidance, as
`fsdiff invert` runs it). Rows have the fields of bench_smc.py, so its `--render` tables
them.

    python benchmarks/bench_smc_model_truths.py --tasks deblur inpaint superres sparse \\
        --truths 20 --out benchmarks/results/smc_model_truths.json
    python benchmarks/bench_smc.py --render benchmarks/results/smc_model_truths.json
"""

import argparse
import json
import time
from pathlib import Path

from bench_resolution import load_model
from bench_smc import smc_settings
from bench_smc_sbc import model_truths, observe

from numpyro_fsdiff._io import write_text

RESULTS = Path(__file__).parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="mnist", help="pretrained name or folder")
    parser.add_argument("--tasks", nargs="+", default=["inpaint"])
    parser.add_argument("--truths", type=int, default=4)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--islands", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--move-steps", type=int, default=0, help="SMC's MALA moves per step")
    parser.add_argument("--twist-variance", type=float, default=1.0, help="SMC's kappa")
    parser.add_argument("--dps-samples", type=int, default=16)
    parser.add_argument("--dps-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "smc_model_truths.json"))
    args = parser.parse_args(argv)

    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.cli import task_operator
    from numpyro_fsdiff.cli._tasks import NATIVE, make_sampler
    from numpyro_fsdiff.inverse import SMC, GaussianNoise, posterior

    ckpt, dataset = load_model(args.checkpoint)
    grid = ckpt.grid(NATIVE)
    truths = model_truths(
        ckpt.model, ckpt.sde, grid, seed=args.seed, num=args.truths,
        solver=fsd.SolverConfig(solver="euler", steps=args.steps, time_grid="log-snr"),
    )
    samplers = {
        "SMC": SMC(ckpt.model, ckpt.sde, num_particles=args.particles, steps=args.steps,
                   batch_size=args.particles, num_islands=args.islands,
                   move_steps=args.move_steps, twist_variance=args.twist_variance),
        "DPS": make_sampler("dps", ckpt, num_samples=args.dps_samples, num_warmup=1,
                            num_chains=1, steps=args.dps_steps, guidance=1.0),
    }
    settings = {
        "SMC": smc_settings(args.particles, args.steps, twist_variance=args.twist_variance,
                            move_steps=args.move_steps, islands=args.islands),
        "DPS": f"{args.dps_samples} samples, {args.dps_steps} steps",
    }
    rows, out = [], Path(args.out)
    for index in range(args.truths):
        truth = truths[index]
        for task in args.tasks:
            operator, sigma = task_operator(task, seed=0)
            y, _, key_post = observe(truth, index, seed=1, operator=operator, grid=grid,
                                     sigma=sigma)
            for name, sampler in samplers.items():
                start = time.perf_counter()
                result = posterior(y, operator, None, sampler, key=key_post, grid=grid,
                                   noise=GaussianNoise(sigma), truth=truth, data_range=2.0)
                row = {
                    "dataset": f"{dataset} model draws",
                    "resolution": NATIVE[0],
                    "task": task,
                    "image": index,
                    "sampler": name,
                    "settings": settings[name],
                    "psnr": result.metrics["psnr"],
                    "ssim": result.metrics["ssim"],
                    "coverage_90": result.metrics["coverage_90"],
                    "log_evidence": result.diagnostics.get("log_evidence"),
                    "score_evaluations": result.info.get("score_evaluations"),
                    "wall_time_s": result.info["wall_time_s"],
                    "total_s": time.perf_counter() - start,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                write_text(out, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
