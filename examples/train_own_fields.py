"""Train a function-space diffusion prior on your own array of fields, then sample it finer.

The data here are a PDE-like synthetic set made on the spot and saved as a NumPy array, as a
user would have it: u = tanh(3 v) with v the solution of the Poisson problem -Laplace(v) = f,
f a Gaussian random field (smooth, non-Gaussian fields with sharp fronts). Replace
`make_fields` with `np.load("your_fields.npy")` (shape (num, n1, n2), periodic, roughly
unit scale) to train on yours.

Training is multilevel (--levels, e.g. 16:300,32:200: 300 steps at 16 x 16, then 200 at
32 x 32 with the same weights); the prior is then sampled at the training resolution and at
twice it, and the radially averaged power spectra are compared with the data's.

    python examples/train_own_fields.py --num 2000 --levels 16:300,32:200 --out own_out
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fsd
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.metrics import spectrum_relative_error


def make_fields(num: int, n: int, seed: int = 0) -> np.ndarray:
    grid = fsd.Grid((n, n))
    forcing = Matern(alpha=1.5, tau=4.0, scale=40.0).sample(jax.random.key(seed), grid, (num,))
    laplacian = 4 * jnp.pi**2 * grid.frequencies_squared()
    potential = fsd.fourier_multiply(forcing, jnp.where(laplacian > 0, 1 / laplacian, 0.0))
    potential = potential / jnp.std(potential)
    return np.asarray(jnp.tanh(3 * potential), dtype=np.float32)


def parse_levels(text: str) -> list[tuple[int, int]]:
    return [(int(r), int(s)) for r, s in (part.split(":") for part in text.split(","))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=2000, help="number of training fields")
    parser.add_argument("--resolution", type=int, default=32, help="native grid of the data")
    parser.add_argument("--levels", default="16:300,32:200", help="resolution:steps,...")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=100)
    parser.add_argument("--out", default="own_out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "fields.npy", make_fields(args.num, args.resolution, args.seed))
    data = jnp.asarray(np.load(out / "fields.npy"))  # ... your own array goes here

    grid = fsd.Grid(data.shape[-2:])
    q = Matern(alpha=2.0, tau=4.0)
    q = Matern(alpha=2.0, tau=4.0, scale=float((q.trace(grid) / grid.area) ** -0.5))
    sde = fsd.VPSDE(q)  # pixel variance of N(0, Q) is 1, like the data's
    network = fsd.nn.FNO(modes=args.modes, width=args.width, depth=3,
                         key=jax.random.key(args.seed))
    result = fsd.train(network, sde, data, parse_levels(args.levels),
                       batch_size=args.batch_size, key=jax.random.key(args.seed),
                       checkpoint_dir=out / "checkpoint")
    score = fsd.NoisePredictionScore(result.network, sde)

    report = {}
    for n in (grid.shape[0], 2 * grid.shape[0]):
        fine = grid.with_shape((n, n))
        samples, _ = fsd.sample(score, sde, fine, key=jax.random.key(1), num_samples=args.samples,
                                steps=args.sample_steps)
        reference = fsd.resample(data[: 4 * args.samples], fine.shape)
        report[n] = float(spectrum_relative_error(samples, reference, fine))
        np.save(out / f"samples_{n}.npy", np.asarray(samples))
        print(f"{n} x {n}: power-spectrum relative error against the data {report[n]:.3f}")
    return report


if __name__ == "__main__":
    main()
