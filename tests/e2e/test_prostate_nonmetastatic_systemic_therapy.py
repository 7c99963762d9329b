"""End to end, scenario `prostate-nonmetastatic-systemic-therapy` (recognised, never rated):
its cases (fixtures/cases), both hooks, via HTTP and through replay."""

from e2e_support import scenario_tests

SCENARIO = "prostate-nonmetastatic-systemic-therapy"
test_scenario_has_cases, test_over_http, test_through_replay_cli = scenario_tests(SCENARIO)
