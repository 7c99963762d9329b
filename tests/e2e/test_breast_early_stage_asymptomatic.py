"""End to end, scenario `breast-early-stage-asymptomatic`:
its cases (fixtures/cases), both hooks, via HTTP and through replay."""

from e2e_support import scenario_tests

SCENARIO = "breast-early-stage-asymptomatic"
test_scenario_has_cases, test_over_http, test_through_replay_cli = scenario_tests(SCENARIO)
