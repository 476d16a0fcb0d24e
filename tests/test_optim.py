"""Optimizer groups of the official recipe: detectron2's per-parameter rules, merged into few groups with the
same updates, and runs saved with one group per parameter still resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from models.ovavss.config import TrainConfig
from models.ovavss.model import build_ovavss
from models.ovavss.optim import (
    build_optimizer,
    build_param_groups,
    build_scheduler,
    parameter_settings,
    regroup_per_parameter_state,
)

torch.set_num_threads(1)
CFG = TrainConfig(base_lr=1e-3, warmup_iters=4)


def legacy_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The layout avseg saved before: one group per parameter, each with its "name"."""
    groups = [{"params": [param], "lr": lr, "weight_decay": wd, "name": name}
              for name, param, lr, wd in parameter_settings(model, cfg)]
    return torch.optim.AdamW(groups, lr=cfg.base_lr, betas=(0.9, 0.999), eps=1e-8)


def _step(model: nn.Module, optimizer, scheduler, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.randn(param.shape, generator=gen)
    optimizer.step()
    scheduler.step()


def test_rules_per_parameter():
    model = build_ovavss("tiny")
    settings = {name: (lr, wd) for name, _p, lr, wd in parameter_settings(model, CFG)}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(settings) == trainable
    modules = dict(model.named_modules())
    for name, (lr, wd) in settings.items():
        owner = modules[name.rsplit(".", 1)[0]]
        expected_lr = CFG.base_lr * (CFG.backbone_multiplier if "backbone" in name.rsplit(".", 1)[0] else 1.0)
        assert lr == pytest.approx(expected_lr), name
        if isinstance(owner, (nn.LayerNorm, nn.GroupNorm)):
            assert wd == CFG.weight_decay_norm, name
        elif isinstance(owner, nn.Embedding):
            assert wd == CFG.weight_decay_embed, name
    # the case has every kind: backbone and head, decayed and not
    assert len({lr for lr, _ in settings.values()}) == 2
    assert {wd for _, wd in settings.values()} >= {CFG.weight_decay, 0.0}


def test_groups_merge_equal_settings_and_cover_every_parameter_once():
    model = build_ovavss("tiny")
    settings = parameter_settings(model, CFG)
    groups = build_param_groups(model, CFG)
    assert len(groups) == len({(lr, wd) for _n, _p, lr, wd in settings}) <= 4 < len(settings)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for _n, p, _l, _w in settings)
    by_name = {name: (lr, wd) for name, _p, lr, wd in settings}
    params_by_name = {name: p for name, p, _l, _w in settings}
    for group in groups:
        assert len(group["names"]) == len(group["params"])
        for name, param in zip(group["names"], group["params"]):
            assert params_by_name[name] is param
            assert by_name[name] == (group["lr"], group["weight_decay"])


def test_grouped_optimizer_makes_the_same_updates_as_one_group_per_parameter():
    torch.manual_seed(0)
    reference = build_ovavss("tiny")
    grouped = copy.deepcopy(reference)
    legacy = legacy_optimizer(reference, CFG)
    legacy_schedule = build_scheduler(legacy, CFG)
    optimizer = build_optimizer(grouped, CFG)
    schedule = build_scheduler(optimizer, CFG)
    for seed in range(6):  # through the warmup
        _step(reference, legacy, legacy_schedule, seed)
        _step(grouped, optimizer, schedule, seed)
    for (name, a), b in zip(reference.named_parameters(), grouped.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(next(reference.parameters()), next(build_ovavss("tiny").parameters()))


def test_per_parameter_state_is_regrouped_for_resuming():
    torch.manual_seed(1)
    legacy_model = build_ovavss("tiny")
    legacy = legacy_optimizer(legacy_model, CFG)
    legacy_schedule = build_scheduler(legacy, CFG)
    for seed in range(3):
        _step(legacy_model, legacy, legacy_schedule, seed)
    saved_optimizer, saved_schedule = copy.deepcopy(legacy.state_dict()), copy.deepcopy(legacy_schedule.state_dict())

    resumed_model = copy.deepcopy(legacy_model)
    optimizer = build_optimizer(resumed_model, CFG)
    schedule = build_scheduler(optimizer, CFG)
    optimizer_state, schedule_state = regroup_per_parameter_state(optimizer, saved_optimizer, saved_schedule)
    optimizer.load_state_dict(optimizer_state)
    schedule.load_state_dict(schedule_state)
    assert len(schedule.base_lrs) == len(optimizer.param_groups)
    for seed in range(3, 7):  # the warmup ends in here: the learning rates must follow
        _step(legacy_model, legacy, legacy_schedule, seed)
        _step(resumed_model, optimizer, schedule, seed)
    for (name, a), b in zip(legacy_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name
    assert sorted({g["lr"] for g in optimizer.param_groups}) == sorted({g["lr"] for g in legacy.param_groups})

    # the grouped layout passes through unchanged
    grouped_state = optimizer.state_dict()
    assert regroup_per_parameter_state(optimizer, grouped_state, schedule.state_dict())[0] is grouped_state


def test_train_resumes_a_run_saved_with_one_group_per_parameter(tmp_path: Path, monkeypatch):
    import models.ovavss.optim as optim_module
    from models.data.synthetic import make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset
    from models.pipeline.train import TrainOptions, train

    make_synthetic_avsbench(tmp_path / "root", num_train=3, num_val=1, num_test=1, seed=4)
    prepare_dataset(tmp_path / "root", tmp_path / "data")

    def options(out: str, max_iters: int, resume: bool = False) -> TrainOptions:
        return TrainOptions(data_dir=tmp_path / "data", config_name="tiny", out_dir=tmp_path / out, device="cpu",
                            max_iters=max_iters, resume=resume, checkpoint_period=2, vggish_weights="random",
                            overrides={"train_num_points": 256, "warmup_iters": 3})

    straight = train(options("straight", 4), warn=lambda *_: None)
    with monkeypatch.context() as patched:
        patched.setattr(optim_module, "build_optimizer", legacy_optimizer)
        train(options("resumed", 2), warn=lambda *_: None)
    saved = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert "name" in saved["optimizer"]["param_groups"][0]  # the old layout really was written
    resumed = train(options("resumed", 4, resume=True), warn=lambda *_: None)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert straight.final_loss == resumed.final_loss


def test_fused_adamw_makes_the_same_updates_up_to_rounding_and_is_the_cuda_default():
    """`build_optimizer(fused=True)` (the default when the parameters are on CUDA) updates like the plain loop;
    on the CPU the default stays the plain loop; a fused run's state resumes in a plain optimizer."""
    torch.manual_seed(2)
    plain_model = build_ovavss("tiny")
    fused_model = copy.deepcopy(plain_model)
    plain = build_optimizer(plain_model, CFG)
    assert plain.defaults["fused"] is False  # CPU parameters
    fused = build_optimizer(fused_model, CFG, fused=True)
    assert fused.defaults["fused"] is True
    plain_schedule, fused_schedule = build_scheduler(plain, CFG), build_scheduler(fused, CFG)
    start = copy.deepcopy(plain_model)
    for seed in range(6):
        _step(plain_model, plain, plain_schedule, seed)
        _step(fused_model, fused, fused_schedule, seed)
    moved = 0
    for (name, a), b, s in zip(plain_model.named_parameters(), fused_model.parameters(), start.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(a, s))
    assert moved > 10
    resumed_model = copy.deepcopy(fused_model)
    resumed = build_optimizer(resumed_model, CFG)
    resumed_schedule = build_scheduler(resumed, CFG)  # then the states, in `train`'s order
    # copies, as from a checkpoint file (a live state dict shares its moment tensors with the optimizer)
    resumed.load_state_dict(copy.deepcopy(fused.state_dict()))
    resumed_schedule.load_state_dict(copy.deepcopy(fused_schedule.state_dict()))
    _step(resumed_model, resumed, resumed_schedule, 7)
    _step(fused_model, fused, fused_schedule, 7)
    for a, b in zip(resumed_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
