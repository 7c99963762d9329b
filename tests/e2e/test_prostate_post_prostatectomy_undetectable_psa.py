"""End to end, scenario `prostate-post-prostatectomy-undetectable-psa`:
its cases (fixtures/cases), both hooks, via HTTP and through replay.

Issue 9 point 3 (a seed situation that had no rule); the rule file quotes the seed line it rests on."""

from e2e_support import scenario_tests

SCENARIO = "prostate-post-prostatectomy-undetectable-psa"
test_scenario_has_cases, test_over_http, test_through_replay_cli = scenario_tests(SCENARIO)
