r"""A convolutional U-Net noise predictor: a fixed-resolution baseline for the FNO."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Field, Float, PRNGKeyArray, ScalarLike
from ._embedding import TimeEmbedding
from ._fno import check_inputs, check_int


def _groups(channels: int) -> int:
    """The largest group count <= 8 that divides `channels` (for GroupNorm)."""
    return max(g for g in range(1, 9) if channels % g == 0)


class ResidualBlock(eqx.Module):
    r"""$y = \mathrm{skip}(v) + C_2\, \mathrm{GELU}((1 + \gamma(t)) N_2(C_1\,
    \mathrm{GELU}(N_1 v)) + \beta(t))$ with periodic 3 x 3 convolutions $C_i$, group norms
    $N_i$ and a linear FiLM map $e(t) \mapsto (\gamma(t), \beta(t))$ of the time embedding
    (applied after the norm, which would otherwise remove a per-channel shift)."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    time: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, *, key):
        keys = jax.random.split(key, 4)
        conv = dict(kernel_size=3, padding=1, padding_mode="CIRCULAR")
        self.norm1 = eqx.nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = eqx.nn.Conv2d(in_channels, out_channels, **conv, key=keys[0])
        self.time = eqx.nn.Linear(embedding_dim, 2 * out_channels, key=keys[1])
        self.norm2 = eqx.nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = eqx.nn.Conv2d(out_channels, out_channels, **conv, key=keys[2])
        self.skip = (
            None
            if in_channels == out_channels
            else eqx.nn.Conv2d(in_channels, out_channels, kernel_size=1, key=keys[3])
        )

    def __call__(
        self, v: Float[Array, "c n1 n2"], emb: Float[Array, " e"]
    ) -> Float[Array, "o n1 n2"]:
        h = self.norm2(self.conv1(jax.nn.gelu(self.norm1(v))))
        scale, shift = jnp.split(self.time(emb)[:, None, None], 2)
        h = self.conv2(jax.nn.gelu((1 + scale) * h + shift))
        return h + (v if self.skip is None else self.skip(v))


class UNet(eqx.Module):
    r"""A U-Net noise predictor $\varepsilon_\theta(x, t)$ on one field: the pixel-space
    baseline that the [`FNO`][numpyro_fsdiff.nn.FNO] is compared with.

    An input 3 x 3 convolution, then for each entry of `channels` a
    [`ResidualBlock`][numpyro_fsdiff.nn.ResidualBlock] and (except at the bottom) a stride-2
    convolution; a bottleneck block; and back up with nearest-neighbour upsampling,
    concatenated skips and residual blocks; a 3 x 3 output convolution. Every block adds a
    projection of the [`TimeEmbedding`][numpyro_fsdiff.nn.TimeEmbedding]. Convolutions are
    periodic (circular padding), matching the periodic domain.

    Its kernels are a fixed number of *pixels* wide, so the function it represents changes with
    the grid: it is a fixed-resolution model. It needs `n1` and `n2` divisible by
    $2^{L-1}$, $L$ = `len(channels)`, and raises `ValueError` otherwise.

    **Arguments:**

    - `channels`: the channel count at each level, finest first.
    - `embedding_dim`: the (even) dimension of the time embedding.
    - `max_frequency`: the largest angular frequency of the sinusoidal time features.
    - `key`: a PRNG key.

    `UNet(**model.config, key=key)` rebuilds the same structure.

    ??? cite "References"

        Ronneberger, Fischer, Brox, *U-Net: Convolutional Networks for Biomedical Image
        Segmentation*, MICCAI 2015. Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic
        Models*, NeurIPS 2020.
    """

    time_embedding: TimeEmbedding
    conv_in: eqx.nn.Conv2d
    down_blocks: tuple[ResidualBlock, ...]
    downsample: tuple[eqx.nn.Conv2d, ...]
    middle: ResidualBlock
    up_blocks: tuple[ResidualBlock, ...]
    conv_out: eqx.nn.Conv2d
    channels: tuple[int, ...] = eqx.field(static=True)
    embedding_dim: int = eqx.field(static=True)
    max_frequency: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        channels=(48, 96, 192),
        embedding_dim: int = 64,
        max_frequency: float = 1000.0,
        key: PRNGKeyArray,
    ):
        try:
            channels = tuple(channels)
        except TypeError:
            raise ValueError(f"`channels` must be a sequence of ints; got {channels!r}.") from None
        if not channels:
            raise ValueError(f"`channels` must be a non-empty sequence of ints; got {channels!r}.")
        for c in channels:
            check_int("channels", c)
        self.channels = channels
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 2)
        self.max_frequency = float(max_frequency)
        levels = len(channels)
        keys = iter(jax.random.split(key, 4 + 3 * levels))
        self.time_embedding = TimeEmbedding(
            embedding_dim, max_frequency=self.max_frequency, key=next(keys)
        )
        conv = dict(kernel_size=3, padding=1, padding_mode="CIRCULAR")
        self.conv_in = eqx.nn.Conv2d(1, channels[0], **conv, key=next(keys))
        down, downsample = [], []
        previous = channels[0]
        for level, c in enumerate(channels):
            down.append(ResidualBlock(previous, c, embedding_dim, key=next(keys)))
            previous = c
            if level < levels - 1:
                downsample.append(
                    eqx.nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1, key=next(keys))
                )
        self.down_blocks = tuple(down)
        self.downsample = tuple(downsample)
        self.middle = ResidualBlock(channels[-1], channels[-1], embedding_dim, key=next(keys))
        up = []
        for c in reversed(channels):
            up.append(ResidualBlock(previous + c, c, embedding_dim, key=next(keys)))
            previous = c
        self.up_blocks = tuple(up)
        self.conv_out = eqx.nn.Conv2d(channels[0], 1, **conv, key=next(keys))

    @property
    def config(self) -> dict:
        """The constructor hyperparameters as a JSON-able dict: `UNet(**config, key=key)`."""
        return {
            "channels": list(self.channels),
            "embedding_dim": self.embedding_dim,
            "max_frequency": self.max_frequency,
        }

    def __call__(self, x: Field, t: ScalarLike) -> Field:
        r"""$\varepsilon_\theta(x, t)$ on one field of shape `(n1, n2)` and a scalar `t`."""
        if jnp.ndim(x) != 2:
            raise ValueError(f"`x` must be one field of shape (n1, n2); got {jnp.shape(x)}.")
        if jnp.ndim(t) != 0:
            raise ValueError(f"`t` must be a scalar; got shape {jnp.shape(t)}.")
        factor = 2 ** (len(self.channels) - 1)
        if x.shape[0] % factor or x.shape[1] % factor:
            raise ValueError(
                f"`x` must have both sizes divisible by {factor} for a UNet with "
                f"{len(self.channels)} levels; got shape {x.shape}."
            )
        emb = self.time_embedding(jnp.asarray(t, dtype=x.dtype))
        v = self.conv_in(x[None])
        skips = []
        for level, block in enumerate(self.down_blocks):
            v = block(v, emb)
            skips.append(v)
            if level < len(self.downsample):
                v = self.downsample[level](v)
        v = self.middle(v, emb)
        for level, block in enumerate(self.up_blocks):
            skip = skips[-1 - level]
            if v.shape[1:] != skip.shape[1:]:
                v = jnp.repeat(jnp.repeat(v, 2, axis=1), 2, axis=2)
            v = block(jnp.concatenate([v, skip]), emb)
        return self.conv_out(v)[0]

    def batched(
        self, xs: Float[Array, "batch n1 n2"], ts: Float[Array, " batch"]
    ) -> Float[Array, "batch n1 n2"]:
        """`jax.vmap(model)(xs, ts)`, for the same interface as [`FNO`][numpyro_fsdiff.nn.FNO]."""
        check_inputs(xs, ts)
        return jax.vmap(self)(xs, ts)
