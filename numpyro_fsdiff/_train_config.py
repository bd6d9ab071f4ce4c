r"""The settings of [`train`][numpyro_fsdiff.train]: levels, the optimiser, the PRNG key, all
validated in [`TrainConfig`][numpyro_fsdiff.TrainConfig]."""

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import PRNGKeyArray
from ._grid import Grid


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


def _check_float(name, value, lo=None, lo_open=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number; got {value!r}.")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number; got {value!r}.") from None
    if not math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)):
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise ValueError(f"`{name}` must be a finite number {bound}; got {value!r}.")
    return value


def _check_int(name, value, lo, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"`{name}` must be an int >= {lo}; got {value!r}.")
    return int(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")
    return value


def key_to_seed(key: Any) -> int:
    r"""The integer that a PRNG key stands for in [`train`][numpyro_fsdiff.train].

    The key's raw data, $w_0, \dots, w_{m-1}$ (32-bit words), read as one integer
    $\sum_i w_i\, 2^{32(m - 1 - i)}$. For `jax.random.key(s)` with $0 \le s < 2^{32}$ (data
    `[0, s]`) this is `s`, so `key=jax.random.key(s)` and the deprecated `seed=s` run the same
    batches, times and noise.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        raise ValueError(
            f"`key` must be a PRNG key such as jax.random.key({key}); got the int {key!r}."
        )
    try:
        if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
            words = np.asarray(jax.random.key_data(key))
        else:
            words = np.asarray(key)
            if words.dtype != np.uint32:
                raise TypeError
    except TypeError:
        raise ValueError(f"`key` must be a PRNG key (jax.random.key(...)); got {key!r}.") from None
    if words.ndim != 1:
        raise ValueError(f"`key` must be a single PRNG key; got key data of shape {words.shape}.")
    seed = 0
    for word in words.tolist():
        seed = (seed << 32) | int(word)
    return seed


def seed_to_key(seed: int) -> PRNGKeyArray:
    """The default-implementation key whose [`key_to_seed`][numpyro_fsdiff.key_to_seed] is
    `seed` (`jax.random.key(seed)` for $0 \\le$ `seed` $< 2^{32}$), wrapping modulo the key
    size."""
    size = jax.random.key_data(jax.random.key(0)).shape[-1]
    seed = int(seed) % (1 << (32 * size))
    words = [(seed >> (32 * (size - 1 - i))) & 0xFFFFFFFF for i in range(size)]
    return jax.random.wrap_key_data(jnp.asarray(words, dtype=jnp.uint32))


def _resolve_key(key, seed) -> int:
    if seed is not None:
        if key is not None:
            raise ValueError("pass either `key` or the deprecated `seed`, not both.")
        warnings.warn(
            "`train(seed=...)` is deprecated; pass `key=jax.random.key(seed)`.",
            DeprecationWarning,
            stacklevel=3,
        )
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0; got {seed!r}.")
        return int(seed)
    return 0 if key is None else key_to_seed(key)


def _resolve_resampling(resampling, method, stacklevel=3):
    if method is not None:
        if resampling is not None:
            raise ValueError("pass either `resampling` or the deprecated `method`, not both.")
        warnings.warn(
            "the `method` argument of training is deprecated; pass `resampling=` instead.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        resampling = method
    resampling = "spectral" if resampling is None else resampling
    return _check_choice("resampling", resampling, ("spectral", "area"))


def _check_time_window(time_window, t_eps: float) -> tuple[float, float, float] | None:
    if time_window is None:
        return None
    try:
        fraction, low, high = (float(v) for v in time_window)
    except (TypeError, ValueError):
        raise ValueError(
            f"`time_window` must be None or (fraction, low, high); got {time_window!r}."
        ) from None
    if not 0.0 <= fraction <= 1.0 or not t_eps <= low < high:
        raise ValueError(
            "`time_window` = (fraction, low, high) needs 0 <= fraction <= 1 and "
            f"t_eps = {t_eps!r} <= low < high; got {time_window!r}."
        )
    return fraction, low, high


class TrainConfig(eqx.Module):
    r"""The validated settings of [`train`][numpyro_fsdiff.train] (all static, hashable).

    Built from the same keyword arguments as `train` (see there for their meaning); every
    argument is checked here, and an error names the argument and the value it received.
    Defaults that depend on others are resolved: `warmup_steps` (5% of all steps, or of the
    shortest level with `lr_schedule="per-level"`, at most 1000), `final_learning_rate`
    (`learning_rate / 20`), `eval_shape` (the finest level) and `stop_at` (all steps, or
    `stop_after`).

    **Raises:** `ValueError` naming the argument, what it received and what was expected.

    !!! example

        ```python
        config = TrainConfig([(8, 3), (16, 2)], batch_size=8, key=jax.random.key(1))
        assert config.total_steps == 5 and config.warmup_steps == 0 and config.seed == 1
        ```
    """

    levels: tuple[Level, ...] = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    warmup_steps: int = eqx.field(static=True)
    final_learning_rate: float = eqx.field(static=True)
    weight_decay: float = eqx.field(static=True)
    clip_norm: float | None = eqx.field(static=True)
    ema_decay: float = eqx.field(static=True)
    lr_schedule: str = eqx.field(static=True)
    level_schedule: str = eqx.field(static=True)
    resampling: str = eqx.field(static=True)
    lengths: tuple[float, float] = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)
    time_window: tuple[float, float, float] | None = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    checkpoint_every: int | None = eqx.field(static=True)
    eval_every: int | None = eqx.field(static=True)
    eval_shape: tuple[int, int] | None = eqx.field(static=True)
    log_every: int = eqx.field(static=True)
    stop_at: int = eqx.field(static=True)
    progress: bool = eqx.field(static=True)
    batched: bool | None = eqx.field(static=True)

    def __init__(
        self,
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
        level_schedule: str = "sequential",
        resampling: str | None = None,
        lengths=(1.0, 1.0),
        t_eps: float = 1e-3,
        time_window=None,
        key: PRNGKeyArray | None = None,
        checkpoint_every: int | None = None,
        eval_every: int | None = None,
        eval_shape=None,
        log_every: int = 50,
        stop_after: int | None = None,
        progress: bool = True,
        batched: bool | None = None,
        seed: int | None = None,
        method: str | None = None,
    ):
        self.levels = parse_levels(levels)
        total = sum(level.steps for level in self.levels)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.lr_schedule = _check_choice("lr_schedule", lr_schedule, ("global", "per-level"))
        self.level_schedule = _check_choice(
            "level_schedule", level_schedule, ("sequential", "interleaved")
        )
        if self.level_schedule == "interleaved" and self.lr_schedule == "per-level":
            raise ValueError(
                "`lr_schedule` must be 'global' with `level_schedule='interleaved'` (one "
                "schedule over the interleaved levels); got 'per-level'."
            )
        shortest = total if lr_schedule == "global" else min(lv.steps for lv in self.levels)
        self.warmup_steps = (
            min(1000, shortest // 20)
            if warmup_steps is None
            else _check_int("warmup_steps", warmup_steps, 0)
        )
        self.learning_rate = _check_float("learning_rate", learning_rate, 0.0, lo_open=True)
        self.final_learning_rate = (
            self.learning_rate / 20
            if final_learning_rate is None
            else _check_float("final_learning_rate", final_learning_rate, 0.0)
        )
        self.weight_decay = _check_float("weight_decay", weight_decay, 0.0)
        self.clip_norm = _check_float("clip_norm", clip_norm, 0.0, lo_open=True, allow_none=True)
        self.ema_decay = _check_float("ema_decay", ema_decay, 0.0)
        if self.ema_decay >= 1:
            raise ValueError(f"`ema_decay` must be in [0, 1); got {ema_decay!r}.")
        self.resampling = _resolve_resampling(resampling, method, stacklevel=4)
        self.lengths = Grid((2, 2), lengths).lengths
        self.t_eps = _check_float("t_eps", t_eps, 0.0, lo_open=True)
        self.time_window = _check_time_window(time_window, self.t_eps)
        self.seed = _resolve_key(key, seed)
        self.checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1, True)
        self.eval_every = _check_int("eval_every", eval_every, 1, True)
        self.eval_shape = self.levels[-1].shape if eval_shape is None else Grid(eval_shape).shape
        self.log_every = _check_int("log_every", log_every, 1)
        stop_after = _check_int("stop_after", stop_after, 1, True)
        self.stop_at = total if stop_after is None else min(total, stop_after)
        self.progress = bool(progress)
        self.batched = None if batched is None else bool(batched)

    @property
    def total_steps(self) -> int:
        """All steps of all levels."""
        return sum(level.steps for level in self.levels)

    @property
    def key(self) -> PRNGKeyArray:
        """The PRNG key of the times and noise (step $n$ uses `fold_in(key, n)`)."""
        return seed_to_key(self.seed)

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """The optimiser and learning-rate schedule: clipped AdamW, linear warm-up, cosine decay."""
        return make_optimizer(
            tuple(level.steps for level in self.levels),
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps,
            final_learning_rate=self.final_learning_rate,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            lr_schedule=self.lr_schedule,
        )

    def record(self, data_shape) -> dict:
        """The JSON record saved in checkpoints and compared on resume."""
        return dict(
            levels=[[list(level.shape), level.steps] for level in self.levels],
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps,
            final_learning_rate=self.final_learning_rate,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            ema_decay=self.ema_decay,
            lr_schedule=self.lr_schedule,
            level_schedule=self.level_schedule,
            method=self.resampling,
            t_eps=self.t_eps,
            time_window=None if self.time_window is None else list(self.time_window),
            seed=self.seed,
            num_data=int(data_shape[0]),
            data_shape=list(data_shape[1:]),
        )
