"""distilled: a smaller student trained on the teacher's soft targets, plus a no-teacher control.

KD loss (Hinton et al.): alpha * KLDiv(log_softmax(s/T), softmax(t/T)) * T^2 + (1 - alpha) * CE(s, y),
teacher logits computed on the fly. The control is the same student (same seed, data order and epochs)
trained with alpha = 0, so `kd_beats_no_kd` measures what the teacher adds, on the test split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infopt.params import DistilledVariant
from model_builds.modeling import LossFn, evaluate_accuracy, new_classifier, train_classifier
from model_builds.variants.common import export_fp32
from model_builds.variants.context import BuildContext
from model_builds.variants.record import VariantBuild


def kd_loss(teacher: torch.nn.Module, temperature: float, alpha: float) -> LossFn:
    def loss(logits: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hard = F.cross_entropy(logits, labels)
        if alpha == 0:
            return hard
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids, attention_mask=mask).logits.float()
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=-1),
            F.softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
        ) * temperature**2
        return alpha * soft + (1 - alpha) * hard

    return loss


def train_student(variant: DistilledVariant, ctx: BuildContext, alpha: float, teacher: torch.nn.Module):
    student = new_classifier(variant.student, ctx.tokenizer, ctx.max_seq_len, ctx.labels, ctx.seed)
    result = train_classifier(
        student, ctx.split("train"), ctx.split("val"), ctx.train, ctx.seed, ctx.device,
        epochs=variant.epochs, loss_fn=kd_loss(teacher, variant.temperature, alpha),
        description=f"{variant.name} alpha={alpha}",
    )
    test_accuracy = evaluate_accuracy(student, ctx.split("test"), ctx.train.batch_size, ctx.device)
    return student.to("cpu"), result.best_val_accuracy, test_accuracy


def build(variant: DistilledVariant, ctx: BuildContext) -> VariantBuild:
    teacher = ctx.teacher().to(ctx.device).eval()
    student, kd_val, kd_test = train_student(variant, ctx, variant.alpha, teacher)
    _, plain_val, plain_test = train_student(variant, ctx, 0.0, teacher)
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
        "kd_test_accuracy": kd_test,
        "no_kd_val_accuracy": plain_val,
        "no_kd_test_accuracy": plain_test,
        "kd_beats_no_kd": kd_test > plain_test,
        "kd_beats_no_kd_on": "test",
        "val_accuracy": kd_val,
    }
    return export_fp32(student, ctx, ctx.variant_dir(variant.name), variant.name, variant.kind, details)
