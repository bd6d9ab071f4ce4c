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
    $k_2 \ge 0$ and $k_1$ (rows $k_1 = 0, \dots$, then the negative ones), and index pairs
    $p, q \in \{\Re, \Im\}$:

    - `fy[(k2, q), y]`: $(\cos\psi, -\sin\psi)$, the real DFT along the second axis;
    - `fx[(k1, q), (p, x)]`: the complex DFT $e^{-i\phi}$ along the first axis, from (real,
      imaginary) pairs $p$ to pairs $q$;
    - `hx[(p, x), (k1, q)]`: its inverse $e^{+i\phi}$ (without the $1/n_1$);
    - `hy[y, (k2, p)]`: $c_{k_2} (\cos\psi, -\sin\psi) / (n_1 n_2)$, the real part of the
      inverse along the second axis, $c_0 = 1$ and $c_{k_2} = 2$ otherwise (the Hermitian
      partner $-k_2$), exactly what `irfft2` does with a half spectrum whose Nyquist column is
      zero.

    Shapes: `fy` $(2K_2, n_2)$, `fx` $(2K_1, 2n_1)$, `hx` $(2n_1, 2K_1)$, `hy` $(n_2, 2K_2)$
    for $K_1$ kept $k_1$ and $K_2$ kept $k_2$. Computed in float64 with NumPy, once per
    `(modes, n1, n2)`.
    """
    positive, negative, second = kept_modes(modes, n1, n2)
    k1 = np.concatenate([np.arange(positive), np.arange(-negative, 0)])
    k2 = np.arange(second)
    psi = 2 * np.pi * np.outer(k2, np.arange(n2)) / n2  # (K2, y)
    fy = np.stack([np.cos(psi), -np.sin(psi)], axis=1).reshape(2 * second, n2)
    phi = 2 * np.pi * np.outer(k1, np.arange(n1)) / n1  # (K1, x)
    c, s = np.cos(phi), np.sin(phi)
    # (k1, q, p, x): Re out = c Re + s Im, Im out = -s Re + c Im.
    fx = np.stack([np.stack([c, s], axis=1), np.stack([-s, c], axis=1)], axis=1)
    fx = fx.reshape(2 * k1.size, 2 * n1)
    # (p, x, k1, q): Re out = c Re - s Im, Im out = s Re + c Im.
    hx = np.stack([np.stack([c.T, -s.T], axis=-1), np.stack([s.T, c.T], axis=-1)])
    hx = hx.reshape(2 * n1, 2 * k1.size)
    weight = np.where(k2 == 0, 1.0, 2.0) / (n1 * n2)
    hy = np.stack([weight * np.cos(psi.T), -weight * np.sin(psi.T)], axis=-1)  # (y, K2, p)
    return fy, fx, hx, hy.reshape(n2, 2 * second)


def batched_matmul(a: Array, b: Array) -> Array:
    """`a[i] @ b[i]` over the leading axis, as one `dot_general` with batch dimensions (a
    broadcast `jnp.matmul` would contract first and transpose the result afterwards)."""
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((0,), (0,))))


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

    Speed: everything is real, and every step is one (batched) real matrix product with no
    transposes. [`apply_grid_major`][numpyro_fsdiff.nn.SpectralConv2d.apply_grid_major] works
    on the layout `(n2, n1, batch, channels)`: the truncated real DFT along the second grid
    axis ([`dft_matrices`][numpyro_fsdiff.nn.dft_matrices]) is one matrix product over the
    leading axis, the complex DFT along the first axis one matrix product per kept $k_2$, and
    the result is already modes-major, $(k_2, k_1, \Re/\Im, \text{batch}, \text{channels})$.
    The channel mixing is one batched product over the kept modes,
    $[\Re \hat v; \Im \hat v]_k\,[\Re R_k, \Im R_k]$, recombined as
    $(\Re\Re - \Im\Im, \Re\Im + \Im\Re)$; the inverse transforms mirror the forward
    ones. The result equals `irfft2` of the masked product. This beats both a complex `einsum`
    (which XLA on CPU lowers to a slow loop) and `rfft2` + a gather of the kept modes +
    `irfft2` (XLA's transposes into and out of the modes-major layout cost more than the FFT
    saves at these sizes); `benchmarks/bench_train_step.py` measures it.

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
        """The kept weights `[Re R_k, Im R_k]`, shape (K2 K1, in, 2 out), modes k2-major."""
        m = self.modes

        def modes_major(w):
            w = jnp.concatenate([w[:positive], w[2 * m - negative :]], axis=0)[:, :second]
            w = jnp.swapaxes(w, 0, 1)  # (K2, K1, in, out)
            return w.reshape(-1, self.in_channels, self.out_channels)

        return jnp.concatenate(
            [modes_major(self.weight_real), modes_major(self.weight_imag)], axis=-1
        )

    def apply_grid_major(
        self, v: Float[Array, "n2 n1 batch in_channels"]
    ) -> Float[Array, "n2 n1 batch out_channels"]:
        """The layer on a batch in the grid-major layout `(n2, n1, batch, in_channels)` (grid
        axes first, in reverse order) that the [`FNO`][numpyro_fsdiff.nn.FNO] uses
        internally: every transform is then a matrix product over a leading axis, and the
        pointwise layers are plain matrix products over the channels."""
        if v.ndim != 4 or v.shape[-1] != self.in_channels:
            raise ValueError(
                f"`v` must have shape (n2, n1, batch, {self.in_channels}); got {v.shape}."
            )
        n2, n1, batch, _ = v.shape
        positive, negative, second = kept_modes(self.modes, n1, n2)
        first = positive + negative
        fy, fx, hx, hy = (jnp.asarray(a, v.dtype) for a in dft_matrices(self.modes, n1, n2))
        a = (fy @ v.reshape(n2, -1)).reshape(second, 2 * n1, -1)  # (k2, (p, x), (b, c))
        kept = batched_matmul(jnp.broadcast_to(fx, (second, *fx.shape)), a)
        # (k2 k1, (q, b), c) @ (c, (re/im of R, o)), then the complex product.
        products = batched_matmul(
            kept.reshape(second * first, 2 * batch, self.in_channels),
            self._weights(positive, negative, second),
        ).reshape(second * first, 2, batch, 2, self.out_channels)
        real = products[:, 0, :, 0] - products[:, 1, :, 1]
        imag = products[:, 0, :, 1] + products[:, 1, :, 0]
        mixed = jnp.stack([real, imag], axis=1).reshape(second, 2 * first, -1)
        z = batched_matmul(jnp.broadcast_to(hx, (second, *hx.shape)), mixed)  # (k2, (p, x), .)
        return (hy @ z.reshape(2 * second, -1)).reshape(n2, n1, batch, self.out_channels)

    def batched(
        self, v: Float[Array, "batch in_channels n1 n2"]
    ) -> Float[Array, "batch out_channels n1 n2"]:
        """The layer on a batch of fields, shape `(batch, in_channels, n1, n2)`."""
        if v.ndim != 4 or v.shape[1] != self.in_channels:
            raise ValueError(
                f"`v` must have shape (batch, {self.in_channels}, n1, n2); got {v.shape}."
            )
        out = self.apply_grid_major(jnp.transpose(v, (3, 2, 0, 1)))
        return jnp.transpose(out, (2, 3, 1, 0))

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
