r"""Multilevel denoising score-matching training with optax, an EMA of the weights and checkpoints.

The network $\varepsilon_\theta(x, t)$ predicts the noise: with $X_t = m_t X_0 + \sigma_t\eta$,
$\eta \sim N(0, Q)$, the loss is [`dsm_loss`][numpyro_fsdiff.dsm_loss]

$$L(\theta) = \mathbb{E}_{t \sim U(t_\varepsilon, T)}\,\mathbb{E}\,
\|\varepsilon_\theta(X_t, t) - \eta\|^2_{L^2(D)},$$

the Q-score matching loss with the weight $w(t) = \sigma_t^2$, and the score is
$S_\theta = -\varepsilon_\theta/\sigma_t$
([`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore]).

The trainer is made of small parts: a validated [`TrainConfig`][numpyro_fsdiff.TrainConfig], a
[`TrainState`][numpyro_fsdiff.TrainState] pytree, the pure step
[`train_step`][numpyro_fsdiff.train_step], a deterministic
[`BatchSchedule`][numpyro_fsdiff.BatchSchedule] and callbacks (progress, evaluation,
checkpoints) that [`train`][numpyro_fsdiff.train] runs.
"""

import dataclasses
import json
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
from jax.sharding import Mesh

from ._checkpoint import JSON_NAME, load_state, read_config, save_checkpoint
from ._custom_types import Array, ArrayLike, Float, PRNGKeyArray
from ._grid import Grid, resample
from ._loss import NoisePredictor, TimeWindow, dsm_loss
from ._sde import VPSDE
from ._sharding import check_divisible, global_batch, replicate
from ._train_config import Level as Level
from ._train_config import TrainConfig as TrainConfig
from ._train_config import _resolve_key, _resolve_resampling
from ._train_config import key_to_seed as key_to_seed
from ._train_config import make_optimizer as make_optimizer
from ._train_config import parse_levels as parse_levels
from ._train_config import seed_to_key as seed_to_key
from ._train_step import BatchSchedule as BatchSchedule
from ._train_step import TrainState as TrainState
from ._train_step import level_order as level_order
from ._train_step import train_step as train_step
from ._validation import check_data
from .data._scaling import PixelScaling


class TrainingDivergedError(FloatingPointError):
    """Raised when the training loss (or a weight) becomes NaN or infinite."""


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


@eqx.filter_jit
def _all_finite(tree) -> Array:
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _bring_to(data: Array, shape, method: str, chunk: int = 4096) -> Array:
    """`data` resampled to `shape`, in chunks to bound the memory of the FFTs."""
    if tuple(data.shape[-2:]) == tuple(shape):
        return jnp.asarray(data)
    fn = jax.jit(lambda u: resample(u, shape, resampling=method))
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
    resampling: Literal["spectral", "area"] | None = None,
    t_eps: float = 1e-3,
    batched: bool | None = None,
    method: Literal["spectral", "area"] | None = None,
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
    - `resampling`: how data are brought to `shape` (`"spectral"` or `"area"`; the old
      name `method` is deprecated).
    - `t_eps`: the smallest time.
    - `batched`: use `network.batched` (default: if the network's class defines it).

    **Returns:** the mean loss, a Python float.
    """
    resampling = _resolve_resampling(resampling, method)
    data = check_data("data", data, ndim=3)
    shape = tuple(data.shape[-2:]) if shape is None else Grid(shape).shape
    data = _bring_to(data, shape, resampling)
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


@dataclasses.dataclass
class TrainLog:
    """The records of a run that callbacks read and extend (mutable, not a pytree).

    - `config`: the [`TrainConfig`][numpyro_fsdiff.TrainConfig].
    - `step`: the global step reached.
    - `level`: the level of the last step.
    - `history`: the records (JSON-able dicts) since the start of training.
    - `losses`: the loss of every step run in this call.
    - `wall_time`, `cpu_time`: training seconds (evaluation excluded) since the start.
    """

    config: TrainConfig
    step: int = 0
    level: int = 0
    history: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    wall_time: float = 0.0
    cpu_time: float = 0.0


class Callback:
    """A hook of [`train`][numpyro_fsdiff.train]: `on_log` at every history record (after the
    losses were found finite), `on_end` once after the last step, `close` always at exit.
    Subclass it and pass instances as `train(..., callbacks=[...])`."""

    def on_log(self, state: TrainState, log: TrainLog) -> None:
        pass

    def on_end(self, state: TrainState, log: TrainLog) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm progress bar (loss, samples/s, resolution) on stderr."""

    def __init__(self, total: int, initial: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        self.shown = initial

    def on_log(self, state, log):
        record = log.history[-1]
        self.bar.update(log.step - self.shown)
        self.shown = log.step
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            res="x".join(map(str, record["resolution"])),
            samples_s=f"{record['samples_per_second']:.0f}",
        )

    def close(self):
        self.bar.close()


class HeldoutEvaluation(Callback):
    """The [`heldout_loss`][numpyro_fsdiff.heldout_loss] of the EMA network on `eval_data`
    (key `seed_to_key(seed + 1)`), every `eval_every` steps and at the end, in the history."""

    def __init__(self, sde: VPSDE, eval_data, config: TrainConfig, batched: bool):
        self.sde, self.data, self.config, self.batched = sde, eval_data, config, batched

    def evaluate(self, state: TrainState, log: TrainLog) -> float:
        config = self.config
        loss = heldout_loss(
            state.ema,
            self.sde,
            self.data,
            shape=config.eval_shape,
            lengths=config.lengths,
            resampling=config.resampling,
            t_eps=config.t_eps,
            key=seed_to_key(config.seed + 1),
            batched=self.batched,
        )
        log.history.append(
            dict(
                step=log.step,
                heldout_loss=loss,
                heldout_shape=list(config.eval_shape),
                wall_time=log.wall_time,
                cpu_time=log.cpu_time,
            )
        )
        return loss

    def on_log(self, state, log):
        every = self.config.eval_every
        if every is not None and log.step % every == 0:
            self.evaluate(state, log)

    def on_end(self, state, log):
        last = log.history[-1] if log.history else {}
        if not (last.get("step") == log.step and "heldout_loss" in last):
            self.evaluate(state, log)


class Checkpointer(Callback):
    """Writes checkpoints to `folder`: every `checkpoint_every` steps (default: at the end of each
    level), at the end, and on an interruption; only from finite weights."""

    def __init__(
        self, folder, sde, config, record, *, scaling, metadata, mesh, saved_step, batches
    ):
        self.folder = None if folder is None else Path(folder)
        self.sde, self.config, self.record = sde, config, record
        self.scaling, self.metadata, self.mesh = scaling, metadata, mesh
        self.saved_step = saved_step  # the step of the checkpoint in `folder`, if any
        self.batches = batches

    def due(self, step: int) -> bool:
        every = self.config.checkpoint_every
        if every is not None:
            return step % every == 0
        return step == self.config.stop_at or self.batches.is_boundary(step)

    def next_due(self, step: int) -> int:
        return next(n for n in range(step + 1, self.config.stop_at + 1) if self.due(n))

    def kept(self) -> str:
        """What a user has left after a failure, in words."""
        if self.folder is None:
            return "No checkpoint was kept (pass `checkpoint_dir` to keep one)."
        if self.saved_step is None:
            return (
                f"No checkpoint was written yet, so {self.folder} holds none: the first was due "
                f"at step {self.next_due(0)}."
            )
        return f"The last good checkpoint (step {self.saved_step}) in {self.folder} is kept."

    def save(self, state: TrainState, log: TrainLog) -> None:
        if self.folder is None:
            return
        if not bool(_all_finite((state.network, state.ema))):
            raise TrainingDivergedError(
                f"the weights became NaN or inf by step {log.step}; training stopped. "
                + self.kept()
            )
        leaves, ema = state.leaves(), state.ema
        if self.mesh is not None:
            if jax.process_index() != 0:
                return
            leaves, ema = jax.device_get((leaves, ema))  # replicated: the whole state
        save_checkpoint(
            self.folder,
            ema,
            self.sde,
            scaling=self.scaling,
            lengths=self.config.lengths,
            step=log.step,
            training=self.record,
            history=log.history,
            state=leaves,
            extra={
                "wall_time": log.wall_time,
                "cpu_time": log.cpu_time,
                "metadata": self.metadata or {},
            },
        )
        self.saved_step = log.step

    def on_log(self, state, log):
        if self.due(log.step):
            self.save(state, log)

    def on_end(self, state, log):
        self.save(state, log)


class _Trainer:
    """One call of [`train`][numpyro_fsdiff.train]: the data, the state and the loop.

    Its attributes are the run's explicit state (the `TrainState`, the `TrainLog`, the losses not
    yet logged and the interval's timers); each method does one thing to them.
    """

    def __init__(self, network, sde, data, config: TrainConfig, *, checkpoint_dir, resume,
                 scaling, eval_data, metadata, mesh, callbacks):  # fmt: skip
        if not isinstance(sde, VPSDE):
            raise ValueError(f"`sde` must be a VPSDE; got {sde!r}.")
        data = check_data("data", data, ndim=3)
        if min(data.shape[1:]) < 2:
            raise ValueError(
                f"`data` must have shape (num, n1, n2), n1, n2 >= 2; got {data.shape}."
            )
        if resume and checkpoint_dir is None:
            raise ValueError("`resume=True` needs a `checkpoint_dir` to resume from.")
        local_batch, stream = self._local_batch(config, mesh, data.shape[0])
        self.config, self.sde, self.data, self.mesh = config, sde, data, mesh
        self.batched = has_batched_path(network) if config.batched is None else config.batched
        self.time_sampler = (
            None
            if config.time_window is None
            else TimeWindow(*config.time_window, t_eps=config.t_eps, T=sde.T)
        )
        self.optimizer, self.schedule = config.optimizer()
        self.batches = BatchSchedule(config, data.shape[0], local_batch, stream)
        record = config.record(data.shape)
        self.state, self.log = TrainState.init(network, self.optimizer), TrainLog(config)
        saved_step = None
        if resume and (Path(checkpoint_dir) / JSON_NAME).is_file():
            self._resume(checkpoint_dir, record)
            saved_step = self.log.step
        if mesh is not None:
            self.state = self.state.with_leaves(replicate(self.state.leaves(), mesh), self.log.step)
        self.checkpointer = Checkpointer(checkpoint_dir, sde, config, record, scaling=scaling,
                                         metadata=metadata, mesh=mesh, saved_step=saved_step,
                                         batches=self.batches)  # fmt: skip
        self.callbacks = [ProgressBar(config.stop_at, self.log.step)] if config.progress else []
        self.evaluation = None
        if eval_data is not None:
            eval_data = check_data("eval_data", eval_data, ndim=3)
            self.evaluation = HeldoutEvaluation(sde, eval_data, config, self.batched)
            self.callbacks.append(self.evaluation)
        self.callbacks += [self.checkpointer, *callbacks]
        self.level_data: dict = {}
        self.pending: list = []

    @staticmethod
    def _local_batch(config, mesh, num):
        local_batch, stream = config.batch_size, ()
        if mesh is not None:
            check_divisible("batch_size", config.batch_size, mesh)
            processes = jax.process_count()
            if config.batch_size % processes:
                raise ValueError(
                    f"`batch_size` = {config.batch_size} must be a multiple of the {processes} "
                    "processes."
                )
            local_batch = config.batch_size // processes
            stream = () if processes == 1 else (jax.process_index(),)
        if local_batch > num:
            raise ValueError(
                f"`batch_size` must be <= the number of fields {num}; got {config.batch_size}."
            )
        return local_batch, stream

    def _resume(self, folder, record):
        saved = read_config(folder).get("training", {})
        # Settings added after a checkpoint was written read as their defaults.
        saved = {"lr_schedule": "global", "level_schedule": "sequential", **saved}
        different = {k: (saved.get(k), v) for k, v in record.items() if saved.get(k) != v}
        if different:
            raise ValueError(
                "`resume=True` but the checkpoint in `checkpoint_dir` was trained with a "
                f"different configuration (saved, now): {different}."
            )
        leaves, saved_record = load_state(folder, self.state.leaves())
        self.state = self.state.with_leaves(leaves, saved_record["step"])
        self.log.step = saved_record["step"]
        self.log.history = list(saved_record.get("history", []))
        self.log.wall_time = float(saved_record.get("wall_time", 0.0))
        self.log.cpu_time = float(saved_record.get("cpu_time", 0.0))

    def _batch(self, level: int, rows: np.ndarray):
        if level not in self.level_data:
            if self.batches.sequential:
                self.level_data.clear()  # one level's data in memory at a time
            level_data = _bring_to(
                self.data, self.config.levels[level].shape, self.config.resampling
            )
            self.level_data[level] = level_data if self.mesh is None else np.asarray(level_data)
        if self.mesh is None:
            return self.level_data[level][jnp.asarray(rows)]
        return global_batch(self.level_data[level][rows], self.mesh)

    def run(self) -> TrainResult:
        try:
            try:
                self._loop()
                for callback in self.callbacks:
                    callback.on_end(self.state, self.log)
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:
                self._interrupted()
        finally:
            for callback in self.callbacks:
                callback.close()
        log = self.log
        return TrainResult(
            network=self.state.ema,
            raw_network=self.state.network,
            opt_state=self.state.opt_state,
            step=log.step,
            losses=np.asarray(log.losses),
            history=json.loads(json.dumps(log.history)),
            wall_time=log.wall_time,
            cpu_time=log.cpu_time,
        )

    def _loop(self):
        config, log = self.config, self.log
        key, seen = config.key, set()
        grids = [Grid(level.shape, config.lengths) for level in config.levels]
        ema_decay, t_eps = jnp.asarray(config.ema_decay), jnp.asarray(config.t_eps)
        time_sampler = self.time_sampler
        self._start_interval()
        while log.step < config.stop_at:
            tick = time.perf_counter()
            level, rows = self.batches.indices(log.step)
            self.state, loss = train_step(
                self.state,
                self._batch(level, rows),
                jax.random.fold_in(key, log.step),
                optimizer=self.optimizer,
                sde=self.sde,
                grid=grids[level],
                t_eps=t_eps,
                ema_decay=ema_decay,
                batched=self.batched,
                time_sampler=time_sampler,
            )
            self.pending.append(loss)
            if level not in seen:
                loss.block_until_ready()
                log.history.append(
                    dict(
                        step=log.step,
                        level=level,
                        compile_and_first_step=time.perf_counter() - tick,
                        resolution=list(config.levels[level].shape),
                    )
                )
                seen.add(level)
            log.step, log.level = log.step + 1, level
            if self._is_log_point(log.step):
                self._flush()
                for callback in self.callbacks:
                    callback.on_log(self.state, log)
                self._start_interval()

    def _is_log_point(self, step: int) -> bool:
        config = self.config
        return (
            step % config.log_every == 0
            or step == config.stop_at
            or self.batches.is_boundary(step)
            or (config.checkpoint_every is not None and step % config.checkpoint_every == 0)
            or (
                self.evaluation is not None
                and config.eval_every is not None
                and step % config.eval_every == 0
            )
        )

    def _start_interval(self):
        self.interval = (time.perf_counter(), time.process_time())

    def _flush(self):
        """Check the losses since the last record, and append the record of their mean."""
        log, config = self.log, self.config
        values = np.asarray(jnp.stack(self.pending), dtype=np.float64)
        self.pending = []
        elapsed = time.perf_counter() - self.interval[0]
        log.wall_time += elapsed
        log.cpu_time += time.process_time() - self.interval[1]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            at = log.step - len(values) + int(bad[0])
            level = int(self.batches.order[at])
            raise TrainingDivergedError(
                f"the training loss became {values[bad[0]]} at step {at} (level {level}, "
                f"resolution {config.levels[level].shape}); training stopped. "
                + self.checkpointer.kept()
            )
        log.losses.extend(values.tolist())
        log.history.append(
            dict(
                step=log.step,
                level=log.level,
                resolution=list(config.levels[log.level].shape),
                loss=float(values.mean()),
                learning_rate=float(self.schedule(log.step - 1)),
                samples_per_second=len(values) * config.batch_size / max(elapsed, 1e-9),
                wall_time=log.wall_time,
                cpu_time=log.cpu_time,
            )
        )

    def _interrupted(self):
        """On Ctrl-C: checkpoint the current state if it is finite, then raise
        `TrainingInterrupted` naming the step of the state that was kept."""
        log, checkpointer = self.log, self.checkpointer
        log.step = int(self.state.step)
        try:
            if self.pending:
                self._flush()
            checkpointer.save(self.state, log)
        except TrainingDivergedError:
            pass  # the last good checkpoint, if any, stays
        if checkpointer.folder is None or checkpointer.saved_step is None:
            raise TrainingInterrupted(log.step, None) from None
        raise TrainingInterrupted(checkpointer.saved_step, checkpointer.folder) from None


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
    level_schedule: str = "sequential",
    resampling: str | None = None,
    lengths=(1.0, 1.0),
    t_eps: float = 1e-3,
    time_window=None,
    key: PRNGKeyArray | None = None,
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
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    method: str | None = None,
) -> TrainResult:
    r"""Train a noise predictor by denoising score matching, coarse to fine.

    For each level `(resolution, steps)`, the data (given on their native grid) are brought to
    the level's grid with [`resample`][numpyro_fsdiff.resample] (`resampling`), and `steps`
    AdamW steps ([`train_step`][numpyro_fsdiff.train_step]) are taken on
    [`dsm_loss`][numpyro_fsdiff.dsm_loss], whose $L^2(D)$ quadrature makes the loss the same
    quantity on every grid. With `level_schedule="sequential"` the levels are trained one after
    the other; with `"interleaved"` their steps are spread over one run
    ([`level_order`][numpyro_fsdiff.level_order]), so the weights end fitted to every level. The
    same weights and optimiser state continue throughout. Gradients are clipped to a global
    norm of `clip_norm`; the learning rate warms up linearly over `warmup_steps` and then decays
    along a cosine to `final_learning_rate`, once over all steps (`lr_schedule="global"`) or
    afresh at each level (`"per-level"`, sequential only). An exponential moving average of the
    weights, $\bar\theta_n = d_n \bar\theta_{n-1} + (1 - d_n)\theta_n$ with
    $d_n = \min(d, (1 + n)/(10 + n))$, is the network returned and saved.

    Batches are epochs of a permutation seeded by `(s, level, epoch)` and the times and noise of
    step $n$ come from `fold_in(key, n)`, where $s$ = [`key_to_seed`][numpyro_fsdiff.key_to_seed]
    `(key)` (`s` for `jax.random.key(s)`), so a run is deterministic for a key and a resumed run
    repeats an uninterrupted one exactly. A NaN or infinite loss stops training with a
    [`TrainingDivergedError`][numpyro_fsdiff.TrainingDivergedError]; checkpoints are only
    written from finite states, so the last good one is kept. Ctrl-C (a `KeyboardInterrupt`)
    checkpoints the current state and raises
    [`TrainingInterrupted`][numpyro_fsdiff.TrainingInterrupted]; `resume=True` continues it.

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
    - `level_schedule`: `"sequential"` (each level in turn) or `"interleaved"` (one run that
      visits the levels in a fixed weighted round-robin, each its `steps` times).
    - `resampling`: `"spectral"` (default) or `"area"` (integer coarsening factors only).
    - `lengths`: the side lengths of the domain.
    - `t_eps`: the smallest training time.
    - `time_window`: `(fraction, low, high)` to draw that share of every batch's times in
      `[low, high]` and the rest uniformly ([`TimeWindow`][numpyro_fsdiff.TimeWindow]), or
      `None` (default) for the uniform draw on $[t_\varepsilon, T]$.
    - `key`: the PRNG key of batches, times and noise (default `jax.random.key(0)`).
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
    - `callbacks`: further [`Callback`][numpyro_fsdiff.Callback]s, run after the built-in
      progress bar, evaluation and checkpoints.
    - `seed`, `method`: deprecated names of `key` (`seed=s` is `key=jax.random.key(s)`) and
      `resampling`.

    **Returns:** a [`TrainResult`][numpyro_fsdiff.TrainResult].

    **Raises:** `ValueError` for bad arguments; `TrainingDivergedError` on a non-finite loss;
    `TrainingInterrupted` on Ctrl-C.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern
        from numpyro_fsdiff.nn import FNO

        sde = VPSDE(Matern(alpha=2.0, tau=3.0))
        x_train = Matern(1.5, 2.0, 2.0).sample(jax.random.key(0), Grid((16, 16)), (32,))
        levels = [(8, 3), (16, 2)]  # 3 steps at 8 x 8, then 2 at 16 x 16; real runs: thousands
        network = FNO(modes=3, width=4, depth=1, key=jax.random.key(1))
        result = train(network, sde, x_train, levels, batch_size=8, progress=False,
                       key=jax.random.key(2))
        score = NoisePredictionScore(result.network, sde)
        ```

    ??? cite "References"

        Song et al., *Score-Based Generative Modeling through Stochastic Differential
        Equations*, ICLR 2021. Hagemann et al., *Multilevel Diffusion: Infinite Dimensional
        Score-Based Diffusion Models for Image Generation*, 2023.
    """
    if seed is not None:
        seed = _resolve_key(key, seed)  # warns here, at the caller's line
        key = seed_to_key(seed)
    if method is not None:
        resampling = _resolve_resampling(resampling, method)
    config = TrainConfig(
        levels,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        final_learning_rate=final_learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        ema_decay=ema_decay,
        lr_schedule=lr_schedule,
        level_schedule=level_schedule,
        resampling=resampling,
        lengths=lengths,
        t_eps=t_eps,
        time_window=time_window,
        key=key,
        checkpoint_every=checkpoint_every,
        eval_every=eval_every,
        eval_shape=eval_shape,
        log_every=log_every,
        stop_after=stop_after,
        progress=progress,
        batched=batched,
    )
    trainer = _Trainer(network, sde, data, config, checkpoint_dir=checkpoint_dir, resume=resume,
                       scaling=scaling, eval_data=eval_data, metadata=metadata, mesh=mesh,
                       callbacks=list(callbacks))  # fmt: skip
    return trainer.run()
