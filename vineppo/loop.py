"""The training loop — the only place that knows the order of the phases:

generate → credit (MC values / critic) → train → push weights to the engine → log → checkpoint.

Output layout: DIR/config.yaml (resolved), DIR/metrics.jsonl (one JSON object per iteration),
DIR/checkpoints/iter_NNNNNN/ (HF model + tokenizer + trainer state), DIR/episodes/ (optional).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vineppo import checkpoint as ckpt
from vineppo.advantages import (GROUP_METHODS, group_advantages, token_advantages, vine_outcome_advantages,
                                vine_step_advantages)
from vineppo.config import TrainConfig, save_config, validate_world
from vineppo.episodes import (Episode, episode_metrics, generate_episodes, sample_question_indices, shard)
from vineppo.seeds import mc_seed, phase_seed
from vineppo.shared_dir import check_shared_run_dir
from vineppo.mc import MCBudget, estimate_mc_values
from vineppo.mc_balance import RankGroup
from vineppo.probe import (SUMMED_METRICS as PROBE_SUMMED_METRICS, critic_sequences, critic_step_values,
                           probe_iteration_metrics, ranking_accuracies, run_probe, set_critic_values, truncate_records,
                           write_probe_records)

log = logging.getLogger("vineppo")

#: test hook: kill the process (SIGKILL, no cleanup) right after this iteration's checkpoint
CRASH_ENV = "VINEPPO_DEBUG_KILL_AFTER_ITERATION"

#: a stop request (`StopRequest`): this signal to any training process, or this file in the run
#: directory (launch/slurm.sbatch writes it when Slurm warns of the time limit)
STOP_SIGNAL = signal.SIGUSR1
STOP_FILE = "STOP_REQUESTED"
#: written (with the iteration) when training stopped on request before its last iteration; the
#: exit code stays 0 (torchrun treats any other as a crash), launch/slurm.sbatch requeues on this file
STOPPED_FILE = "STOPPED"


class StopRequest:
    """Stop at the next safe point — the end of the current iteration, all ranks agreeing — with
    a checkpoint, so a requeued job resumes there instead of losing up to `save_every` iterations.

    Requested by `STOP_SIGNAL` to any rank (Slurm's `--signal`) or by `STOP_FILE` in the run
    directory (shared by every node); the ranks agree through one max-reduction per iteration."""

    def __init__(self, run_dir: Path, acc):
        self.acc, self.path = acc, Path(run_dir) / STOP_FILE
        self.signalled = False
        self._previous = None
        if acc.is_main_process:  # a request served before a requeue is not a new one
            self.path.unlink(missing_ok=True)
            (Path(run_dir) / STOPPED_FILE).unlink(missing_ok=True)
        try:
            self._previous = signal.signal(STOP_SIGNAL, self._on_signal)
        except ValueError:  # not the main thread (e.g. train() from a notebook worker): file only
            self._previous = None

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True
        log.warning("signal %d: stopping with a checkpoint after this iteration", signum)

    def agreed(self) -> bool:
        """True on every rank when any rank has a request (a collective: all ranks call it)."""
        local = self.signalled or self.path.exists()
        if self.acc.num_processes == 1:
            return local
        t = torch.tensor([1.0 if local else 0.0], device=self.acc.device)
        return bool(self.acc.gather(t).max() > 0)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(STOP_SIGNAL, self._previous)
            self._previous = None


def training_task(cfg: TrainConfig, tokenizer=None):
    """The run's Task, grading training rewards with `grading.mode` (length-stopped responses
    still get reward 0 before any grading, in the episode generator), with the user's fields,
    answer format and (chat prompts) reasoning-block rule."""
    from vineppo.prompting import make_task

    return make_task(cfg.data, cfg.prompt, tokenizer, grading_mode=cfg.grading.mode)


def ensure_tiny_model(cfg: TrainConfig, acc) -> None:
    """`model.tiny_init`: build the tiny random-init model on first use (main process only)."""
    path = Path(cfg.model.name_or_path)
    if not cfg.model.tiny_init or (path / "config.json").is_file():
        return
    if acc.is_main_process:
        from vineppo.data import load_rows
        from vineppo.prompting import make_task, tiny_init_texts
        from vineppo.tiny import save_tiny

        task = make_task(cfg.data)
        rows = load_rows(cfg.data.task, "train", cfg.data.source, seed=cfg.data.validation_seed,
                         validation_size=cfg.data.validation_size, task=task)
        texts = tiny_init_texts(task, rows[:2000], cfg.prompt)
        log.info("model.tiny_init: building a random-init tiny model at %s", path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_tiny(tmp, texts, chat=cfg.prompt.chat)
        os.replace(tmp, path)
    acc.wait_for_everyone()


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer or cfg.model.name_or_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer of {cfg.model.name_or_path} has no EOS token; episodes need one")
    return tok


def load_train_rows(cfg: TrainConfig, task, tokenizer, prompts=None) -> list[dict]:
    from vineppo.data import filter_by_prompt_length, load_rows

    rows = load_rows(cfg.data.task, "train", cfg.data.source, seed=cfg.data.validation_seed,
                     validation_size=cfg.data.validation_size, task=task)
    if cfg.data.max_train_rows is not None:
        rows = rows[: cfg.data.max_train_rows]
    kept = filter_by_prompt_length(rows, task, tokenizer, cfg.data.max_prompt_tokens,
                                   prompt_ids=prompts.ids if prompts is not None and cfg.prompt.chat else None).rows
    if not kept:
        raise ValueError(f"no {cfg.data.task} train rows left after the prompt-length filter "
                         f"(max_prompt_tokens={cfg.data.max_prompt_tokens})")
    return kept


def assign_vine_advantages(episodes: list[Episode], credit: str = "step") -> None:
    """Step advantages from MC values (spec §1.3; `credit="outcome"`: the `mc.credit` ablation,
    `vine_outcome_advantages`), then mapped to action tokens."""
    step_advantages = {"step": vine_step_advantages, "outcome": vine_outcome_advantages}[credit]
    for e in episodes:
        rewards = [0.0] * e.num_steps
        rewards[-1] = e.reward
        e.step_advantages = step_advantages(e.step_values, rewards)
        e.advantages = token_advantages(e.step_boundaries, e.token_starts, e.step_advantages, eos=e.finished)


def assign_group_advantages(episodes: list[Episode], group_size: int, method: str, eos_id: int | None) -> None:
    """GRPO / Dr. GRPO / RLOO: one advantage per response from its question's group of samples
    (`group_advantages`), put on every action token (the EOS too when it is trained)."""
    for start in range(0, len(episodes), group_size):
        group = episodes[start: start + group_size]
        if len(group) != group_size or len({e.question_index for e in group}) != 1:
            raise ValueError(f"episodes {start}..{start + group_size - 1} are not the {group_size} samples "
                             f"of one question; group advantages need whole groups in order")
    advs = group_advantages([e.reward for e in episodes], group_size, method)
    for e, a in zip(episodes, advs):
        e.step_advantages = [a] * e.num_steps
        e.advantages = [a] * len(e.action_ids(eos_id))


#: cumulative compute counters in metrics.jsonl (summed over processes), and what each adds up
COMPUTE_COUNTERS = {
    # every sampled token: the episodes' responses and VinePPO's MC rollouts
    "compute/generated_tokens": ("generate/tokens", "mc/tokens"),
    # action tokens through the trainer's forward + backward (each PPO epoch counts)
    "compute/trained_tokens": ("train/tokens",),
    # the iterations' wall-clock seconds (checkpoint writing and evaluation not included)
    "compute/wall_clock_seconds": ("seconds",),
}


def stop_after(done: int, iterations: int, stop_request: StopRequest) -> bool:
    """Stop after iteration `done` (1-based) on a request: not after the last one, which ends the run
    anyway and so writes no STOPPED file (Slurm would requeue a finished run). A collective."""
    return done < iterations and stop_request.agreed()


def checkpoint_due(done: int, save_every: int, iterations: int, stopping: bool) -> bool:
    """A checkpoint after iteration `done` (1-based): every `save_every`, after the last iteration,
    and before stopping on request (the requeued job resumes there)."""
    return done % save_every == 0 or done == iterations or stopping


def accumulate_compute(row: dict, previous: dict) -> dict:
    """The cumulative compute counters after `row`, continuing those of `previous` (the last row)."""
    return {k: float(previous.get(k, 0.0)) + sum(float(row.get(part, 0.0)) for part in parts)
            for k, parts in COMPUTE_COUNTERS.items()}


def mc_budget(cfg: TrainConfig) -> MCBudget:
    """The run's MC budget from `mc.*` (fixed K unless `mc.adaptive`)."""
    m = cfg.mc
    outcome = m.adaptive if m.include_episode_outcome is None else m.include_episode_outcome
    return MCBudget(k=m.k, adaptive=m.adaptive, k_min=m.k_min, k_max=m.k_max, target_halfwidth=m.target_halfwidth,
                    include_episode_outcome=outcome)


def _reduce_metrics(acc, local: dict, sums: set[str]) -> dict:
    """Average (or sum, for counts) scalar metrics across processes. A metric some processes do not
    report (e.g. one undefined on their shard) is reduced over the processes that do: the key sets
    are gathered first, so the tensors every process gathers always line up."""
    keys = sorted(k for k, v in local.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if acc.num_processes == 1:
        return dict(local)
    from accelerate.utils import gather_object

    keys = sorted(set().union(*gather_object([keys])))
    if not keys:
        return dict(local)
    t = torch.tensor([float(local.get(k, float("nan"))) for k in keys], dtype=torch.float64, device=acc.device)
    g = acc.gather(t.unsqueeze(0)).reshape(acc.num_processes, -1)
    out = dict(local)
    for i, k in enumerate(keys):
        col = g[:, i]
        if torch.isnan(col).all():
            continue
        out[k] = float(torch.nansum(col) if k in sums else torch.nanmean(col))
    return out


#: per-process counts summed over processes in metrics.jsonl (every other scalar is averaged)
SUMMED_METRICS = frozenset({"episodes/count", "mc/states", "mc/unique_states", "mc/rollouts", "mc/engine_calls",
                            "generate/tokens", "mc/tokens", "train/tokens", "logprobs/tokens",
                            *PROBE_SUMMED_METRICS})


def reduce_iteration_metrics(acc, row: dict) -> dict:
    """One iteration's metrics over every process (`_reduce_metrics` with `SUMMED_METRICS`), and
    the ratios that must come from the summed counts (the probe's ranking accuracies)."""
    row = _reduce_metrics(acc, row, sums=SUMMED_METRICS)
    row.update(ranking_accuracies(row))
    return row


class MetricsWriter:
    def __init__(self, run_dir: Path, cfg: TrainConfig, enabled: bool):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = self.wandb = None
        if not enabled:
            return
        if cfg.logging.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; logging to metrics.jsonl only")
        if cfg.logging.wandb:
            try:
                import wandb
                self.wandb = wandb.init(project=cfg.logging.wandb_project, name=cfg.logging.run_name,
                                        dir=str(run_dir))
            except ImportError:
                log.warning("wandb is not installed (pip install vineppo[wandb]); logging to metrics.jsonl only")

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop rows of iterations past the checkpoint (they will be redone)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from the crash
        self.path.write_text("".join(l + "\n" for l in keep))

    def last_row(self) -> dict:
        """The last complete row of metrics.jsonl ({} when there is none): resume reads the
        cumulative compute counters from it."""
        if not self.enabled or not self.path.exists():
            return {}
        for line in reversed(self.path.read_text().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        return {}

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, row["iteration"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["iteration"])


def dump_episodes(run_dir: Path, iteration: int, rank: int, episodes: list[Episode]) -> None:
    d = run_dir / "episodes"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"iter_{iteration:06d}.rank{rank}.jsonl", "w") as f:
        for e in episodes:
            f.write(json.dumps({
                "question_index": e.question_index, "sample_index": e.sample_index,
                "prompt_ids": e.prompt_ids, "response_ids": e.response_ids, "response": e.response_text,
                "finished": e.finished, "truncated": e.truncated, "reward": e.reward,
                "step_boundaries": e.step_boundaries, "step_values": e.step_values,
                "step_advantages": e.step_advantages, "advantages": e.advantages,
                # VinePPO: per state, engine rollouts, all samples (free episode outcomes included), 95 % Wilson interval
                "step_mc_rollouts": e.meta.get("mc_rollouts"), "step_mc_samples": e.meta.get("mc_samples"),
                "step_mc_intervals": e.meta.get("mc_interval"),
                # PPO: the critic's V(s_k) at each step start (before the update), for step advantages
                "critic_step_values": critic_step_values(e),
            }) + "\n")


@torch.no_grad()
def greedy_match(engine, state_dict: dict, model_config, prompts: list[list[int]], max_new_tokens: int = 16) -> float:
    """Debug check (`logging.check_sync_greedy`): the fraction of `prompts` whose greedy
    continuation by the engine equals that of a model built from the gathered `state_dict` (the
    weights just pushed). 1.0 means the engine runs exactly the trainer's weights."""
    from transformers import AutoModelForCausalLM

    from vineppo.engine.base import SamplingParams

    if not prompts:
        return float("nan")
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False)
    model.eval()
    outs = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    same = 0
    for p, o in zip(prompts, outs):
        ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0)[0, len(p):].tolist()
        eng = o[0].token_ids
        same += ids[: len(eng)] == eng and (len(eng) == len(ids) or o[0].finish_reason == "stop")
    return same / len(prompts)


@dataclass
class TrainResult:
    run_dir: Path
    #: the rollout engine, still open (only with `keep_engine=True`; close it when done)
    engine: object | None = None
    final_checkpoint: Path | None = None
    #: stopped on request (`StopRequest`) before `iterations`, after checkpointing
    stopped: bool = False


def train(cfg: TrainConfig, output_dir: str | Path, *, resume: bool = False, keep_engine: bool = False) -> TrainResult:
    """Run VinePPO or PPO iterations (resuming from the latest complete checkpoint with `resume`)."""
    from accelerate.utils import set_seed

    from vineppo.distributed import build_accelerator
    from vineppo.engine.factory import make_engine, resolve_backend
    from vineppo.lora_sync import PolicySync, uses_adapter_sync, vllm_lora_engine_kwargs
    from vineppo.prompting import PromptBuilder, stop_strings, use_end_of_turn_as_eos
    from vineppo.trainer import Trainer

    run_dir = Path(output_dir)
    # the strategy (DDP, FSDP, DeepSpeed) comes from `accelerate launch`; without CUDA the
    # processes form a gloo group (vineppo/distributed.py)
    acc = build_accelerator(cfg)
    rank, world = acc.process_index, acc.num_processes
    validate_world(cfg, world)  # before any collective: uneven shards would hang the sharded strategies
    from vineppo.plan import check_memory_at_startup
    check_memory_at_startup(cfg)  # CUDA only: refuse a run whose memory plan does not fit (vineppo plan)
    logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and ckpt.list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} already holds checkpoints; pass --resume to continue it "
                                  f"or choose another --output-dir")
        save_config(cfg, run_dir / "config.yaml")
    acc.wait_for_everyone()
    check_shared_run_dir(acc, run_dir)  # multi-node: every node must see this directory
    set_seed(cfg.seed % (2**32))

    ensure_tiny_model(cfg, acc)
    tokenizer = load_tokenizer(cfg)
    if cfg.prompt.chat:
        use_end_of_turn_as_eos(tokenizer)
    task = training_task(cfg, tokenizer)
    prompts = PromptBuilder(tokenizer, task, cfg.prompt)
    rows = load_train_rows(cfg, task, tokenizer, prompts)
    log.info("%s: %d train rows, %d processes, algorithm %s", cfg.data.task, len(rows), world, cfg.algorithm)

    trainer = Trainer(cfg, acc, tokenizer, progress=cfg.logging.progress)
    metrics = MetricsWriter(run_dir, cfg, acc.is_main_process)
    start = 0
    if resume:
        found = ckpt.latest_checkpoint(run_dir, need_trainer_state=True)
        if found is None:
            log.warning("--resume: no complete checkpoint in %s; starting from scratch", run_dir)
        else:
            path, start = found
            log.info("resuming from %s (iteration %d)", path, start)
            trainer.load_state(path / "trainer_state")
            metrics.truncate_after(start)
    if acc.is_main_process:  # probe records of iterations to be redone (all of them on a fresh start)
        truncate_records(run_dir, start)
    acc.wait_for_everyone()

    ranks = RankGroup.from_accelerator(acc) if world > 1 else None  # balanced MC (mc.balance)

    def seed_of(iteration: int, phase: str) -> int:
        return phase_seed(cfg.seed, rank, iteration, phase, shared_request_seed=cfg.engine.shared_request_seed)

    max_len = cfg.sampling.max_sequence_length
    adapter_sync = uses_adapter_sync(cfg.model.lora, resolve_backend(cfg.engine))
    engine = make_engine(cfg.engine, model_path=cfg.model.name_or_path, tokenizer=tokenizer,
                         model=trainer.engine_source_model(),
                         seed=seed_of(0, "engine"), max_model_len=max_len,
                         progress=cfg.logging.progress and acc.is_local_main_process,
                         vllm_kwargs=vllm_lora_engine_kwargs(cfg.model.lora) if adapter_sync else None,
                         device=acc.device)  # the transformers engine generates on this rank's GPU
    policy_sync = PolicySync(adapter=adapter_sync)
    if start > 0 or cfg.model.lora is not None:
        policy_sync.push(engine, trainer)

    scfg = cfg.sampling
    stop = stop_strings(cfg)
    final = None
    stop_request = StopRequest(run_dir, acc)
    stopped = False
    cumulative = accumulate_compute({}, metrics.last_row())  # continues the counters on resume
    for it in range(start, cfg.iterations):
        t_iter = time.perf_counter()
        q_all = sample_question_indices(len(rows), cfg.episodes.questions_per_iteration, cfg.seed, it)
        q_local = shard(q_all, rank, world)
        episodes, gstats = generate_episodes(
            engine, task, tokenizer, rows, q_local, samples_per_question=cfg.episodes.samples_per_question,
            temperature=scfg.temperature, top_p=scfg.top_p, max_new_tokens=scfg.max_new_tokens,
            max_sequence_length=max_len, stop=stop, seed=seed_of(it, "episodes"), want_logprobs=True,
            prompt_ids=prompts.ids)
        row: dict = {}
        row.update(episode_metrics(episodes))
        row.update(gstats)
        if cfg.algorithm == "vineppo":
            # every rank takes part (collectives) when MC is balanced across processes
            mstats = estimate_mc_values(
                engine, task, tokenizer, rows, episodes, k=cfg.mc.k, cap=cfg.mc.max_states_per_response,
                temperature=scfg.temperature, top_p=scfg.top_p, max_new_tokens=scfg.max_new_tokens,
                max_sequence_length=max_len, stop=stop,
                seed=mc_seed(cfg.seed, rank, it, shared_request_seed=cfg.engine.shared_request_seed),
                budget=mc_budget(cfg), group=ranks,
                balance=cfg.mc.balance_split if cfg.mc.balance else None)
            assign_vine_advantages(episodes, cfg.mc.credit)
            row.update(mstats)
        elif cfg.algorithm in GROUP_METHODS:  # grpo, dr_grpo, rloo: no critic, no MC rollouts
            assign_group_advantages(episodes, cfg.episodes.samples_per_question, cfg.algorithm,
                                    tokenizer.eos_token_id)
        # ppo: the trainer computes critic values and GAE
        probe = None
        if cfg.probe.every and (it + 1) % cfg.probe.every == 0:
            # ground truth with the weights that sampled this iteration's episodes
            probe = run_probe(engine, task, tokenizer, rows, episodes, cfg.probe, algorithm=cfg.algorithm,
                              mc_k=cfg.mc.k, cap=cfg.mc.max_states_per_response, temperature=scfg.temperature,
                              top_p=scfg.top_p, max_new_tokens=scfg.max_new_tokens, max_sequence_length=max_len,
                              stop=stop, seed=seed_of(it, "probe"))
        if cfg.engine.sleep_during_training:
            engine.sleep()
        if probe is not None and cfg.algorithm == "ppo":
            # the critic that credits this iteration, before its update (every process together)
            t_critic = time.perf_counter()
            set_critic_values(probe, trainer.critic_state_values(critic_sequences(probe)))
            probe.stats["probe/seconds"] += time.perf_counter() - t_critic
        tstats = trainer.step(episodes, iteration=it)
        if probe is not None:
            row.update(probe_iteration_metrics(probe, episodes, cfg.algorithm, task, rows))
            write_probe_records(run_dir, probe, episodes, task, rows, tokenizer, iteration=it + 1, rank=rank,
                                algorithm=cfg.algorithm, mc_rollouts=cfg.mc.k)
        whiten = tstats.pop("train/whiten_stats", None)
        t_sync = time.perf_counter()
        # push while asleep, then wake: the engine applies the safe wake order (weights, then KV cache)
        pushed = policy_sync.push(engine, trainer, keep=cfg.logging.check_sync_greedy)
        if cfg.engine.sleep_during_training:
            engine.wake()
        row["sync/seconds"] = time.perf_counter() - t_sync
        if cfg.logging.check_sync_greedy:
            row["sync/greedy_match"] = greedy_match(engine, pushed, trainer.unwrapped_policy().config,
                                                    [e.prompt_ids for e in episodes[:: cfg.episodes.samples_per_question][:2]])
        del pushed
        row.update(tstats)
        if cfg.logging.dump_episodes:
            dump_episodes(run_dir, it + 1, rank, episodes)
            if whiten is not None:
                with open(run_dir / "episodes" / f"iter_{it + 1:06d}.rank{rank}.whiten.json", "w") as f:
                    json.dump(whiten, f)
        row = reduce_iteration_metrics(acc, row)
        row["iteration"] = it + 1
        row["seconds"] = time.perf_counter() - t_iter
        cumulative = accumulate_compute(row, cumulative)
        row.update(cumulative)
        for phase in ("generate", "mc", "logprobs", "train", "sync"):
            if f"{phase}/seconds" in row:
                row[f"share/{phase}"] = row[f"{phase}/seconds"] / row["seconds"]
        metrics.write(row)
        if acc.is_main_process:
            log.info("iteration %d/%d: reward %.3f, %s%.1fs", it + 1, cfg.iterations, row.get("reward/mean", 0.0),
                     f"unique MC states {row['mc/unique_states']:.0f}, " if "mc/unique_states" in row else "",
                     row["seconds"])
        stopping = stop_after(it + 1, cfg.iterations, stop_request)
        if checkpoint_due(it + 1, cfg.save_every, cfg.iterations, stopping):
            final = save_checkpoint(trainer, acc, run_dir, it + 1)
        if os.environ.get(CRASH_ENV) == str(it + 1):
            os.kill(os.getpid(), signal.SIGKILL)
        if stopping:
            if acc.is_main_process:
                (run_dir / STOPPED_FILE).write_text(f"{it + 1}\n")
                log.warning("stop requested: checkpoint %s written; exiting (resume with --resume)", final)
            stopped = True
            break
    stop_request.close()
    policy_sync.close()
    if not keep_engine:
        engine.close()
    acc.wait_for_everyone()
    if acc.num_processes > 1:
        # our process group; in one process leave torch.distributed alone (an in-process vLLM
        # engine may own a world group of its own)
        acc.end_training()
    return TrainResult(run_dir, engine if keep_engine else None, final, stopped)


def save_checkpoint(trainer, acc, run_dir: Path, iteration: int) -> Path:
    """Write `iter_NNNNNN` atomically: assemble under a temporary name, manifest last, rename."""
    root = run_dir / "checkpoints"
    final = root / ckpt.checkpoint_name(iteration)
    tmp = root / f".tmp_{ckpt.checkpoint_name(iteration)}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    # every rank takes part: weights are gathered together (main process writes), sharded
    # optimizer states are written by their owners
    trainer.save_state(tmp / "trainer_state")
    trainer.save_pretrained(tmp)
    acc.wait_for_everyone()  # every rank's files are on disk before the manifest and the rename
    if acc.is_main_process:
        ckpt.write_manifest(tmp, iteration)
        ckpt.finalize(tmp, final)
        keep = trainer.cfg.checkpoint.keep_trainer_state
        if keep is not None:
            ckpt.prune_trainer_states(run_dir, keep)
    acc.wait_for_everyone()
    return final
