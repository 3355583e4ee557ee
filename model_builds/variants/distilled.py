"""distilled: a smaller student trained on the teacher's soft targets, plus a no-teacher control.

KD loss (Hinton et al.): alpha * KLDiv(log_softmax(s/T), softmax(t/T)) * T^2 + (1 - alpha) * CE(s, y),
teacher logits computed once over the train split (the teacher is frozen and in eval mode, so this equals
computing them per batch, at a fraction of the cost). The control is the same student (same seed, data order and
epochs) trained with alpha = 0. What the teacher adds is a paired comparison of the two students on the same test
examples (infopt/stats.py): the difference of their accuracies with its bootstrap interval and McNemar's p;
`kd_beats_no_kd` is True only when the interval's lower bound is above zero.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from infopt.manifest import VariantBuild
from infopt.params import DistilledVariant
from infopt.stats import paired_difference
from model_builds.modeling import LossFn, evaluate_accuracy, new_classifier, predict_logits, train_classifier
from model_builds.variants.common import export_fp32
from model_builds.variants.context import BuildContext


def kd_loss(teacher_logits: torch.Tensor, temperature: float, alpha: float) -> LossFn:
    """`teacher_logits[i]` are the teacher's logits for row i of the train split."""
    soft_targets = F.softmax(teacher_logits.float() / temperature, dim=-1)

    def loss(logits: torch.Tensor, labels: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels)
        if alpha == 0:
            return hard
        targets = soft_targets[torch.from_numpy(index)].to(logits.device)
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=-1), targets, reduction="batchmean") * temperature**2
        return alpha * soft + (1 - alpha) * hard

    return loss


def train_student(variant: DistilledVariant, ctx: BuildContext, alpha: float, teacher_logits: torch.Tensor):
    student = new_classifier(variant.student, ctx.tokenizer, ctx.max_seq_len, ctx.labels, ctx.seed)
    result = train_classifier(
        student,
        ctx.split("train"),
        ctx.split("val"),
        ctx.train,
        ctx.seed,
        ctx.device,
        epochs=variant.epochs,
        loss_fn=kd_loss(teacher_logits, variant.temperature, alpha),
        description=f"{variant.name} alpha={alpha}",
    )
    test_correct = (
        predict_logits(student, ctx.split("test"), ctx.train.batch_size, ctx.device).argmax(-1)
        == ctx.split("test").labels
    )
    return student.to("cpu"), result.best_val_accuracy, test_correct


def build(variant: DistilledVariant, ctx: BuildContext) -> VariantBuild:
    teacher = ctx.teacher().to(ctx.device).eval()
    teacher_logits = torch.from_numpy(predict_logits(teacher, ctx.split("train"), ctx.train.batch_size, ctx.device))
    student, kd_val, kd_correct = train_student(variant, ctx, variant.alpha, teacher_logits)
    _, plain_val, plain_correct = train_student(variant, ctx, 0.0, teacher_logits)
    paired = paired_difference(kd_correct, plain_correct, seed=ctx.seed)
    details = {
        "temperature": variant.temperature,
        "alpha": variant.alpha,
        "epochs": variant.epochs,
        "student_hidden_size": variant.student.hidden_size,
        "student_layers": variant.student.num_hidden_layers,
        "student_heads": variant.student.num_attention_heads,
        "student_intermediate_size": variant.student.intermediate_size,
        "teacher_test_accuracy": evaluate_accuracy(teacher, ctx.split("test"), ctx.train.batch_size, ctx.device),
        "kd_val_accuracy": kd_val,
        "kd_test_accuracy": float(kd_correct.mean()),
        "no_kd_val_accuracy": plain_val,
        "no_kd_test_accuracy": float(plain_correct.mean()),
        "kd_minus_no_kd": paired.difference.estimate,
        "kd_minus_no_kd_low": paired.difference.low,
        "kd_minus_no_kd_high": paired.difference.high,
        "kd_vs_no_kd_mcnemar_p": paired.mcnemar_p,
        "kd_beats_no_kd": paired.difference.low > 0,
        "kd_beats_no_kd_on": f"test, paired, {paired.difference.confidence:.0%} bootstrap interval",
        "val_accuracy": kd_val,
    }
    return export_fp32(student, ctx, ctx.variant_dir(variant.name), variant.name, variant.kind, details)
