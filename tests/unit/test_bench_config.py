"""`make bench` plumbing: the generated nginx config, the load-tool parsers and the ratio arithmetic.

No timing assertions: nothing here measures anything.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import numpy as np
import pytest

from benchmarks import loadgen, results
from benchmarks.nginx_conf import (
    MIRROR_LOCATION,
    listen_addresses,
    nginx_argv,
    render_nginx_conf,
    render_static_upstreams_conf,
    upstream_servers,
    write_nginx_conf,
)

INC, CAND = ("127.0.0.1", 18001), ("127.0.0.1", 18002)


def _conf(tmp_path, **kw):
    return render_nginx_conf(listen_port=18080, incumbent=INC, candidate=CAND, prefix=tmp_path, **kw)


# ---------------------------------------------------------------------------------------------
# nginx config


def test_nginx_conf_mirrors_every_request_to_the_candidate(tmp_path):
    text = _conf(tmp_path)
    assert f"mirror {MIRROR_LOCATION};" in text
    assert "mirror_request_body on;" in text
    assert "proxy_pass http://incumbent;" in text
    assert "proxy_pass http://candidate$request_uri;" in text
    assert "internal;" in text  # the mirror location cannot be reached from outside


def test_nginx_conf_binds_loopback_only(tmp_path):
    text = _conf(tmp_path)
    assert listen_addresses(text) == ["127.0.0.1:18080"]
    assert sorted(upstream_servers(text)) == ["127.0.0.1:18001", "127.0.0.1:18002"]
    assert "0.0.0.0" not in text and "[::]" not in text


def test_nginx_conf_keepalive_pools_and_no_access_log(tmp_path):
    text = _conf(tmp_path, upstream_keepalive=32)
    assert text.count("keepalive 32;") == 2
    assert "access_log off;" in text
    assert 'proxy_set_header Connection "";' in text  # required for upstream keep-alive
    assert "proxy_http_version 1.1;" in text


def test_nginx_conf_keeps_its_files_under_the_prefix(tmp_path):
    text = _conf(tmp_path)
    prefix = str(tmp_path.resolve())
    for directive in ("pid ", "error_log ", "client_body_temp_path ", "proxy_temp_path "):
        line = next(line for line in text.splitlines() if line.strip().startswith(directive))
        assert prefix in line, line
    # `daemon off;` is given on the command line (-g), never in the file (nginx refuses both).
    assert not [line for line in text.splitlines() if line.strip().startswith("daemon")]


def test_nginx_conf_refuses_non_loopback(tmp_path):
    with pytest.raises(ValueError):
        _conf(tmp_path, listen_host="0.0.0.0")
    with pytest.raises(ValueError):
        render_nginx_conf(listen_port=1, incumbent=("10.0.0.1", 80), candidate=CAND, prefix=tmp_path)


def test_static_upstreams_conf_binds_loopback_only(tmp_path):
    text = render_static_upstreams_conf(ports={"incumbent": 18001, "candidate": 18002},
                                        response_body='{"outputs":[]}', prefix=tmp_path)
    assert listen_addresses(text) == ["127.0.0.1:18001", "127.0.0.1:18002"]
    assert "return 200 '{\"outputs\":[]}';" in text


def test_nginx_argv_runs_in_the_foreground(tmp_path):
    argv = nginx_argv("nginx", tmp_path, tmp_path / "nginx.conf")
    assert argv[-2:] == ["-g", "daemon off;"]
    assert "-p" in argv and "-c" in argv
    assert nginx_argv("nginx", tmp_path, tmp_path / "nginx.conf", test=True)[-1] == "-t"


_NGINX = shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/usr/local/sbin"))


@pytest.mark.skipif(_NGINX is None, reason="nginx is not installed (make bench installs it)")
@pytest.mark.parametrize("static", [False, True])
def test_nginx_accepts_the_generated_config(tmp_path, static):
    if static:
        conf = write_nginx_conf(tmp_path, static_upstreams=True, ports={"incumbent": 18001, "candidate": 18002},
                                response_body='{"outputs":[]}')
    else:
        conf = write_nginx_conf(tmp_path, listen_port=18080, incumbent=INC, candidate=CAND)
    proc = subprocess.run(nginx_argv(_NGINX, tmp_path, conf, test=True), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# Load tools


def test_wrk_script_reads_the_body_file_and_prints_a_summary(tmp_path):
    body = tmp_path / "body.json"
    body.write_text("{}")
    script = loadgen.write_wrk_script(tmp_path / "post.lua", body)
    text = script.read_text()
    assert str(body.resolve()) in text
    assert 'wrk.method = "POST"' in text
    assert loadgen.WRK_MARKER.strip() in text


def test_parse_wrk_output():
    out = ("Running 10s test\n" + loadgen.WRK_MARKER +
           '{"requests":1000,"duration_us":2000000,"bytes":5,"errors":{"connect":0,"read":0,"write":0,'
           '"status":3,"timeout":0},"latency_us":{"p50":100,"p99":900,"mean":150.0,"max":1000}}\n')
    data = loadgen.parse_wrk_output(out)
    assert data["requests"] == 1000 and data["errors"]["status"] == 3
    with pytest.raises(ValueError):
        loadgen.parse_wrk_output("no marker here")


def test_wrk_argv_is_bounded_in_time():
    argv = loadgen.wrk_argv("wrk", "http://127.0.0.1:1/x", "s.lua", connections=64, threads=2, duration_s=10)
    assert "-d10s" in argv and "-c64" in argv and "-t2" in argv and "--timeout" in argv


def test_h2load_argv_offers_the_target_rate():
    argv = loadgen.h2load_argv("h2load", "http://127.0.0.1:1/x", "b.json", "l.log",
                               rate=8300, connections=50, total_requests=83_005)
    rps = float(argv[argv.index("--rps") + 1])
    conns = int(argv[argv.index("-c") + 1])
    n = int(argv[argv.index("-n") + 1])
    assert rps * conns == pytest.approx(8300, rel=1e-4)
    assert n % conns == 0 and n <= 83_005
    assert "--h1" in argv and "--log-file" in argv


def test_parse_h2load_summary():
    out = "requests: 100 total, 99 started, 98 done, 97 succeeded, 1 failed, 0 errored, 0 timeout\n"
    assert loadgen.parse_h2load_summary(out) == {
        "total": 100, "started": 99, "done": 98, "succeeded": 97, "failed": 1, "errored": 0, "timeout": 0,
    }


def test_analyse_h2load_log_window_and_percentiles():
    # 3 s at 1000/s starting at t=1e12 us; latency of row i is (i % 100 + 1) * 10 us.
    n = 3000
    start = 10**12 + np.arange(n) * 1000
    lat = (np.arange(n) % 100 + 1) * 10
    status = np.full(n, 200)
    status[2599] = 500  # one error inside the window (a 1000 us row)
    rows = np.column_stack([start, status, lat])
    stats = loadgen.analyse_h2load_log(rows, target_rps=1000, warmup_s=1.0, tail_s=0.0)
    assert stats["measured"] == 2000  # [1 s, 3 s) of rows, inclusive of the last start
    assert stats["achieved_rps"] == pytest.approx(1000, rel=0.01)
    assert stats["non_2xx"] == 1
    assert stats["pct"]["p50"] == pytest.approx(0.5)  # ms
    assert stats["pct"]["p99"] == pytest.approx(0.99)
    assert stats["pct"]["max"] == pytest.approx(1.0)


def test_analyse_h2load_log_empty():
    stats = loadgen.analyse_h2load_log(np.empty((0, 3), dtype=np.int64), target_rps=10, warmup_s=1)
    assert stats["measured"] == 0 and stats["pct"] is None


# ---------------------------------------------------------------------------------------------
# Ratios and goals on fixed numbers


def test_throughput_ratios():
    r = results.compare_throughput({"direct": 20_000.0, "shadowline": 9_000.0, "nginx": 10_000.0})
    assert r["shadowline_vs_nginx"] == pytest.approx(0.9)
    assert r["shadowline_vs_direct"] == pytest.approx(0.45)
    assert r["nginx_vs_direct"] == pytest.approx(0.5)
    assert results.compare_throughput({"shadowline": 1.0})["shadowline_vs_nginx"] is None


def test_added_latency_and_ratio():
    lat = {
        "direct": {"p50_ms": 1.0, "p99_ms": 2.0, "reached": True},
        "shadowline": {"p50_ms": 1.5, "p99_ms": 4.5, "reached": True},
        "nginx": {"p50_ms": 1.25, "p99_ms": 4.0, "reached": True},
    }
    c = results.compare_latency(lat)
    assert c["shadowline_added_p50_ms"] == pytest.approx(0.5)
    assert c["shadowline_added_p99_ms"] == pytest.approx(2.5)
    assert c["nginx_added_p50_ms"] == pytest.approx(0.25)
    assert c["nginx_added_p99_ms"] == pytest.approx(2.0)
    assert c["added_p99_ratio_shadowline_vs_nginx"] == pytest.approx(1.25)
    assert c["added_p50_ratio_shadowline_vs_nginx"] == pytest.approx(2.0)
    assert c["all_reached"] is True


def test_goals_met_and_not_met():
    thr = results.compare_throughput({"direct": 20_000.0, "shadowline": 9_500.0, "nginx": 10_000.0})
    ok = {"direct": {"p50_ms": 1.0, "p99_ms": 2.0, "reached": True},
          "shadowline": {"p50_ms": 1.1, "p99_ms": 3.1, "reached": True},
          "nginx": {"p50_ms": 1.1, "p99_ms": 3.0, "reached": True}}
    goals = results.judge_goals(thr, results.compare_latency(ok))
    assert goals["throughput"]["met"] is True  # 0.95x >= 0.9x
    assert goals["added_p99"]["met"] is True  # 1.1 / 1.0 <= 1.2
    assert goals["added_p99"]["at_target_rate"] is True

    slow = dict(ok, shadowline={"p50_ms": 2.0, "p99_ms": 5.0, "reached": False})
    thr_bad = results.compare_throughput({"direct": 20_000.0, "shadowline": 8_000.0, "nginx": 10_000.0})
    goals = results.judge_goals(thr_bad, results.compare_latency(slow))
    assert goals["throughput"]["met"] is False  # 0.8x
    assert goals["added_p99"]["met"] is False  # 3.0 / 1.0
    assert goals["added_p99"]["at_target_rate"] is False
    assert "not reached" in goals["added_p99"]["note"]


def test_ratio_undefined_when_nginx_adds_nothing():
    lat = {"direct": {"p50_ms": 1.0, "p99_ms": 2.0, "reached": True},
           "shadowline": {"p50_ms": 1.2, "p99_ms": 2.5, "reached": True},
           "nginx": {"p50_ms": 1.0, "p99_ms": 1.9, "reached": True}}
    c = results.compare_latency(lat)
    assert c["nginx_added_p99_ms"] == pytest.approx(-0.1)
    assert c["added_p99_ratio_shadowline_vs_nginx"] is None
    goal = results.judge_goals(results.compare_throughput({}), c)["added_p99"]
    assert goal["met"] is None and "undefined" in goal["note"]


def test_format_table_renders_fixed_results():
    per_path = {p: {"rps": 1000.0 * (i + 1)} for i, p in enumerate(results.PATHS)}
    lat = {p: {"p50_ms": 1.0 + i, "p99_ms": 2.0 + 2 * i, "achieved_rps": 8300.0, "reached": True}
           for i, p in enumerate(results.PATHS)}
    thr_ratios = results.compare_throughput({p: v["rps"] for p, v in per_path.items()})
    cmp = results.compare_latency(lat)
    res = {
        "throughput": {"per_path": per_path, "ratios": thr_ratios},
        "latency": [{"target_rps": 8300.0, "per_path": lat, "comparison": cmp}],
        "goals": results.judge_goals(thr_ratios, cmp),
        "capture": {"enabled": True, "sessions": [
            {"session": "s", "rows": 10, "answered_min": 10, "answered_max": 12, "complete": True}]},
        "command": "benchmarks/run.py",
    }
    text = results.format_table(res)
    assert "nginx mirror" in text and "0.67x" in text  # 2000 / 3000
    assert "MET" in text and "capture: ON" in text


# ---------------------------------------------------------------------------------------------
# Capture row count


def test_count_capture_reads_the_exchange_table(tmp_path):
    from benchmarks.run import count_capture

    con = sqlite3.connect(tmp_path / "capture.db")
    con.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    con.execute("CREATE TABLE exchanges (seq INTEGER PRIMARY KEY, candidate_status INTEGER, candidate_error TEXT)")
    con.executemany("INSERT INTO exchanges (candidate_status, candidate_error) VALUES (?, ?)",
                    [(200, None)] * 7 + [(None, "shed")] * 2)
    con.commit()
    con.close()
    info = count_capture(tmp_path)
    assert info["table"] == "exchanges" and info["rows"] == 9
    assert info["candidate"]["answered_2xx"] == 7
    assert info["candidate"]["by_error"]["shed"] == 2
    assert count_capture(tmp_path / "missing")["rows"] is None
