"""Diffrax solvers by name, and the Brownian motion each one needs."""

import diffrax

_SDE_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "euler_heun": diffrax.EulerHeun,
    "sra1": diffrax.SRA1,
    "shark": diffrax.ShARK,
    "sea": diffrax.SEA,
}
_ODE_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
}
SDE_SOLVER_NAMES = tuple(_SDE_SOLVERS)
ODE_SOLVER_NAMES = tuple(_ODE_SOLVERS)


def resolve_solver(solver, *, kind: str) -> diffrax.AbstractSolver:
    """Turn a lower-case name or a Diffrax solver instance into a solver instance.

    **Arguments:**

    - `solver`: a name of `SDE_SOLVER_NAMES` (for `kind="sde"`) or `ODE_SOLVER_NAMES`
      (for `kind="ode"`), or any `diffrax.AbstractSolver`.
    - `kind`: `"sde"` or `"ode"`.

    **Raises:** `ValueError` naming `solver` for an unknown name or a non-solver.
    """
    table = {"sde": _SDE_SOLVERS, "ode": _ODE_SOLVERS}[kind]
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in table:
        return table[solver.lower()]()
    raise ValueError(
        f"`solver` must be one of {sorted(table)} or a diffrax solver instance for the "
        f"{kind.upper()}; got {solver!r}."
    )


def levy_area_for(solver: diffrax.AbstractSolver) -> type:
    """The Brownian increment type the solver reads: plain increments for Euler-type
    solvers, space-time (or space-time-time) Lévy area for the SRK family (SRA1, ShARK, SEA)."""
    if isinstance(solver, diffrax.AbstractSRK):
        if solver.minimal_levy_area is diffrax.AbstractSpaceTimeTimeLevyArea:
            return diffrax.SpaceTimeTimeLevyArea
        return diffrax.SpaceTimeLevyArea
    return diffrax.BrownianIncrement


def has_error_estimate(solver: diffrax.AbstractSolver) -> bool:
    """Whether the solver gives the local error estimate that adaptive stepping needs."""
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        return True
    if isinstance(solver, diffrax.AbstractSRK):
        return solver.tableau.b_error is not None
    return False
