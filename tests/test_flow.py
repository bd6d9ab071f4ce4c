"""ProbabilityFlow: a NumPyro bijection from the Gaussian latent at T to the data at t_eps."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from numpyro_fsdiff import (
    VPSDE,
    DiffusionPrior,
    GaussianField,
    GaussianScore,
    Grid,
    ProbabilityFlow,
)
from numpyro_fsdiff.covariance import Matern


def setup(shape=(8, 8), **kwargs):
    grid = Grid(shape)
    q = Matern(alpha=2.0, tau=3.0)
    c = Matern(alpha=2.5, tau=4.0, scale=3.0)
    sde = VPSDE(q)
    score = GaussianScore(c, sde, grid)
    return grid, q, c, sde, score, ProbabilityFlow(score, sde, grid, **kwargs)


def test_inverse_of_forward_and_dense_log_det(x64, key):
    grid, q, c, sde, score, flow = setup(rtol=1e-10, atol=1e-10)
    z = q.sample(key, grid)
    forward = jax.jit(lambda f, u: f.call_with_intermediates(u))
    x, log_det_forward = forward(flow, z)
    np.testing.assert_allclose(jax.jit(lambda f, u: f._inverse(u))(flow, x), z, atol=1e-8)
    # log|det dx/dz| from the integrated divergence, against a dense Jacobian (64 x 64)
    jacobian = jax.jit(jax.jacobian(lambda u: flow(u).reshape(-1)))(z).reshape(64, 64)
    sign, log_det_dense = np.linalg.slogdet(np.asarray(jacobian))
    assert sign > 0
    log_det = jax.jit(lambda f, u, v: f.log_abs_det_jacobian(u, v))(flow, z, x)
    np.testing.assert_allclose(log_det, log_det_dense, atol=1e-7)
    np.testing.assert_allclose(log_det_forward, log_det_dense, atol=1e-7)
    assert abs(log_det_dense) > 1.0  # the flow is far from volume-preserving here
    # for the Gaussian case the flow is the Fourier multiplier sqrt(s_k / q_k) (linear, exact)
    s = q.eigenvalues(grid) * score.marginal_eigenvalues(1e-3) / score.marginal_eigenvalues(sde.T)
    np.testing.assert_allclose(
        log_det_dense, 0.5 * np.sum(np.log(s / q.eigenvalues(grid))), atol=1e-7
    )


def test_transformed_distribution_is_the_diffusion_prior(x64, key):
    grid, q, c, sde, score, flow = setup((6, 6), rtol=1e-9, atol=1e-9)
    law = dist.TransformedDistribution(GaussianField(q, grid), flow)
    prior = DiffusionPrior(score, sde, grid, rtol=1e-9, atol=1e-9)
    xs = c.sample(key, grid, (2,))
    both = jax.jit(lambda a, b, v: (a.log_prob(v), b.log_prob(v)))(law, prior, xs)
    np.testing.assert_allclose(both[0], both[1], atol=1e-7)
    assert np.all(np.abs(both[0] - GaussianField(q, grid).log_prob(xs)) > 1.0)


@pytest.mark.slow
def test_pytree_and_forward_mode_adjoint(x64, key):
    grid, q, c, sde, score, flow = setup(
        (4, 4), solver="heun", steps=20, adjoint=diffrax.DirectAdjoint()
    )
    z = q.sample(key, grid)
    leaves, treedef = jax.tree.flatten(flow)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    apply = jax.jit(lambda f, u: f(u))
    np.testing.assert_allclose(apply(rebuilt, z), apply(flow, z), rtol=1e-14)
    # DirectAdjoint supports forward mode (jacfwd), and it agrees with reverse mode
    forward = jax.jacfwd(lambda u: flow(u).reshape(-1))(z)
    reverse = jax.jacrev(lambda u: flow(u).reshape(-1))(z)
    np.testing.assert_allclose(forward, reverse, atol=1e-12)
    assert flow.domain.event_dim == 2 and flow.codomain.event_dim == 2


def test_shape_errors():
    grid, q, c, sde, score, flow = setup((4, 4))
    with pytest.raises(ValueError, match=r"`z` must have shape \(\.\.\., 4, 4\).*\(4, 5\)"):
        flow(jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"`x` must have shape"):
        flow._inverse(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="`grid`"):
        ProbabilityFlow(score, sde, None)
