r"""Training the feature classifiers of the Fréchet distance, and their model cards.

The network, its loading and its accuracy live in the library
([`Classifier`][numpyro_fsdiff.Classifier], [`load_classifier`][numpyro_fsdiff.load_classifier]);
this is how the shipped weights were made.
"""

import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._classifier import Classifier, _check_dataset, classifier_accuracy
from .._io import atomic_path, write_text


def train_classifier(
    dataset: str,
    out: str | Path,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    channels: int = 16,
    features: int = 128,
    num_train: int | None = None,
    root=None,
) -> dict:
    """Train a [`Classifier`][numpyro_fsdiff.Classifier] on the training split with Adam and
    write `classifier.eqx`, `config.json` and `MODEL_CARD.md` (with the test accuracy) to `out`.
    `num_train` limits training to the first that many training images (all by default).

    **Returns:** the model card's numbers as a dict.
    """
    import optax

    from .data import load

    _check_dataset(dataset)
    train = load(dataset, "train", root)
    test = load(dataset, "test", root)
    key = jax.random.key(seed)
    key, init_key = jax.random.split(key)
    model = Classifier(channels, features, key=init_key)
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, images, labels):
        def loss(m):
            logits = jax.vmap(m)(images)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = optimiser.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, value

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    num = len(train.images) if num_train is None else min(int(num_train), len(train.images))
    for _ in range(epochs):
        order = rng.permutation(num)
        for i in range(0, num - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            model, state, _ = step(
                model, state, jnp.asarray(train.images[idx]), jnp.asarray(train.labels[idx])
            )
    seconds = time.perf_counter() - start
    card = dict(
        dataset=dataset,
        test_accuracy=classifier_accuracy(model, test.images, test.labels),
        train_accuracy_first_10000=classifier_accuracy(
            model, train.images[:10000], train.labels[:10000]
        ),
        epochs=epochs,
        num_train=num,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        channels=channels,
        features=features,
        parameters=int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))),
        training_seconds=round(seconds, 1),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "classifier.eqx") as tmp:
        eqx.tree_serialise_leaves(tmp, model)
    config = dict(channels=channels, features=features, test_accuracy=card["test_accuracy"])
    write_text(out / "config.json", json.dumps(config) + "\n")
    write_text(out / "MODEL_CARD.md", _model_card(card))
    return card


def _model_card(card: dict) -> str:
    name = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}[card["dataset"]]
    return f"""# {name} feature classifier

A small Equinox CNN (`numpyro_fsdiff.Classifier`: two 3x3 convolutions with {card["channels"]}
and {2 * card["channels"]} channels, each followed by ReLU and 2x2 max-pooling, a
{card["features"]}-unit ReLU feature layer and a 10-way linear head; {card["parameters"]:,}
parameters) used only to define the Fréchet classifier distance
(`numpyro_fsdiff.metrics.frechet_classifier_distance`) on {name}.

- **Input:** one 28 x 28 image of pixel intensities in [0, 1] (byte / 255), as
  `numpyro_fsdiff.data.load("{card["dataset"]}")` returns them.
- **Training data:** the first {card["num_train"]:,} of the 60,000 {name} training images;
  Adam, learning rate {card["learning_rate"]}, batch {card["batch_size"]},
  {card["epochs"]} epoch(s), seed {card["seed"]}; {card["training_seconds"]} s on a shared
  2-core CPU.
- **Test accuracy (10,000 test images): {100 * card["test_accuracy"]:.2f}%.**
- Training accuracy (first 10,000 training images): {100 * card["train_accuracy_first_10000"]:.2f}%.
- **Features:** the {card["features"]}-dimensional ReLU layer before the head.
- Reproduce: `numpyro_fsdiff.cli.train_classifier("{card["dataset"]}", out, epochs={card["epochs"]},
  num_train={card["num_train"]})`.

Not meant for classification in earnest: it is small and briefly trained, so that the
distance is cheap; numbers from it are comparable only with numbers from these same weights.
"""
