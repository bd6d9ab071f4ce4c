"""Pretrained checkpoints shipped with the package."""

import importlib.resources

from ._checkpoint import Checkpoint, load_checkpoint

PRETRAINED = ("mnist", "fashion-mnist")
"""The names accepted by [`pretrained`][numpyro_fsdiff.pretrained]."""


def pretrained(name: str) -> Checkpoint:
    """Load a pretrained FNO score model shipped in `numpyro_fsdiff/weights/<name>/`.

    Each is a band-limited FNO (`cutoff=13`: the score is exactly $-x$ above the modes a
    28 x 28 grid holds, so the law is a measure on functions, the same on every grid; see
    docs/theory.md) with the noise covariance `BandSplit(Matern(1.5, 10), Matern(2.5, 3), 13)`,
    trained with `benchmarks/train_resolution.py` on these CPUs, warm-started from the
    earlier unconstrained weights; its `MODEL_CARD.md` gives the exact command, the data, the
    wall time, the held-out DSM loss at 14, 28 and 56 and the measured sample quality. The
    result is the same object as [`load_checkpoint`][numpyro_fsdiff.load_checkpoint] returns.

    **Arguments:**

    - `name`: `"mnist"` or `"fashion-mnist"`.

    **Returns:** a [`Checkpoint`][numpyro_fsdiff.Checkpoint]: `.model` is the score
    $S_\\theta(x, t)$ on one field of any grid size, `.sde`, `.covariance`, `.config`,
    `.to_pixels(x)` / `.from_pixels(u)`.

    !!! example

        ```python
        import numpyro_fsdiff

        ckpt = numpyro_fsdiff.pretrained("mnist")
        grid = ckpt.grid((56, 56))
        score = ckpt.model   # S(x, t) on (56, 56) fields, e.g. for numpyro_fsdiff.sample:
        # x, _ = numpyro_fsdiff.sample(score, ckpt.sde, grid, key=jax.random.key(0),
        #                              num_samples=16, steps=200)
        # images = ckpt.to_pixels(x)  # (16, 56, 56) in [0, 1]
        ```
    """
    if name not in PRETRAINED:
        raise ValueError(f"`name` must be one of {PRETRAINED}; got {name!r}.")
    resource = importlib.resources.files("numpyro_fsdiff") / "weights" / name
    with importlib.resources.as_file(resource) as folder:
        if not (folder / "checkpoint.json").is_file():
            raise FileNotFoundError(
                f"the pretrained weights {name!r} are not installed (looked in {folder})."
            )
        return load_checkpoint(folder)
