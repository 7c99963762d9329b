"""Report logic of the bench driver: prefetch counting, tables and budget verdicts (synthetic rows)."""

from bench import run, stats


def _row(workload, app, p50, p99, rps, rss=50.0, workers=1, errors=0, resources=150):
    summary = stats.Summary(
        n=100,
        errors=errors,
        p50_ms=p50,
        p95_ms=p99,
        p99_ms=p99,
        throughput=rps,
        statuses={"200": 100, **({"500": errors} if errors else {})},
    )
    return run.Row(workload, workers, app, resources, 1024 * resources, resources, summary, rss)


def _rows(fallback_p50=60.0, large_p99=100.0):
    return [
        _row("typical", "service", 4.0, 12.0, 200.0),
        _row("typical", "floor", 2.0, 5.0, 400.0, rss=30.0),
        _row("large", "service", 50.0, large_p99, 20.0, resources=2000),
        _row("large", "floor", 40.0, 60.0, 25.0, resources=2000),
        _row("fallback", "service", fallback_p50, 70.0, 15.0),
        *[
            _row(f"scale-{n}", app, t, t, 1000 / t, resources=n)
            for n, t in ((100, 2.0), (1000, 20.0), (5000, 100.0))
            for app in ("service", "floor")
        ],
    ]


def test_prefetched_count_counts_reads_and_bundle_entries():
    request = {
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p"},
            "obs": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {}}] * 3},
            "none": None,
            "empty": {"resourceType": "Bundle", "type": "searchset"},
        }
    }
    assert run.prefetched_count(request) == 4
    assert run.prefetched_count({}) == 0


def test_main_table_shows_ratios_and_skips_scaling_rows():
    table = run.main_table(_rows())
    lines = table.splitlines()
    assert len(lines) == 2 + 3  # header, rule, typical, large, fallback
    typical = next(line for line in lines if line.startswith("| typical"))
    assert "| 2.00 |" in typical  # p50 ratio 4 / 2
    assert "| 0.50 |" in typical  # throughput ratio 200 / 400
    fallback = next(line for line in lines if line.startswith("| fallback"))
    assert "| — |" in fallback  # no floor for the fallback path


def test_verdicts_pass_and_fail_against_the_issue_budget():
    _, lin, label = run.scaling_table(_rows())
    assert label == "service" and lin is not None and lin.linear
    by_item = {v.item: v for v in run.verdicts(_rows(), lin, label)}
    assert by_item["typical p50 (1 worker)"].passed is True
    assert by_item["typical throughput / floor (1 worker)"].passed is True  # 0.5 ≥ 1/3
    assert by_item["fallback p50, 50 ms/query (1 worker)"].passed is True
    assert by_item["peak RSS per worker (all workloads)"].passed is True
    failing = {v.item: v for v in run.verdicts(_rows(fallback_p50=130.0, large_p99=300.0), lin, label)}
    assert failing["fallback p50, 50 ms/query (1 worker)"].label == "FAIL"
    assert failing["large p99 (1 worker)"].label == "FAIL"


def test_errors_under_load_fail_the_budget_and_void_the_latency_verdict():
    rows = _rows()
    rows[0] = _row("typical", "service", 4.0, 12.0, 200.0, errors=3)
    items = {v.item: v for v in run.verdicts(rows, None, "service")}
    assert items["typical p50 (1 worker)"].passed is None
    assert items["no errors under load"].passed is False
    assert items["linear growth 100 → 5,000 resources"].passed is None


def test_floor_only_scaling_is_reported_but_not_judged():
    floor_rows = [r for r in _rows() if r.app == "floor"]
    text, lin, label = run.scaling_table(floor_rows)
    assert label == "floor" and "Marginal cost (floor" in text
    items = {v.item: v for v in run.verdicts(floor_rows, lin, label)}
    assert items["linear growth 100 → 5,000 resources"].passed is None


def test_round_files_give_each_round_its_own_first_seen_bodies(tmp_path):
    bodies = [f'{{"n": {i}}}'.encode() for i in range(7)]
    files = run.round_files(bodies, 3, tmp_path)
    lines = [f.read_bytes().splitlines() for f in files]
    measured = [line for chunk in lines for line in chunk[:-1]]
    assert len(measured) == len(set(measured)) == 6
    assert all(chunk[-1] == bodies[-1] for chunk in lines)
    single = run.round_files([b"{}"], 3, tmp_path)
    assert len(set(single)) == 1 and single[0].read_bytes() == b"{}"


def test_round_files_cycle_send_every_body_every_round(tmp_path):
    bodies = [b"{}", b"[]", b"1"]
    files = run.round_files(bodies, 3, tmp_path, cycle=True)
    assert all(f.read_bytes().splitlines() == bodies for f in files)


def test_issue11_budget_reads_cold_cases_startup_cpu_and_memory():
    rows = [
        _row("cold", "service", 8.0, 20.0, 120.0),
        _row("cold", "floor", 2.0, 5.0, 300.0, rss=30.0),
        _row("typical", "service", 5.0, 12.0, 200.0, rss=60.0),
        _row("cases", "service", 4.0, 9.0, 250.0, rss=110.0),
        _row("typical-text", "service", 5.0, 9.0, 250.0, rss=130.0),
        _row("large-cold", "service", 100.0, 140.0, 10.0, resources=2000),
        _row("scale-5000", "service", 300.0, 300.0, 3.0, resources=5000),
        _row("scale-5000", "floor", 100.0, 100.0, 10.0, resources=5000),
    ]
    rows[0].cpu_ms = 7.5
    items = {v.item: v for v in run.issue11_verdicts(rows, startup_s=1.2)}
    assert items["first-seen typical: worker CPU per request"].passed is True
    assert items["first-seen typical throughput / floor"].passed is True  # 0.4 ≥ 1/3
    assert items["repeated typical chart p50"].passed is True
    assert items["fixture cases with cards p50"].passed is True
    assert items["first-seen 2,000 resources p99"].passed is True
    assert items["5,000 resources p50 / floor"].passed is True  # 3×
    assert items["start-up to the first 200 (1 worker)"].passed is True
    assert items["peak RSS per worker (all workloads)"].passed is False  # the text arm's 130 MB
    assert items["peak RSS per worker, charts without text"].passed is True  # 60 MB
    rows[0].cpu_ms = 9.0
    failing = {v.item: v for v in run.issue11_verdicts(rows, startup_s=2.0)}
    assert failing["first-seen typical: worker CPU per request"].passed is False
    assert failing["start-up to the first 200 (1 worker)"].passed is False
