r"""Time embeddings for score networks: sinusoidal features followed by a small MLP."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, PRNGKeyArray, ScalarLike


def sinusoidal_features(
    t: ScalarLike, dim: int, max_frequency: float = 1000.0
) -> Float[Array, " features"]:
    r"""Sinusoidal features of a scalar time,
    $\phi(t) = (\sin(\omega_j t), \cos(\omega_j t))_{j < d/2}$ with
    $\omega_j = \omega_{\max}^{j/(d/2 - 1)}$, log-spaced from 1 to `max_frequency`.

    For $t \in [0, 1]$ the slow features resolve the coarse schedule and the fast ones small
    differences in $t$ near $t_\varepsilon$.

    **Arguments:**

    - `t`: a scalar time.
    - `dim`: the (even) number of features.
    - `max_frequency`: the largest angular frequency $\omega_{\max}$.

    **Returns:** an array of shape `(dim,)`.
    """
    half = dim // 2
    exponents = jnp.arange(half) / max(half - 1, 1)
    frequencies = jnp.exp(exponents * math.log(max_frequency))
    angles = jnp.asarray(t, dtype=frequencies.dtype) * frequencies
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


class TimeEmbedding(eqx.Module):
    r"""The embedding $e(t) = \mathrm{GELU}(W_2\, \mathrm{GELU}(W_1 \phi(t) + b_1) + b_2)$ of
    [`sinusoidal_features`][numpyro_fsdiff.nn.sinusoidal_features] $\phi(t)$.

    Each layer of a network turns $e(t)$ into its own conditioning (for example a FiLM
    scale and shift per channel).

    **Arguments:**

    - `dim`: the (even) feature and output dimension.
    - `key`: a PRNG key.
    """

    first: eqx.nn.Linear
    second: eqx.nn.Linear
    dim: int = eqx.field(static=True)
    max_frequency: float = eqx.field(static=True)

    def __init__(self, dim: int, *, max_frequency: float = 1000.0, key: PRNGKeyArray):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2 or dim % 2:
            raise ValueError(f"`embedding_dim` must be an even int >= 2; got {dim!r}.")
        if not float(max_frequency) > 0:
            raise ValueError(f"`max_frequency` must be > 0; got {max_frequency!r}.")
        k1, k2 = jax.random.split(key)
        self.first = eqx.nn.Linear(dim, dim, key=k1)
        self.second = eqx.nn.Linear(dim, dim, key=k2)
        self.dim = dim
        self.max_frequency = float(max_frequency)

    def __call__(self, t: ScalarLike) -> Float[Array, " dim"]:
        features = sinusoidal_features(t, self.dim, self.max_frequency)
        hidden = jax.nn.gelu(self.first(features))
        return jax.nn.gelu(self.second(hidden))
