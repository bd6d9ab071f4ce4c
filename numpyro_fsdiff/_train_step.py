r"""The training state, the pure training step and the deterministic batch schedule of
[`train`][numpyro_fsdiff.train]."""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Array, Float, PRNGKeyArray
from ._grid import Grid
from ._loss import TimeSampler, dsm_loss
from ._sde import VPSDE
from ._train_config import Level, TrainConfig


class TrainState(eqx.Module):
    r"""The state of training: a pytree, carried through [`train_step`][numpyro_fsdiff.train_step].

    - `network`: the last iterate $\theta_n$ of the optimiser (a whole network).
    - `ema`: the exponential moving average $\bar\theta_n$ of the weights (a whole network).
    - `opt_state`: the optax state of the trainable (inexact-array) leaves.
    - `step`: the number $n$ of steps taken (an int32 scalar array).

    !!! example

        ```python
        import optax
        from numpyro_fsdiff.nn import FNO

        network = FNO(modes=3, width=4, depth=1, key=jax.random.key(0))
        state = TrainState.init(network, optax.adam(1e-3))
        assert int(state.step) == 0
        ```
    """

    network: Any
    ema: Any
    opt_state: Any
    step: Array

    @classmethod
    def init(cls, network, optimizer: optax.GradientTransformation) -> "TrainState":
        """The state before the first step: the EMA equal to `network`, fresh optimiser state."""
        params = eqx.filter(network, eqx.is_inexact_array)
        ema = jax.tree.map(lambda x: jnp.copy(x) if eqx.is_inexact_array(x) else x, network)
        return cls(network, ema, optimizer.init(params), jnp.asarray(0, jnp.int32))

    def leaves(self) -> tuple:
        """`(params, ema params, opt_state)`: the trainable leaves, as checkpoints store them."""
        return (
            eqx.filter(self.network, eqx.is_inexact_array),
            eqx.filter(self.ema, eqx.is_inexact_array),
            self.opt_state,
        )

    def with_leaves(self, leaves, step) -> "TrainState":
        """This state with the trainable leaves `(params, ema params, opt_state)` and `step`."""
        params, ema, opt_state = leaves
        static = eqx.filter(self.network, eqx.is_inexact_array, inverse=True)
        ema_static = eqx.filter(self.ema, eqx.is_inexact_array, inverse=True)
        return TrainState(
            eqx.combine(params, static),
            eqx.combine(ema, ema_static),
            opt_state,
            jnp.asarray(step, jnp.int32),
        )


@eqx.filter_jit
def train_step(
    state: TrainState,
    batch: Float[Array, "batch n1 n2"],
    key: PRNGKeyArray,
    *,
    optimizer: optax.GradientTransformation,
    sde: VPSDE,
    grid: Grid,
    t_eps: float | Array = 1e-3,
    ema_decay: float | Array = 0.999,
    batched: bool = False,
    time_sampler: TimeSampler | None = None,
) -> tuple[TrainState, Float[Array, ""]]:
    r"""One optimiser step on [`dsm_loss`][numpyro_fsdiff.dsm_loss]: pure and jit-compiled.

    With $L(\theta)$ the DSM loss of `batch` at the times and noise of `key`, the step is
    $\theta_{n+1} = \theta_n + \mathrm{update}(\nabla L(\theta_n))$ (the `optimizer`'s update),
    then the EMA $\bar\theta_{n+1} = d_n\bar\theta_n + (1 - d_n)\theta_{n+1}$ with
    $d_n = \min(d, (1 + n)/(10 + n))$, $d$ = `ema_decay` and $n$ = `state.step`.

    **Arguments:**

    - `state`: the [`TrainState`][numpyro_fsdiff.TrainState].
    - `batch`: the fields of this step, shape `(batch, n1, n2)`, on `grid`.
    - `key`: the key of the times and noise ([`train`][numpyro_fsdiff.train] uses
      `fold_in(key, n)` at step $n$).
    - `optimizer`: an optax transformation (e.g. `TrainConfig.optimizer()[0]`).
    - `sde`, `grid`, `t_eps`: as in [`dsm_loss`][numpyro_fsdiff.dsm_loss].
    - `ema_decay`: $d$.
    - `batched`: use `network.batched(xs, ts)` rather than `jax.vmap` (static).
    - `time_sampler`: the training times' density, as in [`dsm_loss`][numpyro_fsdiff.dsm_loss]
      (static; [`train`][numpyro_fsdiff.train] draws them uniformly unless given a
      `time_window`).

    **Returns:** `(state, loss)`: the state after the step and the loss $L(\theta_n)$.

    !!! example

        ```python
        import optax
        from numpyro_fsdiff.covariance import Matern
        from numpyro_fsdiff.nn import FNO

        sde, grid = VPSDE(Matern(2.0, 3.0)), Grid((8, 8))
        batch = Matern(2.0, 3.0).sample(jax.random.key(0), grid, (4,))
        optimizer = optax.adam(1e-3)
        state = TrainState.init(FNO(modes=3, width=4, depth=1, key=jax.random.key(1)), optimizer)
        state, loss = train_step(state, batch, jax.random.key(2), optimizer=optimizer,
                                 sde=sde, grid=grid)
        assert int(state.step) == 1 and loss > 0
        ```
    """
    params, static = eqx.partition(state.network, eqx.is_inexact_array)

    def loss_fn(p):
        network = eqx.combine(p, static)
        return dsm_loss(network, sde, batch, key, grid=grid, t_eps=t_eps, batched=batched,
                        time_sampler=time_sampler)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    # A real average of the weights, with the usual warm-up of the decay.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p,
        eqx.filter(state.ema, eqx.is_inexact_array),
        params,
    )
    new = TrainState(
        eqx.combine(params, static),
        eqx.combine(ema, eqx.filter(state.ema, eqx.is_inexact_array, inverse=True)),
        opt_state,
        state.step + 1,
    )
    return new, loss


def level_order(levels: Sequence[Level], level_schedule: str = "sequential") -> np.ndarray:
    r"""The level index of every global step, shape `(sum of steps,)`.

    `"sequential"`: all steps of level 0, then of level 1, ... `"interleaved"`: a weighted
    round-robin. Level $i$ with $n_i$ steps is visited at the fractions
    $(j + \tfrac12)/n_i$, $j = 0, \dots, n_i - 1$, of the run, and the visits of all levels are
    taken in the order of these fractions (ties by level index). Each level is thus visited
    exactly $n_i$ times, spread evenly over the run, and the order is a fixed function of the
    step counts.

    !!! example

        ```python
        from numpyro_fsdiff._training import Level, level_order

        order = level_order([Level((8, 8), 2), Level((16, 16), 4)], "interleaved")
        assert order.tolist() == [1, 0, 1, 1, 0, 1]
        ```
    """
    counts = [level.steps for level in levels]
    ids = np.repeat(np.arange(len(counts)), counts)
    if level_schedule == "sequential":
        return ids
    if level_schedule != "interleaved":
        raise ValueError(
            f"`level_schedule` must be 'sequential' or 'interleaved'; got {level_schedule!r}."
        )
    positions = np.concatenate([(np.arange(n) + 0.5) / n for n in counts])
    return ids[np.lexsort((ids, positions))]


_PERMUTATIONS: dict = {}


def _permutation(seed, level, epoch, num, stream=()):
    key = (seed, level, epoch, num, stream)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng([seed, level, epoch, *stream]).permutation(num)
    return _PERMUTATIONS[key]


def _batch_indices(
    seed: int, level: int, level_step: int, num: int, batch: int, stream: tuple = ()
) -> np.ndarray:
    """Indices of the batch of `level_step`: epochs of a seeded permutation (no repeats).

    `stream` extends the seed (a process index on a multi-host run)."""
    per_epoch = num // batch
    epoch, position = divmod(level_step, per_epoch)
    perm = _permutation(seed, level, epoch, num, tuple(stream))
    return perm[position * batch : (position + 1) * batch]


class BatchSchedule(eqx.Module):
    r"""Which level and which fields each global step trains on: deterministic and stateless.

    Step $n$ trains on level `order[n]` ([`level_order`][numpyro_fsdiff.level_order]); it is
    that level's visit number `level_step[n]`, and its fields are the rows
    `level_step[n] mod e` $\cdot b$ ... of the permutation of the data seeded by
    `(seed, level, epoch)` ($b$ the batch size, $e$ = `num // b` batches per epoch). A resumed run
    therefore sees the batches of an uninterrupted one.

    !!! example

        ```python
        config = TrainConfig([(8, 3), (16, 3)], batch_size=4, level_schedule="interleaved")
        schedule = BatchSchedule(config, num=16)
        level, rows = schedule.indices(0)
        assert rows.shape == (4,) and len(set(rows.tolist())) == 4
        ```
    """

    order: np.ndarray
    level_step: np.ndarray
    seed: int = eqx.field(static=True)
    num: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    stream: tuple = eqx.field(static=True)
    sequential: bool = eqx.field(static=True)

    def __init__(self, config: TrainConfig, num: int, batch_size=None, stream=()):
        self.order = level_order(config.levels, config.level_schedule)
        visits = np.zeros_like(self.order)
        for i in range(len(config.levels)):
            at = self.order == i
            visits[at] = np.arange(int(at.sum()))
        self.level_step = visits
        self.seed = config.seed
        self.num = int(num)
        self.batch_size = config.batch_size if batch_size is None else int(batch_size)
        self.stream = tuple(stream)
        self.sequential = config.level_schedule == "sequential"

    def indices(self, step: int) -> tuple[int, np.ndarray]:
        """`(level index, row indices)` of global step `step`."""
        level = int(self.order[step])
        rows = _batch_indices(
            self.seed, level, int(self.level_step[step]), self.num, self.batch_size, self.stream
        )
        return level, rows

    def is_boundary(self, step: int) -> bool:
        """Whether `step` steps end a level: the last step, or (sequential) a change of level."""
        if step >= len(self.order):
            return True
        return bool(self.sequential and self.order[step] != self.order[step - 1])
