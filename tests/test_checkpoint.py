import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import VPSDE, Grid, NoisePredictionScore, load_checkpoint
from numpyro_fsdiff._checkpoint import (
    covariance_from_config,
    covariance_to_config,
    export_checkpoint,
    save_checkpoint,
)
from numpyro_fsdiff.covariance import BandSplit, Combined, LaplacianPower, Matern, WhiteNoise
from numpyro_fsdiff.data import PixelScaling
from numpyro_fsdiff.nn import FNO


def tiny_fno(seed=0):
    return FNO(
        modes=3, width=4, depth=1, projection_dim=8, embedding_dim=8, key=jax.random.key(seed)
    )


def leaves_equal(a, b):
    la = jax.tree.leaves(eqx.filter(a, eqx.is_array))
    lb = jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


@pytest.mark.parametrize(
    "covariance",
    [
        Matern(1.5, 10.0, 0.123456789),
        LaplacianPower(2.0, 0.7),
        LaplacianPower(1.5, 2.0, constant_mode=0.3),
        WhiteNoise(0.25),
        Combined(Matern(2.0, 3.0, 1.0), LaplacianPower(1.2, 0.1)),
        BandSplit(Matern(1.5, 10.0, 8.38), Matern(2.5, 3.0, 14.99), 3),
    ],
)
def test_covariance_config_round_trip(covariance):
    config = json.loads(json.dumps(covariance_to_config(covariance)))
    rebuilt = covariance_from_config(config)
    assert type(rebuilt) is type(covariance)
    grid = Grid((9, 8))
    assert np.array_equal(rebuilt.eigenvalues(grid), covariance.eigenvalues(grid))


def test_checkpoint_round_trip_is_bit_exact(tmp_path, key):
    # Weights that are not the initial ones of any seed: a round trip cannot pass by rebuilding.
    network = jax.tree.map(
        lambda x: x * 1.2345 + 1e-3 if eqx.is_inexact_array(x) else x, tiny_fno(3)
    )
    sde = VPSDE(Matern(1.5, 10.0, 0.37), beta_min=0.2, beta_max=15.0)
    scaling = PixelScaling(0.25, 0.75)
    save_checkpoint(
        tmp_path / "ck",
        network,
        sde,
        scaling=scaling,
        lengths=(2.0, 1.0),
        step=7,
        history=[{"step": 7, "loss": 0.5}],
        metrics={"a": 1.0},
    )
    ckpt = load_checkpoint(tmp_path / "ck")
    assert leaves_equal(ckpt.network, network)
    assert ckpt.network.config == network.config
    assert float(ckpt.sde.beta_min) == float(sde.beta_min) and ckpt.sde.T == sde.T
    assert np.array_equal(
        ckpt.covariance.eigenvalues(Grid((5, 6))), sde.covariance.eigenvalues(Grid((5, 6)))
    )
    assert ckpt.lengths == (2.0, 1.0)
    assert ckpt.config["step"] == 7 and ckpt.config["metrics"] == {"a": 1.0}
    # The score is S = -eps / sigma_t and runs on any grid, odd sizes included.
    score = eqx.filter_jit(lambda s, x: s(x, 0.3))
    for shape in [(8, 8), (13, 10)]:
        x = jax.random.normal(key, shape)
        expected = score(NoisePredictionScore(network, sde), x)
        assert np.array_equal(score(ckpt.model, x), expected)
    u = jnp.linspace(0, 1, 16).reshape(4, 4)
    np.testing.assert_allclose(ckpt.to_pixels(ckpt.from_pixels(u)), u, atol=1e-6)
    # Exporting keeps the model only, still bit-exact.
    export_checkpoint(tmp_path / "ck", tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "checkpoint.json",
        "model.eqx",
    ]
    assert leaves_equal(load_checkpoint(tmp_path / "export").network, network)
    # A checkpoint goes through jit as a pytree (its JSON record is static and hashable).
    assert float(eqx.filter_jit(lambda c: c.sde.beta_max)(ckpt)) == 15.0


def test_checkpoint_errors(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))

    class NoConfig(eqx.Module):
        w: jax.Array

        def __call__(self, x, t):
            return self.w * x

    with pytest.raises(ValueError, match="`config`"):
        save_checkpoint(tmp_path / "a", NoConfig(jnp.ones(())), sde)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
    save_checkpoint(tmp_path / "b", tiny_fno(), sde)
    (model,) = (tmp_path / "b").glob("model-*.eqx")
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "b")
    model.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_checkpoint(tmp_path / "b")
    record = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    record["network"]["class"] = "os.path:join"
    (tmp_path / "b" / "checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="network_cls"):
        load_checkpoint(tmp_path / "b")


def test_rewrite_keeps_only_named_leaf_files(tmp_path):
    sde = VPSDE(Matern(2.0, 3.0, 1.0))
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, tiny_fno(step), sde, step=step, state={"s": jnp.ones(2) * step})
    names = sorted(p.name for p in tmp_path.glob("*.eqx"))
    assert names == ["model-00000003.eqx", "state-00000003.eqx"]
    assert leaves_equal(load_checkpoint(tmp_path).network, tiny_fno(3))


def test_pretrained_checkpoints_load_and_run_on_any_grid():
    from numpyro_fsdiff import pretrained

    score = eqx.filter_jit(lambda s, x: s(x, 0.5))
    for name in ("mnist", "fashion-mnist"):
        ckpt = pretrained(name)
        assert ckpt.config["metrics"]["heldout_dsm_loss"].keys() == {"14", "28", "56"}
        grid = Grid((28, 28))
        # The model-space noise has tr(Q)/|D| = 1 on the training grid, as the card says.
        assert abs(float(ckpt.covariance.trace(grid)) / grid.area - 1) < 1e-5
        for shape in [(14, 14), (15, 17)]:
            out = score(ckpt.model, jnp.zeros(shape))
            assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))
        u = jnp.linspace(0, 1, 9).reshape(3, 3)
        np.testing.assert_allclose(ckpt.to_pixels(ckpt.from_pixels(u)), u, atol=1e-6)
    with pytest.raises(ValueError, match="`name`"):
        pretrained("cifar10")


@pytest.fixture
def saved(tmp_path):
    """A valid checkpoint folder and a function that rewrites its JSON record."""
    save_checkpoint(tmp_path, tiny_fno(), VPSDE(Matern(2.0, 3.0, 1.0)), step=3)
    file = tmp_path / "checkpoint.json"
    record = json.loads(file.read_text())

    def rewrite(edit):
        new = json.loads(json.dumps(record))
        edit(new)
        file.write_text(json.dumps(new))
        return tmp_path

    return rewrite


def _delete(*path):
    def edit(record):
        for key in path[:-1]:
            record = record[key]
        del record[path[-1]]

    return edit


def _set(value, *path):
    def edit(record):
        for key in path[:-1]:
            record = record[key]
        record[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_delete("sde"), r"checkpoint\.json lacks the key 'sde'; expected an object"),
        (_delete("sde", "beta_max"),
         r"checkpoint\.json lacks the key 'sde\.beta_max'; expected a number"),
        (_delete("network", "class"),
         r"lacks the key 'network\.class'; expected a string 'module:QualName'"),
        (_delete("covariance", "params"), r"lacks the key 'covariance\.params'"),
        (_delete("files"), r"lacks the key 'files'"),
        (_set("20", "sde", "beta_max"), r"the key 'sde\.beta_max' must be a number; got '20'"),
        (_set(True, "sde", "T"), r"the key 'sde\.T' must be a number; got True"),
        (_set("3", "step"), r"the key 'step' must be an int >= 0; got '3'"),
        (_set([1.0], "grid", "lengths"), r"the key 'grid\.lengths' must be a list of two numbers"),
        (_set({"shift": "0"}, "scaling"), r"the key 'scaling' must be null or an object"),
        (_set("numpyro_fsdiff.nn:NoSuchNet", "network", "class"),
         r"key 'network' does not describe a valid network: 'network\.class' names "
         r"'numpyro_fsdiff\.nn:NoSuchNet', which does not exist"),
        (_set("NoSuchCovariance", "covariance", "class"),
         r"key 'covariance' does not describe a valid covariance: unknown covariance class"),
        (_set({"modes": 3, "nonsense": 1}, "network", "config"),
         r"key 'network' does not describe a valid network: .*nonsense"),
        (_set(None, "format"), r"the key 'format' must be 'numpyro_fsdiff\.checkpoint'; got None"),
    ],
)  # fmt: skip
def test_malformed_checkpoint_json_names_the_file_and_key(saved, edit, match):
    from numpyro_fsdiff import CheckpointError

    folder = saved(edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(folder)
    assert str(folder / "checkpoint.json") in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_json_is_a_checkpoint_error(tmp_path):
    from numpyro_fsdiff import CheckpointError

    save_checkpoint(tmp_path, tiny_fno(), VPSDE(Matern(2.0, 3.0, 1.0)))
    (tmp_path / "checkpoint.json").write_text('{"format": "numpyro_fsdiff.checkpoint", ')
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"must hold a JSON object; got list"):
        load_checkpoint(tmp_path)
