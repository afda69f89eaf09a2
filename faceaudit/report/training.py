"""Training curves: the loss, the training accuracy and the verification EER of held-out and training
identities per epoch, one figure (``faceaudit train``'s ``curves.png/.pdf``)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt

from faceaudit.report import plots  # noqa: F401  (selects the non-interactive backend)


def plot_training(history: Sequence[dict], loss_name: str = "loss"):
    """Three panels over the epochs: loss, training accuracy, EER (held-out and training identities; epoch 0
    is the network before training)."""
    trained = [row for row in history if "loss" in row]  # epoch 0, the starting point, has no loss
    epochs = [row["epoch"] for row in trained]
    evaluated = [row for row in history if "val_eer" in row]
    fig, axes = plt.subplots(1, 3 if evaluated else 2, figsize=(13 if evaluated else 9, 3.8))
    axes[0].plot(epochs, [row["loss"] for row in trained], marker="o")
    axes[0].set(title=f"{loss_name} loss", xlabel="epoch", ylabel="mean loss")
    axes[1].plot(epochs, [row["accuracy"] for row in trained], marker="o", color="tab:green")
    axes[1].set(title="training accuracy (batches, augmented)", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    if evaluated:
        x = [row["epoch"] for row in evaluated]
        axes[2].plot(x, [100 * row["val_eer"] for row in evaluated], marker="o", label="held-out identities")
        axes[2].plot(x, [100 * row["train_eer"] for row in evaluated], marker="s", linestyle="--",
                     label="training identities")
        axes[2].set(title="verification EER", xlabel="epoch", ylabel="EER (%)", ylim=(0, None))
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig
