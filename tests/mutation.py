"""Mutation testing of the modules that compute: `make mutation [MODULE=vineppo/advantages.py]`.

`python tests/mutation.py [MODULE ...]` runs mutmut 3 (configured in pyproject.toml, `[tool.mutmut]`)
over each module's mutants in SCOPE, one `mutmut run` per module, and prints killed / total per
module. mutmut records once which fast-tier tests call each mutated function (cached in ./mutants
until a function changes) and runs only those tests against its mutants, fastest first, stopping at
the first failure. A mutant that no test kills is either listed in EQUIVALENT (it cannot change
behaviour, with the reason) or a gap in the tests: the script exits 1 and prints the diff of every
such mutant. docs/testing-mutation.md has the scores, how to read a survivor and what to do.

MODULE: a file or a directory (`vineppo/plan/`) among SCOPE; none: every module in SCOPE.
`--show` prints the diff of the equivalent mutants too; `--no-run` scores the last results;
`--survivors` runs again only the mutants the last run did not detect (after adding tests).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module -> the functions whose mutants are run (None: every function of the module). `Class.method`
#: for a method. Names the tests reach in the fast tier; the rest of trainer.py / loop.py is wiring
#: exercised by the slow tier (model loading, the engine, launch strategies).
SCOPE: dict[str, tuple[str, ...] | None] = {
    "vineppo/advantages.py": None,
    "vineppo/losses.py": None,
    "vineppo/seeds.py": None,
    "vineppo/evaluate/grid.py": None,
    "vineppo/evaluate/metrics.py": None,
    "vineppo/compare/select.py": None,
    "vineppo/compare/runs.py": None,
    # the step and minibatch logic
    "vineppo/trainer.py": ("lr_lambda", "critic_fit_metrics", "collate", "scatter_actions", "gather_actions",
                           "minibatch_schedule", "Trainer._micro_batches", "Trainer.step",
                           "Trainer._gather_iteration", "Trainer._minibatch_step"),
    # the stop / resume logic
    "vineppo/loop.py": ("StopRequest.__init__", "StopRequest._on_signal", "StopRequest.agreed",
                        "StopRequest.close", "stop_after", "checkpoint_due", "accumulate_compute",
                        "MetricsWriter.truncate_after", "MetricsWriter.last_row", "save_checkpoint"),
    # not the CUDA-only checks (device_capacity, check_memory_at_startup, check_engine_memory: one
    # line of wiring around the tested functions, run on a GPU by benchmarks/gpu_check.py)
    "vineppo/plan/inputs.py": ("shape_from_config", "model_shape", "read_launch", "launch_from_env", "launch_files"),
    "vineppo/plan/memory.py": None,
    "vineppo/plan/advice.py": ("_with", "_fits_meaningfully", "suggest", "make_plan", "stop_lead_seconds",
                               "format_plan", "refusal", "engine_share_shortfall"),
    "vineppo/mc.py": None,
    "vineppo/checkpoint.py": None,
    # the analysis code: the functions that compute (not the plots, tables' text or file writing)
    "vineppo/probe/ranking.py": None,
    "vineppo/probe/states.py": None,
    "vineppo/compare/seeds.py": ("mean_sd", "flatten", "experiment_key", "run_seed", "_common_label",
                                 "group_by_seed", "_name_settings", "paired_differences", "_per_seed", "_order",
                                 "group_pairs", "group_curve", "seeds_json"),
    "vineppo/compare/values.py": ("_pairs", "mean_abs_error", "mae_by_step", "ranking_by_iteration",
                                  "step_advantages_of", "read_step_advantages", "RunValues.estimators",
                                  "value_rows"),
    "vineppo/compare/cost.py": ("_mean_of", "phase_cost", "RunCost.to_json"),
    "vineppo/compare/generalization.py": ("train_test_points", "least_squares_slope", "train_test_rows"),
    "vineppo/probe/localisation.py": None,
    # the demo's value panel: its pooled numbers (not the plot)
    "vineppo/demo/values.py": ("_finite", "probed_series", "error_by_step", "pooled", "blamed_localisation",
                               "probe_summary", "probe_line"),
    # the demo's pass@1 by chain length: its numbers (not the plot or the console line)
    "vineppo/demo/lengths.py": ("chain_ops", "pass_by_ops", "_final_samples", "_initial_samples", "_rounded", "_percent",
                                "by_ops_summary"),
    "vineppo/mc_balance.py": ("pack_requests", "merge_rank_requests", "request_cost", "split_requests",
                              "assemble_results", "imbalance", "run_balanced"),
}

#: surviving mutants that cannot change behaviour: name -> (the mutated line as `mutmut show` prints
#: it after "+", stripped; why it is equivalent). The line guards against a stale entry: mutmut numbers
#: mutants per function, so an edit of the function renumbers them.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "vineppo.advantages.x_backfill_values__mutmut_26": (
        "if any(v is None for v in out[: i + 2]):",
        "out[i + 1] is never None: it is back-filled or the terminal 0"),
    "vineppo.advantages.x_group_advantages__mutmut_50": (
        "var = sum((r - mean) ** 2 for r in g) / (n - 1) if n > 1 else Fraction(1)",
        "a group of one has r − mean = 0, whatever the std it is divided by"),
    "vineppo.advantages.x_masked_whiten__mutmut_36": (
        "whitened = (x - mean.to(None)) * torch.rsqrt(var.to(x.dtype) + eps)",
        "torch casts the 0-dim float64 mean to x's dtype, as .to(x.dtype) does"),
    "vineppo.advantages.x_masked_whiten__mutmut_43": (
        "whitened = whitened + mean.to(None)",
        "torch casts the 0-dim float64 mean to x's dtype, as .to(x.dtype) does"),
    "vineppo.advantages.x_masked_whiten__mutmut_39": (
        "whitened = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(None) + eps)",
        "rsqrt of the float64 variance rounded once to x's dtype instead of twice: at most 1 ulp apart"),
    "vineppo.losses.x_kl_penalty_loss__mutmut_16": (
        "per_seq = k3_kl(logp, ref_logp, mask, clamp_min, clamp_max).sum(dim=+1)",
        "the log-probs are (batch, T): dim 1 is the last dim"),
    "vineppo.losses.x_aggregate_token_loss__mutmut_16": (
        "per_seq_sum = _masked(x, mask).sum(dim=+1)",
        "the per-token loss is (batch, T): dim 1 is the last dim"),
    "vineppo.losses.x_aggregate_token_loss__mutmut_24": (
        "return (per_seq_sum / mask.sum(dim=+1).clamp(min=1)).mean()",
        "the mask is (batch, T): dim 1 is the last dim"),
    "vineppo.losses.x_aggregate_token_loss__mutmut_32": (
        "if not norm_length or norm_length < 0:",
        "a norm_length of 0 is already rejected by `not norm_length`"),
    "vineppo.compare.seeds.x_group_curve__mutmut_6": (
        "if not curves and not all(curves):",
        "a group always has a run, and with one run never evaluated the common iterations are none anyway"),
    "vineppo.compare.values.x_read_step_advantages__mutmut_12": (
        'lines = path.read_text(encoding="UTF-8").splitlines()',
        "codec names are case-insensitive"),
    "vineppo.compare.values.x_read_step_advantages__mutmut_10": (
        "lines = path.read_text(encoding=None).splitlines()",
        "the locale's encoding is UTF-8 wherever the tests run (a running Python's locale encoding cannot be "
        "changed by a test)"),
    "vineppo.demo.lengths.x_pass_by_ops__mutmut_12": (
        'for line_no, line in enumerate(path.read_text(encoding="UTF-8").splitlines(), 1):',
        "codec names are case-insensitive"),
    "vineppo.demo.lengths.x_pass_by_ops__mutmut_10": (
        "for line_no, line in enumerate(path.read_text(encoding=None).splitlines(), 1):",
        "the locale's encoding is UTF-8 wherever the tests run (a running Python's locale encoding cannot be "
        "changed by a test)"),
    "vineppo.compare.values.x_read_step_advantages__mutmut_25": (
        "break  # cut short by a crash",
        "the skipped line is the last one: break and continue both end the loop"),
    "vineppo.compare.generalization.x_least_squares_slope__mutmut_7": (
        "my = sum(y for _, y in points) * len(points)",
        "Σ(x − mx) = 0: the centred sum Σ(x − mx)(y − c) is the same for any constant c"),
    "vineppo.compare.generalization.x_least_squares_slope__mutmut_19": (
        "return sum((x + mx) * (y - my) for x, y in points) / sxx",
        "Σ(y − my) = 0: Σ(x + mx)(y − my) = Σ(x − mx)(y − my)"),
    "vineppo.compare.generalization.x_least_squares_slope__mutmut_20": (
        "return sum((x - mx) * (y + my) for x, y in points) / sxx",
        "Σ(x − mx) = 0: the centred sum Σ(x − mx)(y − c) is the same for any constant c"),
    "vineppo.probe.ranking.x_next_step__mutmut_40": (
        "cut = bisect_left(token_char_starts(tokenizer, ids, None), end) if end < len(text) else len(ids)",
        "without a text token_char_starts decodes the same ids itself (decode_response), giving the same text"),
    "vineppo.probe.ranking.x_next_step__mutmut_43": (
        "cut = bisect_left(token_char_starts(tokenizer, ids, ), end) if end < len(text) else len(ids)",
        "without a text token_char_starts decodes the same ids itself (decode_response), giving the same text"),
    "vineppo.probe.states.x_select_probe_states__mutmut_47": (
        "if len(chosen) + 2 > n_states or 2 * (len(pairs) + 1) > max(3, n_states // 2):",
        "2 · (pairs + 1) is even: it exceeds 2 exactly when it exceeds 3"),
    "vineppo.probe.states.x_select_probe_states__mutmut_48": (
        "if len(chosen) + 2 > n_states or 2 * (len(pairs) + 1) > max(2, n_states / 2):",
        "an integer exceeds n / 2 exactly when it exceeds ⌊n / 2⌋"),
    "vineppo.probe.states.x_probe_metrics__mutmut_16": (
        'out = {f"probe/{name}_abs_error": float(np.mean(errs)) if errs else float("NAN")}',
        'float() reads "NAN" as "nan"'),
    "vineppo.probe.states.x_probe_metrics__mutmut_41": (
        'out[f"probe/{name}_sibling_accuracy"] = float(np.mean(scores)) if scores else float("NAN")',
        'float() reads "NAN" as "nan"'),
    "vineppo.probe.states.x_probe_metrics__mutmut_31": (
        "scores.append(0.5 if ea == eb else float((ea >= eb) == (ta > tb)))",
        "equal estimates are scored ½ before: here ea ≠ eb"),
    "vineppo.probe.states.x_probe_metrics__mutmut_33": (
        "scores.append(0.5 if ea == eb else float((ea > eb) == (ta >= tb)))",
        "pairs of equal truth are skipped before: here ta ≠ tb"),
    "vineppo.probe.states.x_run_value_probe__mutmut_41": (
        '"probe/truth_mean": float("NAN"), "probe/seconds": 0.0},',
        'float() reads "NAN" as "nan"'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_46": (
        'offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", None) == "cpu",',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_48": (
        'offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", ) == "cpu",',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_51": (
        'offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "XXnoneXX") == "cpu",',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_52": (
        'offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "NONE") == "cpu",',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_58": (
        'offload_params=(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", None) == "cpu"',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_60": (
        'offload_params=(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", ) == "cpu"',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_63": (
        'offload_params=(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "XXnoneXX") == "cpu"',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_64": (
        'offload_params=(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "NONE") == "cpu"',
        'an absent variable is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_75": (
        'or env.get("FSDP_OFFLOAD_PARAMS", "XXfalseXX").lower() == "true"))',
        'an absent variable is not "true" whatever the default (lower-cased): offload stays off'),
    "vineppo.plan.inputs.x_launch_from_env__mutmut_76": (
        'or env.get("FSDP_OFFLOAD_PARAMS", "FALSE").lower() == "true"))',
        'an absent variable is not "true" whatever the default (lower-cased): offload stays off'),
    "vineppo.mc_balance.x_run_balanced__mutmut_49": (
        'results = group.gather(ShareResult(share, sums, samples, np.asarray(rollouts, dtype=None), seconds))',
        'assemble_results writes the rollouts into an int64 array: the dtype sent is cast there'),
    "vineppo.mc_balance.x_run_balanced__mutmut_51": (
        'results = group.gather(ShareResult(share, sums, samples, np.asarray(rollouts, ), seconds))',
        'assemble_results writes the rollouts into an int64 array: the dtype sent is cast there'),
    "vineppo.mc_balance.x_pack_requests__mutmut_25": (
        'question_index=np.asarray([r.question_index for r in requests], dtype=None),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_27": (
        'question_index=np.asarray([r.question_index for r in requests], ),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_33": (
        'passes=np.asarray([r.passes for r in requests], dtype=None),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_35": (
        'passes=np.asarray([r.passes for r in requests], ),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_37": (
        'expected_tokens=np.asarray([r.expected_tokens for r in requests], dtype=None),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_39": (
        'expected_tokens=np.asarray([r.expected_tokens for r in requests], ),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_41": (
        'free_sums=np.asarray(free_sums, dtype=None), free_samples=np.asarray(free_samples, dtype=np.int64),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_43": (
        'free_sums=np.asarray(free_sums, ), free_samples=np.asarray(free_samples, dtype=np.int64),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_45": (
        'free_sums=np.asarray(free_sums, dtype=float), free_samples=np.asarray(free_samples, dtype=None),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_pack_requests__mutmut_47": (
        'free_sums=np.asarray(free_sums, dtype=float), free_samples=np.asarray(free_samples, ),',
        'merge_rank_requests reads each element through int() / float(): the array dtype never reaches a result'),
    "vineppo.mc_balance.x_merge_rank_requests__mutmut_76": (
        'return MergedRequests(requests, np.asarray(free_sums, dtype=None), np.asarray(free_samples, dtype=np.int64),',
        'a list of Python floats is float64 with or without dtype=float (an empty one too)'),
    "vineppo.mc_balance.x_merge_rank_requests__mutmut_78": (
        'return MergedRequests(requests, np.asarray(free_sums, ), np.asarray(free_samples, dtype=np.int64),',
        'a list of Python floats is float64 with or without dtype=float (an empty one too)'),
    "vineppo.mc_balance.x_merge_rank_requests__mutmut_80": (
        'return MergedRequests(requests, np.asarray(free_sums, dtype=float), np.asarray(free_samples, dtype=None),',
        'a list of Python ints is int64; only an empty list becomes float64, and an empty share adds nothing anywhere'),
    "vineppo.mc_balance.x_merge_rank_requests__mutmut_82": (
        'return MergedRequests(requests, np.asarray(free_sums, dtype=float), np.asarray(free_samples, ),',
        'a list of Python ints is int64; only an empty list becomes float64, and an empty share adds nothing anywhere'),
    "vineppo.mc_balance.x_merge_rank_requests__mutmut_19": (
        'key = (q, prompt.tobytes() + b"XX|XX" + prefix.tobytes())',
        'the key is per question (q), whose prompt is the same for all its states: the separator never decides between two keys'),
    "vineppo.mc_balance.x_assemble_results__mutmut_13": (
        'seen = np.zeros(n, dtype=None)',
        'seen only counts to 1 or 2 and is compared with 1: float and int counts agree'),
    "vineppo.mc_balance.x_assemble_results__mutmut_15": (
        'seen = np.zeros(n, )',
        'seen only counts to 1 or 2 and is compared with 1: float and int counts agree'),
    "vineppo.mc_balance.x_split_requests__mutmut_32": (
        'cost = np.asarray(costs, dtype=None)',
        'costs are read through float() and compared: an int array orders them the same'),
    "vineppo.mc_balance.x_split_requests__mutmut_34": (
        'cost = np.asarray(costs, )',
        'costs are read through float() and compared: an int array orders them the same'),
    "vineppo.mc_balance.x_split_requests__mutmut_42": (
        'order = order[np.argsort(-cost[order], kind="STABLE")]',
        'numpy reads the sort kind case-insensitively'),
    "vineppo.mc_balance.x_split_requests__mutmut_44": (
        'heap = [(1.0, 0, r) for r in range(world)]  # (load, states, rank)',
        'every rank starts at the same load / count: a common offset changes no comparison'),
    "vineppo.mc_balance.x_split_requests__mutmut_45": (
        'heap = [(0.0, 1, r) for r in range(world)]  # (load, states, rank)',
        'every rank starts at the same load / count: a common offset changes no comparison'),
    "vineppo.mc_balance.x_split_requests__mutmut_60": (
        'heapq.heappush(heap, (load + float(cost[i]), count + 2, r))',
        'the count only breaks ties by its order: +2 per state orders ranks as +1 does'),
    "vineppo.probe.localisation.x_classify__mutmut_32": (
        'return "hit" if at == wrong_step else ("before" if at <= wrong_step else "after")',
        'at == wrong_step returned "hit" just before: here at <= wrong_step is at < wrong_step'),
    "vineppo.probe.localisation.x_dumped_breakdown__mutmut_25": (
        'validation_size=cfg.data.validation_size, task=None)',
        'make_task(cfg.data) of the one task with an oracle (chain, its own fields; a custom-fields wrapper hides the oracle) is get_task("chain"), load_rows\' default'),
    "vineppo.probe.localisation.x_dumped_breakdown__mutmut_31": (
        'validation_size=cfg.data.validation_size, )',
        'make_task(cfg.data) of the one task with an oracle (chain, its own fields; a custom-fields wrapper hides the oracle) is get_task("chain"), load_rows\' default'),
    "vineppo.demo.values.x_error_by_step__mutmut_8": (
        'for rec in read_records(r["run_dir"], )]',
        'read_records reads "states" by default'),
    "vineppo.demo.values.x_probe_summary__mutmut_48": (
        'for rec in read_records(r["run_dir"], )]',
        'read_records reads "states" by default'),
    "vineppo.plan.advice.x_stop_lead_seconds__mutmut_4": (
        'raise AssertionError(None)',
        'unreachable: the last of STOP_LEADS has no limit (None), so the loop always returns'),
    "vineppo.plan.advice.x_stop_lead_seconds__mutmut_5": (
        'raise AssertionError("XXunreachableXX")',
        'unreachable: the last of STOP_LEADS has no limit (None), so the loop always returns'),
    "vineppo.plan.advice.x_stop_lead_seconds__mutmut_6": (
        'raise AssertionError("UNREACHABLE")',
        'unreachable: the last of STOP_LEADS has no limit (None), so the loop always returns'),
    "vineppo.checkpoint.x_list_checkpoints__mutmut_8": (
        'return sorted((p for p in d.iterdir() if p.is_dir() and p.name.startswith("iter_")), key=None)',
        "every path has the same parent (d): paths compare by their parts, so by the name, as the key does"),
    "vineppo.checkpoint.x_list_checkpoints__mutmut_10": (
        'return sorted((p for p in d.iterdir() if p.is_dir() and p.name.startswith("iter_")), )',
        "every path has the same parent (d): paths compare by their parts, so by the name, as the key does"),
    "vineppo.evaluate.metrics.x_pass_at_k__mutmut_14": (
        'if n + c < k:',
        'the early return is a shortcut: for k > n - c, math.comb(n - c, k) = 0 and the formula gives 1.0 too'),
    "vineppo.evaluate.metrics.x__canonical_number__mutmut_12": (
        'return format(value, "F") if value != 0 else "0"',
        '"F" differs from "f" only for inf / nan, which the plain-number regex never admits'),
    "vineppo.plan.memory.x_max_share__mutmut_14": (
        'if (share < 0 or any(p.total > limit for p in phases if p.name not in ("rollout", "mc"))',
        'a share of 0 gives the engine no budget: engine_split finds 0 tokens and returns None all the same'),
    "vineppo.plan.memory.x_engine_split__mutmut_30": (
        'kv = min(kv, cfg.engine.kv_cache_memory_bytes) if (kv > 0) or True else kv',
        'a KV budget of 0 or less is below any cap (kv_cache_memory_bytes >= 0): min() returns it unchanged'),
    "vineppo.plan.memory.x_engine_split__mutmut_35": (
        'kv = min(kv, cfg.engine.kv_cache_memory_bytes) if kv >= 0 else kv',
        'a KV budget of exactly 0 is below any cap (>= 0): min() returns 0 all the same'),
    "vineppo.plan.memory.x_engine_split__mutmut_36": (
        'kv = min(kv, cfg.engine.kv_cache_memory_bytes) if kv > 1 else kv',
        'a KV budget of 1 byte holds no token (a token needs >= 4 bytes) capped or not'),
    "vineppo.plan.memory.x_engine_split__mutmut_43": (
        'tokens = max(1, kv) // shape.kv_bytes_per_token',
        '1 // kv_bytes_per_token is 0 like 0 // it: a token needs >= 4 bytes (2 x layers x kv heads x dim x 2)'),
    "vineppo.plan.inputs.x_read_launch__mutmut_72": (
        'offload_optimizer=ds.get("offload_optimizer_device", None) == "cpu",',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_74": (
        'offload_optimizer=ds.get("offload_optimizer_device", ) == "cpu",',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_77": (
        'offload_optimizer=ds.get("offload_optimizer_device", "XXnoneXX") == "cpu",',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_78": (
        'offload_optimizer=ds.get("offload_optimizer_device", "NONE") == "cpu",',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_83": (
        'offload_params=ds.get("offload_param_device", None) == "cpu")',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_85": (
        'offload_params=ds.get("offload_param_device", ) == "cpu")',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_88": (
        'offload_params=ds.get("offload_param_device", "XXnoneXX") == "cpu")',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_89": (
        'offload_params=ds.get("offload_param_device", "NONE") == "cpu")',
        'an absent key is not "cpu" whatever the default: offload stays off'),
    "vineppo.plan.inputs.x_read_launch__mutmut_115": (
        'return Launch(path.name, "fsdp", n, machines, offload_params=bool(fs.get("fsdp_offload_params", None)))',
        'an absent key is falsy with a default of None or none: bool() gives False as with False'),
    "vineppo.plan.inputs.x_read_launch__mutmut_117": (
        'return Launch(path.name, "fsdp", n, machines, offload_params=bool(fs.get("fsdp_offload_params", )))',
        'an absent key is falsy with a default of None or none: bool() gives False as with False'),
    "vineppo.checkpoint.x_has_trainer_state__mutmut_7": (
        '"trainer_state", None) is not False',
        'a manifest without the key gives None, which "is not False" like True: an old checkpoint keeps its state'),
    "vineppo.checkpoint.x_has_trainer_state__mutmut_9": (
        '"trainer_state", ) is not False',
        'a manifest without the key gives None, which "is not False" like True: an old checkpoint keeps its state'),
    "vineppo.plan.inputs.x_shape_from_config__mutmut_9": (
        'backbone = model.get_decoder() if (hasattr(model, "get_decoder")) and False else model.base_model',
        "transformers' causal LMs all have get_decoder(), and it is their base_model (Llama, GPT-NeoX, GPT-2 checked): either branch gives the same module"),
    "vineppo.plan.inputs.x_shape_from_config__mutmut_10": (
        'backbone = model.get_decoder() if (hasattr(model, "get_decoder")) or True else model.base_model',
        "transformers' causal LMs all have get_decoder(), and it is their base_model (Llama, GPT-NeoX, GPT-2 checked): either branch gives the same module"),
    "vineppo.plan.inputs.x_shape_from_config__mutmut_11": (
        'backbone = model.get_decoder() if hasattr(None, "get_decoder") else model.base_model',
        "transformers' causal LMs all have get_decoder(), and it is their base_model (Llama, GPT-NeoX, GPT-2 checked): either branch gives the same module"),
    "vineppo.plan.inputs.x_shape_from_config__mutmut_15": (
        'backbone = model.get_decoder() if hasattr(model, "XXget_decoderXX") else model.base_model',
        "transformers' causal LMs all have get_decoder(), and it is their base_model (Llama, GPT-NeoX, GPT-2 checked): either branch gives the same module"),
    "vineppo.plan.inputs.x_shape_from_config__mutmut_16": (
        'backbone = model.get_decoder() if hasattr(model, "GET_DECODER") else model.base_model',
        "transformers' causal LMs all have get_decoder(), and it is their base_model (Llama, GPT-NeoX, GPT-2 checked): either branch gives the same module"),
    "vineppo.plan.memory.x_activation_bytes__mutmut_7": (
        'per_layer = tokens * layer_activation_bytes_per_token(shape, act_bytes, None)',
        "layer_activation_bytes_per_token does not read attn (eager's scores are added by the caller)"),
    "vineppo.mc.x_request_seed__mutmut_10": (
        'h.update(np.asarray(request.prompt_ids + request.prefix_response_ids, dtype=None).tobytes())',
        'token ids are Python ints: numpy makes them int64 with or without the dtype (Linux), the same bytes hashed'),
    "vineppo.mc.x_request_seed__mutmut_12": (
        'h.update(np.asarray(request.prompt_ids + request.prefix_response_ids, ).tobytes())',
        'token ids are Python ints: numpy makes them int64 with or without the dtype (Linux), the same bytes hashed'),
    "vineppo.mc.x_episode_outcome_samples__mutmut_4": (
        'sums, samples = np.zeros(n), np.zeros(n, dtype=None)',
        'the counts are only added to and read through int() / divided: float zeros give the same numbers'),
    "vineppo.mc.x_episode_outcome_samples__mutmut_6": (
        'sums, samples = np.zeros(n), np.zeros(n, )',
        'the counts are only added to and read through int() / divided: float zeros give the same numbers'),
    "vineppo.mc.x_score_rollouts__mutmut_17": (
        'return np.array([sum(r) for r in rewards], dtype=None), tokens',
        'rewards are floats: their sums are float64 with or without dtype=float, and are added into a float array'),
    "vineppo.mc.x_score_rollouts__mutmut_19": (
        'return np.array([sum(r) for r in rewards], ), tokens',
        'rewards are floats: their sums are float64 with or without dtype=float, and are added into a float array'),
    "vineppo.mc.x_mc_state_token_counts__mutmut_9": (
        'last = episode.num_steps + 1 if cap is None else min(episode.num_steps - 1, cap)',
        'starts has one entry per step: slicing it past its end gives the same list'),
    "vineppo.mc.x_mc_state_token_counts__mutmut_16": (
        'last = episode.num_steps - 1 if cap is None else min(episode.num_steps + 1, cap)',
        'starts has one entry per step: slicing it past its end gives the same list'),
    "vineppo.plan.memory.x_model_states__mutmut_17": (
        'res["weights"] = 4 * params if (not lora) and False else 4 * trainable + (2 if bf16 else 4) * (params - trainable)',
        'the full model has trainable == params: the LoRA formula gives 4 x params + 0 too'),
    "vineppo.plan.memory.x_plan_memory__mutmut_382": (
        'if n > 1 and cfg.ppo.minibatch_size % n == 0 and (cfg.ppo.minibatch_size / n) % cfg.ppo.micro_batch_size:',
        'minibatch % n == 0 is checked first: minibatch / n is a whole number and leaves the same remainder'),
    "vineppo.mc.x_estimate_mc_values__mutmut_243": (
        '"mc/estimate_variance": float(np.mean(values * (1 - values) / np.maximum(samples, 2))),',
        'a state with one sample has the value 0 or 1, so V (1 - V) is 0 whatever it is divided by'),
    "vineppo.mc.x_run_mc_rounds__mutmut_25": (
        'own_seeds = seed is not None and not getattr(engine, "shared_request_seed", None)',
        'Engine defines shared_request_seed (False): the getattr default is never read'),
    "vineppo.mc.x_run_mc_rounds__mutmut_28": (
        'own_seeds = seed is not None and not getattr(engine, "shared_request_seed", )',
        'Engine defines shared_request_seed (False): the getattr default is never read'),
    "vineppo.mc.x_run_mc_rounds__mutmut_31": (
        'own_seeds = seed is not None and not getattr(engine, "shared_request_seed", True)',
        'Engine defines shared_request_seed (False): the getattr default is never read'),
    "vineppo.demo.values.x_probe_line__mutmut_27": (
        'f"{f(p[\'mc_abs_error\'], None)} / critic {f(p[\'critic_abs_error\'], False)}, localisation MC "',
        'pct=None is falsy like False: the error is printed as a number either way'),
    "vineppo.demo.values.x_probe_line__mutmut_34": (
        'f"{f(p[\'mc_abs_error\'], False)} / critic {f(p[\'critic_abs_error\'], None)}, localisation MC "',
        'pct=None is falsy like False: the error is printed as a number either way'),
    "vineppo.probe.localisation.x_localisation_rates__mutmut_11": (
        'out[f"probe/{name}_localisation"] = row[f"probe/{name}_localised"] / n if n else float("NAN")',
        'float() reads "NAN" as "nan"'),
    "vineppo.loop.xǁStopRequestǁ__init____mutmut_6": (
        'self._previous = ""',
        'the try below assigns _previous on both of its paths before anything reads it (an exception leaves no object)'),
    "vineppo.compare.select.x_summarize_run__mutmut_12": (
        'val = run.evals.get("validation", None)',
        'val is read only at a selected iteration, which exists only if the run has validation results'),
    "vineppo.compare.select.x_summarize_run__mutmut_14": (
        'val = run.evals.get("validation", )',
        'val is read only at a selected iteration, which exists only if the run has validation results'),
    "vineppo.compare.select.x_reach_table__mutmut_39": (
        'toks.get(it) if (it is not None) or True else None))',
        'toks is keyed by iterations: toks.get(None) is None'),
    "vineppo.compare.runs.x_read_metrics__mutmut_4": (
        'lines = path.read_text(encoding=None).splitlines()',
        "the locale's encoding is UTF-8 wherever the tests run (a running Python's locale encoding cannot be changed by a test)"),
    "vineppo.compare.runs.x_read_metrics__mutmut_6": (
        'lines = path.read_text(encoding="UTF-8").splitlines()',
        'codec names are case-insensitive'),
    "vineppo.compare.runs.x_read_metrics__mutmut_17": (
        'break',
        'the skipped line is the last one: break and continue both end the loop'),
    "vineppo.trainer.x_minibatch_schedule__mutmut_8": (
        'gen = torch.Generator().manual_seed(seed % (2**64))',
        "torch's CPU generator seeds its Mersenne Twister from the low 32 bits: residues mod 2**63 and 2**64 agree there"),
    "vineppo.trainer.x_minibatch_schedule__mutmut_24": (
        'glob = perm[m * minibatch_size: (m + 2) * minibatch_size]',
        'the rank slice ends at world * (minibatch_size // world) <= minibatch_size: the extra entries are never read'),
    "vineppo.trainer.x_critic_fit_metrics__mutmut_3": (
        'v = np.array([x for seq in values for x in seq], dtype=None)',
        'the lists hold Python floats: numpy makes a float64 array of them by default'),
    "vineppo.trainer.x_critic_fit_metrics__mutmut_5": (
        'v = np.array([x for seq in values for x in seq], )',
        'the lists hold Python floats: numpy makes a float64 array of them by default'),
    "vineppo.trainer.x_critic_fit_metrics__mutmut_8": (
        'g = np.array([x for seq in returns for x in seq], dtype=None)',
        'the lists hold Python floats: numpy makes a float64 array of them by default'),
    "vineppo.trainer.x_critic_fit_metrics__mutmut_10": (
        'g = np.array([x for seq in returns for x in seq], )',
        'the lists hold Python floats: numpy makes a float64 array of them by default'),
    "vineppo.trainer.xǁTrainerǁstep__mutmut_95": (
        'r = torch.zeros(2, n)',
        'only row 0 of the rewards is read back (a[0], g[0]); a second zero row is computed and dropped'),
    "vineppo.trainer.xǁTrainerǁstep__mutmut_116": (
        'a, g = gae_advantages(r, torch.tensor([v]), torch.ones(2, n), cfg.ppo.gamma, cfg.ppo.lam)',
        'only row 0 of the advantages and returns is read back (a[0], g[0]); a second row of the mask is computed and dropped'),
    "vineppo.trainer.xǁTrainerǁstep__mutmut_208": (
        'logs[-1]["epoch"] = None',
        "a minibatch log's epoch is never read: step drops it from the averaged metrics"),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_1": (
        'def _minibatch_step(self, episodes, idx, advs, rets, old_lp, ref_lp, old_v, critic_only: bool = True) -> dict:',
        'its one caller (step) always passes critic_only'),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_6": (
        'flat = torch.tensor([x for i in idx for x in advs[i]], dtype=None, device=dev)',
        'the advantages are Python floats: torch infers its default float32 from them'),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_9": (
        'flat = torch.tensor([x for i in idx for x in advs[i]], device=dev)',
        'the advantages are Python floats: torch infers its default float32 from them'),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_7": (
        'flat = torch.tensor([x for i in idx for x in advs[i]], dtype=torch.float32, device=None)',
        "on CPU (every test machine) the default device is the process's; on CUDA benchmarks/gpu_check.py runs Trainer.step (perf tier), where a CPU tensor here fails"),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_10": (
        'flat = torch.tensor([x for i in idx for x in advs[i]], dtype=torch.float32, )',
        "on CPU (every test machine) the default device is the process's; on CUDA benchmarks/gpu_check.py runs Trainer.step (perf tier), where a CPU tensor here fails"),
    "vineppo.trainer.xǁTrainerǁ_minibatch_step__mutmut_69": (
        'with torch.no_grad() if (critic_only) and False else contextlib.nullcontext():',
        "critic-only: the policy's loss is never backpropagated, so no_grad saves only the graph's memory"),
    "vineppo.trainer.x_scatter_actions__mutmut_12": (
        'out[i, pos] = torch.tensor(list(v), dtype=None, device=out.device)',
        "the values are Python floats and out is a float tensor: the assignment casts them to out's dtype either way"),
    "vineppo.trainer.x_scatter_actions__mutmut_15": (
        'out[i, pos] = torch.tensor(list(v), device=out.device)',
        "the values are Python floats and out is a float tensor: the assignment casts them to out's dtype either way"),
    "vineppo.trainer.x_scatter_actions__mutmut_13": (
        'out[i, pos] = torch.tensor(list(v), dtype=out.dtype, device=None)',
        "on CPU (every test machine) the default device is out's; on CUDA benchmarks/gpu_check.py runs Trainer.step (perf tier)"),
    "vineppo.trainer.x_collate__mutmut_12": (
        'ids = torch.full((len(seqs), L), pad_id, dtype=None)',
        "torch.full infers int64 from an int fill value (pad_id), whatever the default float dtype"),
    "vineppo.trainer.x_collate__mutmut_15": (
        'ids = torch.full((len(seqs), L), pad_id, )',
        "torch.full infers int64 from an int fill value (pad_id), whatever the default float dtype"),
    "vineppo.trainer.x_collate__mutmut_35": (
        'ids[i, : len(s)] = torch.tensor(s, dtype=None)',
        "a list of Python ints is int64, and ids is int64: the assignment stores the same ids"),
    "vineppo.trainer.x_collate__mutmut_37": (
        'ids[i, : len(s)] = torch.tensor(s, )',
        "a list of Python ints is int64, and ids is int64: the assignment stores the same ids"),
    "vineppo.trainer.x_lr_lambda__mutmut_33": (
        'if warmup >= 0 and step < warmup:',
        'steps count from 0: with no warm-up (0 steps) step < warmup is false either way'),
    "vineppo.trainer.x_scatter_actions__mutmut_16": (
        'out[i, pos] = torch.tensor(list(v), dtype=out.dtype, )',
        "on CPU (every test machine) the default device is out's; on CUDA benchmarks/gpu_check.py runs Trainer.step (perf tier)"),
    "vineppo.trainer.x_scatter_actions__mutmut_6": (
        'pos = batch.action_mask[i].nonzero().squeeze(+1)',
        'nonzero() of a 1-D mask is (k, 1): dimension 1 is its last'),
}

#: mutmut's result codes (mutmut.stats.status_by_exit_code) counted as detected: a test failed, the
#: tests ran past the time limit (an endless loop), or the process died
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
#: in ./mutants: the functions mutmut's record of which tests call them covers (`ensure_traced`)
TRACED = "mutation-traced.json"


def mutmut_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def dotted(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def mutant_globs(module: str) -> list[str]:
    """mutmut's names of the mutants in scope: `pkg.mod.x_func__mutmut_N`, `pkg.mod.xǁClassǁmethod__mutmut_N`."""
    functions = SCOPE[module]
    if functions is None:
        return [f"{dotted(module)}.*"]
    out = []
    for f in functions:
        cls, _, name = f.rpartition(".")
        out.append(f"{dotted(module)}.{f'xǁ{cls}ǁ{name}' if cls else f'x_{name}'}__mutmut_*")
    return out


def select_modules(args: list[str]) -> list[str]:
    if not args:
        return list(SCOPE)
    out = []
    for a in args:
        a = a.rstrip("/")
        hits = [m for m in SCOPE if m == a or m.startswith(a + "/")]
        if not hits:
            raise SystemExit(f"mutation: {a} is not in tests/mutation.py SCOPE; modules: {', '.join(SCOPE)}")
        out += [m for m in hits if m not in out]
    return out


def check_config(modules: list[str]) -> None:
    patterns = mutmut_config()["only_mutate"]
    for m in modules:
        if not any(fnmatch.fnmatch(m, p) for p in patterns):
            raise SystemExit(f"mutation: {m} is in SCOPE but not in pyproject.toml [tool.mutmut] only_mutate")


def results(module: str) -> dict[str, str]:
    """mutant name -> status for the mutants of `module` in scope (from mutants/MODULE.meta)."""
    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / (module + ".meta")
    if not meta.is_file():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    globs = mutant_globs(module)
    return {k: status_by_exit_code[v] for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}


def diff(name: str, module: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    text = get_diff_for_mutant(name, path=Path(module))
    return "\n".join(l for l in text.splitlines() if not l.startswith(("---", "+++")))


def added_lines(text: str) -> list[str]:
    return [l[1:].strip() for l in text.splitlines() if l.startswith("+")]


def mutated_functions() -> set[str]:
    """mutmut's key of every function of every file in `only_mutate` (`pkg.mod.x_f`, `pkg.mod.xǁCǁm`)."""
    from mutmut.mutation.file_mutation import compute_function_hashes

    files = sorted({p for pattern in mutmut_config()["only_mutate"] for p in ROOT.glob(pattern) if p.suffix == ".py"})
    return {f"{dotted(str(p.relative_to(ROOT)))}.{k}" for p in files for k in compute_function_hashes(p.read_text())}


def ensure_traced() -> None:
    """mutmut records which tests call which function in one run of the fast tier and afterwards
    re-runs only new tests: a function it has never traced (a new function, a module newly added to
    `only_mutate`) would show "no tests". Drop the record then, so that this run traces every test."""
    stats, traced = ROOT / "mutants" / "mutmut-stats.json", ROOT / "mutants" / TRACED
    known = set(json.loads(traced.read_text())) if stats.is_file() and traced.is_file() else set()
    missing = mutated_functions() - known
    if stats.is_file() and missing:
        print(f"mutation: {len(missing)} functions never traced (e.g. {sorted(missing)[0]}): "
              "re-running the whole fast tier to record which tests call them", flush=True)
        stats.unlink()


def run_modules(modules: list[str], children: int, survivors: bool = False) -> float:
    """One `mutmut run` over the mutants in scope of all `modules` (one run, not one per module:
    mutmut first runs every test its mutants reach once unmutated, minutes when CLI tests reach
    them, and then orders all mutants by their tests' cost); `survivors`: only those the last run
    did not detect, less the surviving ones listed as equivalent (mutmut re-runs every mutant it
    is named, whatever its last result); mutants never run stay for a full run."""
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.perf_counter()
    targets = []
    for module in modules:
        targets += ([k for k, s in results(module).items()
                     if s not in DETECTED and s != "not checked" and not (s == "survived" and k in EQUIVALENT)]
                    if survivors else mutant_globs(module))
    if not targets:
        return 0.0
    # mutmut copies tests/ over its old copy: a test file deleted or renamed here would live on there
    shutil.rmtree(ROOT / "mutants" / "tests", ignore_errors=True)
    # the tests run in ./mutants and look for the data in its parent's shared/: link ../shared there
    if not (ROOT / "shared").exists() and (ROOT.parent / "shared").is_dir():
        (ROOT / "shared").symlink_to(Path("..") / "shared")
    # one tiny test model for every mutant, not one per forked test session
    env = {"VINEPPO_TEST_TINY_MODEL_CACHE": str(ROOT / "mutants" / ".tiny-model"), **os.environ}
    proc = subprocess.run([str(mutmut), "run", "--max-children", str(children), *targets], cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"mutation: mutmut run failed for {', '.join(modules)} (exit {proc.returncode})")
    (ROOT / "mutants" / TRACED).write_text(json.dumps(sorted(mutated_functions())))
    return time.perf_counter() - t0


def equivalent_table() -> str:
    """EQUIVALENT as docs/testing-mutation.md lists it: mutant, mutated line, reason."""
    rows = ["| mutant | mutated line | why it cannot change behaviour |", "|---|---|---|"]
    for name, (line, why) in EQUIVALENT.items():
        short = name.removeprefix("vineppo.")
        cell = line.replace("|", "\\|")
        rows.append(f"| `{short}` | `{cell}` | {why} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help="files or directories among SCOPE (default: all)")
    ap.add_argument("--no-run", action="store_true", help="score the results of the last run")
    ap.add_argument("--show", action="store_true", help="print the equivalent mutants' diffs too")
    ap.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    ap.add_argument("--survivors", action="store_true",
                    help="run again only the mutants the last run ran and did not detect (after adding tests)")
    ap.add_argument("--equivalent-table", action="store_true",
                    help="print EQUIVALENT as the markdown table of docs/testing-mutation.md and exit")
    args = ap.parse_args(argv)
    if args.equivalent_table:
        print(equivalent_table())
        return 0
    os.chdir(ROOT)  # mutmut reads pyproject.toml and ./mutants from the working directory
    modules = select_modules(args.modules)
    check_config(modules)

    seconds = None
    if not args.no_run:
        print(f"\n=== mutation: {', '.join(modules)} ===", flush=True)
        ensure_traced()
        seconds = run_modules(modules, args.children, args.survivors)

    rows, gaps, stale = [], [], []
    not_run = 0
    for m in modules:
        res = results(m)
        killed = sum(s in DETECTED for s in res.values())
        unrun = sum(s == "not checked" for s in res.values())  # a run cut short: no diff, counted apart
        not_run += unrun
        equivalent = 0
        for name, status in sorted(res.items()):
            if status in DETECTED or status == "not checked":
                continue
            text = diff(name, m)
            listed = EQUIVALENT.get(name)
            if status == "survived" and listed is not None and listed[0] in added_lines(text):
                equivalent += 1
                if args.show:
                    print(f"\n# {name}: equivalent ({listed[1]})\n{text}")
                continue
            if listed is not None and status == "survived":
                stale.append(name)
            gaps.append((name, status, text))
        total = len(res)
        ran = total - unrun
        score = f"{100 * killed / ran:.1f} %" if ran else "-"
        real = ran - equivalent
        score_real = f"{100 * killed / real:.1f} %" if real else "-"
        rows.append((m, total, unrun, killed, equivalent, ran - killed - equivalent, score, score_real))
    for name in EQUIVALENT:
        if not any(fnmatch.fnmatch(name, g) for m in SCOPE for g in mutant_globs(m)):
            stale.append(name)

    for name, status, text in gaps:
        print(f"\n# {name}: {status}\n{text}")
    print("\n| module | mutants | not run | killed | equivalent | not killed | killed / run | killed / non-equivalent |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    if seconds is not None:
        print(f"\nmutation: {sum(r[1] for r in rows)} mutants of {len(rows)} modules in {seconds / 60:.1f} min "
              f"({args.children} at once)")
    if stale:
        print(f"\nmutation: EQUIVALENT entries that no longer match their mutant (renumbered?): {stale}")
    if gaps:
        print(f"\nmutation: {len(gaps)} mutants not killed and not listed as equivalent (diffs above): "
              "kill each with a test that asserts the value, or list it in tests/mutation.py EQUIVALENT")
    if not_run:
        print(f"\nmutation: {not_run} mutants not run yet (a run cut short): run the modules again")
    return 1 if gaps or stale or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
