r"""Data parallelism through JAX's own sharding: meshes, sharded batches, per-process data.

Nothing here moves data by hand: arrays are placed with `jax.device_put` and a
`jax.sharding.NamedSharding`, and `jit` partitions the computation (inserting the all-reduce
of data-parallel gradients itself). On several hosts, call `jax.distributed.initialize()` first;
`jax.devices()` then lists every device of every process, and each process feeds its own slice
of the data ([`process_slice`][numpyro_fsdiff.process_slice]).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-dimensional device mesh for data parallelism.

    **Arguments:**

    - `devices`: the devices to use (default: all of `jax.devices()`, every process's).
    - `axis_name`: the mesh axis name that batch axes are sharded along.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must name at least one device; got none.")
    return Mesh(np.array(devices), (axis_name,))


def check_divisible(name: str, size: int, mesh: Mesh, axis_name: str = DATA_AXIS) -> None:
    """Raise unless `size` splits evenly over the mesh axis."""
    count = mesh.shape[axis_name]
    if size % count != 0:
        raise ValueError(
            f"`{name}` = {size} must be a multiple of the {count} devices of mesh axis "
            f"{axis_name!r} to be sharded evenly."
        )


def shard_leading_axis(tree, mesh: Mesh, axis_name: str = DATA_AXIS):
    """Place every array of `tree` on `mesh`, split along its leading (batch) axis."""
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    return jax.device_put(tree, sharding)


def replicate(tree, mesh: Mesh):
    """Place every array of `tree` whole on every device of `mesh` (e.g. parameters)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def process_slice(num: int, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
    """The contiguous part of `num` examples that this process loads on a multi-host run.

    Examples are split as evenly as possible, in order; with one process it is all of them.
    """
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= process_index < process_count; got {index}, {count}.")
    bounds = np.linspace(0, num, count + 1).round().astype(int)
    return slice(int(bounds[index]), int(bounds[index + 1]))
