"""numpyro_fsdiff.diagnostics: MCMC over fields -> ArviZ DataTree, summaries, image panels."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from numpyro_fsdiff import GaussianField, Grid, diagnostics
from numpyro_fsdiff.covariance import Matern


@pytest.fixture(scope="module")
def run():
    grid = Grid((4, 6), lengths=(1.0, 2.0))
    q = Matern(alpha=1.5, tau=2.0)
    # a field prior and a deterministic field site; the DiffusionPrior case is run by
    # test_prior.py::test_nuts_on_log_prob_recovers_the_exact_posterior
    prior = GaussianField(q, grid)
    y = jnp.linspace(-1, 1, grid.size).reshape(grid.shape)

    def model():
        x_base = numpyro.sample("x_base", prior)
        x = numpyro.deterministic("x", 2.0 * x_base)
        numpyro.sample("y", dist.Normal(x, 0.3).to_event(2), obs=y)

    mcmc = MCMC(
        NUTS(model),
        num_warmup=50,
        num_samples=80,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), extra_fields=("energy", "diverging"))
    return grid, mcmc


def test_datatree_has_image_dims_and_summaries(run):
    grid, mcmc = run
    data = diagnostics.to_datatree(mcmc, grid=grid)
    x = data["posterior"]["x"]
    assert x.dims == ("chain", "draw", "x1", "x2")
    assert data["posterior"]["x_base"].dims == ("chain", "draw", "x1", "x2")
    np.testing.assert_allclose(x["x2"].values, np.arange(6) * 2.0 / 6)
    samples = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    np.testing.assert_array_equal(x.values, samples)
    # the summaries are quadratures: spatial mean (1/|D|) int u and L2(D) norm
    np.testing.assert_allclose(
        data["posterior"]["x_mean"].values, samples.mean(axis=(-2, -1)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        data["posterior"]["x_norm"].values,
        np.sqrt(np.sum(samples**2, axis=(-2, -1)) * grid.cell_area),
        rtol=1e-5,
    )
    assert data["posterior"]["x_mean"].dims == ("chain", "draw")


def test_summary_matches_arviz_and_the_bfmi_formula(run, tmp_path):
    grid, mcmc = run
    data = diagnostics.to_datatree(mcmc, grid=grid)
    summary = diagnostics.summarize(data)
    x = summary["variables"]["x"]
    assert x["size"] == grid.size
    np.testing.assert_allclose(x["ess_bulk_min"], float(az.ess(data, var_names=["x"])["x"].min()))
    np.testing.assert_allclose(x["rhat_max"], float(az.rhat(data, var_names=["x"])["x"].max()))
    assert 1.0 - 0.05 < x["rhat_max"] < 1.2 and x["ess_tail_min"] > 10
    energy = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["energy"], np.float64)
    for chain, value in enumerate(summary["bfmi"]):
        e = energy[chain]
        np.testing.assert_allclose(
            value, np.sum(np.diff(e) ** 2) / np.sum((e - e.mean()) ** 2), rtol=1e-10
        )
    np.testing.assert_allclose(summary["bfmi"], az.bfmi(data)["energy"].values, rtol=1e-4)
    diverging = mcmc.get_extra_fields(group_by_chain=True)["diverging"]
    assert summary["divergences"] == int(np.sum(diverging))
    assert summary["num_chains"] == 2 and summary["num_draws"] == 80
    table = diagnostics.format_summary(summary)
    assert "| x | 24 |" in table and "x_base_norm" in table
    # image panels, written atomically (no temporary file left behind)
    path = diagnostics.plot_field_posterior(
        data, "x", tmp_path / "panels.png", truth=np.zeros(grid.shape)
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panels.png"]


def test_diagnostics_errors(run, tmp_path):
    grid, mcmc = run
    with pytest.raises(ValueError, match="`fields` names a site 'u'"):
        diagnostics.to_datatree(mcmc, fields=["u"])
    data = diagnostics.to_datatree(mcmc, grid=grid, summaries={})
    assert "x_mean" not in data["posterior"].data_vars
    with pytest.raises(ValueError, match="`var_names` names 'z'"):
        diagnostics.summarize(data, var_names=["z"])
    with pytest.raises(ValueError, match="`truth` must have shape"):
        diagnostics.plot_field_posterior(data, "x", tmp_path / "a.png", truth=np.zeros((2, 2)))
