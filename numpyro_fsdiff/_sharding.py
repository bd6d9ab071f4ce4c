r"""Data parallelism through JAX's own sharding: meshes, sharded batches, per-process data.

Nothing here moves data by hand: arrays are placed with `jax.device_put` and a
`jax.sharding.NamedSharding`, `jit` partitions the computation (inserting the all-reduce
of data-parallel gradients itself), and independent work (samples, chains) runs on each
device's block through `jax.shard_map`. On several hosts, call `jax.distributed.initialize()`
first; `jax.devices()` then lists every device of every process, and each process feeds its
own slice of the data ([`process_slice`][numpyro_fsdiff.process_slice],
[`global_batch`][numpyro_fsdiff.global_batch]).
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""The name of the mesh axis that batches, samples and chains are split along."""


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-dimensional device mesh for data parallelism.

    **Arguments:**

    - `devices`: the devices to use (default: all of `jax.devices()`, every process's).
    - `axis_name`: the mesh axis name that batch axes are sharded along.

    **Returns:** a `jax.sharding.Mesh` with the one axis `axis_name`.

    **Raises:** `ValueError` for an empty `devices`.

    !!! example

        ```python
        mesh = data_mesh()                      # every device
        mesh = data_mesh(jax.devices()[:2])     # the first two
        ```
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must name at least one device; got none.")
    return Mesh(np.array(devices), (axis_name,))


def check_mesh(mesh: Any, axis_name: str = DATA_AXIS) -> Mesh:
    """`mesh` if it is a `jax.sharding.Mesh` with the axis `axis_name`; else a `ValueError`."""
    if not isinstance(mesh, Mesh) or axis_name not in mesh.shape:
        raise ValueError(
            f"`mesh` must be a jax.sharding.Mesh with an axis {axis_name!r} (e.g. "
            f"`numpyro_fsdiff.data_mesh()`); got {mesh!r}."
        )
    return mesh


def check_divisible(name: str, size: int, mesh: Mesh, axis_name: str = DATA_AXIS) -> None:
    """Raise a `ValueError` naming `name` unless `size` splits evenly over the mesh axis."""
    count = check_mesh(mesh, axis_name).shape[axis_name]
    if size % count != 0:
        raise ValueError(
            f"`{name}` = {size} must be a multiple of the {count} devices of mesh axis "
            f"{axis_name!r} to be sharded evenly."
        )


def shard_leading_axis(tree, mesh: Mesh, axis_name: str = DATA_AXIS):
    """Place every array of `tree` on `mesh`, split along its leading (batch) axis.

    **Arguments:**

    - `tree`: a PyTree of arrays whose leading axes are multiples of the mesh axis size.
    - `mesh`: the device mesh.
    - `axis_name`: the mesh axis to split along.

    **Returns:** the same PyTree, each array a global `jax.Array` split across the devices.
    """
    sharding = NamedSharding(check_mesh(mesh, axis_name), PartitionSpec(axis_name))
    return jax.device_put(tree, sharding)


def replicate(tree, mesh: Mesh):
    """Place every array of `tree` whole on every device of `mesh` (e.g. parameters).

    **Returns:** the same PyTree, each array replicated over the mesh.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh; got {mesh!r}.")
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def global_batch(local, mesh: Mesh, axis_name: str = DATA_AXIS):
    r"""The global batch, split along `axis_name`, built from this process's part of it.

    Each of the $P$ processes passes its own `local` block of $B/P$ examples (in process
    order: process $i$ holds rows $iB/P, \dots, (i+1)B/P - 1$ of the global batch); with one
    process `local` is the whole batch and this is
    [`shard_leading_axis`][numpyro_fsdiff.shard_leading_axis]. This is
    `jax.make_array_from_process_local_data`, which copies each device's rows only.

    **Arguments:**

    - `local`: a PyTree of host (NumPy) arrays with equal leading axes, this process's rows.
    - `mesh`: the device mesh, spanning all processes.
    - `axis_name`: the mesh axis to split along.

    **Returns:** a PyTree of global `jax.Array`s with leading axis $P$ times that of `local`.
    """
    sharding = NamedSharding(check_mesh(mesh, axis_name), PartitionSpec(axis_name))
    processes = jax.process_count()

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(
            sharding, x, (x.shape[0] * processes,) + x.shape[1:]
        )

    return jax.tree.map(one, local)


def map_blocks(fn: Callable, mesh: Mesh, axis_name: str = DATA_AXIS) -> Callable:
    """`fn`, run by every device of `mesh` on its own block of the leading axis.

    `fn` maps a block of inputs (leading axis: that device's share) to a block of outputs;
    the result is a function of the whole inputs whose outputs are split along `axis_name`.
    Each device runs `fn` independently, with no communication (a `jax.shard_map`), which is
    what independent samples and Markov chains want: a while loop on one device does not wait
    for the others' step by step. Arrays closed over by `fn` (a network's weights) are
    replicated. Usable inside and outside `jit`; with a mesh of one device it is `fn`.

    **Arguments:**

    - `fn`: a function of PyTrees whose arrays have a leading (batch) axis.
    - `mesh`: the device mesh.
    - `axis_name`: the mesh axis to split along.

    **Returns:** the sharded function.
    """
    check_mesh(mesh, axis_name)
    spec = PartitionSpec(axis_name)
    # check_vma=False: Diffrax's and NumPyro's loops carry values that are the same on every
    # device (step counters) next to per-device ones, which the varying-axes check rejects.
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def process_slice(
    num: int, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """The contiguous part of `num` examples that this process loads on a multi-host run.

    Examples are split as evenly as possible, in order; with one process it is all of them.

    **Arguments:**

    - `num`: the number of examples in the whole dataset.
    - `process_index`, `process_count`: this process and how many there are (default:
      `jax.process_index()`, `jax.process_count()`).

    **Returns:** a `slice` of `range(num)`.

    **Raises:** `ValueError` unless `0 <= process_index < process_count` and `num >= 0`.
    """
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"need 0 <= `process_index` < `process_count`; got {index} and {count}."
        )
    if int(num) < 0:
        raise ValueError(f"`num` must be >= 0; got {num!r}.")
    bounds = np.linspace(0, int(num), count + 1).round().astype(int)
    return slice(int(bounds[index]), int(bounds[index + 1]))
