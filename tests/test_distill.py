import re

import numpy as np
import pytest
import torch
from helpers import SmallNet, blobs, loaders
from typer.testing import CliRunner

from edgeshrink.cli import app
from edgeshrink.distillation import distill_student
from edgeshrink.errors import ConfigError
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import DistillConfig, TrainConfig, distillation_loss, evaluate, fit, predict, teacher_logits


def hand_distillation_loss(student, teacher, labels, t, alpha):
    """Hinton et al.'s loss written out in numpy: alpha T^2 KL(p_teacher || p_student) + (1 - alpha) CE."""

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p_student, log_p_teacher = log_softmax(student / t), log_softmax(teacher / t)
    kl = (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(axis=1).mean()
    cross_entropy = -log_softmax(student)[np.arange(len(labels)), labels].mean()
    return alpha * t * t * kl + (1 - alpha) * cross_entropy


@pytest.mark.parametrize("t, alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (8.0, 1.0)])
def test_distillation_loss_equals_a_hand_computation(t, alpha):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 3, (6, 5)), rng.normal(0, 3, (6, 5))
    labels = rng.integers(0, 5, 6)
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), t, alpha)
    assert float(got) == pytest.approx(hand_distillation_loss(student, teacher, labels, t, alpha), rel=1e-10)


def test_student_learns_from_the_teacher_not_the_labels():
    torch.manual_seed(0)
    train, val = loaders()
    teacher = SmallNet()
    fit(teacher, train, TrainConfig(epochs=4, lr=3e-3), progress=None)
    assert evaluate(teacher, val) > 90
    x, _ = blobs()
    noise = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(5))  # labels carry nothing
    noisy = TensorLoader(x, noise, 32, shuffle=True)
    accuracy = {}
    for alpha in (1.0, 0.0):  # soft targets only, then labels only
        torch.manual_seed(1)
        student = SmallNet()
        cfg = TrainConfig(epochs=4, lr=3e-3, distill=DistillConfig(temperature=2.0, alpha=alpha))
        distill_student(teacher, student, noisy, cfg, progress=None)
        accuracy[alpha] = evaluate(student, val)
    assert accuracy[1.0] > 85 and accuracy[1.0] > accuracy[0.0] + 30


class PerBatch:
    """The same batches without `with_targets`: fit must then run the teacher on every batch."""

    def __init__(self, loader: TensorLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


class CountingTeacher(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.examples = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.examples += len(x)
        return self.net(x)


def test_teacher_logits_computed_once_train_the_same_student_as_per_batch_logits():
    torch.manual_seed(0)
    train, _ = loaders()
    teacher = SmallNet()
    fit(teacher, train, TrainConfig(epochs=2, lr=3e-3), progress=None)
    x, y = blobs()
    cfg = TrainConfig(epochs=3, lr=3e-3, distill=DistillConfig(temperature=2.0, alpha=0.7))
    students, passes = [], []
    for wrap in (lambda loader: loader, PerBatch):
        torch.manual_seed(1)
        student, counting = SmallNet(), CountingTeacher(teacher)
        fit(student, wrap(TensorLoader(x, y, 32, shuffle=True, seed=3)), cfg, progress=None, teacher=counting)
        students.append(student)
        passes.append(counting.examples / len(x))
    assert passes == [1.0, cfg.epochs]  # one teacher pass in memory, one per epoch otherwise
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_teacher_logits_are_remembered_across_fine_tunes_until_the_teacher_changes():
    torch.manual_seed(0)
    x, y = blobs()
    teacher = CountingTeacher(SmallNet()).eval()
    cfg = TrainConfig(epochs=1, lr=3e-3, distill=DistillConfig(temperature=2.0, alpha=0.7))
    loader = TensorLoader(x, y, 32, shuffle=True, seed=3)
    fit(SmallNet(), loader, cfg, progress=None, teacher=teacher)
    fit(SmallNet(), loader, cfg, progress=None, teacher=teacher)  # a second pruning round: same teacher, same data
    assert teacher.examples == len(x)
    with torch.no_grad():
        next(teacher.parameters()).mul_(0.5)  # the teacher changed: its logits must be computed again
    logits, remembered = teacher_logits(teacher, x)
    assert not remembered and teacher.examples == 2 * len(x)
    torch.testing.assert_close(logits, predict(teacher, x))
    assert teacher_logits(teacher, x)[1]
    assert not teacher_logits(teacher, x.clone())[1]  # other inputs (a new tensor) are not the same data


def test_student_with_other_classes_is_refused():
    train, _ = loaders()
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    with pytest.raises(ConfigError, match="num_classes"):
        distill_student(SmallNet(), student, train, TrainConfig(epochs=1))


def test_distill_command_trains_a_zoo_student_that_evaluate_rebuilds(tmp_path):
    from edgeshrink.architecture import Arch
    from edgeshrink.artifact import Artifact
    from edgeshrink.io.writer import save_checkpoint
    from edgeshrink.tasks.registry import load_task

    runner = CliRunner()
    # An untrained teacher and no epochs: this test is about the command's plumbing (the training is
    # distill_student's, tested above); the student is still built, evaluated, saved and rebuilt.
    teacher = tmp_path / "teacher.pt"
    task = load_task("digits-cnn")
    save_checkpoint(teacher, Artifact(task.build_model(), Arch.parse(task.arch)))
    student = tmp_path / "student.pt"
    args = ["distill", "--teacher", teacher, "--task", "digits-cnn", "--student", "ds-cnn"]
    run = runner.invoke(app, [*map(str, args), "--student-width", "0.25", "--epochs", "0", "--out", str(student), "-q"])
    assert run.exit_code == 0, run.output
    accuracy = re.search(r"student ds-cnn \(([\d,]+) parameters\) test accuracy ([\d.]+)%", run.output)
    evaluated = runner.invoke(app, ["evaluate", str(student)])  # architecture from the checkpoint alone
    assert evaluated.exit_code == 0, evaluated.output
    assert f"test accuracy {accuracy.group(2)}%" in evaluated.output
    from edgeshrink.tasks.zoo import create_model

    expected = create_model("ds-cnn", input_shape=(1, 8, 8), width=0.25, num_classes=10)
    assert int(accuracy.group(1).replace(",", "")) == sum(p.numel() for p in expected.parameters())
