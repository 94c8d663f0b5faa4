"""Ratios, goals and the printed table. Pure functions over plain numbers (unit-tested)."""

from __future__ import annotations

PATHS = ("direct", "shadowline", "nginx")
LABELS = {"direct": "direct (load -> incumbent)", "shadowline": "shadowline proxy http", "nginx": "nginx mirror"}

# The goals printed next to the figures.
GOAL_THROUGHPUT_VS_NGINX = 0.9  # Shadowline throughput >= 0.9x nginx mirror
GOAL_ADDED_P99_VS_NGINX = 1.2  # Shadowline added p99 at the target rate <= 1.2x nginx's


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def added(path_value: float | None, direct_value: float | None) -> float | None:
    """What a path adds over the direct path (may be negative within noise)."""
    if path_value is None or direct_value is None:
        return None
    return path_value - direct_value


def compare_latency(latency: dict[str, dict]) -> dict:
    """Added p50/p99 (path minus direct) for Shadowline and nginx, and their p99 ratio.

    `latency` maps path name -> {"p50_ms", "p99_ms", "reached"}.
    """
    d, s, n = (latency.get(k) or {} for k in PATHS)
    out = {
        "shadowline_added_p50_ms": added(s.get("p50_ms"), d.get("p50_ms")),
        "shadowline_added_p99_ms": added(s.get("p99_ms"), d.get("p99_ms")),
        "nginx_added_p50_ms": added(n.get("p50_ms"), d.get("p50_ms")),
        "nginx_added_p99_ms": added(n.get("p99_ms"), d.get("p99_ms")),
    }
    out["added_p99_ratio_shadowline_vs_nginx"] = ratio(out["shadowline_added_p99_ms"], out["nginx_added_p99_ms"])
    out["added_p50_ratio_shadowline_vs_nginx"] = ratio(out["shadowline_added_p50_ms"], out["nginx_added_p50_ms"])
    measured = [k for k in PATHS if latency.get(k)]
    out["all_reached"] = bool(measured) and all(bool(latency[k].get("reached")) for k in measured)
    return out


def compare_throughput(throughput: dict[str, float | None]) -> dict:
    return {
        "shadowline_vs_nginx": ratio(throughput.get("shadowline"), throughput.get("nginx")),
        "shadowline_vs_direct": ratio(throughput.get("shadowline"), throughput.get("direct")),
        "nginx_vs_direct": ratio(throughput.get("nginx"), throughput.get("direct")),
    }


def judge_goals(throughput_ratios: dict, latency_cmp: dict) -> dict:
    """Each goal: {"goal", "value", "met"}; met is None when the figure is undefined."""
    t = throughput_ratios.get("shadowline_vs_nginx")
    p = latency_cmp.get("added_p99_ratio_shadowline_vs_nginx")
    note = None
    if p is None and latency_cmp.get("shadowline_added_p99_ms") is not None:
        nginx_added = latency_cmp.get("nginx_added_p99_ms")
        if nginx_added is not None and nginx_added <= 0:
            note = "nginx added no p99 over direct (within noise): ratio undefined; compare the added ms instead"
    latency_goal = {
        "goal": f"shadowline added p99 <= {GOAL_ADDED_P99_VS_NGINX}x nginx added p99",
        "value": p,
        "met": None if p is None else p <= GOAL_ADDED_P99_VS_NGINX,
        "at_target_rate": bool(latency_cmp.get("all_reached")),
    }
    if note:
        latency_goal["note"] = note
    if not latency_cmp.get("all_reached"):
        latency_goal["note"] = (latency_goal.get("note", "") + "; " if latency_goal.get("note") else "") + (
            "target rate not reached on every path: this is not a measurement at the target scale"
        )
    return {
        "throughput": {
            "goal": f"shadowline throughput >= {GOAL_THROUGHPUT_VS_NGINX}x nginx mirror",
            "value": t,
            "met": None if t is None else t >= GOAL_THROUGHPUT_VS_NGINX,
        },
        "added_p99": latency_goal,
    }


# ---------------------------------------------------------------------------------------------
# Formatting


def _f(value: float | None, fmt: str = "{:.0f}", none: str = "n/a") -> str:
    return none if value is None else fmt.format(value)


def _x(value: float | None) -> str:
    return _f(value, "{:.2f}x")


def _met(goal: dict) -> str:
    return {True: "MET", False: "NOT MET", None: "UNDEFINED"}[goal["met"]]


def format_table(results: dict) -> str:
    """The human table: per path throughput and fixed-rate latency, then ratios and goals."""
    lines: list[str] = []
    st = results.get("settings") or {}
    if st:
        t, f = st.get("throughput", {}), st.get("fixed_rate", {})
        lines.append(
            f"upstreams: {st.get('upstreams', 'demo')}; throughput: {t.get('tool')} {t.get('connections')} connections,"
            f" {t.get('threads')} threads, {t.get('duration_s')} s; fixed rate: {f.get('tool')},"
            f" {f.get('connections')} connections, {f.get('duration_s')} s; nginx workers: {st.get('nginx_workers')}"
        )
        if st.get("rounds", 1) > 1:
            lines.append(f"{st['rounds']} rounds, paths interleaved; figures are medians over rounds, [min-max] shown")
        lines.append("")
    thr = results["throughput"]
    lat_sets = results["latency"]
    primary = lat_sets[0] if lat_sets else None

    head = f"{'path':<30} {'throughput req/s':>17} {'[min-max]':>13}"
    for ls in lat_sets:
        tag = f"@{ls['target_rps']:.0f}/s"
        head += f" {'achieved ' + tag:>18} {'p50 ms':>8} {'p99 ms':>8}"
    lines.append(head)
    lines.append("-" * len(head))
    shown = [p for p in PATHS if p in thr["per_path"] or any(p in ls["per_path"] for ls in lat_sets)]
    for path in shown:
        t = thr["per_path"].get(path, {})
        spread = f"[{_f(t.get('rps_min'))}-{_f(t.get('rps_max'))}]" if "rps_min" in t else ""
        row = f"{LABELS[path]:<30} {_f(t.get('rps')):>17} {spread:>13}"
        for ls in lat_sets:
            r = ls["per_path"].get(path) or {}
            mark = "" if r.get("reached") else " (!)"
            k, n = r.get("rounds_reached"), r.get("rounds_total")
            if k is not None and n and k < n:
                mark += f" {k}/{n}"
            row += f" {_f(r.get('achieved_rps')) + mark:>18} {_f(r.get('p50_ms'), '{:.3f}'):>8} {_f(r.get('p99_ms'), '{:.3f}'):>8}"
        lines.append(row)
    if any(not (ls["per_path"].get(p) or {}).get("reached") for ls in lat_sets for p in shown):
        lines.append("(!) target rate NOT reached on this path: achieved rate shown; its latency is at overload")
    if any((ls["per_path"].get(p) or {}).get("rounds_reached", 0) < (ls["per_path"].get(p) or {}).get("rounds_total", 0)
           for ls in lat_sets for p in shown):
        lines.append("k/n: the target rate was reached in k of n rounds (reached = in most rounds)")

    tr = thr["ratios"]
    lines.append("")
    lines.append("throughput ratios")
    lines.append(f"  shadowline / nginx mirror : {_x(tr['shadowline_vs_nginx'])}   goal >= {GOAL_THROUGHPUT_VS_NGINX}x"
                 f"  -> {_met(results['goals']['throughput'])}")
    lines.append(f"  shadowline / direct       : {_x(tr['shadowline_vs_direct'])}")
    lines.append(f"  nginx mirror / direct     : {_x(tr['nginx_vs_direct'])}")

    for i, ls in enumerate(lat_sets):
        c = ls["comparison"]
        which = "target rate" if i == 0 else "common feasible rate"
        lines.append("")
        lines.append(f"added latency over direct at {ls['target_rps']:.0f} req/s ({which})")
        lines.append(f"  shadowline: p50 +{_f(c['shadowline_added_p50_ms'], '{:.3f}')} ms, p99 +{_f(c['shadowline_added_p99_ms'], '{:.3f}')} ms")
        lines.append(f"  nginx     : p50 +{_f(c['nginx_added_p50_ms'], '{:.3f}')} ms, p99 +{_f(c['nginx_added_p99_ms'], '{:.3f}')} ms")
        line = f"  shadowline added p99 / nginx added p99: {_x(c['added_p99_ratio_shadowline_vs_nginx'])}"
        if i == 0:
            line += f"   goal <= {GOAL_ADDED_P99_VS_NGINX}x  -> {_met(results['goals']['added_p99'])}"
        lines.append(line)
        if i == 0 and results["goals"]["added_p99"].get("note"):
            lines.append(f"  note: {results['goals']['added_p99']['note']}")

    cap = results.get("capture") or {}
    if cap:
        lines.append("")
        lines.append(f"capture: {'ON' if cap.get('enabled') else 'OFF'}")
        for s in cap.get("sessions", []):
            mirror = s.get("candidate") or {}
            extra = ""
            if mirror:
                errors = {k: v for k, v in (mirror.get("by_error") or {}).items() if k != "None"}
                extra = f"; mirrored copies answered 2xx: {mirror.get('answered_2xx')}, not answered: {errors or 0}"
            lines.append(
                f"  {s['session']}: {_f(s.get('rows'))} rows; answered {s['answered_min']}..{s['answered_max']}"
                f" -> {'OK' if s.get('complete') else 'MISMATCH'}{extra}"
            )
    m = results.get("machine") or {}
    if m:
        lines.append("")
        lines.append(f"machine: {m.get('nproc')} CPUs ({m.get('cpu_model', '?')}), python {m.get('python')},"
                     f" load average at start {m.get('loadavg_1_5_15_at_start')},"
                     f" CPU steal during the run {_f(m.get('cpu_steal_share_during_run'), '{:.1%}')}")
    if primary is not None and results.get("command"):
        lines.append(f"command: {results['command']}")
    return "\n".join(lines)
