"""`vineppo demo`: the embedded default, offline on CPU. A package, one job per module:

- `config`: the demo YAML (`configs/demo.yaml`) and shared helpers;
- `data`: the generated problems and splits;
- `sft_start`: the tiny model, its SFT start and the SFT-continued control, cached;
- `evaluation`: the SFT start and every checkpoint on the held-out problems;
- `runs`: the RL runs, one process each (every method of `--algorithms` x every `--seeds` seed);
- `report`: console lines, mean ± sd over seeds, the final table, the plot;
- `values`, `lengths`: the chain demo's value panel (the probe) and test pass@1 by chain length;
- `main`: `run_demo`, the order of the phases.

What it does:

1. data: the synthetic arithmetic task (`vineppo.tasks.arithmetic`), train/test JSONL written to
   DIR/data (a validation set is carved from train by `data.validation_size`, as in training);
2. a tiny Llama + byte-level BPE tokenizer built locally and fine-tuned (SFT) to a mediocre
   start with a fixed torch thread count — cached under the cache dir keyed by everything that
   determines it, so a second run skips it (and its evaluation);
3. the RL runs from that start (default VinePPO and PPO, one seed), each in its own process, two
   at a time, via `vineppo.loop.train`; methods of one seed see the same questions;
4. meanwhile: the evaluation of the SFT start and of the SFT-continued control (the start trained
   further with the SFT loss for as many optimizer steps as each RL run takes);
5. each run's process evaluates its checkpoints on the held-out test problems (and the
   validation carve); then `vineppo.compare`'s table and plots, the demo's plot (DIR/demo.png),
   and DIR/summary.json (pass@1 in %: SFT start, SFT continued, each method's mean over seeds,
   sd, RL time, VinePPO − PPO over paired seeds).

`configs/demo_chain.yaml` runs the same phases on long arithmetic chains (`demo.data.task: chain`,
`vineppo.tasks.chain`: an exact oracle of wrong steps) with the value probe on, and then, with
`demo.control.enabled`, every method again on short chains from the same SFT start (DIR/control,
summary.json `control`), and splits every method's final test pass@1 by the problem's number of
operations (summary.json `by_ops`, DIR/demo_by_ops.png).

Every hyper-parameter is in `configs/demo.yaml`: the TrainConfig of the RL runs plus a `demo:`
section (data, model size, SFT, evaluation, methods, seeds). `key=value` overrides apply to both
(`demo.*` keys to the demo section), e.g. `vineppo demo iterations=2 demo.sft.max_steps=50`.
"""

from vineppo.demo.config import (DEFAULT_CONFIG, PLOT_FILE, SUMMARY_FILE, TASK, DemoConfig, DemoControl, DemoData,
                                 DemoEval, DemoSettings, DemoSFTStop, load_demo_config)
from vineppo.demo.evaluation import evaluate_run_checkpoints, evaluate_sft
from vineppo.demo.main import run_demo
from vineppo.demo.report import final_table, plot_demo
from vineppo.demo.sft_start import (default_cache_dir, ensure_sft_start, greedy_pass_rate, pick_torch_threads,
                                    sft_cache_key)

__all__ = ["DEFAULT_CONFIG", "PLOT_FILE", "SUMMARY_FILE", "TASK", "DemoConfig", "DemoControl", "DemoData", "DemoEval",
           "DemoSettings", "DemoSFTStop", "load_demo_config", "evaluate_run_checkpoints", "evaluate_sft", "run_demo", "final_table",
           "plot_demo", "default_cache_dir", "ensure_sft_start", "greedy_pass_rate", "pick_torch_threads",
           "sft_cache_key"]
