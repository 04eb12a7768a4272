"""`bench --zoo`: the efficient architectures of the zoo trained on one task (or loaded from the cache), as
checkpoints `bench` then compares: the trade-off graph of MobileNetV1/V2, SqueezeNet, ResNet-8/20, DS-CNN.

Each model is trained with the task's own baseline settings (`epochs` overrides the count) on the task's
training split, seed 0, and cached as `CACHE/<task>-<model>-seed0[-eN].pt`; models not sized for the task's
input shape are left out, with the reason.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.models.registry import create_model, model_entry
from edgeshrink.train import Progress, evaluate, fit, seed_everything

ZOO = ("mobilenetv1", "mobilenetv2", "squeezenet1_1", "resnet8", "resnet20", "ds-cnn")


def zoo_checkpoints(
    task, data, cache_dir: Path, epochs: int | None = None, models: tuple[str, ...] = ZOO, progress: bool = True
) -> tuple[list[Path], list[dict]]:
    """(checkpoint paths, models left out with the reason) for the task's input shape."""
    shape = tuple(task.input_shape)
    paths, skipped = [], []
    for name in models:
        entry = model_entry(name)  # an unknown name is refused here, before any training
        if shape not in entry.shapes():
            sizes = ", ".join("x".join(map(str, s)) for s in entry.shapes())
            skipped.append({"artifact": name, "runtime": "-", "reason": f"sized for {sizes}, not {shape}"})
            continue
        tag = f"-e{epochs}" if epochs is not None else ""
        path = cache_dir / f"{task.name}-{name}-seed0{tag}.pt"
        if not path.is_file():
            _train(task, data, name, shape, path, epochs, progress)
        paths.append(path)
    return paths, skipped


def _train(task, data, name: str, shape: tuple, path: Path, epochs: int | None, progress: bool) -> None:
    kwargs = {}
    if "num_classes" in inspect.signature(model_entry(name).factory).parameters:
        kwargs["num_classes"] = data.num_classes
    seed_everything(0)
    model = create_model(name, shape, **kwargs)
    cfg = task.train if epochs is None else task.train.model_copy(update={"epochs": epochs})
    fit(model, task.train_loader(data, 0), cfg, stage=f"{task.name} {name}", progress=Progress(progress))
    arch = Arch(task=task.name, model=name, model_kwargs=kwargs, input_shape=list(shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, Artifact(model.eval(), arch), evaluate(model, data.test.loader(1000)))
