r"""Multilevel denoising score-matching training with optax, an EMA of the weights and checkpoints.

The network $\varepsilon_\theta(x, t)$ predicts the noise: with $X_t = m_t X_0 + \sigma_t\eta$,
$\eta \sim N(0, Q)$, the loss is [`dsm_loss`][numpyro_fsdiff.dsm_loss]

$$L(\theta) = \mathbb{E}_{t \sim U(t_\varepsilon, T)}\,\mathbb{E}\,
\|\varepsilon_\theta(X_t, t) - \eta\|^2_{L^2(D)},$$

the Q-score matching loss with the weight $w(t) = \sigma_t^2$, and the score is
$S_\theta = -\varepsilon_\theta/\sigma_t$
([`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore]).
"""

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ._checkpoint import JSON_NAME, load_state, read_config, save_checkpoint
from ._custom_types import Array, ArrayLike, Float, PRNGKeyArray
from ._grid import Grid, resample
from ._loss import NoisePredictor, dsm_loss
from ._sde import VPSDE
from ._sharding import check_divisible, global_batch, replicate
from .data._scaling import PixelScaling


class TrainingDivergedError(FloatingPointError):
    """Raised when the training loss (or a weight) becomes NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Level:
    """One level of multilevel training: `steps` optimiser steps on a grid of `shape`."""

    shape: tuple[int, int]
    steps: int

    @classmethod
    def parse(cls, level, index: int = 0) -> "Level":
        if isinstance(level, Level):
            return level
        try:
            resolution, steps = level
        except (TypeError, ValueError):
            raise ValueError(
                f"`levels[{index}]` must be a pair (resolution, steps); got {level!r}."
            ) from None
        if isinstance(resolution, (int, np.integer)):
            shape = (int(resolution), int(resolution))
        else:
            shape = tuple(int(n) for n in resolution)
        if len(shape) != 2 or min(shape) < 2:
            raise ValueError(
                f"`levels[{index}]` resolution must be an int or a pair (n1, n2), each >= 2; "
                f"got {resolution!r}."
            )
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"`levels[{index}]` steps must be an int >= 1; got {steps!r}.")
        return cls(shape, int(steps))


def parse_levels(levels) -> tuple[Level, ...]:
    """Levels from `[(resolution, steps), ...]`; `resolution` is an int or `(n1, n2)`."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise ValueError(
            f"`levels` must be a non-empty list of (resolution, steps); got {levels!r}."
        )
    return tuple(Level.parse(level, i) for i, level in enumerate(levels))


class TrainResult(eqx.Module):
    """What [`train`][numpyro_fsdiff.train] returns.

    - `network`: the EMA of the weights, the network to use.
    - `raw_network`: the last iterate of the optimiser.
    - `opt_state`: the optax state.
    - `step`: the number of steps taken in total.
    - `losses`: the training loss of every step run in this call, shape `(steps,)`.
    - `history`: the logged records (interval means of the loss, learning rate, wall time,
      held-out losses) since the start of training, resumed runs included.
    - `wall_time`: training seconds (evaluation excluded) since the start of training.
    - `cpu_time`: the process CPU seconds of the same (all threads; robust to other jobs on
      a shared machine).
    """

    network: Any
    raw_network: Any
    opt_state: Any
    step: int = eqx.field(static=True)
    losses: np.ndarray
    history: list
    wall_time: float = eqx.field(static=True)
    cpu_time: float = eqx.field(static=True)


@functools.lru_cache(maxsize=32)
def make_optimizer(
    level_steps: tuple[int, ...],
    *,
    learning_rate: float,
    warmup_steps: int,
    final_learning_rate: float,
    weight_decay: float,
    clip_norm: float | None,
    lr_schedule: Literal["global", "per-level"] = "global",
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    r"""AdamW with linear warm-up then cosine decay, after global-norm gradient clipping.

    With `lr_schedule="global"` the learning rate rises linearly from 0 to `learning_rate` over
    `warmup_steps`, then follows a cosine down to `final_learning_rate` at the last of all
    `sum(level_steps)` steps: one schedule spans all levels. With `"per-level"` that warm-up
    and cosine restart at each level and span its `level_steps[i]` steps (the optimiser's
    moments carry over). Cached, so that equal settings give the same object and compiled
    steps are reused.
    """

    def warmup_cosine(steps: int) -> optax.Schedule:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=max(steps, warmup_steps + 1),
            end_value=final_learning_rate,
        )

    if lr_schedule == "global":
        schedule = warmup_cosine(sum(level_steps))
    else:
        boundaries = np.cumsum(level_steps)[:-1].tolist()
        schedule = optax.join_schedules([warmup_cosine(n) for n in level_steps], boundaries)
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    parts.append(optax.adamw(schedule, weight_decay=weight_decay))
    return optax.chain(*parts), schedule


@eqx.filter_jit
def _train_step(
    params,
    ema,
    opt_state,
    static,
    optimizer,
    sde,
    data,
    indices,
    key,
    step,
    ema_decay,
    grid,
    t_eps,
    batched,
):
    # `indices=None`: `data` is the batch itself (a global array, sharded on a mesh).
    x0 = data if indices is None else data[indices]

    def loss_fn(p):
        network = eqx.combine(p, static)
        return dsm_loss(network, sde, x0, key, grid=grid, t_eps=t_eps, batched=batched)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    # A real average of the weights, with the usual warm-up of the decay:
    # decay_n = min(ema_decay, (1 + n) / (10 + n)).
    decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    return params, ema, opt_state, loss


@eqx.filter_jit
def _all_finite(tree) -> Array:
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _bring_to(data: Array, shape, method: str, chunk: int = 4096) -> Array:
    """`data` resampled to `shape`, in chunks to bound the memory of the FFTs."""
    if tuple(data.shape[-2:]) == tuple(shape):
        return jnp.asarray(data)
    fn = jax.jit(lambda u: resample(u, shape, method=method))
    return jnp.concatenate([fn(data[i : i + chunk]) for i in range(0, data.shape[0], chunk)])


@eqx.filter_jit
def _heldout_batch(network, sde, x0, key, grid, t_eps, batched):
    return dsm_loss(network, sde, x0, key, grid=grid, t_eps=t_eps, batched=batched)


def has_batched_path(network) -> bool:
    """Whether the network's class defines its own `batched(xs, ts)` (as `FNO` does)."""
    return callable(getattr(type(network), "batched", None))


def heldout_loss(
    network: NoisePredictor,
    sde: VPSDE,
    data: Float[ArrayLike, "..."],
    *,
    key: PRNGKeyArray | None = None,
    shape=None,
    lengths=(1.0, 1.0),
    batch_size: int = 500,
    repeats: int = 1,
    method: Literal["spectral", "area"] = "spectral",
    t_eps: float = 1e-3,
    batched: bool | None = None,
) -> float:
    r"""The DSM loss of [`dsm_loss`][numpyro_fsdiff.dsm_loss] averaged over held-out data.

    Deterministic for a given `key`: the same times and noise every call, so numbers are
    comparable between networks. The data are brought to `shape` first (their own grid by
    default); since the loss is an $L^2(D)$ quadrature, values are comparable across
    resolutions.

    **Arguments:**

    - `network`: the noise predictor.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE].
    - `data`: held-out fields in model space, shape `(num, n1, n2)`.
    - `key`: the PRNG key of the times and noise (`jax.random.key(0)` by default).
    - `shape`: the grid to evaluate on.
    - `lengths`: the domain.
    - `batch_size`: fields per evaluation batch.
    - `repeats`: draws of $(t, \eta)$ per field; more lowers the estimator's variance.
    - `method`: how data are brought to `shape`.
    - `t_eps`: the smallest time.
    - `batched`: use `network.batched` (default: if the network's class defines it).

    **Returns:** the mean loss, a Python float.
    """
    data = jnp.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"`data` must have shape (num, n1, n2); got {data.shape}.")
    shape = tuple(data.shape[-2:]) if shape is None else Grid(shape).shape
    data = _bring_to(data, shape, method)
    grid = Grid(shape, lengths)
    key = jax.random.key(0) if key is None else key
    batched = has_batched_path(network) if batched is None else bool(batched)
    total, count = 0.0, 0
    for r in range(repeats):
        for i in range(0, data.shape[0], batch_size):
            batch = data[i : i + batch_size]
            k = jax.random.fold_in(jax.random.fold_in(key, r), i)
            total += (
                float(_heldout_batch(network, sde, batch, k, grid, t_eps, batched)) * batch.shape[0]
            )
            count += batch.shape[0]
    return total / count


def _check_float(name, value, lo=None, lo_open=False, allow_none=False):
    if value is None and allow_none:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number; got {value!r}.") from None
    if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)):
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise ValueError(f"`{name}` must be a finite number {bound}; got {value!r}.")
    return value


def _check_int(name, value, lo):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"`{name}` must be an int >= {lo}; got {value!r}.")
    return int(value)


def _batch_indices(
    seed: int, level: int, level_step: int, num: int, batch: int, stream: tuple = ()
) -> np.ndarray:
    """Indices of the batch of `level_step`: epochs of a seeded permutation (no repeats).

    `stream` extends the seed (a process index on a multi-host run)."""
    per_epoch = num // batch
    epoch, position = divmod(level_step, per_epoch)
    perm = _permutation(seed, level, epoch, num, tuple(stream))
    return perm[position * batch : (position + 1) * batch]


_PERMUTATIONS: dict = {}


def _permutation(seed, level, epoch, num, stream=()):
    key = (seed, level, epoch, num, stream)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng([seed, level, epoch, *stream]).permutation(num)
    return _PERMUTATIONS[key]


def train(
    network: NoisePredictor,
    sde: VPSDE,
    data: Float[ArrayLike, "..."],
    levels,
    *,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    warmup_steps: int | None = None,
    final_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    ema_decay: float = 0.999,
    lr_schedule: str = "global",
    method: Literal["spectral", "area"] = "spectral",
    lengths=(1.0, 1.0),
    t_eps: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    scaling: PixelScaling | None = None,
    eval_data: Float[ArrayLike, "..."] | None = None,
    eval_every: int | None = None,
    eval_shape=None,
    log_every: int = 50,
    progress: bool = True,
    metadata: dict | None = None,
    stop_after: int | None = None,
    batched: bool | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    r"""Train a noise predictor by denoising score matching, coarse to fine.

    For each level `(resolution, steps)` in turn, the data (given on their native grid) are
    brought to the level's grid with [`resample`][numpyro_fsdiff.resample] (`method`), and
    `steps` AdamW steps are taken on [`dsm_loss`][numpyro_fsdiff.dsm_loss], whose
    $L^2(D)$ quadrature makes the loss the same quantity on every grid. The same weights,
    optimiser state continue across levels. Gradients are clipped to a global norm of
    `clip_norm`; the learning rate warms up linearly over `warmup_steps` and then decays along
    a cosine to `final_learning_rate`, once over all levels (`lr_schedule="global"`) or afresh
    at each level (`"per-level"`). An exponential
    moving average of the weights, $\bar\theta_n = d_n \bar\theta_{n-1} + (1 - d_n)\theta_n$
    with $d_n = \min(d, (1 + n)/(10 + n))$, is the network returned and saved.

    Batches are epochs of a permutation seeded by `(seed, level, epoch)` and the times and
    noise of step $n$ come from `fold_in(key(seed), n)`, so a run is deterministic for a
    seed and a resumed run repeats an uninterrupted one exactly. A NaN or infinite loss
    stops training with a [`TrainingDivergedError`][numpyro_fsdiff.TrainingDivergedError];
    checkpoints are only written from finite states, so the last good one is kept.

    **Arguments:**

    - `network`: the noise predictor $\varepsilon_\theta(x, t)$ (an `eqx.Module` on one field
      of any grid size, a scalar `t`); it needs a `config` property to be checkpointed.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE].
    - `data`: training fields in model space, shape `(num, n1, n2)`, on their native grid.
    - `levels`: `[(resolution, steps), ...]`, `resolution` an int or `(n1, n2)`.
    - `batch_size`: fields per step (at most `num`).
    - `learning_rate`, `warmup_steps` (default 5% of all steps, at most 1000),
      `final_learning_rate` (default `learning_rate / 20`), `weight_decay`, `clip_norm`
      (`None` for no clipping), `ema_decay`: the optimiser.
    - `lr_schedule`: `"global"` (one warm-up and cosine over all levels) or `"per-level"`
      (restarted at each level, each over its own steps; the warm-up default is then 5% of
      the shortest level).
    - `method`: `"spectral"` or `"area"` (integer coarsening factors only).
    - `lengths`: the side lengths of the domain.
    - `t_eps`: the smallest training time.
    - `seed`: the seed of batches, times and noise.
    - `checkpoint_dir`: a folder for checkpoints, written every `checkpoint_every` steps
      (default: at the end of each level) and at the end.
    - `resume`: continue from the checkpoint in `checkpoint_dir` if there is one (the
      training configuration must match).
    - `scaling`: the data's [`PixelScaling`][numpyro_fsdiff.data.PixelScaling], recorded in
      checkpoints.
    - `eval_data`, `eval_every`, `eval_shape`: held-out fields evaluated with
      [`heldout_loss`][numpyro_fsdiff.heldout_loss] (fixed key) on `eval_shape` (default the
      finest level) every `eval_every` steps and at the end; recorded in the history.
    - `log_every`: steps per history record and progress-bar update.
    - `progress`: show a tqdm progress bar (loss, samples/s, resolution).
    - `metadata`: JSON-able facts to record in checkpoints (dataset, command line, ...).
    - `stop_after`: stop (and checkpoint) after this global step, as an interruption would.
    - `batched`: evaluate batches with `network.batched(xs, ts)` rather than `jax.vmap`
      (default: if the network's class defines `batched`, as
      [`FNO`][numpyro_fsdiff.nn.FNO] does).
    - `mesh`: a device mesh (e.g. [`data_mesh`][numpyro_fsdiff.data_mesh]()) for data-parallel
      training: each batch is split across the devices of its `"data"` axis (`batch_size`
      must be a multiple of their number), the weights, their EMA and the optimiser state are
      replicated, and `jit` partitions the same step, summing the gradients over devices. The
      batches, times and noise are those of `mesh=None`, so the loss curve is the same up to
      float rounding. On several processes (after `jax.distributed.initialize()`), `data` is
      this process's part of the dataset (see [`load`][numpyro_fsdiff.data.load]'s
      `process_slice`) and each process draws `batch_size / jax.process_count()` fields of
      every batch from it ([`global_batch`][numpyro_fsdiff.global_batch]); checkpoints are
      gathered to the host and written by process 0.

    **Returns:** a [`TrainResult`][numpyro_fsdiff.TrainResult].

    **Raises:** `ValueError` for bad arguments; `TrainingDivergedError` on a non-finite loss.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern
        from numpyro_fsdiff.nn import FNO

        sde = VPSDE(Matern(alpha=2.0, tau=3.0))
        x_train = Matern(1.5, 2.0, 2.0).sample(jax.random.key(0), Grid((16, 16)), (32,))
        levels = [(8, 3), (16, 2)]  # 3 steps at 8 x 8, then 2 at 16 x 16; real runs: thousands
        network = FNO(modes=3, width=4, depth=1, key=jax.random.key(1))
        result = train(network, sde, x_train, levels, batch_size=8, progress=False)
        score = NoisePredictionScore(result.network, sde)
        ```

    ??? cite "References"

        Song et al., *Score-Based Generative Modeling through Stochastic Differential
        Equations*, ICLR 2021. Hagemann et al., *Multilevel Diffusion: Infinite Dimensional
        Score-Based Diffusion Models for Image Generation*, 2023.
    """
    levels = parse_levels(levels)
    if not isinstance(sde, VPSDE):
        raise ValueError(f"`sde` must be a VPSDE; got {sde!r}.")
    data = jnp.asarray(data)
    if data.ndim != 3 or min(data.shape[1:]) < 2:
        raise ValueError(f"`data` must have shape (num, n1, n2); got {data.shape}.")
    if not bool(jnp.all(jnp.isfinite(data))):
        raise ValueError("`data` contains NaN or inf values.")
    num = data.shape[0]
    batched = has_batched_path(network) if batched is None else bool(batched)
    batch_size = _check_int("batch_size", batch_size, 1)
    local_batch, stream = batch_size, ()
    if mesh is not None:
        check_divisible("batch_size", batch_size, mesh)
        processes = jax.process_count()
        if batch_size % processes:
            raise ValueError(
                f"`batch_size` = {batch_size} must be a multiple of the {processes} processes."
            )
        local_batch = batch_size // processes
        stream = () if processes == 1 else (jax.process_index(),)
    if local_batch > num:
        raise ValueError(f"`batch_size` must be <= the number of fields {num}; got {batch_size}.")
    total = sum(level.steps for level in levels)
    if lr_schedule not in ("global", "per-level"):
        raise ValueError(f"`lr_schedule` must be 'global' or 'per-level'; got {lr_schedule!r}.")
    warmup_steps = (
        min(1000, (total if lr_schedule == "global" else min(lv.steps for lv in levels)) // 20)
        if warmup_steps is None
        else _check_int("warmup_steps", warmup_steps, 0)
    )
    learning_rate = _check_float("learning_rate", learning_rate, 0.0, lo_open=True)
    final_learning_rate = (
        learning_rate / 20
        if final_learning_rate is None
        else _check_float("final_learning_rate", final_learning_rate, 0.0)
    )
    weight_decay = _check_float("weight_decay", weight_decay, 0.0)
    clip_norm = _check_float("clip_norm", clip_norm, 0.0, lo_open=True, allow_none=True)
    ema_decay = _check_float("ema_decay", ema_decay, 0.0)
    if ema_decay >= 1:
        raise ValueError(f"`ema_decay` must be in [0, 1); got {ema_decay}.")
    if method not in ("spectral", "area"):
        raise ValueError(f"`method` must be 'spectral' or 'area'; got {method!r}.")
    t_eps = _check_float("t_eps", t_eps, 0.0, lo_open=True)
    log_every = _check_int("log_every", log_every, 1)
    if checkpoint_every is not None:
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
    if eval_every is not None:
        eval_every = _check_int("eval_every", eval_every, 1)
    if eval_data is not None:
        eval_data = jnp.asarray(eval_data)
        if eval_data.ndim != 3:
            raise ValueError(f"`eval_data` must have shape (num, n1, n2); got {eval_data.shape}.")
    eval_shape = levels[-1].shape if eval_shape is None else Grid(eval_shape).shape
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs a `checkpoint_dir` to resume from.")
    lengths = Grid((2, 2), lengths).lengths
    stop_at = total if stop_after is None else min(total, _check_int("stop_after", stop_after, 1))

    config = dict(
        levels=[[list(level.shape), level.steps] for level in levels],
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        final_learning_rate=final_learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        ema_decay=ema_decay,
        lr_schedule=lr_schedule,
        method=method,
        t_eps=t_eps,
        seed=int(seed),
        num_data=int(num),
        data_shape=list(data.shape[1:]),
    )
    optimizer, schedule = make_optimizer(
        tuple(level.steps for level in levels),
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        final_learning_rate=final_learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        lr_schedule=lr_schedule,
    )
    params, static = eqx.partition(network, eqx.is_inexact_array)
    ema = jax.tree.map(jnp.copy, params)
    opt_state = optimizer.init(params)
    step, history, wall_time, cpu_time = 0, [], 0.0, 0.0

    if resume and (Path(checkpoint_dir) / JSON_NAME).is_file():
        record = read_config(checkpoint_dir)
        saved = record.get("training", {})
        # Settings added after a checkpoint was written read as their defaults.
        saved = {"lr_schedule": "global", **saved}
        different = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if different:
            raise ValueError(
                "`resume=True` but the checkpoint in `checkpoint_dir` was trained with a "
                f"different configuration (saved, now): {different}."
            )
        (params, ema, opt_state), record = load_state(checkpoint_dir, (params, ema, opt_state))
        step = record["step"]
        history = list(record.get("history", []))
        wall_time = float(record.get("wall_time", 0.0))
        cpu_time = float(record.get("cpu_time", 0.0))
    if mesh is not None:
        params, ema, opt_state = replicate((params, ema, opt_state), mesh)

    def checkpoint(at_step):
        if checkpoint_dir is None:
            return
        if not bool(_all_finite((params, ema))):
            raise TrainingDivergedError(
                f"the weights became NaN or inf by step {at_step}; training stopped and the "
                f"last good checkpoint in {checkpoint_dir} is kept."
            )
        state = (params, ema, opt_state)
        if mesh is not None:
            if jax.process_index() != 0:
                return
            state = jax.device_get(state)  # replicated: every process holds the whole state
        save_checkpoint(
            checkpoint_dir,
            eqx.combine(state[1], static),
            sde,
            scaling=scaling,
            lengths=lengths,
            step=at_step,
            training=config,
            history=history,
            state=state,
            extra={"wall_time": wall_time, "cpu_time": cpu_time, "metadata": metadata or {}},
        )

    def evaluate(at_step):
        loss = heldout_loss(
            eqx.combine(ema, static),
            sde,
            eval_data,
            shape=eval_shape,
            lengths=lengths,
            method=method,
            t_eps=t_eps,
            key=jax.random.key(int(seed) + 1),
            batched=batched,
        )
        history.append(
            dict(
                step=at_step,
                heldout_loss=loss,
                heldout_shape=list(eval_shape),
                wall_time=wall_time,
                cpu_time=cpu_time,
            )
        )
        return loss

    key = jax.random.key(int(seed))
    ema_decay_arr = jnp.asarray(ema_decay)
    t_eps_arr = jnp.asarray(t_eps)
    all_losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=stop_at,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )

    try:
        start = 0
        for index, level in enumerate(levels):
            end = start + level.steps
            if step >= end or step >= stop_at:
                start = end
                continue
            grid = Grid(level.shape, lengths)
            level_data = _bring_to(data, level.shape, method)
            if mesh is not None:
                level_data = np.asarray(level_data)  # batches are cut on the host
            pending: list = []
            interval_start = time.perf_counter()
            interval_cpu = time.process_time()
            interval_steps = 0
            first = True
            while step < min(end, stop_at):
                tick = time.perf_counter()
                rows = _batch_indices(int(seed), index, step - start, num, local_batch, stream)
                if mesh is None:
                    batch_data, indices = level_data, jnp.asarray(rows)
                else:
                    batch_data, indices = global_batch(level_data[rows], mesh), None
                params, ema, opt_state, loss = _train_step(
                    params,
                    ema,
                    opt_state,
                    static,
                    optimizer,
                    sde,
                    batch_data,
                    indices,
                    jax.random.fold_in(key, step),
                    jnp.asarray(step, jnp.float32),
                    ema_decay_arr,
                    grid,
                    t_eps_arr,
                    batched,
                )
                if first:
                    loss.block_until_ready()
                    history.append(
                        dict(
                            step=step,
                            level=index,
                            compile_and_first_step=time.perf_counter() - tick,
                            resolution=list(level.shape),
                        )
                    )
                    first = False
                pending.append(loss)
                step += 1
                interval_steps += 1
                at_boundary = step == min(end, stop_at)
                due_checkpoint = checkpoint_every is not None and step % checkpoint_every == 0
                due_eval = (
                    eval_data is not None and eval_every is not None and step % eval_every == 0
                )
                if step % log_every == 0 or at_boundary or due_checkpoint or due_eval:
                    values = np.asarray(jnp.stack(pending), dtype=np.float64)
                    now = time.perf_counter()
                    elapsed = now - interval_start
                    wall_time += elapsed
                    cpu_time += time.process_time() - interval_cpu
                    bad = np.flatnonzero(~np.isfinite(values))
                    if bad.size:
                        at = step - len(values) + int(bad[0])
                        raise TrainingDivergedError(
                            f"the training loss became {values[bad[0]]} at step {at} (level "
                            f"{index}, resolution {level.shape}); training stopped. "
                            + (
                                f"The last good checkpoint in {checkpoint_dir} is kept."
                                if checkpoint_dir is not None
                                else "No checkpoint was kept (pass `checkpoint_dir` to keep one)."
                            )
                        )
                    all_losses.extend(values.tolist())
                    history.append(
                        dict(
                            step=step,
                            level=index,
                            resolution=list(level.shape),
                            loss=float(values.mean()),
                            learning_rate=float(schedule(step - 1)),
                            samples_per_second=interval_steps * batch_size / max(elapsed, 1e-9),
                            wall_time=wall_time,
                            cpu_time=cpu_time,
                        )
                    )
                    if bar is not None:
                        bar.update(len(values))
                        bar.set_postfix(
                            loss=f"{values.mean():.4f}",
                            res="x".join(map(str, level.shape)),
                            samples_s=f"{interval_steps * batch_size / max(elapsed, 1e-9):.0f}",
                        )
                    pending = []
                    if due_eval:
                        evaluate(step)
                    if due_checkpoint or (at_boundary and checkpoint_every is None):
                        checkpoint(step)
                    interval_start = time.perf_counter()
                    interval_cpu = time.process_time()
                    interval_steps = 0
            start = end
        if eval_data is not None and not (
            history and history[-1].get("step") == step and "heldout_loss" in history[-1]
        ):
            evaluate(step)
        checkpoint(step)
    finally:
        if bar is not None:
            bar.close()

    return TrainResult(
        network=eqx.combine(ema, static),
        raw_network=eqx.combine(params, static),
        opt_state=opt_state,
        step=step,
        losses=np.asarray(all_losses),
        history=json.loads(json.dumps(history)),
        wall_time=wall_time,
        cpu_time=cpu_time,
    )


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (SIGINT, Ctrl-C); the state of `step` was checkpointed.

    **Attributes:** `step`: the last completed step; `checkpoint_dir`: the folder holding the
    checkpoint of that step (a `pathlib.Path`), or `None` when no `checkpoint_dir` was given.
    """

    def __init__(self, step: int, checkpoint_dir=None):
        self.step = step
        self.checkpoint_dir = checkpoint_dir
        where = (
            f"checkpoint saved in {checkpoint_dir}"
            if checkpoint_dir is not None
            else "no checkpoint written (no checkpoint_dir)"
        )
        super().__init__(f"training interrupted at step {step}; {where}")
