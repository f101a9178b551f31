"""AdaLoRA: LoRA in SVD form (P·Λ·Q) whose rank budget is reallocated during training from
gradient-based importance scores. peft does the allocation; the runner must (1) tell it the total
number of optimizer steps and (2) call update_and_allocate after every optimizer step, before the
gradients are zeroed. Without (2) AdaLoRA silently stays a fixed-rank LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError
from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams, peft_task_type


@dataclass(kw_only=True)
class AdaLoraParams(PeftParams):
    init_r: int = 12  # rank every layer starts with
    # average rank per layer left after pruning (total budget = target_r x layers)
    target_r: int = 8
    alpha: float = 16.0  # scale of the update, as LoRA's alpha
    dropout: float = 0.05  # dropout on the adapter input
    # fraction of steps trained at init_r before pruning starts (peft tinit)
    tinit_ratio: float = 0.1
    tfinal_ratio: float = 0.2  # fraction of steps at the end with ranks frozen (peft tfinal)
    delta_t: int = 1  # optimizer steps between two reallocations (peft deltaT)
    beta1: float = 0.85  # EMA factor of the importance (sensitivity) scores
    beta2: float = 0.85  # EMA factor of their uncertainty
    orth_reg_weight: float = 0.5  # weight of the P, Q orthogonality penalty added to the loss


@PEFT_METHODS.register("adalora")
class AdaLora(PeftMethod):
    Params = AdaLoraParams
    peft_type = "ADALORA"
    summary = "LoRA whose per-layer ranks are pruned to a budget during training (needs >= 3 steps)"
    reads_gradients = True  # a non-finite step must be caught before on_step scores it

    @classmethod
    def build(cls, params: AdaLoraParams, task: str, family: Any, model_config: Any) -> Any:
        from peft import AdaLoraConfig

        # total_step is only known once the data is loaded: prepare_model() sets the real value
        # (and tinit/tfinal from the ratios) before the first step; 3 is a valid placeholder.
        return AdaLoraConfig(
            task_type=peft_task_type(task),
            init_r=params.init_r,
            target_r=params.target_r,
            lora_alpha=params.alpha,
            lora_dropout=params.dropout,
            tinit=0,
            tfinal=0,
            deltaT=params.delta_t,
            beta1=params.beta1,
            beta2=params.beta2,
            orth_reg_weight=params.orth_reg_weight,
            total_step=3,
            target_modules=cls.targets(params, family, model_config),
            modules_to_save=cls.modules_to_save(params, task, family, model_config),
        )

    @staticmethod
    def schedule(params: AdaLoraParams, total_steps: int) -> tuple:
        """(tinit, tfinal) in steps for a run of total_steps."""
        return round(params.tinit_ratio * total_steps), round(params.tfinal_ratio * total_steps)

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if not 1 <= params.target_r <= params.init_r:
            found.append(
                f"peft.target_r={params.target_r}: must be between 1 and "
                f"peft.init_r={params.init_r}"
            )
        for key in ("tinit_ratio", "tfinal_ratio"):
            if not 0.0 <= getattr(params, key) < 1.0:
                found.append(f"peft.{key}={getattr(params, key)}: must be in [0, 1)")
        if params.tinit_ratio + params.tfinal_ratio >= 1.0:
            found.append(
                f"peft.tinit_ratio + peft.tfinal_ratio = "
                f"{params.tinit_ratio + params.tfinal_ratio}: leaves no steps to reallocate "
                f"ranks; keep the sum below 1 (e.g. 0.1 + 0.2)"
            )
        if params.delta_t < 1:
            found.append(f"peft.delta_t={params.delta_t}: must be >= 1")
        steps = run.train.max_steps
        if steps is not None:
            tinit, tfinal = cls.schedule(params, steps)
            if tinit >= steps - tfinal:
                found.append(
                    f"train.max_steps={steps}: too few for AdaLoRA's schedule (tinit "
                    f"{tinit} + tfinal {tfinal} steps leave none to reallocate ranks); "
                    f"raise train.max_steps or lower peft.tinit_ratio/peft.tfinal_ratio"
                )
        return found

    @classmethod
    def prepare_model(cls, params: Any, model: Any, total_steps: int) -> None:
        super().prepare_model(params, model, total_steps)
        tinit, tfinal = cls.schedule(params, total_steps)
        if tinit >= total_steps - tfinal:
            raise UserError(
                f"peft=adalora: the run has {total_steps} optimizer steps, too few for "
                f"tinit={tinit} + tfinal={tfinal}; train longer or lower "
                f"peft.tinit_ratio/peft.tfinal_ratio"
            )
        config = model.peft_config[model.active_adapter]
        config.tinit, config.tfinal = tinit, tfinal
        model.base_model.rankallocator.set_total_step(total_steps)  # also config.total_step

    @classmethod
    def on_step(cls, model: Any, global_step: int) -> None:
        # Scores importance from p * grad (so gradients must still be there), masks the least
        # important singular values down to the step's budget, and stores rank_pattern.
        model.base_model.update_and_allocate(global_step)

    @classmethod
    def training_state(cls, model: Any) -> Any:
        return RankAllocatorState(model)

    @classmethod
    def after_load(cls, model: Any) -> Any:
        # peft 0.21: an AdaLoRA model loaded with PeftModel.from_pretrained has no
        # trainable_adapter_name, and its forward crashes whenever a loss is computed (labels
        # given). Point it at the AdaLoRA adapter so evaluation with labels works.
        from peft import AdaLoraConfig

        names = [n for n, c in model.peft_config.items() if isinstance(c, AdaLoraConfig)]
        if names and not hasattr(model.base_model, "trainable_adapter_name"):
            model.base_model.trainable_adapter_name = names[0]
        return model


class RankAllocatorState:
    """AdaLoRA's importance averages (peft's RankAllocator) and the allocated rank pattern, which
    peft keeps outside the model's state dict. Checkpointed beside the optimizer so that a resumed
    run prunes the same ranks as an uninterrupted one (without it the averages restart at zero)."""

    _SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # name -> tensor shaped like its parameter

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model

    def _config(self) -> Any:
        adalora = self.peft_model.base_model
        return adalora.peft_config[adalora.trainable_adapter_name]

    def state_dict(self) -> dict[str, Any]:
        allocator = self.peft_model.base_model.rankallocator
        state: dict[str, Any] = {
            key: {name: t.detach().cpu() for name, t in getattr(allocator, key).items()}
            for key in self._SCORES
        }
        state["rank_pattern"] = self._config().rank_pattern
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        adalora = self.peft_model.base_model
        params = dict(adalora.model.named_parameters())  # the names the allocator scores by
        for key in self._SCORES:
            setattr(
                adalora.rankallocator,
                key,
                {name: t.to(params[name].device) for name, t in state[key].items()},
            )
        self._config().rank_pattern = state["rank_pattern"]
