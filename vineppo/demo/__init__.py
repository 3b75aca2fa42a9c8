"""`vineppo demo`: the embedded default, offline on CPU. A package, one job per module:\n\n- `config`: the demo YAML (`configs/demo.yaml`) and shared helpers;\n- `data`: the generated problems and splits;\n- `sft_start`: the tiny model, its SFT and the cache;\n- `evaluation`: the SFT start and every checkpoint on the held-out problems;\n- `runs`: the RL runs (in this process and in background processes);\n- `report`: console lines, the final table, the plot;\n- `main`: `run_demo`, the order of the phases.\n\nWhat it does:

1. data: the synthetic arithmetic task (`vineppo.tasks.arithmetic`), train/test JSONL written to
   DIR/data (a validation set is carved from train by `data.validation_size`, as in training);
2. a tiny Llama + byte-level BPE tokenizer built locally and fine-tuned (SFT) to a mediocre
   start — cached under the cache dir keyed by everything that determines it, so a second run
   skips it (and its evaluation);
3. VinePPO iterations, then PPO (critic + GAE) for the same number of iterations, both from the
   SFT start with the same seed (same questions every iteration), via `vineppo.loop.train`;
4. evaluation of the SFT start and of every saved checkpoint of both runs on the held-out test
   problems (and the validation carve), `vineppo.compare`'s table and plots, the demo's own plot
   (DIR/demo.png), and DIR/summary.json = {"sft", "ppo", "vineppo", "seconds"} (pass@1 in %).

Every hyper-parameter is in `configs/demo.yaml`: the TrainConfig of the RL runs plus a `demo:`
section (data, model size, SFT, evaluation). `key=value` overrides apply to both (`demo.*` keys to
the demo section), e.g. `vineppo demo iterations=2 demo.sft.max_steps=50`.
"""

from vineppo.demo.config import (DEFAULT_CONFIG, PLOT_FILE, SUMMARY_FILE, TASK, DemoConfig, DemoData, DemoEval,
                                 DemoSettings, DemoSFTStop, load_demo_config)
from vineppo.demo.evaluation import evaluate_run_checkpoints, evaluate_sft
from vineppo.demo.main import run_demo
from vineppo.demo.report import final_table, plot_demo
from vineppo.demo.sft_start import (default_cache_dir, ensure_sft_start, greedy_pass_rate, pick_torch_threads,
                                    sft_cache_key)

__all__ = ["DEFAULT_CONFIG", "PLOT_FILE", "SUMMARY_FILE", "TASK", "DemoConfig", "DemoData", "DemoEval", "DemoSettings",
           "DemoSFTStop", "load_demo_config", "evaluate_run_checkpoints", "evaluate_sft", "run_demo", "final_table",
           "plot_demo", "default_cache_dir", "ensure_sft_start", "greedy_pass_rate", "pick_torch_threads",
           "sft_cache_key"]
