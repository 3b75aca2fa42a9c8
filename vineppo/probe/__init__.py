"""Value-quality probe (`probe.*`): how far the run's value estimates are from the true values.

`states`: ground truth at a sample of this iteration's MC states and the estimators' errors there.
"""

from vineppo.probe.states import (ProbeResult, ProbeState, critic_estimates, mc_estimates, probe_metrics,
                                  run_value_probe, select_probe_states)

__all__ = ["ProbeResult", "ProbeState", "critic_estimates", "mc_estimates", "probe_metrics", "run_value_probe",
           "select_probe_states"]
