"""The loss curve of a run as a PNG: train loss per logging step, eval loss per epoch."""

from __future__ import annotations

from pathlib import Path


def plot_losses(
    log_history: list[dict], path: Path, best_step: int | None = None, eval_split: str = "heldout"
) -> Path:
    """Draw train/eval loss against the optimizer step; mark the kept (best) checkpoint."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label=f"eval loss ({eval_split})")
    if best_step is not None:
        ax.axvline(best_step, color="grey", linestyle="--", label=f"kept: step {best_step}")
    ax.set(xlabel="optimizer step", ylabel="loss", yscale="log", title="kvserve-train")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
