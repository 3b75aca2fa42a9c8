"""Typed configuration: dataclasses loaded from YAML, with dotted `key=value` CLI overrides.

Defaults are the paper's (spec §8). No registries: every field is a plain typed value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class LoraConfig:
    #: LoRA rank
    r: int = 16
    #: LoRA scaling numerator (the update is scaled by alpha / r)
    alpha: int = 32
    #: dropout on the LoRA branch's input
    dropout: float = 0.0
    #: module names that get adapters (PEFT's `target_modules`)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    #: how the policy reaches a vLLM engine: "merged" weights pushed in place, or "adapter" only
    #: (vLLM's LoRA support); see vineppo/lora_sync.py and benchmarks/lora_sync.py
    sync: Literal["merged", "adapter"] = "merged"


@dataclass
class ModelConfig:
    #: hub id or local directory of the SFT policy (also the frozen reference and the PPO critic init)
    name_or_path: str = ""
    #: tokenizer location (defaults to `name_or_path`)
    tokenizer: str | None = None
    #: training precision: bfloat16 on GPUs, float32 on CPU
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    #: recompute activations in the backward pass (less memory, more compute)
    gradient_checkpointing: bool = True
    #: e.g. "flash_attention_2" when flash-attn is installed; None = transformers' default
    attn_implementation: str | None = None
    #: optional LoRA on the policy (not used in the paper: full fine-tuning)
    lora: LoraConfig | None = None
    #: if `name_or_path` is a local directory that does not exist yet, build a random-init tiny
    #: Llama there with a tokenizer trained on the task's train rows (CPU smoke configs; offline)
    tiny_init: bool = False
    #: keep the frozen reference model in CPU RAM except while computing reference log-probs
    #: (frees its GPU memory for the engine during rollouts; costs two copies per iteration)
    reference_offload: bool = False


@dataclass
class DataConfig:
    #: which task: prompt, grader and step splitter (`arithmetic` and `chain` are the demos' synthetic tasks)
    task: Literal["gsm8k", "math", "arithmetic", "chain"] = "gsm8k"
    #: local directory with train.jsonl/test.jsonl; None reads the hub defaults
    source: str | None = None
    #: seed of the deterministic train/validation carve
    validation_seed: int = 42
    #: rows carved from train for validation (None = the paper's: GSM8K 373, MATH 500)
    validation_size: int | None = None
    #: questions with longer prompts are filtered out (spec §1.1: 1512)
    max_prompt_tokens: int = 1512
    #: keep only the first N train rows (tests / demos); None = all
    max_train_rows: int | None = None
    # Your own data (see docs/training.md, "Your own model and data"); None = the task's own
    # fields. `data.task` still picks the grader.
    #: the row field holding the question
    question_field: str | None = None
    #: the row field holding the bare final answer (e.g. "18"); graded with the task's grader
    answer_field: str | None = None
    #: the row field holding a worked solution (needed by SFT and gold-solution checks only)
    solution_field: str | None = None
    #: how GSM8K-style responses state their answer: "hashes" (`#### 18`, the paper), "boxed"
    #: (`\boxed{18}`), or "auto" (the last `\boxed{}` if any, else `####`). MATH always reads \boxed.
    answer_format: Literal["hashes", "boxed", "auto"] = "hashes"


@dataclass
class PromptConfig:
    """How a question becomes the prompt (vineppo.prompting)."""
    #: False: the paper's `[MATH_TASK] Problem: ... Solution:`; True: the tokenizer's chat template
    chat: bool = False
    #: chat: optional system message
    system: str | None = None
    #: chat: the user message is this instruction, a blank line, then the question ("" = question only)
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    #: chat: True puts the instruction after the question, False before it
    instruction_after_question: bool = True
    #: chat: reasoning tags (open, close): steps are those of the reasoning, the answer is read after
    #: the close tag, and a response that opens but never closes them has no answer; [] = off
    think_tags: list[str] = field(default_factory=lambda: ["<think>", "</think>"])


@dataclass
class SamplingConfig:
    #: sampling temperature of episodes and MC rollouts
    temperature: float = 0.6
    #: nucleus sampling threshold
    top_p: float = 0.9
    #: response budget in tokens; a response cut by it is unfinished (reward 0, no EOS)
    max_new_tokens: int = 1024
    #: prompt + response longer than this: truncated, reward 0, no EOS (spec §1.3)
    max_sequence_length: int = 2048
    #: strings that end a response (the paper's `\n\n\nProblem:`; chat models: `[]`)
    stop: list[str] = field(default_factory=lambda: ["\n\n\nProblem:"])


@dataclass
class EpisodeConfig:
    #: questions drawn per iteration, over all processes
    questions_per_iteration: int = 64
    #: responses sampled per question (the group of GRPO / RLOO)
    samples_per_question: int = 8


@dataclass
class MCConfig:
    """VinePPO's Monte Carlo value estimation (spec §1.3)."""
    #: continuations per state
    k: int = 9
    #: N: estimate the values of a response's states s_0..s_N only, N + 1 states (spec §1.3's
    #: `range(min(n - 1, N) + 1)`; the rest back-filled); GSM8K 25, MATH null = all
    max_states_per_response: int | None = None
    #: how MC values become step advantages: `step`, the paper's A_i = V̂(s_{i+1}) − V̂(s_i) (the
    #: last step R − V̂(s_{n-1})); or `outcome`, an ablation with no credit assignment between
    #: steps: every step gets R − V̂(s_0), the prompt's MC value as a per-prompt baseline (it needs
    #: only s_0: max_states_per_response must be 0)
    credit: Literal["step", "outcome"] = "step"
    #: adaptive budget (vineppo/mc.py MCBudget): rounds of k_min rollouts while a state's 95 % Wilson
    #: half-width is above target_halfwidth, at most k_max in all; off = k for every state (the paper)
    adaptive: bool = False
    #: adaptive: rollouts per state in each round
    k_min: int = 2
    #: adaptive: at most this many rollouts per state in all
    k_max: int = 16
    #: adaptive: a state gets another round while its 95 % Wilson half-width is above this
    target_halfwidth: float = 0.24
    #: the sampled response counts as one more sample of every state it passes through (free);
    #: null = on with mc.adaptive, off with fixed k (the paper)
    include_episode_outcome: bool | None = None
    #: with several processes, deduplicate the MC states of all of them, deal them out evenly and
    #: send the values back (vineppo/mc_balance.py); false: each process estimates its own
    #: episodes' states, and the one with the longest responses sets the MC time
    balance: bool = True
    #: how balanced MC deals the states out: by expected continuation tokens, or by number of
    #: states (the official code's even split)
    balance_split: Literal["tokens", "count"] = "tokens"


@dataclass
class ProbeConfig:
    """Value-quality probe (vineppo/probe/): every `every` iterations, `k` rollouts from `states`
    states of that iteration as ground truth; logs the run's value error and ranking accuracy and
    writes every probed state to `probe/states.rank<R>.jsonl` in the run directory (one file per
    process; `vineppo.probe.read_records` merges them). 0 = off.

    Estimators compared with the truth: `mc` (VinePPO: its own MC values; every other algorithm:
    `mc.k` fresh rollouts per state, drawn with the truth in one engine call) and, for PPO,
    `critic` (the critic's V at the state, before this iteration's update). Logged per probe:
    `probe/<estimator>_abs_error` (mean |estimate − truth| over the probed states),
    `probe/<estimator>_ranking_accuracy` (alternative next steps, below) and
    `probe/<estimator>_ranking_pairs` (the pairs it was scored on, all processes)."""
    #: probe every N iterations; 0 = off
    every: int = 0
    #: MC states sampled per probe (sibling pairs first)
    states: int = 32
    #: ground-truth rollouts per probed state
    k: int = 64
    #: ranking of alternative next steps (the paper's analysis, as the official analyzer runs it):
    #: from up to `ranking_states` of the probed states, sample `alternatives` continuations, each
    #: cut at the task's next step boundary; a state with at least `min_alternatives` distinct steps
    #: is ranked: every alternative (the state after taking it) is valued by `k` rollouts (truth)
    #: and by each estimator (`mc.k` rollouts; PPO also the critic), and each estimator scores the
    #: share of the pairs it orders strictly as the truth does (ties in either count wrong, as the
    #: official analyzer)
    #: (`vineppo.probe.ranking.ranking_score`); records in `probe/alternatives.rank<R>.jsonl`.
    #: 0 = no ranking
    alternatives: int = 5
    #: a state is ranked only when its sampled alternatives hold at least this many distinct steps
    min_alternatives: int = 3
    #: at most this many probed states get alternatives ranked (a random sample; where the task has an
    #: exact oracle, states it already knows are lost, whose next steps all have value 0, come last)
    ranking_states: int = 8


@dataclass
class PPOConfig:
    #: passes over the iteration's episodes
    epochs: int = 2
    #: global minibatch, in episodes, whatever the number of processes
    minibatch_size: int = 64
    #: per-process micro-batch, in episodes (gradient accumulation fills the minibatch)
    micro_batch_size: int = 8
    #: PPO-clip epsilon of the policy ratio
    cliprange: float = 0.2
    #: the batch's policy loss is zeroed when its mean ratio exceeds this
    ratio_threshold: float = 10.0
    #: weight of the k3 KL to the reference, in the loss (not the reward)
    kl_coef: float = 1e-4
    #: per-token k3 KL is clamped to [kl_clamp_min, kl_clamp_max]
    kl_clamp_min: float = 0.0
    #: upper clamp of the per-token k3 KL
    kl_clamp_max: float = 10.0
    #: log-probs are computed from logits / temperature (the sampling T)
    logprob_temperature: float = 0.6
    #: whiten advantages over each minibatch; None = the algorithm's default (`whiten_advantages_for`):
    #: on for VinePPO/PPO (official), off for GRPO/Dr. GRPO/RLOO (they normalise within groups)
    whiten_advantages: bool | None = None
    #: how the policy loss reduces over tokens (`vineppo.losses.aggregate_token_loss`); None = the
    #: algorithm's paper (`loss_aggregation_for`)
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] | None = None
    # PPO baseline (critic + GAE)
    #: PPO: GAE discount
    gamma: float = 1.0
    #: PPO: GAE lambda (1 in the paper's PPO runs)
    lam: float = 1.0
    #: PPO: the critic's value clip around the old values
    cliprange_value: float = 0.2
    #: PPO: the first N iterations update only the critic (the policy, its optimizer and LR
    #: schedule do not move): a common PPO practice for a critic that starts from a random head.
    #: 0 in the paper.
    critic_warmup_iterations: int = 0
    #: PPO: the critic's peak learning rate (its own AdamW, same schedule and betas); None = `optim.lr`
    #: (the paper: one learning rate for both). A critic whose random value head must fit within a
    #: short run may need a larger one; choose it on validation.
    critic_lr: float | None = None


@dataclass
class OptimConfig:
    #: peak learning rate (AdamW)
    lr: float = 1e-6
    #: AdamW betas
    betas: tuple[float, float] = (0.9, 0.999)
    #: AdamW epsilon
    eps: float = 1e-8
    #: AdamW weight decay
    weight_decay: float = 0.0
    #: gradient clipping norm (the critic is clipped separately)
    max_grad_norm: float = 1.0
    #: share of the optimizer steps spent warming up
    warmup_ratio: float = 0.03
    #: "linear": warmup then linear decay to 0 at the last step (the paper); "constant": no decay
    schedule: Literal["linear", "constant"] = "linear"
    #: warm-up shape: "log" = DeepSpeed WarmupDecayLR's default, `log(step+1)/log(warmup)` (the
    #: paper's runs); "linear" = `(step+1)/warmup`
    warmup_shape: Literal["log", "linear"] = "log"


@dataclass
class EngineConfig:
    #: "auto" = vLLM when installed, else transformers
    backend: Literal["auto", "hf", "vllm"] = "auto"
    #: transformers backend: sequences per generate batch
    max_batch_size: int = 64
    #: both backends: "auto" (vLLM: the checkpoint's dtype; transformers: a copied policy's dtype,
    #: float32 from disk) or a dtype name (the paper configs' bfloat16: the engine runs in it)
    dtype: str = "auto"
    # vLLM backend
    #: vLLM: its share of each GPU (weights, activations, KV cache); `vineppo plan` says the largest
    #: that fits
    gpu_memory_utilization: float = 0.9
    #: vLLM: sequences in flight at once
    max_num_seqs: int = 256
    #: vLLM: GPUs per engine; training needs 1 (`vineppo eval --tensor-parallel-size` takes more)
    tensor_parallel_size: int = 1
    #: vLLM: CPU swap space per GPU, in GiB
    swap_space: float = 4.0
    #: vLLM: a fixed KV cache size instead of the GPU share (CPU runs: e.g. 268435456)
    kv_cache_memory_bytes: int | None = None
    #: vLLM: reuse the KV cache of shared prefixes (MC states share their response prefix)
    enable_prefix_caching: bool = True
    #: free engine memory during training (vLLM sleep mode; no-op on CPU)
    sleep_during_training: bool = True
    #: vLLM sleep level: 1 offloads the weights to CPU RAM and drops the KV cache; 2 drops both
    #: (the trainer pushes fresh weights before waking anyway; needs less CPU RAM)
    sleep_level: Literal[1, 2] = 1
    #: give every request of a phase on a process the phase's one seed, the official code's
    #: `seed + 100·rank + iteration` (episodes; MC rollouts + 1), instead of a seed per request
    #: (`vineppo.seeds.phase_seed`); for seed-level parity with the official code only
    shared_request_seed: bool = False


@dataclass
class DistributedConfig:
    """Multi-process settings (the strategy itself comes from the `accelerate launch` file)."""
    #: process-group timeout: generation and MC phases are long and uneven across ranks (the
    #: defaults are 10 min for NCCL, 30 min for gloo); DeepSpeed's ZeRO group gets it too. Fractions allowed
    timeout_minutes: float = 120
    #: `vineppo train` on CUDA refuses a run whose memory plan (`vineppo plan`) does not fit the GPU
    memory_check: bool = True


@dataclass
class CheckpointConfig:
    #: keep the trainer state (optimizer, schedulers, RNG: ~110 GB for a 7B ZeRO-2 run) of the last
    #: N checkpoints only; the HF weights of every checkpoint stay (evaluation needs them).
    #: None keeps all.
    keep_trainer_state: int | None = None


@dataclass
class LoggingConfig:
    #: mirror metrics.jsonl to TensorBoard (OUTPUT_DIR/tensorboard)
    tensorboard: bool = False
    #: mirror metrics.jsonl to Weights & Biases
    wandb: bool = False
    #: the W&B project
    wandb_project: str = "vineppo"
    #: the W&B run name (default: W&B's)
    run_name: str | None = None
    #: progress bars for generation and training
    progress: bool = True
    #: write every episode (ids, reward, steps, values, advantages) to DIR/episodes/ for inspection
    dump_episodes: bool = False
    #: after every weight push, compare the engine's greedy continuation of two prompts with that of
    #: a model built from the pushed weights (metric sync/greedy_match; debugging / CI)
    check_sync_greedy: bool = False


@dataclass
class GradingConfig:
    #: "official": the paper's graders (exact `####` match for GSM8K, the Minerva MATH grader);
    #: "math_verify": Hugging Face's math-verify. Used for training rewards and by `vineppo eval`.
    mode: Literal["official", "math_verify"] = "official"


@dataclass
class TrainConfig:
    #: vineppo (MC values), ppo (critic + GAE), or a critic-free group method: grpo, dr_grpo, rloo
    algorithm: Literal["vineppo", "ppo", "grpo", "dr_grpo", "rloo"] = "vineppo"
    #: the official APP_SEED
    seed: int = 2746318213
    #: training iterations (generate, assign credit, train, push weights)
    iterations: int = 1000
    #: checkpoint every N iterations (and at the last one)
    save_every: int = 10
    #: the evaluation grid: `vineppo eval` / `compare` use the checkpoints of iterations divisible
    #: by N (and the last), as the official code keeps (40 Rho-1.1B, 60 DeepSeekMath-7B); a
    #: multiple of save_every; None = every saved checkpoint (vineppo.evaluate.grid)
    eval_every: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    mc: MCConfig = field(default_factory=MCConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @property
    def total_optimizer_steps(self) -> int:
        """epochs × (episodes per iteration / minibatch) × iterations = 16 × iterations in the paper."""
        episodes = self.episodes.questions_per_iteration * self.episodes.samples_per_question
        return self.iterations * self.ppo.epochs * max(1, episodes // self.ppo.minibatch_size)


class ConfigError(ValueError):
    pass


#: `ppo.loss_aggregation` when unset, per algorithm, following each paper: the official VinePPO
#: and PPO code take a token-mean over the batch; GRPO (DeepSeekMath eq. 3) averages each
#: response's tokens, then responses; Dr. GRPO divides each response's token sum by a constant
#: (the generation budget); RLOO is sequence-level REINFORCE (the sum of a response's token
#: log-probs times its advantage), which is Dr. GRPO's aggregation up to that constant.
DEFAULT_LOSS_AGGREGATION = {
    "vineppo": "token_mean",
    "ppo": "token_mean",
    "grpo": "seq_mean_token_mean",
    "dr_grpo": "seq_mean_token_sum_norm",
    "rloo": "seq_mean_token_sum_norm",
}


def loss_aggregation_for(cfg: "TrainConfig") -> str:
    """`ppo.loss_aggregation`, or the algorithm's default when it is unset."""
    return cfg.ppo.loss_aggregation or DEFAULT_LOSS_AGGREGATION[cfg.algorithm]


def critic_lr_for(cfg: "TrainConfig") -> float:
    """PPO's critic learning rate: `ppo.critic_lr`, or the policy's `optim.lr` when it is null."""
    return cfg.optim.lr if cfg.ppo.critic_lr is None else cfg.ppo.critic_lr


def whiten_advantages_for(cfg: "TrainConfig") -> bool:
    """`ppo.whiten_advantages`, or the algorithm's default when it is unset: on for VinePPO and
    PPO (official), off for the group methods (their advantages are normalised within groups)."""
    if cfg.ppo.whiten_advantages is not None:
        return cfg.ppo.whiten_advantages
    return cfg.algorithm in ("vineppo", "ppo")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise ConfigError(f"{where}: expected a mapping, got null")
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        seq = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-6` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(dataclasses.asdict(cfg))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars: 3, 1e-6, true, null, [1,2])."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or defaults when `path` is None), apply dotted overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(TrainConfig, data, where=str(path) if path else "config")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if not cfg.model.name_or_path:
        raise ConfigError("model.name_or_path is required")
    if cfg.iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {cfg.iterations}")
    if cfg.save_every < 1:
        raise ConfigError(f"save_every must be >= 1, got {cfg.save_every}")
    if cfg.eval_every is not None and (cfg.eval_every < 1 or cfg.eval_every % cfg.save_every):
        raise ConfigError(f"eval_every must be a multiple of save_every ({cfg.save_every}), got {cfg.eval_every}")
    if cfg.mc.k < 1:
        raise ConfigError(f"mc.k must be >= 1, got {cfg.mc.k}")
    episodes = cfg.episodes.questions_per_iteration * cfg.episodes.samples_per_question
    if episodes < cfg.ppo.minibatch_size:
        raise ConfigError(
            f"an iteration makes {episodes} episodes (episodes.questions_per_iteration "
            f"{cfg.episodes.questions_per_iteration} × episodes.samples_per_question "
            f"{cfg.episodes.samples_per_question}), fewer than ppo.minibatch_size ({cfg.ppo.minibatch_size}): "
            f"no optimizer step would ever happen; lower ppo.minibatch_size or sample more episodes")
    d = cfg.data
    if (d.question_field or d.solution_field) and not (d.answer_field or d.solution_field):
        raise ConfigError("data.question_field is set but neither data.answer_field (a bare final answer is "
                          "enough) nor data.solution_field: the grader needs one of them")
    if cfg.prompt.think_tags and len(cfg.prompt.think_tags) != 2:
        raise ConfigError(f"prompt.think_tags must be [open, close] or [], got {cfg.prompt.think_tags}")
    if cfg.data.answer_format != "hashes" and cfg.data.task == "math":
        raise ConfigError("data.answer_format is for GSM8K-style tasks; MATH always reads \\boxed{} answers")
    if cfg.algorithm in ("grpo", "dr_grpo", "rloo") and cfg.episodes.samples_per_question < 2:
        raise ConfigError(f"algorithm {cfg.algorithm} compares the samples of a question: "
                          f"episodes.samples_per_question must be >= 2, got {cfg.episodes.samples_per_question}")
    if cfg.ppo.critic_warmup_iterations < 0:
        raise ConfigError(f"ppo.critic_warmup_iterations must be >= 0, got {cfg.ppo.critic_warmup_iterations}")
    if cfg.ppo.critic_lr is not None and not cfg.ppo.critic_lr > 0:
        raise ConfigError(f"ppo.critic_lr must be > 0 (or null: optim.lr), got {cfg.ppo.critic_lr}")
    if cfg.engine.tensor_parallel_size != 1:
        raise ConfigError(f"engine.tensor_parallel_size={cfg.engine.tensor_parallel_size} is not supported yet: "
                          f"each process sends its own prompts and seed to its own engine (a tensor-parallel "
                          f"group would need the same ones); use 1")
    if not cfg.distributed.timeout_minutes > 0:
        raise ConfigError(f"distributed.timeout_minutes must be > 0 (fractions allowed), got {cfg.distributed.timeout_minutes}")
    if cfg.checkpoint.keep_trainer_state is not None and cfg.checkpoint.keep_trainer_state < 1:
        raise ConfigError(f"checkpoint.keep_trainer_state must be >= 1 or null, got {cfg.checkpoint.keep_trainer_state}")
    if cfg.mc.credit == "outcome" and cfg.mc.max_states_per_response != 0:
        raise ConfigError(f"mc.credit=outcome uses only V̂(s_0): set mc.max_states_per_response: 0 (got "
                          f"{cfg.mc.max_states_per_response}; the other states' rollouts would be wasted)")
    if cfg.mc.adaptive and not 1 <= cfg.mc.k_min <= cfg.mc.k_max:
        raise ConfigError(f"mc.adaptive needs 1 <= mc.k_min <= mc.k_max, got k_min={cfg.mc.k_min}, "
                          f"k_max={cfg.mc.k_max}")
    if cfg.mc.adaptive and not 0 < cfg.mc.target_halfwidth < 1:
        raise ConfigError(f"mc.target_halfwidth must be in (0, 1), got {cfg.mc.target_halfwidth}")
    if cfg.probe.every < 0 or cfg.probe.states < 1 or cfg.probe.k < 1:
        raise ConfigError(f"probe: every >= 0, states >= 1 and k >= 1 required, got every={cfg.probe.every}, "
                          f"states={cfg.probe.states}, k={cfg.probe.k}")
    if cfg.probe.alternatives < 0 or cfg.probe.ranking_states < 0:
        raise ConfigError(f"probe: alternatives >= 0 and ranking_states >= 0 required, got alternatives="
                          f"{cfg.probe.alternatives}, ranking_states={cfg.probe.ranking_states}")
    if cfg.probe.alternatives and not 2 <= cfg.probe.min_alternatives <= cfg.probe.alternatives:
        raise ConfigError(f"probe.min_alternatives must be in 2..probe.alternatives ({cfg.probe.alternatives}): "
                          f"a ranking needs two distinct steps; got {cfg.probe.min_alternatives}")
    if cfg.ppo.minibatch_size % cfg.ppo.micro_batch_size:
        raise ConfigError(f"ppo.minibatch_size ({cfg.ppo.minibatch_size}) must be a multiple of "
                          f"ppo.micro_batch_size ({cfg.ppo.micro_batch_size})")


def validate_world(cfg: TrainConfig, world_size: int) -> None:
    """Checks that need the number of processes. Questions are sharded contiguously (all samples of
    a question on one process), and every process must hold the same number of episodes: under
    FSDP2 / ZeRO-3 each micro-batch's forward is a collective, so a process with one micro-batch
    more waits for peers that never come (gloo aborts, NCCL hangs until the timeout)."""
    q = cfg.episodes.questions_per_iteration
    if q % world_size:
        raise ConfigError(
            f"episodes.questions_per_iteration ({q}) is not divisible by the {world_size} processes: every "
            f"process must train on as many episodes as the others; use a multiple of {world_size}")
    if cfg.ppo.minibatch_size % world_size:
        raise ConfigError(f"ppo.minibatch_size ({cfg.ppo.minibatch_size}) is not divisible by the "
                          f"{world_size} processes")
    local_minibatch = cfg.ppo.minibatch_size // world_size
    if local_minibatch % cfg.ppo.micro_batch_size:
        raise ConfigError(f"per-process minibatch {local_minibatch} (= ppo.minibatch_size {cfg.ppo.minibatch_size} "
                          f"/ {world_size} processes) is not a multiple of ppo.micro_batch_size "
                          f"{cfg.ppo.micro_batch_size}")
    # (each process then holds at least one local minibatch: `validate` checks q × samples ≥ minibatch)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
