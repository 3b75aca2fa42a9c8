"""Value-quality probe (`probe.*`): how far the run's value estimates are from the true values.

- `states`: ground truth at a sample of the iteration's MC states, the estimators' errors there;
- `ranking`: alternative next steps sampled from probed states, valued, and each estimator's
  pairwise ranking of them scored against the truth (`ranking_score`);
- `localisation`: whether the run's own estimator puts a failed response's most negative step
  advantage on the step the task's oracle names as its first wrong one;
- `records`: every probed state and ranked state written to the run directory, per process, and
  merged on reading (`read_records`);
- `iteration`: the order in which the training loop runs them.
"""

from vineppo.probe.iteration import (ESTIMATORS, SUMMED_METRICS, critic_sequences, estimators_of,
                                     probe_iteration_metrics, ranking_accuracies, run_probe, set_critic_values)
from vineppo.probe.localisation import (critic_step_values, is_localised, localisation_counts, localisation_metrics,
                                        localisation_rates, most_negative_step)
from vineppo.probe.ranking import (RankedState, distinct_next_steps, next_step, oracle_pairs, oracle_ranking_score,
                                   rank_alternatives, ranking_counts, ranking_score)
from vineppo.probe.records import (RECORDS_DIR, RecordsError, read_records, records_path, truncate_records,
                                   write_probe_records)
from vineppo.probe.states import (ProbeResult, ProbeState, critic_estimates, mc_estimates, probe_metrics,
                                  run_value_probe, select_probe_states)

__all__ = ["critic_step_values", "is_localised", "localisation_counts", "localisation_metrics", "localisation_rates",
           "most_negative_step", "ESTIMATORS", "SUMMED_METRICS", "critic_sequences", "estimators_of", "probe_iteration_metrics",
           "ranking_accuracies", "run_probe", "set_critic_values", "RankedState", "distinct_next_steps",
           "next_step", "oracle_pairs", "oracle_ranking_score", "rank_alternatives", "ranking_counts", "ranking_score",
           "RECORDS_DIR", "RecordsError", "read_records",
           "records_path", "truncate_records", "write_probe_records", "ProbeResult", "ProbeState",
           "critic_estimates", "mc_estimates", "probe_metrics", "run_value_probe", "select_probe_states"]
