r"""The four imaging tasks end to end: data, observation, posterior, panel and report.

Used by `fsdiff invert` and the scripts in examples/. Observations are made on the image's
native 28 x 28 grid (in model space); the unknown lives on a grid of any `resolution`, which
is the point of defining the operators in function space.
"""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._grid import Grid, resample
from .._io import save_figure, write_text
from ..inverse import (
    AbstractOperator,
    CellAverage,
    GaussianBlur,
    GaussianNoise,
    Mask,
    PointObservations,
    naive_inverse,
    psnr,
    ssim,
)

TASKS = ("deblur", "inpaint", "superres", "sparse")
SAMPLERS = ("nuts", "svi", "map", "dps", "smc")
NATIVE = (28, 28)


def _hidden_box(x1, x2):
    return ~((np.abs(x1 - 0.5) < 0.2) & (np.abs(x2 - 0.5) < 0.2))


def task_operator(task: str, *, seed: int = 0) -> tuple[AbstractOperator, float]:
    r"""The observation operator and noise level (model space, $[-1, 1]$) of a named task.

    - `"deblur"`: [`GaussianBlur`][numpyro_fsdiff.inverse.GaussianBlur] of width 1.5/28
      observed on the 28 x 28 grid, $\sigma = 0.05$;
    - `"inpaint"`: [`Mask`][numpyro_fsdiff.inverse.Mask] hiding the central square
      $[0.3, 0.7]^2$ of the 28 x 28 grid, $\sigma = 0.05$;
    - `"superres"`: [`CellAverage`][numpyro_fsdiff.inverse.CellAverage] over a 7 x 7 grid
      (4x super-resolution), $\sigma = 0.02$;
    - `"sparse"`: [`PointObservations`][numpyro_fsdiff.inverse.PointObservations] at 150
      uniform random points (drawn with `seed`), $\sigma = 0.05$.
    """
    if task == "deblur":
        return GaussianBlur(1.5 / 28, shape=NATIVE), 0.05
    if task == "inpaint":
        return Mask(_hidden_box, shape=NATIVE), 0.05
    if task == "superres":
        return CellAverage((7, 7)), 0.02
    if task == "sparse":
        locations = np.random.default_rng(seed).uniform(0.0, 1.0, size=(150, 2))
        return PointObservations(locations), 0.05
    raise ValueError(f"`task` must be one of {TASKS}; got {task!r}.")


def observation_image(y, operator: AbstractOperator, grid: Grid) -> np.ndarray:
    """The data drawn as an image on the 28 x 28 grid (NaN where nothing is observed)."""
    native = grid.with_shape(NATIVE)
    if isinstance(operator, Mask):
        return np.asarray(operator.embed(y, native))
    if isinstance(operator, PointObservations):
        image = np.full(NATIVE, np.nan)
        idx = np.floor(np.asarray(operator.locations) * np.array(NATIVE)).astype(int) % 28
        image[idx[:, 0], idx[:, 1]] = np.asarray(y)
        return image
    y = np.asarray(y)
    if y.shape != NATIVE:  # cell averages: show them at their own resolution, blown up
        reps = (NATIVE[0] // y.shape[0], NATIVE[1] // y.shape[1])
        return np.kron(y, np.ones(reps))
    return y


def load_checkpoint_or_pretrained(checkpoint: str):
    """A checkpoint folder on disk, or the name of a shipped one (`numpyro_fsdiff.pretrained`)."""
    from .._checkpoint import load_checkpoint
    from .._pretrained import PRETRAINED, pretrained

    if Path(checkpoint).exists():
        return load_checkpoint(checkpoint)
    if checkpoint in PRETRAINED:
        return pretrained(checkpoint)
    raise FileNotFoundError(
        f"`checkpoint` must be a checkpoint folder or the name of a shipped checkpoint "
        f"{PRETRAINED}; got {str(checkpoint)!r}, which is neither (no such path)."
    )


def _check_data_root(data_root, dataset: str) -> None:
    """A named data folder must hold the test files itself (or in `<data_root>/<dataset>/`):
    the run never falls back to other folders or to the shipped subset."""
    from ..data._idx import dataset_files

    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"`data_root` must be an existing folder; got {str(data_root)!r}.")
    files = dataset_files(dataset, "test")
    if not any((folder / files.images).is_file() and (folder / files.labels).is_file()
               for folder in (root / dataset, root)):
        raise FileNotFoundError(
            f"`data_root` {str(data_root)!r} holds no {dataset} test files ({files.images}, "
            f"{files.labels}), neither in it nor in {str(root / dataset)!r}."
        )


def make_sampler(name: str, ckpt, *, num_samples: int, num_warmup: int, num_chains: int,
                 steps: int, guidance: float, max_tree_depth: int = 6, init_steps: int = 100,
                 grid_size: int | None = None, mass_matrix: str = "auto", move_steps: int = 0,
                 num_islands: int = 1, twist_variance: float = 1.0,
                 twist_crossover: float = 0.0):
    """A sampler of [`posterior`][numpyro_fsdiff.inverse.posterior] by name.

    NUTS starts each chain from its own prior draw moved `init_steps` Adam steps uphill
    (`init="map"`), with `mass_matrix` as in [`run_task`][numpyro_fsdiff.cli.run_task]
    (`"auto"` is decided here, from `grid_size`).
    """
    from ..inverse import DPS, MAP, NUTS, SMC, SVI
    from ..inverse._nuts import DENSE_METRIC_MAX_POINTS

    if name == "nuts":
        if mass_matrix == "auto":
            dense = grid_size is not None and grid_size <= DENSE_METRIC_MAX_POINTS
            mass_matrix = "gaussian" if dense else "adapt"
        return NUTS(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                    chain_method="vectorized", max_tree_depth=max_tree_depth, init="map",
                    init_steps=init_steps, mass_matrix=mass_matrix)
    if name == "svi":
        return SVI("normal", num_steps=steps, learning_rate=0.02, num_samples=num_samples)
    if name == "map":
        return MAP(num_steps=steps, learning_rate=0.05)
    if name == "dps":
        return DPS(ckpt.model, ckpt.sde, num_samples=num_samples, steps=steps,
                   guidance=guidance, weighting="normalised")
    if name == "smc":
        return SMC(ckpt.model, ckpt.sde, num_particles=num_samples, steps=steps,
                   batch_size=min(num_samples, 256), move_steps=move_steps,
                   num_islands=num_islands, twist_variance=twist_variance,
                   twist_crossover=twist_crossover)
    raise ValueError(f"`sampler` must be one of {SAMPLERS}; got {name!r}.")


def run_task(
    *,
    task: str,
    checkpoint: str,
    dataset: str = "mnist",
    data_root: str | None = None,
    image: int = 0,
    resolution: int = 28,
    sampler: str = "smc",
    num_samples: int = 50,
    num_warmup: int = 50,
    num_chains: int = 2,
    steps: int = 200,
    ode_steps: int = 10,
    ode_solver: str = "euler",
    max_tree_depth: int = 6,
    init_steps: int = 100,
    mass_matrix: str = "auto",
    guidance: float = 1.0,
    move_steps: int = 0,
    num_islands: int = 1,
    twist_variance: float = 1.0,
    twist_crossover: float = 0.0,
    seed: int = 0,
    out: str | Path = "invert_out",
) -> dict:
    r"""Run one task end to end and write `<out>/<task>_<sampler>.png` and `.json`.

    The test image `image` of `dataset` (pixels in $[0, 1]$) is mapped to model space by the
    checkpoint's scaling, observed on its native 28 x 28 grid with the task's operator and
    noise, and inverted on the `resolution` x `resolution` grid with the prior
    `TransformedDistribution(GaussianField(Q, grid), ProbabilityFlow(score, sde, grid))`
    (`ode_solver` with `ode_steps` fixed steps: Euler, 10 steps by default) for NUTS/SVI/MAP,
    or its score alone for DPS (with the normalised guidance of
    [`guided_score`][numpyro_fsdiff.inverse.guided_score], weight `guidance`). NUTS runs two
    vectorised chains (or `num_chains`), tree depth <= `max_tree_depth`, each started from a
    prior draw moved `init_steps` Adam steps uphill (`init="map"`), with the mass matrix
    `mass_matrix` (one of [`NUTS`][numpyro_fsdiff.inverse.NUTS]'s, or `"auto"`: the
    linearised posterior, `"gaussian"`, on grids of up to 4096 points, numpyro's adaptation on
    larger ones). SMC takes `move_steps` MALA moves per particle before each step,
    splits its `num_samples` particles into `num_islands` independent islands and twists
    with variance factor `twist_variance` and crossover `twist_crossover`
    ([`SMC`][numpyro_fsdiff.inverse.SMC]). The truth
    at another resolution is the band-limited (spectral) resampling of the 28 x 28 image.

    **Which flow solver.** The flow ends at $t_\varepsilon = 10^{-3}$, where the drift is
    stiff (its Jacobian is about $\beta/(2\sigma_t^2) \approx 450$). Solvers that evaluate
    the score *at* $t_\varepsilon$ (Heun, Tsit5) are unstable there with a few uniform steps:
    on prior draws of the MNIST model, Heun with 3 steps is off by 12.7 times the norm of
    the field (values up to 52 instead of $[-1.3, 1.3]$), Tsit5 with 8 steps by 2.4 times.
    Euler evaluates only at $t \ge t_\varepsilon + h$, where $h\,\beta/(2\sigma_t^2)
    \approx 1$, and its last step is a Tweedie-like denoising step: relative error 0.19 with
    6 steps, 0.095 with 10, 0.044 with 20 (28 x 28; 0.24, 0.13, 0.065 at 56 x 56), against an
    adaptive Tsit5 solve at tolerance $10^{-5}$.

    **Returns:** the JSON report as a dict.
    """
    import numpyro.distributions as dist

    from .. import data as fsdata
    from .._flow import ProbabilityFlow
    from .._gaussian_field import GaussianField
    from .._sample import score_evaluations_per_step
    from .._solvers import resolve_solver
    from ..inverse import posterior

    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}; got {task!r}.")
    if sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}; got {sampler!r}.")
    if not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"`resolution` must be an int >= 8; got {resolution!r}.")
    for name, value in (("num_samples", num_samples), ("steps", steps),
                        ("ode_steps", ode_steps), ("max_tree_depth", max_tree_depth),
                        ("num_chains", num_chains)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
    ckpt = load_checkpoint_or_pretrained(checkpoint)
    if data_root is not None:
        _check_data_root(data_root, dataset)
    try:
        images = fsdata.load(dataset, split="test", root=data_root).images
    except FileNotFoundError:
        if dataset != "mnist" or data_root is not None:
            raise  # a folder the user named holds no data: say so, never fall back
        images = fsdata.load_subset().images  # the 2,000 MNIST test images shipped offline
    if not 0 <= image < len(images):
        raise ValueError(f"`image` must be in [0, {len(images)}); got {image!r}.")
    native_grid = ckpt.grid(NATIVE)
    grid = ckpt.grid((resolution, resolution))
    x28 = jnp.asarray(ckpt.from_pixels(jnp.asarray(images[image])), dtype=jnp.float32)
    truth = resample(x28, grid.shape)
    operator, sigma = task_operator(task, seed=seed)
    key_noise, key_post = jax.random.split(jax.random.key(seed))
    clean = operator(x28, native_grid)
    y = clean + sigma * jax.random.normal(key_noise, clean.shape)
    noise = GaussianNoise(sigma)

    solver = resolve_solver(ode_solver, kind="ode")
    flow = ProbabilityFlow(ckpt.model, ckpt.sde, grid, solver=solver, steps=ode_steps)
    prior = dist.TransformedDistribution(GaussianField(ckpt.covariance, grid), flow)
    chosen = make_sampler(sampler, ckpt, num_samples=num_samples, num_warmup=num_warmup,
                          num_chains=num_chains, steps=steps, guidance=guidance,
                          max_tree_depth=max_tree_depth, init_steps=init_steps,
                          grid_size=grid.size, mass_matrix=mass_matrix,
                          move_steps=move_steps, num_islands=num_islands,
                          twist_variance=twist_variance, twist_crossover=twist_crossover)
    result = posterior(y, operator, prior, chosen, key=key_post, grid=grid, noise=noise,
                       truth=truth, data_range=2.0)
    per_step, initial = score_evaluations_per_step(solver)
    per_solve = initial + per_step * ode_steps
    info = dict(result.info)
    if "gradient_evaluations" in info and "score_evaluations" not in info:
        # each gradient: one forward flow solve and its reverse pass (counted as one more)
        info["score_evaluations"] = 2 * per_solve * info["gradient_evaluations"]

    start = time.perf_counter()
    baseline = naive_inverse(y, operator, grid) if grid.size <= 4096 else None
    naive_time = time.perf_counter() - start
    report = {
        "task": task,
        "sampler": result.method,
        "dataset": dataset,
        "image": image,
        "resolution": resolution,
        "observation_shape": list(operator.data_shape(native_grid)),
        "noise_sigma": sigma,
        "ode_solver": ode_solver,
        "ode_steps": ode_steps,
        **({"mass_matrix": chosen.mass_matrix} if sampler == "nuts" else {}),
        "metrics": result.metrics,
        "diagnostics": {k: (v if isinstance(v, (int, str, list)) else float(v))
                        for k, v in result.diagnostics.items()},
        "info": {k: float(v) for k, v in info.items()},
    }
    if baseline is not None:
        report["naive_inverse"] = {
            "psnr": float(psnr(baseline, truth, data_range=2.0)),
            "ssim": float(ssim(baseline, truth, data_range=2.0, window=7)),
            "time_s": naive_time,
        }
    out = Path(out)
    stem = f"{task}_{sampler}_{dataset}_{resolution}"
    write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    _panel(out / f"{stem}.png", ckpt, truth, observation_image(y, operator, native_grid), result,
           title=f"{task} / {result.method} / {dataset} #{image} at {resolution}x{resolution}")
    return report


def _panel(path, ckpt, truth, observation, result, *, title):
    import matplotlib.pyplot as plt

    samples = jnp.asarray(result.samples[:3])
    panels = [("truth", ckpt.to_pixels(truth)), ("observation", observation),
              ("posterior mean", ckpt.to_pixels(result.mean)),
              ("posterior std", np.asarray(result.std))]
    panels += [(f"sample {i + 1}", ckpt.to_pixels(s)) for i, s in enumerate(samples)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (name, image) in zip(axes, panels):
        image = np.asarray(image)
        if name == "observation":
            image = np.asarray(ckpt.to_pixels(jnp.nan_to_num(jnp.asarray(image), nan=-1.0)))
            image = np.where(np.isnan(observation), np.nan, image)
        cmap = plt.get_cmap("magma" if name == "posterior std" else "gray").with_extremes(
            bad="#4477aa"  # unobserved pixels of the observation panel
        )
        ax.imshow(image, cmap=cmap,
                  vmin=None if name == "posterior std" else 0.0,
                  vmax=None if name == "posterior std" else 1.0)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
