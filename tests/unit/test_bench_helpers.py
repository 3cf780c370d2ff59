"""Helpers the benchmarks report with: config overrides from the command line, CPU time per
process group, the host's busy CPU ticks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.bench import group_cpu_seconds, host_cpu_jiffies
from tests.bench.swarm import parse_args


def test_config_overrides_nest_dotted_keys_with_json_values():
    args = parse_args(["--agent-config", "download.stripes=false", "--agent-config", "torrent.disk_threads=2",
                       "--origin-config", 'torrent.settings={"send_redundant_have": 0}'])
    assert args.agent_config == {"download": {"stripes": False}, "torrent": {"disk_threads": 2}}
    assert args.origin_config == {"torrent": {"settings": {"send_redundant_have": 0}}}


@pytest.mark.parametrize("bad", ["download.stripes", "download.stripes=nope"])
def test_config_overrides_refuse_what_is_not_key_equals_json(bad, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--agent-config", bad])
    assert "DOTTED.KEY=JSON" in capsys.readouterr().err


def test_group_cpu_seconds_counts_every_live_process_of_the_group():
    # A child in a group of its own and its own child each burn 0.3 s of CPU, then wait.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    grandchild = burn + "print('g', flush=True)\nimport time\ntime.sleep(60)\n"
    child = (f"import subprocess, sys\ng = subprocess.Popen([sys.executable, '-c', {grandchild!r}], "
             f"stdout=subprocess.PIPE, text=True)\nassert g.stdout.readline() == 'g\\n'\n{burn}"
             "print('done', flush=True)\nsys.stdin.read()\ng.kill()\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    try:
        assert proc.stdout.readline() == "done\n"
        none = os.getpid() + 10_000_000  # no such group
        cpu = group_cpu_seconds([proc.pid, none])
        assert cpu[proc.pid] >= 0.55  # both processes, not the child alone
        assert cpu[none] == 0
    finally:
        proc.stdin.close()
        proc.wait(10)


def test_stat_fields_are_found_past_a_command_with_spaces_and_parentheses():
    from common.procstat import stat_fields

    name = "a) b (c"
    child = (f"import ctypes, sys\nctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)\n"
             "print('named', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "named\n"
        assert open(f"/proc/{proc.pid}/comm").read().strip() == name
        fields = stat_fields(proc.pid)
        assert fields[0] in "RS" and fields[1] == str(os.getpid())  # state, then ppid
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert stat_fields(proc.pid) is None  # reaped


def test_host_cpu_jiffies_count_a_busy_loop_as_busy():
    busy0, total0 = host_cpu_jiffies()
    tick = os.sysconf("SC_CLK_TCK")
    spin = os.times().user + 0.3
    while os.times().user < spin:  # 0.3 s of this process's own CPU
        pass
    busy1, total1 = host_cpu_jiffies()
    assert 0 <= busy0 <= total0 and busy1 <= total1
    # At least most of the spin shows as busy ticks (other processes may add more).
    assert busy1 - busy0 >= 0.2 * tick


def test_the_cpu_floor_is_every_process_s_cpu_over_the_cores():
    from tests.bench.swarm_report import AgentResult, RunResult, summarize

    agents = [AgentResult("a", seconds=10.0, error=None, cpu_seconds=3.0),
              AgentResult("b", seconds=12.0, error=None, cpu_seconds=5.0),
              AgentResult("c")]  # failed, no CPU reading
    run = RunResult("p2p", agents, origin_sent_bytes=1 << 20, wall_seconds=12.5, origin_cpu_seconds=1.5,
                    clients_cpu_seconds=0.5)
    args = parse_args(["--agents", "3", "--size", "1", "--rate", "8"])
    out = summarize(run, args)
    assert out["cpu_floor_seconds"] == pytest.approx(10.0 / os.cpu_count())
    assert out["agent_cpu_seconds_p50"] == 4.0
