"""`fsdiff train` end to end on the shipped MNIST subset, tiny (slow: about 40 s on 2 cores)."""

import json

import numpy as np
import pytest
from PIL import Image

from numpyro_fsdiff import load_checkpoint
from numpyro_fsdiff.cli import main


@pytest.mark.slow
def test_fsdiff_train_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "mnist-subset", "--levels", "8:3,16:2", "--width", "4",
                 "--modes", "3", "--depth", "1", "--projection-dim", "8", "--embedding-dim", "8",
                 "--batch-size", "8", "--num-train", "64", "--num-heldout", "16",
                 "--num-eval", "16", "--eval-every", "5", "--samples", "4",
                 "--sample-steps", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5
    losses = summary["heldout_dsm_loss"]
    assert set(losses) == {"14", "28", "56"} and all(0 < v < 10 for v in losses.values())
    assert load_checkpoint(out).config["step"] == 5
    # The model card of a shipped checkpoint is generated from this record.
    from numpyro_fsdiff._checkpoint import read_config
    from numpyro_fsdiff.cli import model_card

    card = model_card(read_config(out), "mnist", "the shipped subset", "nothing else running",
                      launcher="FSDIFF_DATA=/data")
    assert "1. `FSDIFF_DATA=/data fsdiff train --dataset mnist-subset --levels 8:3,16:2" in card
    assert "stopped at step 5" in card and "(nothing else running)." in card
    for res, value in losses.items():
        assert f"| {res} x {res} | {value:.4f} |" in card
    image = np.asarray(Image.open(out / "samples.png"))
    assert image.ndim == 3 and image.std() > 0  # two panels of samples, not a blank figure
