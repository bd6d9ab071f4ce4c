r"""Checkpoints: a JSON file of hyperparameters beside Equinox leaf serialisations.

A checkpoint is a folder:

- `checkpoint.json`: the network class and its `config`, the covariance (class and
  parameters), the SDE parameters, the domain, the data scaling, the training configuration
  and history, metrics, and the names of the leaf files below;
- `model-<step>.eqx`: the leaves of the network that is loaded (the EMA weights after training);
- `state-<step>.eqx` (training checkpoints only): the raw weights, their EMA and the optimiser
  state, from which [`train`][numpyro_fsdiff.train] resumes exactly.

Every file is written atomically (temporary file, then rename) and the JSON is written last:
it only ever names leaf files that are complete, so an interrupted write leaves the previous
checkpoint valid. Leaf files no longer named are removed afterwards.
"""

import dataclasses
import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import covariance as covariance_module
from ._covariance import AbstractCovariance
from ._custom_types import Array, Float
from ._grid import Grid
from ._io import atomic_path, write_bytes, write_text
from ._loss import NoisePredictionScore
from ._sde import VPSDE
from .data._scaling import PixelScaling

FORMAT = "numpyro_fsdiff.checkpoint"
VERSION = 1
JSON_NAME = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file, the key and what was
    expected (a `ValueError`, never a raw `KeyError`, `AttributeError` or `TypeError`)."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_lengths(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))


def _is_scaling(value) -> bool:
    return value is None or (
        isinstance(value, dict)
        and set(value) <= {"shift", "scale"}
        and all(map(_is_number, value.values()))
    )


# The keys of checkpoint.json that loading reads: a dotted path -> (check, what is expected).
# `REQUIRED_FIELDS` must be present; `OPTIONAL_FIELDS` are checked when present (absent ones
# take their defaults). To add a field, add one line here and read it in `load_checkpoint`.
REQUIRED_FIELDS: dict = {
    "step": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
    "network": (lambda v: isinstance(v, dict), "an object {'class': ..., 'config': {...}}"),
    "network.class": (
        lambda v: isinstance(v, str) and ":" in v,
        "a string 'module:QualName' such as 'numpyro_fsdiff.nn._fno:FNO'",
    ),
    "network.config": (lambda v: isinstance(v, dict), "an object of constructor arguments"),
    "covariance": (lambda v: isinstance(v, dict), "an object {'class': ..., 'params': {...}}"),
    "covariance.class": (lambda v: isinstance(v, str), "the name of a covariance class"),
    "covariance.params": (lambda v: isinstance(v, dict), "an object of parameters"),
    "sde": (lambda v: isinstance(v, dict), "an object {'beta_min', 'beta_max', 'T'}"),
    "sde.beta_min": (_is_number, "a number"),
    "sde.beta_max": (_is_number, "a number"),
    "sde.T": (_is_number, "a number"),
    "files": (lambda v: isinstance(v, dict), "an object naming the leaf files"),
    "files.model": (lambda v: isinstance(v, str) and v != "", "a file name"),
}
OPTIONAL_FIELDS: dict = {
    "sde.trace_class": (lambda v: isinstance(v, bool), "true or false"),
    "scaling": (_is_scaling, "null or an object {'shift': number, 'scale': number}"),
    "grid": (lambda v: isinstance(v, dict), "an object {'lengths': [l1, l2]}"),
    "grid.lengths": (_is_lengths, "a list of two numbers"),
    "files.model_sha256": (lambda v: v is None or isinstance(v, str), "null or a hex digest"),
    "files.state": (lambda v: v is None or isinstance(v, str), "null or a file name"),
    "files.state_sha256": (lambda v: v is None or isinstance(v, str), "null or a hex digest"),
    "training": (lambda v: isinstance(v, dict), "an object"),
    "history": (lambda v: isinstance(v, list), "a list of records"),
}


def _lookup(record, dotted: str):
    """`(True, value)` at the dotted path of `record`, or `(False, None)` if absent."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def check_record(record, file) -> dict:
    """Raise a [`CheckpointError`][numpyro_fsdiff.CheckpointError] naming `file`, the key and
    what was expected if the JSON record lacks a required key or holds a value of the wrong
    type; return `record` otherwise."""
    if not isinstance(record, dict):
        raise CheckpointError(f"{file} must hold a JSON object; got {type(record).__name__}.")
    for fields, required in ((REQUIRED_FIELDS, True), (OPTIONAL_FIELDS, False)):
        for dotted, (check, expected) in fields.items():
            found, value = _lookup(record, dotted)
            parent_found, parent = _lookup(record, dotted.rpartition(".")[0] or dotted)
            if not found:
                if required and (parent_found or "." not in dotted):
                    raise CheckpointError(f"{file} lacks the key '{dotted}'; expected {expected}.")
                continue
            if not check(value):
                raise CheckpointError(
                    f"{file}: the key '{dotted}' must be {expected}; got {value!r}."
                )
    return record


def _to_json_value(value):
    if isinstance(value, AbstractCovariance):
        return covariance_to_config(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()


def covariance_to_config(covariance: AbstractCovariance) -> dict:
    """A JSON-able `{"class": name, "params": {...}}` description of a covariance operator.

    The class must live in [`numpyro_fsdiff.covariance`][] and take its fields as keyword
    arguments (all the operators there do); nested operators (`Combined`) recurse.
    """
    name = type(covariance).__name__
    if getattr(covariance_module, name, None) is not type(covariance):
        raise ValueError(
            f"`covariance` must be one of the operators of numpyro_fsdiff.covariance to be "
            f"saved; got {type(covariance).__qualname__}."
        )
    params = {
        f.name: _to_json_value(getattr(covariance, f.name)) for f in dataclasses.fields(covariance)
    }
    return {"class": name, "params": params}


def covariance_from_config(config: dict) -> AbstractCovariance:
    """Rebuild a covariance operator from [`covariance_to_config`][]'s description."""
    try:
        name, params = config["class"], dict(config["params"])
    except (KeyError, TypeError):
        raise ValueError(f"`config` must hold 'class' and 'params'; got {config!r}.") from None
    cls = getattr(covariance_module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, AbstractCovariance)):
        raise ValueError(f"unknown covariance class {name!r} in checkpoint.")
    for k, v in params.items():
        if isinstance(v, dict) and "class" in v:
            params[k] = covariance_from_config(v)
    return cls(**params)


def sde_to_config(sde: VPSDE) -> dict:
    """The JSON-able parameters of a [`VPSDE`][numpyro_fsdiff.VPSDE] (its covariance apart)."""
    return {
        "beta_min": float(sde.beta_min),
        "beta_max": float(sde.beta_max),
        "T": sde.T,
        "trace_class": bool(sde.covariance.is_trace_class),
    }


def sde_from_config(config: dict, covariance: AbstractCovariance) -> VPSDE:
    """Rebuild a [`VPSDE`][numpyro_fsdiff.VPSDE] from [`sde_to_config`][]'s description."""
    return VPSDE(
        covariance,
        beta_min=float(config["beta_min"]),
        beta_max=float(config["beta_max"]),
        T=float(config["T"]),
        allow_non_trace_class=not config.get("trace_class", True),
    )


def network_to_config(network) -> dict:
    """`{"class": "module:QualName", "config": network.config}` for a network with `config`."""
    config = getattr(network, "config", None)
    if not isinstance(config, dict):
        raise ValueError(
            f"`network` must have a `config` property (a JSON-able dict of its constructor "
            f"arguments) to be saved; got {type(network).__qualname__}."
        )
    cls = type(network)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": network.config}


def _network_class(spec: str, network_cls):
    if network_cls is not None:
        return network_cls
    module_name, _, qualname = spec.partition(":")
    if not (module_name == "numpyro_fsdiff" or module_name.startswith("numpyro_fsdiff.")):
        raise ValueError(
            f"the checkpoint's network class {spec!r} is outside numpyro_fsdiff; pass "
            "`network_cls=` to load it."
        )
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ValueError(
            f"'network.class' names {spec!r}, which does not exist in this version of "
            "numpyro_fsdiff; expected a class such as 'numpyro_fsdiff.nn._fno:FNO'."
        ) from None
    if not isinstance(obj, type):
        raise ValueError(f"'network.class' names {spec!r}, which is not a class.")
    return obj


def build_network(config: dict, network_cls=None):
    """Rebuild the structure of a saved network (with fresh weights) from its JSON entry."""
    cls = _network_class(config["class"], network_cls)
    return cls(**config["config"], key=jax.random.key(0))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _serialise(path: Path, tree) -> None:
    with atomic_path(path) as tmp:
        eqx.tree_serialise_leaves(tmp, tree)


def save_checkpoint(
    path: str | os.PathLike,
    network,
    sde: VPSDE,
    *,
    scaling: PixelScaling | None = None,
    lengths=(1.0, 1.0),
    step: int = 0,
    training: dict | None = None,
    history: list | None = None,
    metrics: dict | None = None,
    state: Any = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint folder (see the module docstring for its layout).

    **Arguments:**

    - `path`: the folder (created if needed).
    - `network`: the network to load later (the EMA weights), with a `config` property.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE]; its covariance is saved with it.
    - `scaling`: the [`PixelScaling`][numpyro_fsdiff.data.PixelScaling] of the data, if any.
    - `lengths`: the side lengths of the domain.
    - `step`: the training step reached.
    - `training`, `history`, `metrics`, `extra`: JSON-able records.
    - `state`: a pytree of training state to resume from (written to `state-<step>.eqx`).

    **Returns:** the folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_name = f"model-{step:08d}.eqx"
    _serialise(path / model_name, network)
    state_name = None
    if state is not None:
        state_name = f"state-{step:08d}.eqx"
        _serialise(path / state_name, state)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "network": network_to_config(network),
        "covariance": covariance_to_config(sde.covariance),
        "sde": sde_to_config(sde),
        "grid": {"lengths": [float(v) for v in lengths]},
        "scaling": None
        if scaling is None
        else {"shift": float(scaling.shift), "scale": float(scaling.scale)},
        "dtype": str(jnp.result_type(float)),
        "training": training or {},
        "history": history or [],
        "metrics": metrics or {},
        "files": {
            "model": model_name,
            "model_sha256": _sha256(path / model_name),
            "state": state_name,
            "state_sha256": None if state_name is None else _sha256(path / state_name),
        },
    }
    if extra:
        record.update(extra)
    write_text(path / JSON_NAME, json.dumps(record, indent=1) + "\n")
    keep = {model_name, state_name}
    for old in list(path.glob("model-*.eqx")) + list(path.glob("state-*.eqx")):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return path


def read_config(path: str | os.PathLike) -> dict:
    """The JSON record of the checkpoint folder `path` (or of the JSON file itself)."""
    path = Path(path)
    file = path / JSON_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: {file} does not exist.")
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON: {err}.") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{file} must hold a JSON object; got {type(record).__name__}.")
    if record.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is not a numpyro_fsdiff checkpoint: the key 'format' must be {FORMAT!r}; "
            f"got {record.get('format')!r}."
        )
    version = record.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{file}: the key 'version' must be an int; got {version!r}.")
    if version > VERSION:
        raise CheckpointError(f"{file} has version {version}; this library reads <= {VERSION}.")
    return check_record(record, file)


def update_record(path: str | os.PathLike, **fields) -> dict:
    """Replace top-level `fields` of the JSON record of checkpoint `path` (atomically)."""
    folder = Path(path)
    record = read_config(folder)
    record.update(fields)
    write_text(folder / JSON_NAME, json.dumps(record, indent=1) + "\n")
    return record


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the model of checkpoint `source` (no training state) into the folder `target`."""
    source, target = Path(source), Path(target)
    record = read_config(source)
    model = _leaf_file(source, record, "model")
    target.mkdir(parents=True, exist_ok=True)
    write_bytes(target / "model.eqx", model.read_bytes())
    record["files"] = {
        "model": "model.eqx",
        "model_sha256": record["files"]["model_sha256"],
        "state": None,
        "state_sha256": None,
    }
    write_text(target / JSON_NAME, json.dumps(record, indent=1) + "\n")
    return target


def _leaf_file(folder: Path, record: dict, kind: str) -> Path:
    name = record["files"][kind]
    file = folder / name
    if not file.is_file():
        raise FileNotFoundError(f"the checkpoint {folder} names {name}, which is missing.")
    digest = record["files"].get(f"{kind}_sha256")
    if digest is not None and _sha256(file) != digest:
        raise CheckpointError(
            f"{file} does not match the SHA-256 recorded in {JSON_NAME}; it is corrupt."
        )
    return file


def load_state(path: str | os.PathLike, like):
    """Deserialise the training state of checkpoint `path` into the structure `like`."""
    folder = Path(path)
    record = read_config(folder)
    if record["files"].get("state") is None:
        raise ValueError(f"the checkpoint {folder} holds no training state to resume from.")
    return eqx.tree_deserialise_leaves(_leaf_file(folder, record, "state"), like), record


class Checkpoint(eqx.Module):
    r"""A loaded checkpoint: the trained network with its SDE, covariance and data scaling.

    - `model`: the Q-preconditioned score $S_\theta(x, t) = -\varepsilon_\theta(x, t)/\sigma_t$
      ([`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore] around the network),
      callable on one field of any grid size and a scalar time.
    - `network`: the noise predictor $\varepsilon_\theta$ itself (the EMA weights).
    - `sde`, `covariance`: the [`VPSDE`][numpyro_fsdiff.VPSDE] and its $Q$.
    - `scaling`: the [`PixelScaling`][numpyro_fsdiff.data.PixelScaling] between pixels and
      model space.
    - `lengths`: the side lengths of the domain the model was trained on.
    - `config`: the checkpoint's JSON record (training history, metrics, ...).
    """

    network: Any
    sde: VPSDE
    scaling: PixelScaling
    lengths: tuple[float, float] = eqx.field(static=True)
    record: str = eqx.field(static=True)  # the JSON text: hashable, so the Module jits

    @property
    def config(self) -> dict:
        """The checkpoint's JSON record as a dict (a fresh copy on each access)."""
        return json.loads(self.record)

    @property
    def model(self) -> NoisePredictionScore:
        return NoisePredictionScore(self.network, self.sde)

    @property
    def covariance(self) -> AbstractCovariance:
        return self.sde.covariance

    def grid(self, shape) -> Grid:
        """The grid of `shape` on the training domain."""
        return Grid(shape, self.lengths)

    def to_pixels(self, x: Float[Array, "*batch n1 n2"], clip: bool = True):
        r"""Model space to pixel intensities in $[0, 1]$: $u = c + s x$ (clipped)."""
        return self.scaling.to_pixels(x, clip=clip)

    def from_pixels(self, u: Float[Array, "*batch n1 n2"]):
        r"""Pixel intensities in $[0, 1]$ to model space: $x = (u - c)/s$."""
        return self.scaling.from_pixels(u)


def load_checkpoint(path: str | os.PathLike, *, network_cls=None) -> Checkpoint:
    """Load a checkpoint folder written by [`train`][numpyro_fsdiff.train] or `fsdiff train`.

    **Arguments:**

    - `path`: the checkpoint folder (or its `checkpoint.json`).
    - `network_cls`: the network class, needed only if it lives outside numpyro_fsdiff.

    **Returns:** a [`Checkpoint`][numpyro_fsdiff.Checkpoint]; `.model` is the score.

    **Raises:** `FileNotFoundError` if the folder or a file it names is missing;
    [`CheckpointError`][numpyro_fsdiff.CheckpointError] (a `ValueError`) if the JSON is
    malformed (invalid JSON, a missing key, a value of the wrong type, an unknown class; the
    message names the file, the key and what was expected) or a leaf file is corrupt.

    !!! example

        ```python
        from importlib.resources import files

        import numpyro_fsdiff

        folder = files("numpyro_fsdiff") / "weights" / "mnist"  # a shipped run; yours: "runs/mnist"
        ckpt = numpyro_fsdiff.load_checkpoint(folder)
        score = ckpt.model            # S(x, t) on one field of any size
        pixels = ckpt.to_pixels(jnp.zeros((28, 28)))  # model space to [0, 1]
        ```
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    record = read_config(folder)
    file = folder / JSON_NAME
    covariance = _build(file, "covariance", covariance_from_config, record["covariance"])
    sde = _build(file, "sde", sde_from_config, record["sde"], covariance)
    skeleton = _build(file, "network", build_network, record["network"], network_cls)
    try:
        network = eqx.tree_deserialise_leaves(_leaf_file(folder, record, "model"), skeleton)
    except (TypeError, ValueError, RuntimeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"{file}: the weights in {record['files']['model']} do not fit the network of "
            f"the key 'network' ({err})."
        ) from None
    scaling = record.get("scaling")
    scaling = PixelScaling() if scaling is None else PixelScaling(**scaling)
    lengths = tuple(float(v) for v in record.get("grid", {}).get("lengths", (1.0, 1.0)))
    return Checkpoint(network, sde, scaling, lengths, json.dumps(record))


def _build(file, key: str, build, *args):
    """`build(*args)`, its failures reported as a `CheckpointError` naming `file` and `key`."""
    try:
        return build(*args)
    except CheckpointError:
        raise
    except (KeyError, AttributeError, TypeError, ValueError, ImportError) as err:
        raise CheckpointError(
            f"{file}: the key '{key}' does not describe a valid {key}: {err}"
            + ("" if str(err).endswith(".") else ".")
        ) from None
