"""End to end, scenario `breast-aggressive-subtype-staging`:
its cases (fixtures/cases), both hooks, via HTTP and through replay.

Issue 9 point 3 (a seed situation that had no rule); the rule file quotes the seed line it rests on."""

from e2e_support import scenario_tests

SCENARIO = "breast-aggressive-subtype-staging"
test_scenario_has_cases, test_over_http, test_through_replay_cli = scenario_tests(SCENARIO)
