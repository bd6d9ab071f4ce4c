r"""The exact law of each sampler's output when the score is the Gaussian one.

The reference of the sampler tests and of the Gaussian solver-comparison table.
"""

import numpy as np

from ._analytic import GaussianScore


def _marginal_coefficients(sde, t):
    """(m_t, sigma_t^2) of the VP-SDE in float64 NumPy (the references need more than float32)."""
    b_min, b_max = float(sde.beta_min), float(sde.beta_max)
    log_mean = -0.25 * t**2 * (b_max - b_min) - 0.5 * t * b_min
    return np.exp(log_mean), -np.expm1(2.0 * log_mean)


def gaussian_sampler_spectrum(
    score: GaussianScore,
    *,
    method: str = "sde",
    t_eps: float = 1e-3,
    denoise: bool = True,
    quadrature_points: int = 20001,
) -> np.ndarray:
    r"""The exact per-mode variances (grid eigenvalues) of what an exact solve returns when the
    score is the Gaussian one, data $N(0, C)$, started from $X_T \sim N(0, Q)$.

    Per Fourier mode, with $v_t = m_t^2 c + \sigma_t^2 q$ the marginal variance:

    - probability-flow ODE: the flow is linear, $x_{t} = \sqrt{v_t / v_T}\, x_T$, so the output
      variance is $q\, v_{t_\varepsilon} / v_T$;
    - reverse SDE (and predictor-corrector, whose corrector leaves $p_t$ invariant): the
      variance $P$ solves $\mathrm{d}P/\mathrm{d}(-t) = \beta (1 - 2q/v_t) P + \beta q$; $v_t$ is
      a solution, so $P_{t_\varepsilon} = v_{t_\varepsilon} + (q - v_T)
      \exp\int_{t_\varepsilon}^T \beta (1 - 2q/v_t)\,\mathrm{d}t$ (trapezoidal quadrature in
      float64 with `quadrature_points` nodes);
    - the Tweedie step multiplies each mode by $m c / v$ at $t_\varepsilon$.

    **Arguments:**

    - `score`: the [`GaussianScore`][numpyro_fsdiff.GaussianScore] of the data.
    - `method`: `"sde"`, `"pc"` or `"ode"`.
    - `t_eps`: the final time.
    - `denoise`: whether the final Tweedie step is applied.
    - `quadrature_points`: nodes of the quadrature in the SDE case.

    **Returns:** a float64 array of shape `grid.shape` (`numpy.fft.fft2` layout) of grid
    eigenvalues: a field $u$ has $\mathrm{Var}\,\hat u_k = N\,\text{spectrum}_k / |D|$ in the
    unitary DFT.
    """
    if method not in ("sde", "ode", "pc"):
        raise ValueError(f"`method` must be 'sde', 'ode' or 'pc'; got {method!r}.")
    sde, grid = score.sde, score.grid
    q = np.asarray(sde.covariance.eigenvalues(grid), np.float64)
    c = np.asarray(score.data_covariance.eigenvalues(grid), np.float64)
    b_min, b_max, T = float(sde.beta_min), float(sde.beta_max), sde.T

    def variance(t):
        mean, var = _marginal_coefficients(sde, t)
        return np.multiply.outer(mean**2, c) + np.multiply.outer(var, q)

    v_eps, v_T = variance(np.float64(t_eps)), variance(np.float64(T))
    if method == "ode":
        out = q * v_eps / v_T
    else:
        ts = np.linspace(t_eps, T, quadrature_points)
        beta = b_min + ts * (b_max - b_min)
        integrand = beta[:, None, None] * (1.0 - 2.0 * q / variance(ts))
        out = v_eps + (q - v_T) * np.exp(np.trapezoid(integrand, ts, axis=0))
    if denoise:
        mean, _ = _marginal_coefficients(sde, np.float64(t_eps))
        out = out * (mean * c / v_eps) ** 2
    return out


def gaussian_euler_maruyama_spectrum(
    score: GaussianScore, times, *, denoise: bool = True
) -> np.ndarray:
    r"""The exact per-mode variances of the reverse-SDE Euler-Maruyama chain on the step times
    `times` when the score is the Gaussian one (data $N(0, C)$, $X_T \sim N(0, Q)$): the law
    that a finite number of steps actually samples, not the continuous-time limit of
    [`gaussian_sampler_spectrum`][numpyro_fsdiff._sampler_spectrum.gaussian_sampler_spectrum].

    Per Fourier mode the Q-preconditioned score is $-q\,x/v_t$, $v_t = m_t^2 c + \sigma_t^2 q$,
    so a step from $t$ to $s = t - h$ (drift at $t$, noise $N(0, \beta(t) h\, q)$) maps the
    variance as

    $$P_s = \big(1 + \beta(t) h\,(\tfrac12 - q/v_t)\big)^2 P_t + \beta(t) h\, q, \qquad P_T = q,$$

    and the Tweedie step multiplies the result by $(m c / v)^2$ at the last time. Where $c = q$
    (a mode on which the score is exactly $-x$) the factor is $1 - \beta h / 2$ and $P$ tends
    to $q / (1 - \beta h / 4)$ rather than $q$: Euler-Maruyama's own bias.

    **Arguments:**

    - `score`: the [`GaussianScore`][numpyro_fsdiff.GaussianScore] of the data.
    - `times`: the step times from $T$ down to $t_\varepsilon$, e.g.
      [`time_grid`][numpyro_fsdiff.time_grid]`(sde, sde.T, t_eps, steps, kind)`.
    - `denoise`: whether the final Tweedie step is applied.

    **Returns:** a float64 array of shape `grid.shape` of grid eigenvalues, as
    `gaussian_sampler_spectrum` returns.
    """
    sde, grid = score.sde, score.grid
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or times.size < 2 or not np.all(np.diff(times) < 0):
        raise ValueError(f"`times` must be a decreasing 1-D array of >= 2 times; got {times!r}.")
    q = np.asarray(sde.covariance.eigenvalues(grid), np.float64)
    c = np.asarray(score.data_covariance.eigenvalues(grid), np.float64)
    b_min, b_max = float(sde.beta_min), float(sde.beta_max)
    variance = q.copy()
    for t, s in zip(times[:-1], times[1:]):
        h, beta = t - s, b_min + t * (b_max - b_min)
        mean, var = _marginal_coefficients(sde, t)
        factor = 1.0 + beta * h * (0.5 - q / (mean**2 * c + var * q))
        variance = factor**2 * variance + beta * h * q
    if denoise:
        mean, var = _marginal_coefficients(sde, times[-1])
        variance = variance * (mean * c / (mean**2 * c + var * q)) ** 2
    return variance


def euler_maruyama_reference_factor(
    sde, steps: int, *, time_grid: str = "uniform", t_eps: float = 1e-3, denoise: bool = True
) -> float:
    r"""The variance, relative to $Q$, that reverse-SDE Euler-Maruyama with `steps` steps on
    `time_grid` gives a mode on which the score is exactly $-x$ (data $N(0, Q)$; the modes
    above a band-limited model's cutoff): the reference of
    [`compare_spectra`][numpyro_fsdiff.compare_spectra]'s `reference_factor` for such
    samples. 1.0069 for 200 uniform steps, 1.0140 for 100."""
    from ._grid import Grid
    from ._solvers import time_grid as make_times

    grid = Grid((4, 4))  # the factor is the same for every mode
    exact = GaussianScore(sde.covariance, sde, grid)
    spectrum = gaussian_euler_maruyama_spectrum(
        exact, make_times(sde, sde.T, t_eps, steps, time_grid), denoise=denoise)
    q = np.asarray(sde.covariance.eigenvalues(grid), np.float64)
    return float(np.median(spectrum / q))
