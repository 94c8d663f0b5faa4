"""Contracts per fault: what is acceptable under each fault, judged per arm on the faulted
exchanges and reported side by side with the incumbent model under the same fault.

A scenario's `contracts` map a key (a fault or toxic label, `phase:<name>`, or `*`) to contracts
(`harness.scenario.CONTRACTS`). Each (key, contract, arm) becomes one `ContractCheck`, whose
result is a `CheckResult` named `contract:<label>:<contract>` (`[<arm>]` appended for an arm
other than the candidate). In a chaos run the proxy sends the same faulted copy to the candidate
and to the baseline (a second incumbent), so the incumbent model's side of a contract is the
**baseline** arm; without one the incumbent side is unknown and the candidate is judged alone.

    from harness.checks.contracts import Timeline, contract_checks, dose_response
    timeline = Timeline.from_phases(scenario.expanded_phases(), run_start)   # unix seconds
    results = contract_checks(scenario.contract_items(), evidence, timeline=timeline)
    curve = dose_response(evidence, scenario.contract_items(), levels, timeline=timeline,
                          parameter=scenario.sweep.parameter)

Decision rules (docs/contracts.md):

- exchange contracts (`clean_4xx`, `finite_prediction`, `no_5xx`, `no_hang`, `no_crash`) break on
  a counterexample: FAIL when the exact (Clopper-Pearson) interval of the violation rate lies
  above `tolerance` (default 0: any violation), at any n; PASS with at least `min_n` judged
  exchanges and no violation (or the whole interval within the tolerance); INCONCLUSIVE
  otherwise, with the sample size that would decide.
- rate contracts (`within_latency` with a quantile below 1, `no_worse_than_incumbent`,
  `production_unaffected`) are judged like the checks: with at least `min_n` exchanges, FAIL
  when the interval lies wholly beyond the bound, PASS when it lies wholly within it (or, for a
  zero bound, when no degradation at all was observed), INCONCLUSIVE otherwise.
- an arm that fails a contract the incumbent (baseline) also fails gives a non-critical FAIL
  ("the incumbent breaks this contract too"); otherwise the failure is critical (NO-GO).
- a fault that never fired for the arm (a sweep's level 0) makes the contract not applicable.

Pure: numpy and scipy on an `Evidence`, no I/O; bootstraps are seeded.

The modules, in the order a result is made:

- `registry`: the contract names, what each measures, the test each states, parameter validation
- `ledger`: fault labels and the fault ledger (which exchanges a fault reached, applied or not)
- `timeline`: when each fault, toxic and phase was on
- `slicing`: which exchanges a contract on a key reads (faulted, window, no_crash's span)
- `outcomes`: what an arm did on those exchanges (sent, answered, status and error tallies)
- `words`: faults, shares and outcomes in words for the messages
- `intervals`: the statistics the rate contracts add to `harness.checks.stats`
- `check`: `ContractCheck`, its parameters and the result every contract shares
- `exchange`: the exchange contracts and `within_latency`, one side per arm
- `rate`: `no_worse_than_incumbent` and `production_unaffected`, judged in parts
- `build`: a scenario's contracts to checks and results (what the judge calls)
- `sweep`: `dose_response`, each contract per sweep level
"""

from __future__ import annotations

from .build import base_label_level, build_contract_checks, contract_checks
from .check import ContractCheck
from .ledger import (
    NOT_APPLIED,
    base_label,
    fault_type,
    has_ledger,
    label_matches,
    ledger_labels,
    ledger_states,
    split_entry,
)
from .outcomes import EXCLUDED_KINDS
from .registry import CONTRACT_NAMES, EXCHANGE_CONTRACTS, MEASURES, RATE_CONTRACTS, TEST
from .sweep import dose_response
from .timeline import Timeline
from .words import TRANSPORT_FAULTS, describe_fault

__all__ = [
    "CONTRACT_NAMES",
    "EXCHANGE_CONTRACTS",
    "MEASURES",
    "RATE_CONTRACTS",
    "ContractCheck",
    "Timeline",
    "build_contract_checks",
    "contract_checks",
    "describe_fault",
    "dose_response",
    "label_matches",
    "ledger_labels",
    "split_entry",
]
