r"""A Fourier neural operator noise predictor $\varepsilon_\theta(x, t)$ for function space."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Field, Float, PRNGKeyArray, ScalarLike
from .._grid import Grid, _spectral_resample, band_grid_shape, band_limit
from ._embedding import TimeEmbedding
from ._spectral import SpectralConv2d


def check_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an int, raising a ValueError naming `name` unless it is an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    return value


def check_inputs(xs, ts) -> None:
    """Raise unless `xs` is a batch of fields `(batch, n1, n2)` and `ts` has shape `(batch,)`."""
    if jnp.ndim(xs) != 3:
        raise ValueError(f"`xs` must have shape (batch, n1, n2); got {jnp.shape(xs)}.")
    if jnp.shape(ts) != jnp.shape(xs)[:1]:
        raise ValueError(
            f"`ts` must have shape ({jnp.shape(xs)[0]},) to match `xs`; got {jnp.shape(ts)}."
        )


class Pointwise(eqx.Module):
    r"""A pointwise (1 x 1) linear map of channels, $v(x) \mapsto W v(x) + b$, on a batch."""

    weight: Float[Array, "out_channels in_channels"]
    bias: Float[Array, " out_channels"]

    def __init__(self, in_channels: int, out_channels: int, *, key: PRNGKeyArray):
        # The default initialisation of `eqx.nn.Linear`: U(-1/sqrt(in), 1/sqrt(in)).
        bound = 1.0 / math.sqrt(in_channels)
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.uniform(
            wkey, (out_channels, in_channels), minval=-bound, maxval=bound
        )
        self.bias = jax.random.uniform(bkey, (out_channels,), minval=-bound, maxval=bound)

    def __call__(self, v: Float[Array, "*batch c"]) -> Float[Array, "*batch o"]:
        """The map on channels-last values: one matrix product over all points."""
        # As a 2-D product, so that the weight gradient contracts one axis (which XLA on CPU
        # does in place) rather than all leading axes (which it does via transposed copies).
        out = v.reshape(-1, v.shape[-1]) @ self.weight.T + self.bias
        return out.reshape(*v.shape[:-1], out.shape[-1])


class LocalConv(eqx.Module):
    r"""A periodic $k \times k$ convolution of channels, $(C v)(x) = \sum_{|d_i| \le k/2}
    C_d\, v(x + d)$, on the grid-major layout `(n2, n1, batch, channels)`.

    Its weights start at zero, so adding it to a trained network leaves the network's function
    unchanged until training moves them. The stencil is in grid points: the same operator on
    every grid only where the grid is fixed, as it is for the band grid of
    [`FNO`][numpyro_fsdiff.nn.FNO] with a `cutoff`.
    """

    weight: Float[Array, "k k in_channels out_channels"]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        self.weight = jnp.zeros((kernel_size, kernel_size, in_channels, out_channels))

    def __call__(self, v: Float[Array, "n2 n1 batch c"]) -> Float[Array, "n2 n1 batch o"]:
        """The convolution with periodic boundaries, as one matrix product over the stacked
        shifted copies of `v`."""
        # Not `lax.conv_general_dilated`: inside a loop (every sampler's) XLA on CPU ran it
        # about 10 times slower than at top level (10 steps on a batch of 256 at 28 x 28:
        # 67 s, against 5.9 s for this matrix product), which it runs fast everywhere.
        size, n2, n1 = self.weight.shape[0], v.shape[0], v.shape[1]
        half = size // 2
        padded = jnp.pad(v, ((half, half), (half, half), (0, 0), (0, 0)), mode="wrap")
        patches = jnp.concatenate(
            [padded[dy : dy + n2, dx : dx + n1] for dy in range(size) for dx in range(size)],
            axis=-1,
        )
        weight = self.weight.astype(v.dtype).reshape(-1, self.weight.shape[-1])
        out = patches.reshape(-1, patches.shape[-1]) @ weight
        return out.reshape(*v.shape[:-1], out.shape[-1])


class FNO(eqx.Module):
    r"""A Fourier neural operator that predicts the noise, $\varepsilon_\theta(x, t) \approx
    \mathbb{E}[\eta \mid X_t = x]$, on one field of any grid size.

    Wrap it as [`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore] to get the
    Q-preconditioned score $S_\theta = -\varepsilon_\theta / \sigma_t$, and train it with
    [`dsm_loss`][numpyro_fsdiff.dsm_loss].

    Architecture, on a grid of shape `(n1, n2)` of the unit square:

    1. *Inputs.* The field $x$ and the periodic coordinate features
       $(\sin 2\pi x_1, \cos 2\pi x_1, \sin 2\pi x_2, \cos 2\pi x_2)$ of
       [`Grid.coords`][numpyro_fsdiff.Grid.coords] (periodic and band-limited, so they are
       the same function on every grid), lifted pointwise to `width` channels: $v_0 = P x$.
    2. *Time.* [`TimeEmbedding`][numpyro_fsdiff.nn.TimeEmbedding]: sinusoidal features of $t$
       and a two-layer MLP give $e(t)$; each Fourier layer $\ell$ has its own linear FiLM map
       $e(t) \mapsto (\gamma_\ell(t), \beta_\ell(t)) \in \mathbb{R}^{\text{width}} \times
       \mathbb{R}^{\text{width}}$.
    3. *Fourier layers* ($\ell = 1, \dots$, `depth`):
       $$h = \mathcal{K}_\ell v_{\ell-1} + W_\ell v_{\ell-1} + C_\ell v_{\ell-1} + b_\ell,
       \qquad
       v_\ell = \mathrm{GELU}\big((1 + \gamma_\ell(t))\, h + \beta_\ell(t)\big),$$
       with the spectral convolution $\mathcal{K}_\ell$ of
       [`SpectralConv2d`][numpyro_fsdiff.nn.SpectralConv2d] (no GELU after the last layer) and,
       only with `local_kernel`, the periodic local convolution $C_\ell$ of
       [`LocalConv`][numpyro_fsdiff.nn.LocalConv] ($C_\ell = 0$ otherwise).
    4. *Projection.* Pointwise $\mathrm{width} \to$ `projection_dim` $\to 1$ with a GELU.

    The spectral weights live on wavenumbers, clipped to what each grid holds (see
    [`kept_modes`][numpyro_fsdiff.nn.kept_modes]), and every other operation is pointwise (or,
    with `local_kernel`, a stencil on the fixed band grid), so one set of weights runs on any
    grid with `n1, n2 >= 2` (odd, non-square and batch size one included). Without a
    `cutoff` the network is not exactly resolution invariant: pointwise nonlinearities create
    frequencies above the kept band.

    **Arguments:**

    - `modes`: the largest number of Fourier modes kept per axis.
    - `width`: the channel count of the Fourier layers.
    - `depth`: the number of Fourier layers.
    - `embedding_dim`: the (even) dimension of the time embedding.
    - `projection_dim`: the hidden channel count of the output projection.
    - `max_frequency`: the largest angular frequency of the sinusoidal time features.
    - `cutoff`: `None` (the default: the network above, on the input's grid), or the band
      cutoff $K$ of the resolution-consistent construction (docs/theory.md): the input is
      projected onto the modes $|k_i| \le K$ and brought spectrally to the fixed grid
      [`band_grid_shape`][numpyro_fsdiff.band_grid_shape]`(K)` $= (2K+2)^2$, the network runs
      there, and its output is projected onto the same band and brought back to the input's
      grid: $\varepsilon_\theta(x, t) = P_K\, \mathrm{FNO}(P_K x, t)$, the same function on
      every grid with $n_i \ge 2K + 2$ (up to float rounding). Pair it with
      [`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore], which reads the cutoff
      and sets the score to $-x$ above $K$. Choose $K = \lceil n/2 \rceil - 1$ for training
      grid $n$ (13 for 28 x 28).
    - `local_kernel`: `None` (the default), or the odd side $k$ of a $k \times k$ local
      convolution in every Fourier layer: a local path beside the spectral and pointwise
      ones. It needs `cutoff`: the stencil is fixed in grid points, so it is the same operator
      on every input grid only because the network runs on the fixed band grid. Its weights
      start at zero (see `LocalConv`), so a network warm-started from one without it starts
      as the same function. It makes a training step 2.3 times slower (270 against 623
      samples/s at batch 128, 28 x 28, `benchmarks/bench_train_step.py`). The shipped weights do
      not use it: on MNIST, 4,000 steps with it from the shipped weights lowered the held-out
      DSM loss (0.0189 to 0.0185) but not the Fréchet distance
      (`benchmarks/results/frechet_seeds_mnist_local.md`).
    - `key`: a PRNG key for the initial weights.

    Internally the batch is kept grid-major, `(n2, n1, batch, width)`, so that every
    pointwise map and every Fourier transform is one matrix product; `model(x, t)` and
    `jax.vmap(model)` run the same code as [`batched`][numpyro_fsdiff.nn.FNO.batched] (with a
    batch of one), and agree with it to float rounding. `benchmarks/bench_train_step.py`
    times a training step.

    The hyperparameters are in [`config`][numpyro_fsdiff.nn.FNO.config]; `FNO(**model.config,
    key=key)` rebuilds the same structure, into which `equinox.tree_deserialise_leaves` loads
    saved weights.

    !!! example

        ```python
        model = FNO(modes=3, width=4, depth=1, key=jax.random.key(0))  # the paper: 14, 32, 4
        x = jax.random.normal(jax.random.key(1), (12, 12))
        eps = model(x, 0.5)                        # x: (n1, n2), any grid
        xs = jax.random.normal(jax.random.key(2), (3, 12, 12))
        ts = jnp.array([0.1, 0.5, 0.9])
        eps = model.batched(xs, ts)                # a batch: jax.vmap(model)(xs, ts), faster
        ```

    ??? cite "References"

        Li et al., *Fourier Neural Operator for Parametric Partial Differential Equations*,
        ICLR 2021. Perez, Strub, de Vries, Dumoulin, Courville, *FiLM: Visual Reasoning with a
        General Conditioning Layer*, AAAI 2018. Hagemann et al., *Multilevel Diffusion:
        Infinite Dimensional Score-Based Diffusion Models for Image Generation*, 2023.
    """

    lift: Pointwise
    time_embedding: TimeEmbedding
    spectral: tuple[SpectralConv2d, ...]
    pointwise: tuple[Pointwise, ...]
    film: tuple[eqx.nn.Linear, ...]
    local: tuple[LocalConv, ...] | None
    project_hidden: Pointwise
    project_out: Pointwise
    modes: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    embedding_dim: int = eqx.field(static=True)
    projection_dim: int = eqx.field(static=True)
    max_frequency: float = eqx.field(static=True)
    cutoff: int | None = eqx.field(static=True)

    def __init__(
        self,
        *,
        modes: int = 14,
        width: int = 32,
        depth: int = 4,
        embedding_dim: int = 64,
        projection_dim: int = 128,
        max_frequency: float = 1000.0,
        cutoff: int | None = None,
        local_kernel: int | None = None,
        key: PRNGKeyArray,
    ):
        self.modes = check_int("modes", modes)
        self.width = check_int("width", width)
        self.depth = check_int("depth", depth)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 2)
        self.projection_dim = check_int("projection_dim", projection_dim)
        self.max_frequency = float(max_frequency)
        self.cutoff = None if cutoff is None else check_int("cutoff", cutoff)
        if local_kernel is not None:
            if check_int("local_kernel", local_kernel) % 2 == 0:
                raise ValueError(f"`local_kernel` must be odd; got {local_kernel}.")
            if self.cutoff is None:
                raise ValueError(
                    "`local_kernel` needs `cutoff`: a stencil of grid points is the same "
                    "operator on every grid only on the fixed band grid."
                )
        keys = jax.random.split(key, 4 + 3 * depth)
        self.lift = Pointwise(5, width, key=keys[0])
        self.time_embedding = TimeEmbedding(
            embedding_dim, max_frequency=self.max_frequency, key=keys[1]
        )
        self.project_hidden = Pointwise(width, projection_dim, key=keys[2])
        self.project_out = Pointwise(projection_dim, 1, key=keys[3])
        layer_keys = keys[4:].reshape(depth, 3)
        self.spectral = tuple(SpectralConv2d(width, width, modes, key=k[0]) for k in layer_keys)
        self.pointwise = tuple(Pointwise(width, width, key=k[1]) for k in layer_keys)
        self.film = tuple(eqx.nn.Linear(embedding_dim, 2 * width, key=k[2]) for k in layer_keys)
        self.local = (
            None
            if local_kernel is None
            else tuple(LocalConv(width, width, local_kernel) for _ in range(depth))
        )

    @property
    def local_kernel(self) -> int | None:
        """The side of the local convolutions, or `None` without them."""
        return None if self.local is None else self.local[0].weight.shape[0]

    @property
    def config(self) -> dict:
        """The constructor hyperparameters as a JSON-able dict: `FNO(**config, key=key)`.

        `cutoff` and `local_kernel` appear only when set, so networks without them keep the
        earlier record.
        """
        config = {
            "modes": self.modes,
            "width": self.width,
            "depth": self.depth,
            "embedding_dim": self.embedding_dim,
            "projection_dim": self.projection_dim,
            "max_frequency": self.max_frequency,
        }
        if self.cutoff is not None:
            config["cutoff"] = self.cutoff
        if self.local_kernel is not None:
            config["local_kernel"] = self.local_kernel
        return config

    def batched(
        self, xs: Float[Array, "batch n1 n2"], ts: Float[Array, " batch"]
    ) -> Float[Array, "batch n1 n2"]:
        r"""$\varepsilon_\theta$ on a batch: equal to `jax.vmap(model)(xs, ts)`.

        **Arguments:**

        - `xs`: fields of shape `(batch, n1, n2)`.
        - `ts`: times of shape `(batch,)`.

        **Returns:** the predicted noise, shape `(batch, n1, n2)`.
        """
        check_inputs(xs, ts)
        if self.cutoff is None:
            return self._unbanded(xs, ts)
        band = band_grid_shape(self.cutoff)
        small = band_limit(_spectral_resample(xs, band), self.cutoff)
        out = band_limit(self._unbanded(small, ts), self.cutoff)
        return _spectral_resample(out, xs.shape[-2:])

    def _unbanded(
        self, xs: Float[Array, "batch n1 n2"], ts: Float[Array, " batch"]
    ) -> Float[Array, "batch n1 n2"]:
        _, n1, n2 = xs.shape
        # Grid-major layout (n2, n1, batch, channels) throughout: every pointwise map is one
        # matrix product over the channels and every Fourier transform one over a leading
        # axis, with no transposes (see SpectralConv2d.apply_grid_major).
        x1, x2 = 2 * jnp.pi * Grid((n1, n2)).coords().astype(xs.dtype)
        features = jnp.stack([jnp.sin(x1), jnp.cos(x1), jnp.sin(x2), jnp.cos(x2)], axis=-1)
        features = jnp.swapaxes(features, 0, 1)[:, :, None, :]  # (n2, n1, 1, 4)
        # Lift: the coordinate part is shared by the whole batch.
        w = self.lift.weight
        fields = jnp.transpose(xs, (2, 1, 0))[..., None]  # (n2, n1, b, 1)
        v = features @ w[:, 1:].T + self.lift.bias + fields * w[:, 0]
        emb = jax.vmap(self.time_embedding)(ts)  # (b, E)
        for layer in range(self.depth):
            h = self.spectral[layer].apply_grid_major(v) + self.pointwise[layer](v)
            if self.local is not None:
                h = h + self.local[layer](v)
            film = jax.vmap(self.film[layer])(emb)  # (b, 2 width), broadcast over the grid
            h = h * (1 + film[:, : self.width]) + film[:, self.width :]
            v = jax.nn.gelu(h) if layer < self.depth - 1 else h
        hidden = jax.nn.gelu(self.project_hidden(v))
        return jnp.transpose(self.project_out(hidden)[..., 0], (2, 1, 0))

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        r"""$\varepsilon_\theta(x, t)$ on one field.

        **Arguments:**

        - `x`: the field, shape `(n1, n2)` with `n1, n2 >= 2`.
        - `t`: the scalar time.

        **Returns:** the predicted noise, shape `(n1, n2)`.
        """
        if jnp.ndim(x) != 2:
            raise ValueError(f"`x` must be one field of shape (n1, n2); got {jnp.shape(x)}.")
        if jnp.ndim(t) != 0:
            raise ValueError(f"`t` must be a scalar; got shape {jnp.shape(t)}.")
        t = jnp.asarray(t, dtype=x.dtype)
        return self.batched(x[None], t[None])[0]
