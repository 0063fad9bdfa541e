"""A knob-effect test for every TrainConfig field: each test fails if its knob were silently ignored.

Every field of :class:`wrnlib.config.TrainConfig` is listed in ``KNOB_TESTS`` with the test(s)
that prove its effect on the code path `fit` takes (the trainer's model, optimiser, augmentation,
training loop, evaluations and run folder), or, for a knob that acts only under torchrun, at the
place it is documented to act. Tests that already existed and prove an effect well are named
there instead of repeated here. ``test_every_train_config_field_has_a_knob_effect_test`` fails,
naming the field, when a new field has no entry; ``test_every_value_of_a_knob_with_a_fixed_set_of_values_is_exercised``
when an allowed value (a new schedule, policy, ..., either side of a switch) is accepted but never run by its
knob test; and ``test_every_option_of_what_fit_builds_is_a_tested_field_with_the_same_default`` when the model,
optimiser, training step, augmentation or schedule gains an option that no field sets (``FED_BY``).

The tests below watch `fit` from inside (``Watch``: the training step it builds, every optimiser
step, every evaluation) and recompute what the knob must do independently of the code under test.
A WRN-10-1 on a few real CIFAR-10 images on the CPU; where the training arithmetic does not matter,
the step is replaced by a no-op so that only the loop, the schedule, the evaluations and the run
folder run.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import inspect
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import wrnlib.device as devices
import wrnlib.train as train_module
from wrnlib import checkpoints, distributed, runfolder
from wrnlib.augment import BatchAugment
from wrnlib.config import TrainConfig
from wrnlib.data import CIFAR10_MEAN, CIFAR10_STD, DataError, load_cifar10, sample_dir
from wrnlib.engine import make_train_step
from wrnlib.model import PreActBlock, WideResNet
from wrnlib.optim import SAM, ModelEMA, make_sgd
from wrnlib.schedules import ScheduleParams
from wrnlib.train import fit

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MEAN = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
# the real functions, whatever a test has patched since
REAL_MAKE_TRAIN_STEP = train_module.make_train_step
REAL_EVALUATE = train_module.evaluate


# --------------------------------------------------------------------------- the registry

K = "tests/test_knobs.py::"
FIT_AUGMENT = "tests/test_wiring.py::test_fit_trains_with_the_batch_augment_its_config_describes"
E2E = "tests/test_train.py::test_end_to_end_training_beats_chance_and_writes_the_run_folder"
SCHEDULE = K + "test_the_training_loop_sets_the_lr_the_schedule_knobs_describe"

KNOB_TESTS: dict[str, tuple[str, ...]] = {
    # run bookkeeping: the run folder is <out_dir>/<name> (E2E reads it back from tmp_path/"e2e")
    "name": (E2E, FIT_AUGMENT),
    "out_dir": (E2E, FIT_AUGMENT),
    # data
    "data_dir": (K + "test_data_dir_is_the_data_fit_trains_on",
                 "tests/test_train.py::test_bad_input_gets_a_clear_error_before_any_training"),
    "download": (K + "test_download_fetches_into_the_cache_only_when_asked",
                 "tests/test_data.py::test_download_fills_default_cache"),
    "val_size": (K + "test_split_sizes_and_batch_size_reach_training_and_evaluation",
                 "tests/test_wiring.py::test_splits_hold_validation_out_of_training"),
    "train_limit": (K + "test_split_sizes_and_batch_size_reach_training_and_evaluation",
                    "tests/test_wiring.py::test_splits_hold_validation_out_of_training"),
    "test_limit": (K + "test_split_sizes_and_batch_size_reach_training_and_evaluation",
                   "tests/test_wiring.py::test_splits_hold_validation_out_of_training"),
    # model: WRN-10-1 has 77,850 parameters (E2E), WRN-28-3.5 (the default) 4.48 M
    "depth": (E2E,),
    "width": (E2E,),
    "dropout": (K + "test_dropout_drops_that_fraction_in_every_block_while_training",
                "tests/test_model.py::test_dropout_only_in_training"),
    # optimisation
    "epochs": (SCHEDULE, E2E),
    "budget_minutes": (K + "test_a_time_budget_chooses_the_epochs_from_the_step_timed_here_and_records_them",),
    "budget_step_s": (K + "test_a_step_time_given_beforehand_divides_the_budget_untimed_and_a_resume_keeps_it",),
    "batch_size": (K + "test_split_sizes_and_batch_size_reach_training_and_evaluation", FIT_AUGMENT),
    "lr": (SCHEDULE, "tests/test_train.py::test_warmup_starts_above_zero_and_reaches_the_peak"),
    "momentum": (K + "test_fit_steps_sgd_with_the_configured_momentum_nesterov_and_weight_decay",),
    "nesterov": (K + "test_fit_steps_sgd_with_the_configured_momentum_nesterov_and_weight_decay",),
    "weight_decay": (K + "test_fit_steps_sgd_with_the_configured_momentum_nesterov_and_weight_decay",
                     "tests/test_wiring.py::test_sgd_decays_bn_and_bias_exactly_when_asked"),
    "decay_bn_bias": (K + "test_fit_steps_sgd_with_the_configured_momentum_nesterov_and_weight_decay",
                      "tests/test_wiring.py::test_sgd_decays_bn_and_bias_exactly_when_asked"),
    "label_smoothing": (K + "test_the_step_minimises_the_smoothed_cross_entropy",),
    "optimizer": (K + "test_sam_perturbs_the_weights_by_sam_rho_before_each_step",
                  "tests/test_wiring.py::test_sam_train_step_steps_with_the_gradient_at_the_perturbed_weights"),
    "sam_rho": (K + "test_sam_perturbs_the_weights_by_sam_rho_before_each_step",
                "tests/test_wiring.py::test_sam_train_step_steps_with_the_gradient_at_the_perturbed_weights"),
    "ema_decay": (K + "test_evaluation_uses_the_ema_of_the_weights",
                  "tests/test_wiring.py::test_ema_averages_batchnorm_running_statistics"),
    # lr schedule
    "schedule": (SCHEDULE,),
    "warmup_epochs": (SCHEDULE, "tests/test_train.py::test_warmup_starts_above_zero_and_reaches_the_peak"),
    "min_lr_frac": (SCHEDULE,),
    "step_milestones": (SCHEDULE,),
    "step_gamma": (SCHEDULE,),
    "sgdr_t0": (SCHEDULE,),
    "sgdr_tmult": (SCHEDULE,),
    "onecycle_peak": (SCHEDULE,),
    "onecycle_start": (SCHEDULE,),
    # augmentation: FIT_AUGMENT proves fit builds BatchAugment from these fields and trains on its
    # output; the tests here prove what the pipeline built from a config does with each
    "crop_padding": (K + "test_crop_padding_and_pad_mode_shift_each_image_within_the_padding", FIT_AUGMENT),
    "pad_mode": (K + "test_crop_padding_and_pad_mode_shift_each_image_within_the_padding", FIT_AUGMENT),
    "flip": (K + "test_flip_mirrors_about_half_the_images", FIT_AUGMENT),
    "policy": (K + "test_policy_applies_one_sampled_op_per_policy_group_images", FIT_AUGMENT),
    "policy_group": (K + "test_policy_applies_one_sampled_op_per_policy_group_images", FIT_AUGMENT),
    "cutout": ("tests/test_wiring.py::test_batch_augment_cuts_out_a_square_of_the_configured_side", FIT_AUGMENT),
    "mix": (K + "test_mix_blends_or_pastes_image_pairs_and_their_labels", FIT_AUGMENT),
    "mix_alpha": (K + "test_mix_alpha_is_the_beta_parameter_of_the_mixing_ratio", FIT_AUGMENT),
    "mix_prob": (K + "test_mix_prob_is_the_fraction_of_mixed_batches", FIT_AUGMENT),
    "tta": (K + "test_tta_reports_the_accuracy_of_image_and_mirror_averaged",
            "tests/test_wiring.py::test_flip_tta_averages_the_image_and_its_mirror"),
    # execution
    "device": (K + "test_the_device_knob_chooses_where_fit_trains",),
    "precision": (K + "test_the_training_step_and_evaluations_run_in_the_configured_precision",
                  "tests/test_precision.py::test_the_trainer_trains_in_the_chosen_precision"),
    "channels_last": (K + "test_channels_last_sets_the_memory_format_of_weights_and_inputs",),
    "compile": (K + "test_compile_wraps_the_training_forward_in_torch_compile_with_compile_mode",),
    "compile_mode": (K + "test_compile_wraps_the_training_forward_in_torch_compile_with_compile_mode",),
    "cuda_graph": (K + "test_cuda_graph_replays_the_captured_step_and_trains_the_eager_run",
                   "tests/test_engine.py::test_a_graphed_step_captures_once_after_its_warmup_and_trains_as_the_eager_step",
                   "tests/test_train.py::test_bad_input_gets_a_clear_error_before_any_training"),
    "seed": (K + "test_the_seed_fixes_initialisation_augmented_batches_and_validation_split",
             K + "test_the_seed_sets_the_batch_order"),
    "deterministic": (K + "test_deterministic_turns_on_deterministic_kernels_while_training",),
    "eval_batch_size": (K + "test_evaluations_run_in_batches_of_eval_batch_size",),
    "checkpoint_every": (K + "test_checkpoints_are_written_every_checkpoint_every_epochs",),
    "save_model": (K + "test_save_model_writes_the_evaluated_weights_in_fp16", E2E),
    "progress": (K + "test_progress_prints_the_start_line_a_line_per_epoch_and_a_bar",),
    # acts only under torchrun (documented): the torchrun test shows its effect on the weights
    "sync_bn": (K + "test_sync_bn_converts_batch_norm_in_a_data_parallel_process_and_is_a_no_op_alone",
                "tests/test_distributed.py::test_ddp_with_sync_bn_matches_one_process_at_the_same_global_batch"),
}


def _defined_tests(path: Path) -> set[str]:
    """Names of the test functions defined at the top level of a test file (and of its Test classes)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{f.name}" for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name.startswith("test")}
    return names


def test_every_train_config_field_has_a_knob_effect_test():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    missing = [name for name in fields if not KNOB_TESTS.get(name)]
    assert not missing, (f"TrainConfig field(s) {missing} have no knob-effect test: write one that fails when the "
                         f"field is ignored (tests/test_knobs.py) and name it in KNOB_TESTS")
    unknown = sorted(set(KNOB_TESTS) - set(fields))
    assert not unknown, f"KNOB_TESTS names {unknown}, which are not TrainConfig fields (renamed or removed?)"


def test_every_test_the_registry_names_exists():
    defined: dict[str, set[str]] = {}
    for field, references in KNOB_TESTS.items():
        for reference in references:
            path, sep, name = reference.partition("::")
            assert sep and path.startswith("tests/") and path.endswith(".py"), f"{field}: malformed {reference!r}"
            if path not in defined:
                assert (REPO / path).is_file(), f"{field}: {path} does not exist"
                defined[path] = _defined_tests(REPO / path)
            assert name in defined[path], f"{field}: {reference} names no test in {path}"
    # and every knob test of this file proves some field
    here = Path(__file__).relative_to(REPO).as_posix()
    named = {r.partition("::")[2] for refs in KNOB_TESTS.values() for r in refs if r.startswith(here + "::")}
    registry_tests = {"test_every_train_config_field_has_a_knob_effect_test",
                      "test_every_test_the_registry_names_exists",
                      "test_every_value_of_a_knob_with_a_fixed_set_of_values_is_exercised",
                      "test_every_option_of_what_fit_builds_is_a_tested_field_with_the_same_default"}
    assert _defined_tests(Path(__file__)) - registry_tests - named == set()


PARAM = type(pytest.param())  # a parametrisation's row written as pytest.param(...)


def _exercised_values(field: str) -> set:
    """The values this file's knob tests for ``field`` run it with, read from their parametrize marks: a
    parameter named after the field, or a ``knobs`` parameter of dicts of fields."""
    values = set()
    for reference in KNOB_TESTS[field]:
        if not reference.startswith(K):
            continue
        for mark in getattr(globals()[reference[len(K):]], "pytestmark", []):
            if mark.name != "parametrize":
                continue
            names, rows = mark.args[0], mark.args[1]
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            for row in rows:
                row = row.values if isinstance(row, PARAM) else row
                row = dict(zip(names, row if len(names) > 1 else [row]))
                if field in row:
                    values.add(row[field])
                elif isinstance(row.get("knobs"), dict) and field in row["knobs"]:
                    values.add(row["knobs"][field])
    return values


def test_every_value_of_a_knob_with_a_fixed_set_of_values_is_exercised():
    """A new schedule, policy, mix, pad mode, optimiser or precision (or either side of a switch) is run by
    its knob test, not just accepted: the test's parametrisation covers every allowed value."""
    for f in dataclasses.fields(TrainConfig):
        allowed = f.metadata["choices"] or ((True, False) if f.type == "bool" else None)
        if allowed is None:
            continue
        exercised = _exercised_values(f.name)
        missing = [v for v in allowed if v not in exercised]
        assert not missing, (f"{f.name}={missing} is allowed but no knob test of tests/test_knobs.py named in "
                             f"KNOB_TESTS[{f.name!r}] runs it: add it to that test's parametrisation")
        assert exercised <= set(allowed), f"{f.name}: the knob tests run {exercised - set(allowed)}, not allowed"


# Every option of what fit builds from a config, mapped to the TrainConfig field that sets it (so its knob test
# covers it), or to why no field does. A new option fails the test below until it is wired to a field or explained.
FED_BY = {
    WideResNet: dict(depth="depth", width="width", dropout="dropout",
                     num_classes="not a knob: the data's 10 classes"),
    make_sgd: dict(model="not a knob: the model built above", lr="lr", momentum="momentum", nesterov="nesterov",
                   weight_decay="weight_decay", decay_bn_bias="decay_bn_bias"),
    SAM: dict(base="not a knob: the SGD built above", rho="sam_rho"),
    ModelEMA: dict(model="not a knob: the model built above", decay="ema_decay"),
    make_train_step: dict(model="not a knob: the model built above",
                          forward="not a knob: the model, wrapped for torchrun and compiled as configured",
                          optimizer="optimizer", device="device", bf16="precision", label_smoothing="label_smoothing",
                          no_sync="not a knob: torchrun's gradient sync, off for SAM's first backward",
                          cuda_graph="cuda_graph"),
    BatchAugment: {**{name: name for name in BatchAugment.CONFIG_FIELDS},
                   "num_classes": "not a knob: the data's 10 classes",
                   "mean": "not a knob: CIFAR-10's channel means", "std": "not a knob: CIFAR-10's channel stds",
                   "dtype": "not a knob: fp32, which autocast casts as precision asks"},
    ScheduleParams: {f.name: f.name for f in dataclasses.fields(ScheduleParams)},
}


@pytest.mark.parametrize("built", FED_BY, ids=lambda built: built.__name__)
def test_every_option_of_what_fit_builds_is_a_tested_field_with_the_same_default(built):
    """The model, optimiser, SAM, EMA, training step, augmentation and schedule take no option that a config
    cannot set (or that the table above does not explain), and a part built by hand with its own defaults
    is the part a default config builds."""
    params = {name: p for name, p in inspect.signature(built).parameters.items() if name != "self"}
    fed = FED_BY[built]
    assert set(params) == set(fed), (f"{built.__name__} takes {sorted(set(params) - set(fed))} and no longer "
                                     f"takes {sorted(set(fed) - set(params))}: wire each new option to a "
                                     f"TrainConfig field with a knob test, or say in FED_BY why none sets it")
    for option, field in fed.items():
        if field.startswith("not a knob: "):
            continue
        assert KNOB_TESTS.get(field), f"{built.__name__}({option}=...) is set by {field!r}, which has no knob test"
        default = params[option].default
        if default is not inspect.Parameter.empty:
            assert default == DEFAULTS[field], (f"{built.__name__}'s {option} defaults to {default!r}, the "
                                                f"config's {field} to {DEFAULTS[field]!r}")


# --------------------------------------------------------------------------- helpers


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """WRN-10-1, two steps of 16 real images, 20 validation and 20 test images: a fraction of a second."""
    base = dict(name="knob", out_dir=str(tmp_path), device="cpu", precision="fp32", depth=10, width=1, epochs=1,
                batch_size=16, lr=0.1, schedule="constant", warmup_epochs=0.0, val_size=20, train_limit=32,
                test_limit=20, tta=False, progress=False)
    return TrainConfig(**(base | overrides))


def norm(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> (x / 255 - mean) / std per channel, written out here rather than taken from wrnlib."""
    return (images.float() / 255 - MEAN) / STD


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The uint8 images a normalised batch came from."""
    return ((x.float() * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8)


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters and the float buffers (batch-norm statistics)."""
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    return {name: t.detach().float().clone() for name, t in tensors}


def max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


class Watch:
    """Watches `fit` from inside: the step it builds, each optimiser update and each evaluation.

    ``built``: the model, forward, optimiser and step options `fit` passed to make_train_step, with
    the weights at that moment. ``steps``: per training step its input, targets, the lr of every
    parameter group, the loss and logits it returned and the weights after it. ``updates``: per
    optimiser step the weights before, the gradients and the weights after. ``evals``: per
    evaluation the model (and its weights), the images, the options and the inputs of every forward.
    ``on_build`` callbacks get (model, optimizer) before the first step (to hook modules).
    ``fake_step``: a step that computes nothing (the loop, schedule, evaluations and files still run).
    """

    def __init__(self, monkeypatch, *, fake_step: bool = False):
        self.built, self.steps, self.updates, self.evals, self.on_build = [], [], [], [], []

        def make_train_step(model, forward, optimizer, **kwargs):
            self.built.append(dict(model=model, forward=forward, optimizer=optimizer, kwargs=kwargs,
                                   start=float_state(model)))
            for callback in self.on_build:
                callback(model, optimizer)
            real_update = optimizer.step

            def update(*args, **kw):
                params = dict(model.named_parameters())
                record = dict(before={n: p.detach().clone() for n, p in params.items()},
                              grads={n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None},
                              lr=[g["lr"] for g in optimizer.param_groups])
                result = real_update(*args, **kw)
                record["after"] = {n: p.detach().clone() for n, p in params.items()}
                self.updates.append(record)
                return result

            optimizer.step = update
            real_step = None if fake_step else REAL_MAKE_TRAIN_STEP(model, forward, optimizer, **kwargs)

            def step(x, targets):
                record = dict(x=x.detach().clone(), targets=targets.detach().clone(),
                              lr=[g["lr"] for g in optimizer.param_groups],
                              channels_last=x.is_contiguous(memory_format=torch.channels_last),
                              contiguous=x.is_contiguous(),
                              deterministic=torch.are_deterministic_algorithms_enabled(),
                              cudnn_benchmark=torch.backends.cudnn.benchmark)
                if real_step is None:
                    loss, logits = torch.zeros((), device=x.device), torch.zeros(len(x), 10, device=x.device)
                else:
                    loss, logits = real_step(x, targets)
                record.update(loss=loss.detach().clone(), logits=logits.detach().float().clone(),
                              after=float_state(model))
                self.steps.append(record)
                return loss, logits
            return step

        def evaluate(model, images, labels, **kwargs):
            inputs = []
            hook = model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
            try:
                result = REAL_EVALUATE(model, images, labels, **kwargs)
            finally:
                hook.remove()
            self.evals.append(dict(model=model, state=float_state(model), images=images, labels=labels,
                                   kwargs=kwargs, inputs=inputs, result=result))
            return result

        monkeypatch.setattr(train_module, "make_train_step", make_train_step)
        monkeypatch.setattr(train_module, "evaluate", evaluate)


def augment_from(**knobs) -> BatchAugment:
    """The training augmentation a config describes (no crop, no flip unless asked), as the trainer builds it."""
    return BatchAugment.from_config(TrainConfig(name="aug", **({"crop_padding": 0, "flip": False} | knobs)))


def one_per_class(data) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training image of each class: ten images whose labels say which image is which."""
    index = torch.stack([torch.nonzero(data.train_labels == k)[0, 0] for k in range(10)])
    return data.train_images[index], data.train_labels[index]


# --------------------------------------------------------------------------- loss and optimiser


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_the_step_minimises_the_smoothed_cross_entropy(real_data, tmp_path, monkeypatch, smoothing):
    """label_smoothing: the loss of each step, and the gradient it steps with, are those of the smoothed CE."""
    watch = Watch(monkeypatch)
    features = []
    watch.on_build.append(lambda model, optimizer: model.fc.register_forward_hook(
        lambda m, inputs, output: features.append(inputs[0].detach().float().clone()) if m.training else None))
    fit(tiny(tmp_path, label_smoothing=smoothing), data=real_data)

    assert len(watch.steps) == len(watch.updates) == len(features) == 2
    for step, update, h in zip(watch.steps, watch.updates, features):
        z, t = step["logits"], step["targets"]
        assert torch.equal(t, torch.eye(10)[t.argmax(1)])  # precondition: hard labels, no mixing
        log_p = torch.log_softmax(z, 1)
        smoothed = (1 - smoothing) * t + smoothing / 10
        assert step["loss"].item() == pytest.approx(-(smoothed * log_p).sum(1).mean().item(), rel=1e-5)
        # d loss / d logits = (softmax - smoothed targets) / batch: what the fc layer's gradients must be
        d_logits = (log_p.exp() - smoothed) / len(z)
        assert torch.allclose(update["grads"]["fc.bias"], d_logits.sum(0), atol=1e-6)
        assert torch.allclose(update["grads"]["fc.weight"], d_logits.T @ h, atol=1e-6)
        if smoothing:  # precondition: the unsmoothed loss would have stepped with another gradient
            unsmoothed = ((log_p.exp() - t) / len(z)).T @ h
            assert (unsmoothed - d_logits.T @ h).abs().max() > 1e-4


def _bn_and_bias_names(model: nn.Module) -> set[str]:
    return {f"{module_name}.{name}".lstrip(".") for module_name, module in model.named_modules()
            for name, _ in module.named_parameters(recurse=False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"}


def _sgd_reference(updates, exempt: set[str], momentum: float, nesterov: bool, weight_decay: float,
                   decay_bn_bias: bool) -> list[dict[str, torch.Tensor]]:
    """The weights after each update, from the weights and gradients before it: SGD written out."""
    buffers, predicted = {}, []
    for u in updates:
        out = {}
        for name, w in u["before"].items():
            d = u["grads"][name] + (0.0 if name in exempt and not decay_bn_bias else weight_decay) * w
            if momentum:
                buffers[name] = d.clone() if name not in buffers else momentum * buffers[name] + d
                d = d + momentum * buffers[name] if nesterov else buffers[name]
            out[name] = w - u["lr"][0] * d
        predicted.append(out)
    return predicted


@pytest.mark.parametrize("knobs", [
    dict(momentum=0.5, nesterov=False, weight_decay=0.05, decay_bn_bias=False),
    dict(momentum=0.8, nesterov=True, weight_decay=0.01, decay_bn_bias=True),
    dict(momentum=0.0, nesterov=False, weight_decay=0.02, decay_bn_bias=True),
])
def test_fit_steps_sgd_with_the_configured_momentum_nesterov_and_weight_decay(real_data, tmp_path, monkeypatch,
                                                                              knobs):
    """momentum, nesterov, weight_decay, decay_bn_bias: the optimiser fit builds, and every step it takes."""
    watch = Watch(monkeypatch)
    fit(tiny(tmp_path, train_limit=48, **knobs), data=real_data)
    optimizer, model = watch.built[0]["optimizer"], watch.built[0]["model"]
    assert isinstance(optimizer, torch.optim.SGD)
    exempt = _bn_and_bias_names(model)
    for group in optimizer.param_groups:
        assert group["momentum"] == knobs["momentum"] and group["nesterov"] == knobs["nesterov"]
        names = {n for n, p in model.named_parameters() if any(p is q for q in group["params"])}
        decayed = knobs["decay_bn_bias"] or not names & exempt
        assert group["weight_decay"] == (knobs["weight_decay"] if decayed else 0.0)

    assert len(watch.updates) == 3
    assert all(len(set(u["lr"])) == 1 for u in watch.updates)
    predicted = _sgd_reference(watch.updates, exempt, **knobs)
    for u, p in zip(watch.updates, predicted):
        for name in p:
            assert torch.allclose(u["after"][name], p[name], rtol=1e-5, atol=1e-7), name
    # each knob shows: SGD with that one knob at its default would have landed elsewhere
    for knob in knobs:
        other = knobs | {knob: DEFAULTS[knob]}
        if other == knobs or (knob == "nesterov" and not knobs["momentum"]):
            continue
        wrong = _sgd_reference(watch.updates, exempt, **other)
        assert max(max_gap(u["after"], w) for u, w in zip(watch.updates, wrong)) > 1e-5, knob


@pytest.mark.parametrize("optimizer,rho", [("sam", 0.3), ("sam", 0.01), ("sgd", 0.3)])
def test_sam_perturbs_the_weights_by_sam_rho_before_each_step(real_data, tmp_path, monkeypatch, optimizer, rho):
    """optimizer, sam_rho: SAM moves the weights by a step of length rho before each update; SGD never does."""
    moves = []
    real_perturb = SAM.perturb

    def perturb(self):
        params = [p for group in self.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        real_perturb(self)
        moves.append(torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(params, before))).item())

    monkeypatch.setattr(SAM, "perturb", perturb)
    watch = Watch(monkeypatch)
    fit(tiny(tmp_path, optimizer=optimizer, sam_rho=rho), data=real_data)
    built = watch.built[0]["optimizer"]
    if optimizer == "sam":
        assert isinstance(built, SAM) and isinstance(built.base, torch.optim.SGD)
        assert len(moves) == 2 and moves == pytest.approx([rho] * 2, rel=1e-4)
        # and the update starts from the weights as they were, not the perturbed ones
        for step, update in zip([watch.built[0]["start"]] + [s["after"] for s in watch.steps], watch.updates):
            assert all(torch.equal(update["before"][n], step[n]) for n in update["before"])
    else:
        assert isinstance(built, torch.optim.SGD) and moves == []


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_dropout_drops_that_fraction_in_every_block_while_training(real_data, tmp_path, monkeypatch, p):
    """dropout: the model fit trains zeroes a fraction p of the activations between the convolutions of
    every block (scaling the rest by 1 / (1 - p)) in training, and nothing in evaluation."""
    seen, calls = [], []

    def hook(model, optimizer):
        blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
        drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        seen.append((len(blocks), len(drops)))
        for block in blocks:
            block.dropout.register_forward_hook(lambda m, inputs, output: calls.append(
                (m.training, inputs[0].detach().clone(), output.detach().clone())))

    watch = Watch(monkeypatch)
    watch.on_build.append(hook)
    fit(tiny(tmp_path, dropout=p), data=real_data)
    assert seen == [(3, 3 if p else 0)]
    training = [(i, o) for t, i, o in calls if t]
    assert len(training) == 3 * 2
    x = torch.cat([i.flatten() for i, _ in training])
    y = torch.cat([o.flatten() for _, o in training])
    live = x != 0
    assert live.sum() > 100_000
    assert (y[live] == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    kept = live & (y != 0)
    assert torch.allclose(y[kept], x[kept] / (1 - p), rtol=1e-5)
    evaluations = [(i, o) for t, i, o in calls if not t]
    assert evaluations and all(torch.equal(i, o) for i, o in evaluations)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_sets_the_memory_format_of_weights_and_inputs(real_data, tmp_path, monkeypatch, channels_last):
    """channels_last: the trained model's 3x3 convolution weights, every training batch and every evaluated
    batch are in channels_last memory format, or all in the standard one."""
    watch = Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, channels_last=channels_last), data=real_data)
    fmt = torch.channels_last
    weights = [m.weight for m in watch.built[0]["model"].modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert weights and all(w.is_contiguous(memory_format=fmt) is channels_last for w in weights)
    assert [(s["channels_last"], s["contiguous"]) for s in watch.steps] == [(channels_last, not channels_last)] * 2
    inputs = [x for e in watch.evals for x in e["inputs"]]
    assert len(inputs) == 3  # validation, test, final test
    assert all(x.is_contiguous(memory_format=fmt) is channels_last and x.is_contiguous() is not channels_last
               for x in inputs)


@pytest.mark.parametrize("precision,native", [("fp32", True), ("bf16", False), ("auto", True), ("auto", False)])
def test_the_training_step_and_evaluations_run_in_the_configured_precision(real_data, tmp_path, monkeypatch,
                                                                           precision, native):
    """precision: the explicit choice holds where "auto" would choose the other, and "auto" is bf16 exactly
    where the processor computes it natively (pretended here, either way); the per-epoch evaluations follow
    the choice, the final one is fp32, and env.json says why the precision was chosen."""
    monkeypatch.setattr(devices, "cpu_bf16_support", lambda: {"amx_bf16": False, "avx512_bf16": native})
    bf16 = precision == "bf16" or (precision == "auto" and native)
    if precision != "auto":
        assert devices.choose_precision("auto", CPU)[0] is native  # precondition: auto would choose the other
    dtypes = []
    watch = Watch(monkeypatch)
    watch.on_build.append(lambda model, optimizer: model.fc.register_forward_hook(
        lambda m, inputs, output: dtypes.append((m.training, output.dtype))))
    config = tiny(tmp_path, precision=precision)
    fit(config, data=real_data)
    want = torch.bfloat16 if bf16 else torch.float32
    assert [d for training, d in dtypes if training] == [want] * 2
    # val and test after the epoch, then the final test (later forwards: counting FLOPs for the summary)
    assert [d for training, d in dtypes if not training][:3] == [want, want, torch.float32]
    assert [e["kwargs"]["bf16"] for e in watch.evals] == [bf16] * 2 + [False]
    recorded = json.loads((config.run_dir / "env.json").read_text())["precision"]
    assert recorded.startswith("bf16" if bf16 else "fp32")
    assert ("auto:" in recorded) is (precision == "auto") and ("asked for" in recorded) is (precision != "auto")


# --------------------------------------------------------------------------- the schedule


def _cosine(fraction: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def _expected_lr(c: TrainConfig, t: float) -> float:
    """The documented schedules, written out: the lr after t epochs of c.epochs."""
    total, floor = c.epochs, c.min_lr_frac
    if c.schedule == "constant":
        factor = 1.0
    elif c.schedule == "step":
        factor = c.step_gamma ** sum(t >= m * total for m in c.step_milestones)
    elif c.schedule == "cosine":
        factor = _cosine(t / total, floor)
    elif c.schedule == "sgdr":  # cycles (start, start + length], each sgdr_tmult times the last
        start, length = 0.0, c.sgdr_t0
        while t > start + length:
            start, length = start + length, length * c.sgdr_tmult
        factor = _cosine((t - start) / length, floor)
    else:  # onecycle: linear up from onecycle_start to the peak, then linear down to the floor
        peak = c.onecycle_peak * total
        factor = (c.onecycle_start + (1 - c.onecycle_start) * t / peak if t < peak
                  else 1 - (1 - floor) * min((t - peak) / (total - peak), 1.0))
    if c.warmup_epochs > 0 and t < c.warmup_epochs:
        factor *= t / c.warmup_epochs
    return c.lr * factor


SCHEDULE_CASES = {
    "constant": dict(warmup_epochs=2.0),
    "cosine": dict(warmup_epochs=1.5, min_lr_frac=0.2),
    "step": dict(step_milestones=(0.25, 0.6), step_gamma=0.5),
    "sgdr": dict(sgdr_t0=1.0, sgdr_tmult=3.0, min_lr_frac=0.1),
    "onecycle": dict(onecycle_peak=0.5, onecycle_start=0.3, min_lr_frac=0.05),
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULE_CASES))
def test_the_training_loop_sets_the_lr_the_schedule_knobs_describe(real_data, tmp_path, monkeypatch, schedule):
    """schedule, lr, epochs, warmup_epochs, min_lr_frac, step_*, sgdr_*, onecycle_*: the lr of every parameter
    group at every step is the schedule's value where that step ends; each knob changes the sequence."""
    knobs = dict(schedule=schedule, lr=0.3, epochs=4, warmup_epochs=0.0) | SCHEDULE_CASES[schedule]
    config = tiny(tmp_path, train_limit=64, **knobs)  # 4 steps per epoch
    watch = Watch(monkeypatch, fake_step=True)
    result = fit(config, data=real_data)

    steps = 4
    ends = [epoch + (i + 1) / steps for epoch in range(config.epochs) for i in range(steps)]
    expected = [_expected_lr(config, t) for t in ends]
    assert len(watch.steps) == config.epochs * steps
    for record, lr in zip(watch.steps, expected):
        assert record["lr"] == pytest.approx([lr] * len(record["lr"]), rel=1e-9, abs=1e-12)
    assert [row["lr"] for row in result.metrics] == pytest.approx(expected[steps - 1::steps], rel=1e-9, abs=1e-12)
    # every knob of this case matters: with it at its default the sequence would differ
    budget_free = schedule in ("constant", "sgdr")  # their lr does not depend on the budget, only the step count
    for knob in knobs:
        if knob != "schedule" and knobs[knob] != DEFAULTS[knob] and not (knob == "epochs" and budget_free):
            other = dataclasses.replace(config, **{knob: DEFAULTS[knob]})
            assert max(abs(_expected_lr(other, t) - lr) for t, lr in zip(ends, expected)) > 1e-3, knob


# --------------------------------------------------------------------------- EMA and evaluation


def test_evaluation_uses_the_ema_of_the_weights(real_data, tmp_path, monkeypatch):
    """ema_decay: every evaluation (and the saved final model) sees the exponential moving average of the
    weights with that decay (after the usual short warm-up of the average), not the trained weights."""
    decay = 0.2  # small, so that it (rather than the warm-up, min(d, (1 + n) / (10 + n))) governs from step 2
    watch = Watch(monkeypatch)
    result = fit(tiny(tmp_path, ema_decay=decay, epochs=2, train_limit=48, lr=0.2), data=real_data)

    def ema_after_each_step(d):
        ema, out = dict(watch.built[0]["start"]), []
        for n, step in enumerate(watch.steps, 1):
            w = min(d, (1 + n) / (10 + n))
            ema = {k: w * ema[k] + (1 - w) * step["after"][k] for k in ema}
            out.append(ema)
        return out

    expected = ema_after_each_step(decay)
    assert len(watch.steps) == 6 and len(watch.evals) == 5  # (val, test) per epoch, final test
    assert max_gap(expected[-1], ema_after_each_step(0.3)[-1]) > 1e-4  # precondition: the decay shows
    for epoch in range(2):
        ema, live = expected[3 * epoch + 2], watch.steps[3 * epoch + 2]["after"]
        for e in watch.evals[2 * epoch:2 * epoch + 2]:
            assert max_gap(e["state"], ema) < 1e-6
            assert max_gap(e["state"], live) > 1e-3
    final = result.model.state_dict()
    for k, v in expected[-1].items():
        assert torch.allclose(final[k], v.half().float(), rtol=2e-3, atol=1e-5), k
    assert watch.evals[-1]["model"] is result.model


@pytest.mark.parametrize("tta", [True, False])
def test_tta_reports_the_accuracy_of_image_and_mirror_averaged(real_data, tmp_path, monkeypatch, tta):
    """tta: the final evaluation also shows the model every test image mirrored, and test_acc_tta is the
    accuracy of the averaged logits; without it there is no mirrored pass and no number."""
    watch = Watch(monkeypatch, fake_step=True)
    result = fit(tiny(tmp_path, tta=tta, test_limit=100), data=real_data)
    finals = watch.evals[2:]
    images, labels = finals[0]["images"], finals[0]["labels"]
    with torch.no_grad():
        a = result.model(norm(images))
        b = result.model(norm(images).flip(3))
    assert result.summary["test_acc"] == pytest.approx((a.argmax(1) == labels).float().mean().item())
    if tta:
        assert len(finals) == 2 and finals[1]["kwargs"]["tta"] is True
        plain, mirrored = finals[1]["inputs"]
        assert torch.allclose(plain, norm(images), atol=1e-5) and torch.equal(mirrored, plain.flip(3))
        assert result.summary["test_acc_tta"] == pytest.approx(((a + b).argmax(1) == labels).float().mean().item())
    else:
        assert len(finals) == 1 and not finals[0]["kwargs"]["tta"]
        assert result.summary["test_acc_tta"] is None


@pytest.mark.parametrize("eval_batch_size", [8, 1000])
def test_evaluations_run_in_batches_of_eval_batch_size(real_data, tmp_path, monkeypatch, eval_batch_size):
    """eval_batch_size: every evaluation (per epoch and final, with TTA) forwards at most that many images."""
    watch = Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, eval_batch_size=eval_batch_size, tta=True), data=real_data)
    assert len(watch.evals) == 4
    for e in watch.evals:
        n = len(e["labels"])
        chunks = [min(eval_batch_size, n - start) for start in range(0, n, eval_batch_size)]
        passes = 2 if e["kwargs"]["tta"] else 1
        assert [len(x) for x in e["inputs"]] == [c for c in chunks for _ in range(passes)]
    assert [len(x) for x in watch.evals[0]["inputs"]] == ([8, 8, 4] if eval_batch_size == 8 else [20])


def test_split_sizes_and_batch_size_reach_training_and_evaluation(real_data, tmp_path, monkeypatch):
    """val_size, train_limit, test_limit, batch_size: fit trains on train_limit images in full batches of
    batch_size (a partial last batch is dropped), validates on val_size held-out training images and
    scores on test_limit test images."""
    watch = Watch(monkeypatch, fake_step=True)
    config = tiny(tmp_path, val_size=30, train_limit=40, test_limit=25, batch_size=12, epochs=2, crop_padding=0,
                  flip=False, tta=True)
    result = fit(config, data=real_data)
    assert [len(s["x"]) for s in watch.steps] == [12] * 3 * 2  # 40 // 12 full batches per epoch
    trained = [set(map(bytes, to_uint8(s["x"]).flatten(1).numpy())) for s in watch.steps]
    per_epoch = [trained[0] | trained[1] | trained[2], trained[3] | trained[4] | trained[5]]
    assert [len(images) for images in per_epoch] == [36, 36]
    assert len(per_epoch[0] | per_epoch[1]) <= 40  # one 40-image training set, reshuffled
    assert [len(e["labels"]) for e in watch.evals] == [30, 25, 30, 25, 25, 25]  # per epoch val, test; final
    val = set(map(bytes, watch.evals[0]["images"].flatten(1).numpy()))
    test = watch.evals[1]["images"]
    assert not val & (per_epoch[0] | per_epoch[1])  # validation images are held out of training
    all_tests = set(map(bytes, real_data.test_images.flatten(1).numpy()))
    assert all(bytes(img) in all_tests for img in test.flatten(1).numpy())
    assert result.summary["test_images"] == 25


# --------------------------------------------------------------------------- execution


@pytest.mark.parametrize("compile", [True, False])
def test_compile_wraps_the_training_forward_in_torch_compile_with_compile_mode(real_data, tmp_path, monkeypatch,
                                                                               compile):
    """compile, compile_mode: the step's forward is what torch.compile(model, mode=compile_mode) returned
    (torch.compile itself is replaced by a recording pass-through), or the model itself."""
    calls, forwards = [], []

    def fake_compile(fn, *args, **kwargs):
        calls.append((fn, args, kwargs))

        def compiled(*a, **kw):
            forwards.append(len(a[0]))
            return fn(*a, **kw)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    watch = Watch(monkeypatch)
    fit(tiny(tmp_path, compile=compile, compile_mode="max-autotune-no-cudagraphs"), data=real_data)
    model = watch.built[0]["model"]
    if compile:
        assert len(calls) == 1 and calls[0][0] is model
        assert calls[0][2].get("mode") == "max-autotune-no-cudagraphs"
        assert forwards == [16, 16]  # every training forward went through the compiled callable
    else:
        assert calls == [] and watch.built[0]["forward"] is model


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_cuda_graph_replays_the_captured_step_and_trains_the_eager_run(real_data, tmp_path, monkeypatch, cuda_graph):
    """cuda_graph: fit's step captures itself once after three eager steps and replays every later step, with the
    lr of each step; the run is the eager run, epoch by epoch. The CPU stands in for the GPU: torch.cuda's graph
    API is replaced by a stand-in that behaves like a graph, and the refusal of a CPU device is skipped."""
    from fake_cuda import FakeCudaGraphs

    eager = fit(tiny(tmp_path, name="eager", epochs=3, schedule="cosine"), data=real_data)
    monkeypatch.setattr(distributed, "setup", lambda config: distributed.Single(CPU))
    fake = FakeCudaGraphs(monkeypatch)
    watch = Watch(monkeypatch)
    watch.on_build.append(lambda model, optimizer: setattr(fake, "model", model))
    run = fit(tiny(tmp_path, epochs=3, schedule="cosine", cuda_graph=cuda_graph), data=real_data)
    assert watch.built[0]["kwargs"]["cuda_graph"] is cuda_graph
    assert (fake.captures, fake.replays) == ((1, 3) if cuda_graph else (0, 0))  # 6 steps: 3 eager, 1 captured
    assert len({round(lr, 6) for s in watch.steps for lr in s["lr"]}) == 6  # a new lr at every step
    for ours, theirs in zip(run.metrics, eager.metrics):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
        assert ours["test_loss"] == pytest.approx(theirs["test_loss"], abs=1e-5)
    assert max_gap(float_state(run.model), float_state(eager.model)) < 1e-5
    saved = checkpoints.load_checkpoint(run.run_dir / runfolder.STATE)["optimizer"]["param_groups"]
    assert all(type(group["lr"]) is float for group in saved)  # not the graph's tensor: it resumes on any device


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_turns_on_deterministic_kernels_while_training(real_data, tmp_path, monkeypatch, deterministic):
    """deterministic: torch's deterministic algorithms (and no cuDNN autotuning, a fixed cuBLAS workspace)
    during the training; the previous setting is restored afterwards."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", deterministic)  # the opposite of what fit must set
    assert not torch.are_deterministic_algorithms_enabled()
    watch = Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, deterministic=deterministic), data=real_data)
    assert [s["deterministic"] for s in watch.steps] == [deterministic] * 2
    assert [s["cudnn_benchmark"] for s in watch.steps] == [not deterministic] * 2
    assert not torch.are_deterministic_algorithms_enabled()
    assert (os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8") is deterministic


def test_the_seed_fixes_initialisation_augmented_batches_and_validation_split(real_data, tmp_path, monkeypatch):
    """seed: the same seed trains the same run bit for bit (initial weights, augmented batches, validation
    images, final weights); another seed changes the initialisation, the batches and the validation split."""
    def run(seed: int, name: str) -> Watch:
        watch = Watch(monkeypatch)
        fit(tiny(tmp_path, name=name, seed=seed, cutout=8), data=real_data)  # crop, flip and cutout: random
        return watch

    a, b, c = run(5, "a"), run(5, "b"), run(6, "c")
    assert max_gap(a.built[0]["start"], b.built[0]["start"]) == 0
    assert all(torch.equal(s["x"], t["x"]) for s, t in zip(a.steps, b.steps))
    assert torch.equal(a.evals[0]["images"], b.evals[0]["images"])
    assert max_gap(a.steps[-1]["after"], b.steps[-1]["after"]) == 0
    assert max_gap(a.built[0]["start"], c.built[0]["start"]) > 0.1
    assert not any(torch.equal(s["x"], t["x"]) for s, t in zip(a.steps, c.steps))
    assert not torch.equal(a.evals[0]["images"], c.evals[0]["images"])


def test_the_seed_sets_the_batch_order(real_data, tmp_path, monkeypatch):
    """seed: on a fixed training set without augmentation another seed visits the same images in another order."""
    small = dataclasses.replace(real_data, train_images=real_data.train_images[:64].clone(),
                                train_labels=real_data.train_labels[:64].clone())

    def order(seed: int) -> list[bytes]:
        watch = Watch(monkeypatch, fake_step=True)
        out_dir = tmp_path / str(len(list(tmp_path.iterdir())))  # a fresh folder per run
        fit(tiny(out_dir, seed=seed, val_size=0, train_limit=0, crop_padding=0, flip=False), data=small)
        return [bytes(img) for s in watch.steps for img in to_uint8(s["x"]).flatten(1).numpy()]

    first, again, other = order(1), order(1), order(2)
    assert sorted(first) == sorted(other) == sorted(bytes(i) for i in small.train_images.flatten(1).numpy())
    assert first == again and first != other


def test_the_device_knob_chooses_where_fit_trains(real_data, tmp_path, monkeypatch):
    """device: "cpu" trains on the CPU even where "auto" would take a GPU; "cuda" on a machine without one is
    refused before anything is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" would now choose CUDA
    assert devices.resolve_device("auto").type == "cuda"
    watch = Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, name="on-cpu", device="cpu"), data=real_data)
    assert {s["x"].device.type for s in watch.steps} == {"cpu"}
    assert {p.device.type for p in watch.built[0]["model"].parameters()} == {"cpu"}
    assert json.loads((tmp_path / "on-cpu" / runfolder.ENV).read_text())["device_type"] == "cpu"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        fit(tiny(tmp_path, name="on-gpu", device="cuda"), data=real_data)
    assert not (tmp_path / "on-gpu").exists()


@pytest.mark.parametrize("sync_bn", [True, False])
def test_sync_bn_converts_batch_norm_in_a_data_parallel_process_and_is_a_no_op_alone(tmp_path, sync_bn):
    """sync_bn acts under torchrun only (documented): a data-parallel process converts the model's batch
    norms to the synchronised kind when it is set, and leaves them alone otherwise; in one process it does
    nothing. (tests/test_distributed.py shows the converted model trains as one process with the global batch.)"""
    config = tiny(tmp_path, sync_bn=sync_bn)
    alone = distributed.setup(config)
    assert type(alone) is distributed.Single
    model = WideResNet(10, 1)
    assert alone.prepare(model) is model
    assert not any(isinstance(m, distributed.CpuSyncBatchNorm) for m in model.modules())

    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        process = distributed.DataParallel(config, CPU, 0)
        prepared = process.prepare(WideResNet(10, 1))
        process.close()
    finally:
        torch.distributed.destroy_process_group()
    kinds = collections.Counter(type(m).__name__ for m in prepared.modules()
                                if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert kinds == {("CpuSyncBatchNorm" if sync_bn else "BatchNorm2d"): 7}


def test_a_time_budget_chooses_the_epochs_from_the_step_timed_here_and_records_them(real_data, tmp_path, monkeypatch,
                                                                                    capsys):
    """budget_minutes: the run's own step (built with the same settings, on a throwaway copy of the model) is timed,
    the epochs that fit are chosen and recorded (config.json: the budget and the epochs; env.json: the
    measurement), and the run is then an ordinary one: the same weights as a run given those epochs, and a resume
    keeps them whatever epochs it is asked for."""
    built, real_make_step = [], train_module.make_train_step
    monkeypatch.setattr(train_module, "make_train_step", lambda model, forward, optimizer, **kwargs: built.append(
        (model, kwargs)) or real_make_step(model, forward, optimizer, **kwargs))
    budget = tiny(tmp_path, name="budget", budget_minutes=0.005, deterministic=True, label_smoothing=0.1)
    result = fit(budget, data=real_data)
    measured = json.loads((tmp_path / "budget" / runfolder.ENV).read_text())["budget"]
    epochs = max(1, int(0.005 * 60 / (measured["seconds_per_step"] * 2)))  # 32 images at batch 16: two steps
    assert measured == {"minutes": 0.005, "seconds_per_step": measured["seconds_per_step"],
                        "steps_timed": measured["steps_timed"], "epochs": epochs}
    assert 1 <= measured["steps_timed"] <= 10  # ten steps, or as many as fit in five seconds
    assert result.config.epochs == epochs == len(result.metrics) == runfolder.load_config(tmp_path / "budget").epochs
    (timed, timed_settings), (trained, settings) = built
    assert timed is not trained and timed_settings == settings  # the same step on another model
    given = fit(tiny(tmp_path, name="given", epochs=epochs, deterministic=True, label_smoothing=0.1),
                data=real_data)
    for key, value in given.model.state_dict().items():  # timing the step changed nothing of the run
        assert torch.equal(result.model.state_dict()[key], value), key
    again = fit(budget, data=real_data, existing="resume")  # read back: the chosen epochs are the run's
    assert again.config.epochs == epochs and "already finished" in capsys.readouterr().out


def test_a_step_time_given_beforehand_divides_the_budget_untimed_and_a_resume_keeps_it(real_data, tmp_path,
                                                                                       monkeypatch):
    """budget_step_s: the budget's epochs come from the given seconds per step, no step is timed, env.json records
    that time (and no timed steps), and a resume asked with another step time keeps the run's."""
    def untimed(*args):
        raise AssertionError("the step was timed although budget_step_s gives its time")

    monkeypatch.setattr(train_module, "_median_step", untimed)
    config = tiny(tmp_path, name="given", epochs=1, budget_minutes=2 ** -6, budget_step_s=2 ** -4)
    def stop(row):
        raise KeyboardInterrupt  # after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        fit(config, data=real_data, on_epoch_end=stop)
    # 0.9375 s / (0.0625 s x 2 steps of 16 of the 32 images) = 7.5: 7 epochs
    assert json.loads((tmp_path / "given" / runfolder.ENV).read_text())["budget"] == {
        "minutes": 2 ** -6, "seconds_per_step": 2 ** -4, "epochs": 7}
    resumed = fit(dataclasses.replace(config, budget_step_s=0.5), data=real_data, existing="resume")
    assert (resumed.config.epochs, resumed.config.budget_step_s, len(resumed.metrics)) == (7, 2 ** -4, 7)
    assert runfolder.load_config(tmp_path / "given").budget_step_s == 2 ** -4


# --------------------------------------------------------------------------- the run folder


@pytest.mark.parametrize("every", [0, 1, 2, 3])
def test_checkpoints_are_written_every_checkpoint_every_epochs(real_data, tmp_path, monkeypatch, every):
    """checkpoint_every: a resume checkpoint after every that-many epochs, and always at the end (0: only there)."""
    saved = []
    real_save = checkpoints.save

    def save(state, path):
        if path.name == runfolder.STATE:  # not the fp16 weights
            saved.append(state["epoch"])
        return real_save(state, path)

    monkeypatch.setattr(checkpoints, "save", save)
    Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, epochs=5, checkpoint_every=every), data=real_data)
    assert saved == [e for e in range(1, 6) if e == 5 or (every and e % every == 0)]


@pytest.mark.parametrize("save_model", [True, False])
def test_save_model_writes_the_evaluated_weights_in_fp16(real_data, tmp_path, monkeypatch, save_model):
    """save_model: model_fp16.pt holds the evaluated model (here the EMA) as fp16 weights and the integer
    buffers; without it no such file is written."""
    Watch(monkeypatch)
    result = fit(tiny(tmp_path, save_model=save_model, ema_decay=0.2), data=real_data)
    path = tmp_path / "knob" / runfolder.MODEL_FP16
    assert path.exists() is save_model
    if save_model:
        weights = torch.load(path, weights_only=True)
        evaluated = result.model.state_dict()
        assert set(weights) == set(evaluated)
        for k, v in evaluated.items():
            assert weights[k].dtype == (torch.float16 if v.is_floating_point() else v.dtype), k
            assert torch.equal(weights[k].to(v.dtype), v), k


@pytest.mark.parametrize("progress", [True, False])
def test_progress_prints_the_start_line_a_line_per_epoch_and_a_bar(real_data, tmp_path, monkeypatch, capsys,
                                                                   progress):
    """progress: a start line, the estimate measured on the first steps, one line per epoch and a progress bar;
    without it fit prints nothing."""
    Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path, name="shown", epochs=2, progress=progress), data=real_data)
    out, err = capsys.readouterr()
    if progress:
        lines = out.splitlines()
        assert len(lines) == 4 and lines[0].startswith("shown: WRN-10-1, 2 epochs of 2 steps")
        precision = json.loads((tmp_path / "shown" / runfolder.ENV).read_text())["precision"]
        assert f"; {precision}; roughly " in lines[0]  # the precision it trains in, as env.json records it
        assert [line.split()[:2] for line in lines[1:]] == [["epoch", "1/2"], ["measured", "on"], ["epoch", "2/2"]]
        assert "shown" in err and "step" in err  # the bar, named after the run
    else:
        assert out == "" and "shown" not in err


def test_data_dir_is_the_data_fit_trains_on(tmp_path, monkeypatch):
    """data_dir: fit loads (and trains on) the folder it names, before $CIFAR10_DIR."""
    sample = load_cifar10(sample_dir())
    folder = tmp_path / "inverted"
    folder.mkdir()
    # the sample with every training image inverted: data that exists nowhere else
    np.savez(folder / "train_1.npz", images=(255 - sample.train_images).permute(0, 2, 3, 1).numpy(),
             labels=sample.train_labels.numpy().astype(np.uint8))
    shutil.copy(sample_dir() / "test.npz", folder / "test.npz")
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "not-here"))
    watch = Watch(monkeypatch, fake_step=True)
    fit(tiny(tmp_path / "runs", data_dir=str(folder), crop_padding=0, flip=False))
    env = json.loads((tmp_path / "runs" / "knob" / runfolder.ENV).read_text())
    assert env["data_source"] == str(folder.resolve())
    assert env["data_checksum"] == load_cifar10(folder).checksum != sample.checksum
    inverted = set(map(bytes, (255 - sample.train_images).flatten(1).numpy()))
    assert all(bytes(img) in inverted for s in watch.steps for img in to_uint8(s["x"]).flatten(1).numpy())


@pytest.mark.parametrize("download", [True, False])
def test_download_fetches_into_the_cache_only_when_asked(tmp_path, monkeypatch, download):
    """download: with no data_dir and no $CIFAR10_DIR, fit has torchvision fetch CIFAR-10 into the cache
    folder and trains on it; without it, it stops with advice naming download=True and fetches nothing."""
    import torchvision.datasets

    fetched = []

    def fake_cifar10(root, train, download):  # stands in for the network: leaves a data set in root
        fetched.append((root, train, download))
        for name in ("train_1.npz", "test.npz"):
            shutil.copy(sample_dir() / name, Path(root) / name)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "wrnlib"
    watch = Watch(monkeypatch, fake_step=True)
    config = tiny(tmp_path / "runs", data_dir=None, download=download)
    if download:
        fit(config)
        assert fetched == [(str(cache), True, True), (str(cache), False, True)]
        env = json.loads((tmp_path / "runs" / "knob" / runfolder.ENV).read_text())
        assert env["data_source"] == str(cache.resolve())
        assert len(watch.steps) == 2
    else:
        with pytest.raises(DataError, match="download=True"):
            fit(config)
        assert fetched == [] and not (tmp_path / "runs" / "knob").exists()


# --------------------------------------------------------------------------- the augmentation a config describes


def _window_shifts(out: torch.Tensor, images: torch.Tensor, padding: int, mode: str) -> torch.Tensor:
    """(dy, dx) of the window of the padded original each output image is, or (-99, -99)."""
    padded = torch.from_numpy(np.pad(images.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                                     mode=mode))
    found = torch.full((len(out), 2), -99)
    H, W = out.shape[-2:]
    for oy in range(2 * padding + 1):
        for ox in range(2 * padding + 1):
            match = (padded[:, :, oy:oy + H, ox:ox + W] == out).flatten(1).all(1) & (found[:, 0] == -99)
            found[match] = torch.tensor([oy - padding, ox - padding])
    return found


@pytest.mark.parametrize("crop_padding,pad_mode", [(0, "reflect"), (2, "constant"), (3, "reflect"), (4, "constant")])
def test_crop_padding_and_pad_mode_shift_each_image_within_the_padding(real_data, crop_padding, pad_mode):
    """crop_padding, pad_mode: each image is a 32x32 window of the original padded by crop_padding pixels in
    pad_mode, at shifts covering exactly [-crop_padding, crop_padding] (0: the images themselves)."""
    images, labels = real_data.test_images[:256], real_data.test_labels[:256]
    torch.manual_seed(0)
    x, _ = augment_from(crop_padding=crop_padding, pad_mode=pad_mode)(images, labels)
    out = to_uint8(x)
    if crop_padding == 0:
        assert torch.equal(out, images)
        return
    shifts = _window_shifts(out, images, crop_padding, pad_mode)
    assert (shifts > -99).all(), "an image is no window of the padded original"
    span = set(range(-crop_padding, crop_padding + 1))
    assert set(shifts[:, 0].tolist()) == span and set(shifts[:, 1].tolist()) == span
    other = _window_shifts(out, images, crop_padding, "reflect" if pad_mode == "constant" else "constant")
    assert (other[:, 0] > -99).float().mean() < 0.5  # the other padding would have given other images


@pytest.mark.parametrize("flip", [True, False])
def test_flip_mirrors_about_half_the_images(real_data, flip):
    """flip: each image is itself or its left-right mirror, mirrored with probability 1/2 (never without flip)."""
    images, labels = real_data.test_images[:512], real_data.test_labels[:512]
    torch.manual_seed(1)
    out = to_uint8(augment_from(flip=flip)(images, labels)[0])
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    fraction = (mirrored & ~same).float().mean().item()
    assert (0.4 < fraction < 0.6) if flip else fraction == 0


@pytest.mark.parametrize("policy,group", [("autoaugment", 8), ("trivialaugment", 16), ("none", 8)])
def test_policy_applies_one_sampled_op_per_policy_group_images(real_data, policy, group):
    """policy, policy_group: the images are torchvision's AutoAugment (CIFAR-10 policy) or TrivialAugmentWide,
    one op sampled per consecutive policy_group images; "none" leaves them alone."""
    from torchvision.transforms import v2

    images, labels = real_data.test_images[:64], real_data.test_labels[:64]
    torch.manual_seed(2)
    x, _ = augment_from(policy=policy, policy_group=group)(images, labels)
    if policy == "none":
        assert torch.allclose(x, norm(images), atol=1e-5)
        return
    transforms = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
                  "trivialaugment": v2.TrivialAugmentWide}

    def reference(name: str, size: int) -> torch.Tensor:
        torch.manual_seed(2)
        return norm(torch.cat([transforms[name]()(chunk) for chunk in images.split(size)]))

    assert torch.allclose(x, reference(policy, group), atol=1e-5)
    assert not torch.allclose(x, norm(images), atol=1e-3)
    other = "trivialaugment" if policy == "autoaugment" else "autoaugment"
    assert not torch.allclose(x, reference(other, group), atol=1e-3)
    assert not torch.allclose(x, reference(policy, DEFAULTS["policy_group"]), atol=1e-3)


@pytest.mark.parametrize("mix", ["none", "mixup", "cutmix"])
def test_mix_blends_or_pastes_image_pairs_and_their_labels(real_data, mix):
    """mix: mixup blends each image with a partner from the same batch in ratio lam, cutmix pastes one box
    of the partner into every image, and the labels are mixed in the same proportion; "none" mixes nothing."""
    images, labels = one_per_class(real_data)  # label k is image k: a label names its image
    base, onehot = norm(images), torch.eye(10)[labels]
    augment = augment_from(mix=mix)
    torch.manual_seed(3)
    mixed = 0
    for _ in range(20):
        x, t = augment(images, labels)
        assert torch.allclose(t.sum(1), torch.ones(10))
        if mix == "none":
            assert torch.equal(t, onehot) and torch.allclose(x, base, atol=1e-5)
            continue
        own = t[torch.arange(10), labels]
        partner = torch.where(own < 1, (t - own[:, None] * onehot).argmax(1), torch.arange(10))
        if (partner == torch.arange(10)).all():
            continue  # nothing moved (an empty CutMix box, or an identity permutation)
        mixed += 1
        assert sorted(partner.tolist()) == list(range(10))  # partners: a permutation of the batch
        moved = partner != torch.arange(10)
        if mix == "mixup":
            lam = own[moved][0]
            assert torch.allclose(own[moved], lam.expand(int(moved.sum())))
            assert torch.allclose(x, lam * base + (1 - lam) * base[partner], atol=1e-5)
        else:
            changed = (~torch.isclose(x, base, atol=1e-5).all(1)).any(0)  # pixels not from the image itself
            rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
            box = torch.zeros(32, 32, dtype=torch.bool)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            assert torch.allclose(x[:, :, box], base[partner][:, :, box], atol=1e-5)
            assert torch.allclose(x[:, :, ~box], base[:, :, ~box], atol=1e-5)
            assert torch.allclose(own[moved], 1 - box.float().mean(), atol=1e-6)
    assert mixed >= (0 if mix == "none" else 15)


@pytest.mark.parametrize("alpha", [0.2, 4.0])
def test_mix_alpha_is_the_beta_parameter_of_the_mixing_ratio(real_data, alpha):
    """mix_alpha: the mixup ratio lam follows Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1))."""
    images, labels = one_per_class(real_data)
    augment = augment_from(mix="mixup", mix_alpha=alpha)
    torch.manual_seed(4)
    lams = []
    for _ in range(600):
        _, t = augment(images, labels)
        own = t[torch.arange(10), labels]
        if (own < 1).any():
            lams.append(own[own < 1][0].item())
    lams = torch.tensor(lams)
    assert len(lams) > 550
    assert lams.mean().item() == pytest.approx(0.5, abs=0.05)
    variance = 1 / (4 * (2 * alpha + 1))
    assert lams.var().item() == pytest.approx(variance, rel=0.2)
    assert abs(variance - 1 / (4 * (2 * DEFAULTS["mix_alpha"] + 1))) > 0.5 * variance  # precondition


@pytest.mark.parametrize("prob", [0.3, 0.8])
def test_mix_prob_is_the_fraction_of_mixed_batches(real_data, prob):
    """mix_prob: each batch is mixed with that probability, or left as it is."""
    images, labels = one_per_class(real_data)
    augment = augment_from(mix="mixup", mix_prob=prob)
    torch.manual_seed(0)
    mixed = []
    for _ in range(400):
        x, t = augment(images, labels)
        is_mixed = not torch.equal(t, torch.eye(10)[labels])
        if not is_mixed:
            assert torch.allclose(x, norm(images), atol=1e-5)
        mixed.append(is_mixed)
    assert sum(mixed) / len(mixed) == pytest.approx(prob, abs=0.07)
