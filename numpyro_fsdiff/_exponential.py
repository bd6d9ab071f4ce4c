r"""Exponential integrators in data-prediction form: DDIM, DPM-Solver++(2M), (3M) and 2M-SDE.

**Derivation for the trace-class VP SDE** (DESIGN sections 3-5). With the Q-preconditioned
score $S = Q\nabla\log p_t$ and Tweedie's data prediction
$\hat x_0(x, t) = (x + \sigma_t^2 S(x, t)) / m_t$
([`tweedie_denoise`][numpyro_fsdiff.tweedie_denoise]), $S = (m_t \hat x_0 - x)/\sigma_t^2$ and
the probability-flow ODE $\dot x = -\tfrac12\beta(t)[x + S]$ becomes, using
$\dot m_t = -\tfrac12\beta m_t$, $\sigma_t\dot\sigma_t = \tfrac12\beta m_t^2$ and
$\dot\lambda_t = -\beta/(2\sigma_t^2)$ for $\lambda_t = \log(m_t/\sigma_t)$,

$$\dot x = \frac{\dot\sigma_t}{\sigma_t}\, x + m_t \dot\lambda_t\, \hat x_0(x, t),
\qquad\text{so}\qquad
\frac{x_t}{\sigma_t} = \frac{x_s}{\sigma_s} + \int_{\lambda_s}^{\lambda_t} e^{\lambda}\,
\hat x_0\,\mathrm{d}\lambda .$$

The linear part is integrated exactly; $Q$ enters only through $\hat x_0$, because the linear
coefficient $-\tfrac12\beta$ and the score's coefficient are scalars.

The reverse SDE $\mathrm{d}x = [-\tfrac12\beta x - \beta S]\,\mathrm{d}t + \sqrt\beta\,
\mathrm{d}W^Q$, and more generally the family $\mathrm{d}x = [-\tfrac12\beta x -
\tfrac{1+\eta}{2}\beta S]\,\mathrm{d}t + \sqrt{\eta\beta}\,\mathrm{d}W^Q$ with the same marginals
($\eta = 0$: the ODE above; $\eta = 1$: the reverse SDE), has in the same variables the
linear coefficient $\dot\sigma_t/\sigma_t + \eta\dot\lambda_t$. Integrating it exactly, with
$H = (1+\eta)h$,

$$x_t = \frac{\sigma_t}{\sigma_s}e^{-\eta h}x_s + m_t\int_0^{H} e^{-(H - v)}\,
\hat x_0\big(\lambda_s + v/(1+\eta)\big)\,\mathrm{d}v + \sigma_t\sqrt{1 - e^{-2\eta h}}\,\xi,
\qquad \xi \sim N(0, Q),$$

the exact variance of the step's stochastic integral, coloured by $Q$ as the noise of the SDE
is (all coefficients being scalars). With the Taylor expansion of $\hat x_0$ in $\lambda$ the
integral is $c_1\hat x_0 + c_2\,h\hat x_0' + 2c_3\cdot\tfrac12 h^2\hat x_0''$, in which
$c_1 = 1 - e^{-H}$, $c_2 = 1 - c_1/H$, $c_3 = \tfrac12 - c_2/H$ (from
$\int_0^H e^{-(H-v)}v^k/k!\,\mathrm{d}v$). With $\hat x_0$ frozen over the step this is DDIM
($\eta = 0$); DPM-Solver++(2M) and (3M) replace $h\hat x_0'$ and $\tfrac12 h^2\hat x_0''$ by
divided differences through the previous steps' predictions (Lu et al. 2023), so one score
evaluation per step gives order 2 / 3, for the ODE and for the SDE's drift.

The third-order term is $+2c_3 D_2$ with $D_2 \approx \tfrac12 h^2\hat x_0''$. Lu et al.'s
reference implementation and k-diffusion's `dpmpp_3m_sde` add $c_3 D_2$, half of it; as $h \to
0$ their update is then not the Adams-Bashforth 3 step it must reduce to, and the method is of
order 2. On the Gaussian case of tests/test_sample_orders.py the corrected step's map error at
64 log-SNR steps is 5.1e-6, against 3.7e-4 with the halved term and 1.1e-3 for 2M.

**In Diffrax.** The solvers read the term
[`DataPredictionTerm`][numpyro_fsdiff.DataPredictionTerm] (vector field $\hat x_0$) and, for
the SDE, a [`ColouredNoiseTerm`][numpyro_fsdiff.ColouredNoiseTerm] whose increment over a step,
divided by $\sqrt{|\Delta t|}$, is the $N(0, Q)$ draw $\xi$. They step in the exponentially
time-changed variables ($\lambda_t$, $x/\sigma_t$) whatever clock the solve runs in; the
time grid of the [`SolverConfig`][numpyro_fsdiff.SolverConfig] places the steps
(`time_grid="log-snr"` gives equal steps in $\lambda$). Fixed steps only (no error estimate).
Multistep history is kept in the solver state; the first steps use the lower orders. So the
first step of every multistep solver is DDIM, whose $O(h^2)$ local error is a floor for
`"dpm++3m"`: order 3 over 8-32 log-SNR steps on the Gaussian case, then order 2 below an
error of about 1e-6 of the field.

**Log-densities.** The divergence of the flow is integrated by the Runge-Kutta solve of the
augmented ODE, which an exponential integrator of the state alone would not discretise
consistently; the density solves of `ProbabilityFlowODE` therefore refuse these solvers, and
`ProbabilityFlow.__call__`/`_inverse` (the map without its Jacobian) accept them.

??? cite "References"

    Lu et al., *DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
    Around 10 Steps*, NeurIPS 2022. Lu et al., *DPM-Solver++: Fast Solver for Guided Sampling
    of Diffusion Probabilistic Models*, 2023. Song, Meng and Ermon, *Denoising Diffusion
    Implicit Models*, ICLR 2021.
"""

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax.numpy as jnp
from diffrax._term import WrapTerm

from ._custom_types import BatchedField, Scalar
from ._solvers import register_solver


class DataPredictionTerm(diffrax.AbstractTerm):
    r"""The data prediction $\hat x_0(x, t) = (x + \sigma_t^2 S(x, t))/m_t$ as a Diffrax term,
    for the exponential integrators ([`DDIM`][numpyro_fsdiff.DDIM],
    [`DPMSolverPP`][numpyro_fsdiff.DPMSolverPP], [`DPMSolverPPSDE`][numpyro_fsdiff.DPMSolverPPSDE]).

    **Arguments:**

    - `score`: the Q-preconditioned score on one field and a scalar time.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] of $m_t$, $\sigma_t$ and $\lambda_t$.
    """

    score: Callable
    sde: eqx.Module

    def vf(self, t, y, args) -> BatchedField:
        mean, std = self.sde.marginal_coefficients(t)
        return (y + std**2 * self.score(y, t)) / mean

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return vf * control


def _unwrap(term):
    """The term and the sign that turns the solver's clock into the real time."""
    if isinstance(term, WrapTerm):
        return term.term, term.direction
    return term, 1


class _ExponentialState(eqx.Module):
    prev1: BatchedField  # x0_hat of the previous step
    prev2: BatchedField  # x0_hat of the step before
    h1: Scalar  # lambda step of the previous step
    h2: Scalar
    count: Scalar  # steps taken


class AbstractExponentialSolver(diffrax.AbstractSolver):
    """Base of the exponential integrators: a fixed multistep order and the shared state."""

    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.multistep_order

    def init(self, terms, t0, t1, y0, args):
        zero = jnp.zeros((), jnp.result_type(float))
        return _ExponentialState(jnp.zeros_like(y0), jnp.zeros_like(y0), zero, zero, zero)

    def func(self, terms, t0, y0, args):
        term = terms.terms[0] if isinstance(terms, diffrax.MultiTerm) else terms
        return term.vf(t0, y0, args)

    def _exponential_step(self, terms, t0, t1, y0, args, state, eta, noise):
        r"""One step of `exponential_update` from the solver's clock, with $\xi$ the noise
        term's draw (`None` for the ODE)."""
        term, direction = _unwrap(terms)
        s, t = t0 * direction, t1 * direction
        x0 = term.vf(s, y0, args)
        y1, noise_scale, h = exponential_update(
            term.sde, s, t, y0, x0, eta, self.multistep_order, state.count,
            state.prev1, state.h1, state.prev2, state.h2)
        if noise is not None:
            xi = noise.contr(t0, t1) / jnp.sqrt(jnp.abs(t1 - t0))
            y1 = y1 + noise_scale * xi
        dense_info = dict(y0=y0, y1=y1)
        next_state = _ExponentialState(x0, state.prev1, h, state.h1, state.count + 1)
        return y1, None, dense_info, next_state, diffrax.RESULTS.successful


def exponential_update(sde, s, t, y0, x0, eta, multistep_order: int, count, prev1=None, h1=None,
                       prev2=None, h2=None):
    r"""The module's update from $s$ to $t$ without its noise: returns the mean
    $\frac{\sigma_t}{\sigma_s}e^{-\eta h}x_s + m_t(c_1\hat x_0 + c_2 D_1 + 2c_3 D_2)$, the
    noise scale $\sigma_t\sqrt{1 - e^{-2\eta h}}$ (the step adds it times $\xi \sim N(0,
    Q)$) and $h = \lambda_t - \lambda_s$, with the divided differences the order and the
    history allows (none, $D_1$ from the 2nd step, $D_2$ from the 3rd): `count` steps taken
    before, the previous predictions `prev1`, `prev2` and their log-SNR steps `h1`, `h2`.
    `x0` is $\hat x_0(x_s, s)$; the solvers and SMC's proposals share this update."""
    m_t, sigma_t = sde.marginal_coefficients(t)
    sigma_s = sde.marginal_coefficients(s)[1]
    h = sde.log_snr(t) - sde.log_snr(s)
    H = (1.0 + eta) * h
    c1 = -jnp.expm1(-H)
    correction = 0.0
    # The order is static: the sampler loop computes only the differences it uses.
    if multistep_order >= 2:
        use1 = count >= 1
        r0 = jnp.where(use1, h1 / h, 1.0)
        d1_0 = (x0 - prev1) / r0  # h x0' at lambda_s, to first order
        # Lu et al.'s 2M step (midpoint form, 0.5 c1 instead of c2) is kept for order 2.
        correction = jnp.where(use1, 0.5 * c1 * d1_0, correction)
    if multistep_order >= 3:
        use2 = count >= 2
        r1 = jnp.where(use2, h2 / h, 1.0)
        d1_1 = (prev1 - prev2) / r1  # the same one step earlier
        d2 = (d1_0 - d1_1) / (r0 + r1)  # h^2 x0'' / 2
        d1 = d1_0 + r0 * d2  # h x0' at lambda_s, to second order
        c2 = 1.0 - c1 / H
        c3 = 0.5 - c2 / H
        correction = jnp.where(use2, c2 * d1 + 2.0 * c3 * d2, correction)
    mean = (sigma_t / sigma_s) * jnp.exp(-eta * h) * y0 + m_t * (c1 * x0 + correction)
    return mean, sigma_t * jnp.sqrt(-jnp.expm1(-2.0 * eta * h)), h


class DPMSolverPP(AbstractExponentialSolver):
    r"""DPM-Solver++ multistep for the probability-flow ODE in data-prediction form: order 1
    (DDIM), 2 (`"dpm++2m"`) or 3 (`"dpm++3m"`); one score evaluation per step.

    The module's update with $\eta = 0$: $x_t = (\sigma_t/\sigma_s)\,x_s + m_t(c_1\hat x_0
    + \text{correction})$, the correction being $0$ (order 1), $\tfrac12 c_1 D_0$ with
    $D_0 = (\hat x_0 - \hat x_0^{(1)})/r_0$ (order 2), or $c_2 D_1 + 2c_3 D_2$ (order 3), where
    $\hat x_0^{(1)}, \hat x_0^{(2)}$ are the previous predictions at $\lambda$-steps $h_1, h_2$,
    $r_i = h_{i+1}/h$, $D_2 = (D_0 - D_0')/(r_0 + r_1)$, $D_0' = (\hat x_0^{(1)} -
    \hat x_0^{(2)})/r_1$ and $D_1 = D_0 + r_0 D_2$.

    The first steps use the orders their history allows. See the module notes for the
    derivation with coloured noise, and for the factor 2 on $D_2$.

    **Arguments:**

    - `multistep_order`: 1, 2 or 3.

    **Raises:** `ValueError` naming `multistep_order` for another value.
    """

    multistep_order: int = eqx.field(static=True, default=2)
    term_structure: ClassVar = diffrax.AbstractTerm

    def __check_init__(self):
        order = self.multistep_order
        if isinstance(order, bool) or order not in (1, 2, 3):
            raise ValueError(f"`multistep_order` must be one of (1, 2, 3); got {order!r}.")

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        return self._exponential_step(terms, t0, t1, y0, args, solver_state, 0.0, None)


def DDIM() -> DPMSolverPP:
    r"""DDIM: the first-order exponential integrator in data-prediction form,
    $x_t = (\sigma_t/\sigma_s)\,x_s + m_t(1 - e^{-h})\,\hat x_0(x_s, s)$ (`"ddim"`)."""
    return DPMSolverPP(multistep_order=1)


class DPMSolverPPSDE(AbstractExponentialSolver):
    r"""SDE-DPM-Solver++(2M) for the reverse SDE with $N(0, Q)$ noise (`"dpm++2m-sde"`):

    $$x_t = \frac{\sigma_t}{\sigma_s}e^{-\eta h}x_s + m_t\big(c_1\hat x_0 + \text{correction}
    \big) + \sigma_t\sqrt{1 - e^{-2\eta h}}\,\xi, \qquad \xi = Q^{1/2}\Delta W/\sqrt{|\Delta t|}
    \sim N(0, Q),$$

    with $H = (1+\eta)h$ in $c_1$ and the 2M correction of
    [`DPMSolverPP`][numpyro_fsdiff.DPMSolverPP] from the second step on (Lu et al. 2023).
    Takes `MultiTerm(DataPredictionTerm, noise)`.

    There is no 3M-SDE: extrapolating the predictions along a noisy path through two earlier
    steps loses the law. On the Gaussian case of tests/test_sample_orders.py (20,000 draws) the
    whitened spectral error of k-diffusion's `dpmpp_3m_sde` step (with $c_3 D_2$) at 5 / 10 / 20 /
    40 uniform steps is 0.50 / 0.21 / 0.070 / 0.011, and 0.64 / 0.86 / 0.25 / 0.034 with the
    exact $2c_3 D_2$, against 0.064 / 0.042 / 0.011 / 0.004 for this 2M step.

    $\eta$ picks one member of the family of reverse processes with the forward process's
    marginals (module notes): $\eta = 1$ (the default) is the reverse SDE, $\eta = 0$ the
    probability-flow ODE (the step is then `"dpm++2m"`'s, with no noise), and
    values between keep less of the noise (k-diffusion's `eta`).

    **Arguments:**

    - `eta`: the share of the reverse SDE's noise kept, $0 \le \eta \le 1$.

    **Raises:** `ValueError` naming `eta` for a value outside $[0, 1]$.
    """

    multistep_order: ClassVar[int] = 2
    eta: float = eqx.field(static=True, default=1.0)
    term_structure: ClassVar = diffrax.MultiTerm[tuple[diffrax.AbstractTerm, diffrax.AbstractTerm]]

    def __check_init__(self):
        if isinstance(self.eta, bool) or not (
            isinstance(self.eta, int | float) and 0.0 <= self.eta <= 1.0
        ):
            raise ValueError(f"`eta` must be a number in [0, 1]; got {self.eta!r}.")

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        prediction, noise = terms.terms
        return self._exponential_step(prediction, t0, t1, y0, args, solver_state, self.eta, noise)


def is_exponential(solver) -> bool:
    """Whether `solver` is one of the exponential integrators (it reads a DataPredictionTerm)."""
    return isinstance(solver, AbstractExponentialSolver)


register_solver("ddim", DDIM, ("ode",))
register_solver("dpm++2m", lambda: DPMSolverPP(multistep_order=2), ("ode",))
register_solver("dpm++3m", lambda: DPMSolverPP(multistep_order=3), ("ode",))
register_solver("dpm++2m-sde", DPMSolverPPSDE, ("sde",))
