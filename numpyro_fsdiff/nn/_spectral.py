r"""The spectral convolution of a Fourier neural operator, with real parameter arrays."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, PRNGKeyArray


def kept_modes(modes: int, n1: int, n2: int) -> tuple[int, int, int]:
    r"""How many Fourier modes a spectral layer of `modes` uses on an `(n1, n2)` grid.

    The layer keeps the wavenumbers $k_1 \in \{-m, \dots, m-1\}$ and $k_2 \in \{0, \dots,
    m-1\}$ ($m$ = `modes`; $k_2 < 0$ follows from the real-input symmetry), clipped to the
    frequencies strictly below the grid's Nyquist frequency, $|k_i| < n_i / 2$. Nyquist modes are
    never used: on an even axis the grid mode $n/2$ stands for $\pm n/2$ together, so it has no
    consistent meaning across grids.

    **Returns:** `(positive, negative, second)`: the number of kept $k_1 \ge 0$, of kept
    $k_1 < 0$, and of kept $k_2 \ge 0$.
    """
    positive = min(modes, (n1 - 1) // 2 + 1)
    negative = min(modes, (n1 - 1) // 2)
    second = min(modes, (n2 - 1) // 2 + 1)
    return positive, negative, second


@functools.lru_cache(maxsize=64)
def dft_matrices(modes: int, n1: int, n2: int) -> tuple[np.ndarray, ...]:
    r"""Real matrices of the truncated forward and inverse 2-D DFT of a spectral layer.

    With $\psi = 2\pi k_2 y / n_2$ and $\phi = 2\pi k_1 x / n_1$ over the kept wavenumbers
    (rows $k_1 = 0, \dots$, then the negative ones; $k_2 \ge 0$):

    - `fy[y, p, k2]`: $(\cos\psi, -\sin\psi)$, the real DFT along the second axis;
    - `fx[k1, q, x, p]`: the complex DFT $e^{-i\phi}$ along the first axis, acting on
      (real, imaginary) pairs $p$ and giving pairs $q$;
    - `hx[x, q, k1, p]`: its inverse $e^{+i\phi}$ (without the $1/n_1$);
    - `hy[q, k2, y]`: $c_{k_2} (\cos\psi, -\sin\psi) / (n_1 n_2)$, the real part of the
      inverse along the second axis, $c_0 = 1$ and $c_{k_2} = 2$ otherwise (the Hermitian
      partner $-k_2$), exactly what `irfft2` does with a half spectrum whose Nyquist column is
      zero.

    Computed in float64 with NumPy, once per `(modes, n1, n2)`.
    """
    positive, negative, second = kept_modes(modes, n1, n2)
    k1 = np.concatenate([np.arange(positive), np.arange(-negative, 0)])
    k2 = np.arange(second)
    psi = 2 * np.pi * np.outer(np.arange(n2), k2) / n2  # (y, K2)
    fy = np.stack([np.cos(psi), -np.sin(psi)], axis=1)
    phi = 2 * np.pi * np.outer(k1, np.arange(n1)) / n1  # (K1, x)
    c, s = np.cos(phi), np.sin(phi)
    fx = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], axis=1)
    c, s = c.T, s.T
    hx = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], axis=1)
    weight = np.where(k2 == 0, 1.0, 2.0)[:, None] / (n1 * n2)
    hy = np.stack([weight * np.cos(psi.T), -weight * np.sin(psi.T)])
    return fy, fx, hx, hy


class SpectralConv2d(eqx.Module):
    r"""The Fourier layer $v \mapsto \mathcal{F}^{-1}(R_k \cdot \mathcal{F} v)$ of an FNO.

    For each kept wavenumber $k$ (see [`kept_modes`][numpyro_fsdiff.nn.kept_modes]) the complex
    matrix $R_k \in \mathbb{C}^{c_\text{out} \times c_\text{in}}$ mixes the channels of the
    Fourier coefficient $\hat v_k$; all other modes are set to zero:

    $$(\mathcal{K} v)(x) = \mathrm{irfft2}\big( \mathbb{1}_{k \text{ kept}}\, R_k \hat v_k
    \big)(x), \qquad \hat v = \mathrm{rfft2}(v).$$

    The parameters depend only on the wavenumber $k$, not on the grid, so one set of weights
    acts on every grid; for a function band-limited below the coarser of two grids the outputs
    on both grids are samples of the same band-limited function.

    $R_k$ is stored as two real arrays `weight_real` and `weight_imag` of shape
    `(2 modes, modes, in_channels, out_channels)` (rows $k_1 = 0, \dots, m-1$ then
    $-m, \dots, -1$): optimisers such as optax treat complex leaves incorrectly.

    Speed: everything is real. The channel mixing is **one real batched matrix product in a
    modes-major layout**, $[\Re \hat v, \Im \hat v]_{k} \in \mathbb{R}^{b \times 2c_\text{in}}$
    times $\begin{pmatrix} \Re R & \Im R \\ -\Im R & \Re R \end{pmatrix}_k$, batched over
    the kept modes, instead of a complex `einsum` (which XLA on CPU lowers to a slow loop).
    Only the kept modes are ever computed: the forward and inverse transforms are truncated
    DFTs done as real matrix products ([`dft_matrices`][numpyro_fsdiff.nn.dft_matrices]),
    which land directly in (and leave from) the modes-major layout; on CPU this beats
    `rfft2`, a gather of the kept modes, a transpose and `irfft2` (measured in
    `benchmarks/bench_train_step.py`). The result equals `irfft2` of the masked product.

    **Arguments:**

    - `in_channels`, `out_channels`: the channel counts.
    - `modes`: the largest number of modes kept per axis (see above).
    - `key`: a PRNG key for the initial weights.

    ??? cite "References"

        Li et al., *Fourier Neural Operator for Parametric Partial Differential Equations*,
        ICLR 2021.
    """

    weight_real: Float[Array, "modes2 modes in_channels out_channels"]
    weight_imag: Float[Array, "modes2 modes in_channels out_channels"]
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    modes: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, modes: int, *, key: PRNGKeyArray):
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("modes", modes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes
        # Each complex entry has variance 1 / in_channels: the layer roughly preserves the
        # energy of the kept modes at initialisation.
        std = 1.0 / math.sqrt(2.0 * in_channels)
        shape = (2 * modes, modes, in_channels, out_channels)
        real_key, imag_key = jax.random.split(key)
        self.weight_real = std * jax.random.normal(real_key, shape)
        self.weight_imag = std * jax.random.normal(imag_key, shape)

    def _weights(self, positive: int, negative: int, second: int) -> Array:
        """The kept weights as one real block matrix per mode, shape (M, 2 in, 2 out)."""
        m = self.modes

        def rows(w):
            w = jnp.concatenate([w[:positive], w[2 * m - negative :]], axis=0)
            return w[:, :second].reshape(-1, self.in_channels, self.out_channels)

        wr, wi = rows(self.weight_real), rows(self.weight_imag)
        top = jnp.concatenate([wr, wi], axis=-1)  # multiplies Re v: (Re R, Im R)
        bottom = jnp.concatenate([-wi, wr], axis=-1)  # multiplies Im v: (-Im R, Re R)
        return jnp.concatenate([top, bottom], axis=-2)

    def batched(
        self, v: Float[Array, "batch in_channels n1 n2"]
    ) -> Float[Array, "batch out_channels n1 n2"]:
        """The layer on a batch of fields, shape `(batch, in_channels, n1, n2)`."""
        if v.ndim != 4 or v.shape[1] != self.in_channels:
            raise ValueError(
                f"`v` must have shape (batch, {self.in_channels}, n1, n2); got {v.shape}."
            )
        batch, _, n1, n2 = v.shape
        positive, negative, second = kept_modes(self.modes, n1, n2)
        fy, fx, hx, hy = (jnp.asarray(a, v.dtype) for a in dft_matrices(self.modes, n1, n2))
        # Forward DFT of the kept modes as real matrix products, straight into the
        # modes-major layout (K1, K2, batch, re/im, channels).
        a = jnp.einsum("bcxy,ypk->bcxpk", v, fy)
        kept = jnp.einsum("jqxp,bcxpk->jkbqc", fx, a)
        num = (positive + negative) * second
        stacked = kept.reshape(num, batch, 2 * self.in_channels)
        mixed = jnp.matmul(stacked, self._weights(positive, negative, second))
        mixed = mixed.reshape(positive + negative, second, batch, 2, self.out_channels)
        # Inverse DFT: first axis, then the real part along the second axis.
        b = jnp.einsum("xqjp,jkbpo->boxqk", hx, mixed)
        return jnp.einsum("boxqk,qky->boxy", b, hy)

    def batched_channels_last(
        self, v: Float[Array, "batch n1 n2 in_channels"]
    ) -> Float[Array, "batch n1 n2 out_channels"]:
        """The layer on a batch in the channels-last layout `(batch, n1, n2, in_channels)`
        that the [`FNO`][numpyro_fsdiff.nn.FNO] uses internally (its pointwise layers are
        then plain matrix products)."""
        if v.ndim != 4 or v.shape[-1] != self.in_channels:
            raise ValueError(
                f"`v` must have shape (batch, n1, n2, {self.in_channels}); got {v.shape}."
            )
        batch, n1, n2, _ = v.shape
        positive, negative, second = kept_modes(self.modes, n1, n2)
        fy, fx, hx, hy = (jnp.asarray(a, v.dtype) for a in dft_matrices(self.modes, n1, n2))
        a = jnp.einsum("bxyc,ypk->bcxpk", v, fy)
        kept = jnp.einsum("jqxp,bcxpk->jkbqc", fx, a)
        num = (positive + negative) * second
        stacked = kept.reshape(num, batch, 2 * self.in_channels)
        mixed = jnp.matmul(stacked, self._weights(positive, negative, second))
        mixed = mixed.reshape(positive + negative, second, batch, 2, self.out_channels)
        b = jnp.einsum("xqjp,jkbpo->boxqk", hx, mixed)
        return jnp.einsum("boxqk,qky->bxyo", b, hy)

    def __call__(self, v: Float[Array, "in_channels n1 n2"]) -> Float[Array, "out_channels n1 n2"]:
        """The layer on one multi-channel field of shape `(in_channels, n1, n2)`."""
        if v.ndim != 3:
            raise ValueError(f"`v` must have shape (in_channels, n1, n2); got {v.shape}.")
        return self.batched(v[None])[0]


def spectral_conv_reference(
    layer: SpectralConv2d, v: Float[Array, "in_channels n1 n2"]
) -> Float[Array, "out_channels n1 n2"]:
    """The spectral layer the slow, obvious way (complex weights, complex einsum); for tests."""
    _, n1, n2 = v.shape
    positive, negative, second = kept_modes(layer.modes, n1, n2)
    m = layer.modes
    weight = layer.weight_real + 1j * layer.weight_imag  # (2m, m, in, out)
    vhat = jnp.fft.rfft2(v)
    out = jnp.zeros((layer.out_channels, n1, n2 // 2 + 1), dtype=vhat.dtype)
    for k1 in list(range(positive)) + list(range(-negative, 0)):
        row = k1 % (2 * m)
        block = jnp.einsum("iy,yio->oy", vhat[:, k1 % n1, :second], weight[row, :second])
        out = out.at[:, k1 % n1, :second].set(block)
    return jnp.fft.irfft2(out, s=(n1, n2)).astype(v.dtype)
