"""Registry benchmark: real `docker push` and cold `docker pull` of a ~200 MiB image, kraken
against the reference registry (CNCF distribution, Debian's docker-registry), in one run.

    .venv/bin/python -m tests.bench.registry [--size 200] [--layers 4] [--rounds 1]

One host, no rate cap. It starts its own cluster (redis, tracker, origins, build-index, proxy,
one agent), a docker-registry and a private dockerd. Each round builds a fresh image FROM a
busybox base with --layers layers of random bytes (random, so docker's gzip cannot shrink
them), then times:
  push:  `docker push` to docker-registry, and to the proxy;
  pull:  `docker pull` from docker-registry, and through the agent's registry port, each
         after removing every image from dockerd, so every layer is fetched (and the agent
         has never seen these blobs: it fetches them over BitTorrent from the origins).
Prints each time and kraken/reference ratios (targets: push <= 1.5x, cold pull <= 1.3x);
writes OUT/registry-<timestamp>.json. With --timeline, each pull also prints when docker
reported each layer downloaded and extracted ("Pull complete"), from its own progress output:
where a pull's time goes (docker extracts layers one by one, in order, each once it has
arrived and the one before it is extracted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common.devcluster import Cluster
from tests.bench import MiB, exit_on_sigterm
from tests.integration.docker_env import Dockerd, ReferenceRegistry, pull_digest, push_digest
from tests.integration.images import build_image

TARGETS = {"push": 1.5, "pull": 1.3}


def timed_pull(dockerd: Dockerd, ref_name: str) -> tuple[float, str, list[tuple[float, str]]]:
    """`docker pull` with each line of its progress output stamped with the seconds since the
    pull started: (seconds, output, [(seconds, line)])."""
    t0 = time.monotonic()
    proc = subprocess.Popen([dockerd.cli, "pull", ref_name], env=dockerd.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = [(time.monotonic() - t0, line.rstrip("\n")) for line in proc.stdout]
    proc.wait(1800)
    seconds = time.monotonic() - t0
    output = "\n".join(line for _, line in lines)
    if proc.returncode != 0:
        raise RuntimeError(f"`docker pull {ref_name}` exited {proc.returncode}:\n{output[-3000:]}")
    return seconds, output, lines


def layer_timeline(lines: list[tuple[float, str]]) -> list[dict]:
    """Per layer, in the order docker extracted them: when it was downloaded and when
    extracted, in seconds since the pull started."""
    layers: dict[str, dict] = {}
    for t, line in lines:
        layer, _, status = line.partition(": ")
        if status == "Download complete":
            layers.setdefault(layer, {"layer": layer})["downloaded_s"] = round(t, 3)
        elif status == "Pull complete":
            layers.setdefault(layer, {"layer": layer})["extracted_s"] = round(t, 3)
    return sorted((v for v in layers.values() if "extracted_s" in v), key=lambda v: v["extracted_s"])


def one_round(dockerd: Dockerd, ref: str, proxy: str, agent: str, workdir: Path, size_mib: float, layers: int,
              flip: bool, timeline: bool = False) -> dict:
    sizes = [int(size_mib * MiB / layers)] * layers
    t0 = time.perf_counter()
    img = build_image(dockerd, workdir, f"bench/img-{uuid.uuid4().hex[:8]}:1", layer_sizes=sizes)
    build_s = time.perf_counter() - t0
    repo = f"bench/image-{uuid.uuid4().hex[:8]}"
    sides = [("reference", ref, ref), ("kraken", proxy, agent)]
    if flip:
        sides.reverse()
    # Other work on the host skews both sides; the load average goes into the results.
    out: dict = {"build_s": build_s, "layer_bytes": sizes, "loadavg_1m": os.getloadavg()[0]}
    digests = {}
    for name, push_addr, _ in sides:
        dockerd.run("tag", img.ref, f"{push_addr}/{repo}:1")
        res = dockerd.run("push", f"{push_addr}/{repo}:1", timeout=1800)
        out[f"{name}_push_s"] = res.seconds
        digests[name] = push_digest(res.stdout)
        print(f"  push {name:9s} {res.seconds:7.2f} s", flush=True)
    for name, _, pull_addr in sides:
        dockerd.wipe()
        ref_name = f"{pull_addr}/{repo}:1"
        seconds, output, lines = timed_pull(dockerd, ref_name)
        out[f"{name}_pull_s"] = seconds
        assert pull_digest(output) == digests[name], output
        # The pulled image is whole: it runs and prints its message.
        run = dockerd.run("run", "--rm", "--network", "none", ref_name)
        assert run.stdout == img.message + "\n", run.stdout
        print(f"  pull {name:9s} {seconds:7.2f} s (cold)", flush=True)
        if timeline:
            out[f"{name}_pull_layers"] = steps = layer_timeline(lines)
            for step in steps:
                print(f"    layer {step['layer']}: downloaded {step.get('downloaded_s', float('nan')):6.3f} s, "
                      f"extracted {step['extracted_s']:6.3f} s", flush=True)
    dockerd.wipe()
    out["push_ratio"] = out["kraken_push_s"] / out["reference_push_s"]
    out["pull_ratio"] = out["kraken_pull_s"] / out["reference_pull_s"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.registry", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=float, default=200, help="image payload in MiB, split evenly over --layers")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1, help="each round builds a fresh image (cold everywhere)")
    p.add_argument("--origins", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--no-warm", action="store_true",
                   help="agent: do not start an image's blob downloads when its manifest is read")
    p.add_argument("--timeline", action="store_true",
                   help="print when docker reported each layer of each pull downloaded and extracted")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args(argv)
    exit_on_sigterm()

    root = Path(tempfile.mkdtemp(prefix="kraken-registry-bench-"))
    # No storage backend: the reference registry writes each blob once to its disk; the
    # origins already write theirs to `replicas` disks.
    cluster = Cluster(root / "cluster", agents=1, origins=args.origins, replicas=args.replicas, backend="none",
                      agent_config={"images": {"warm_on_manifest": not args.no_warm}})
    reference = ReferenceRegistry(root / "reference")
    dockerd = Dockerd()
    rounds = []
    try:
        cluster.start()
        reference.start()
        dockerd.start()
        proxy, agent = cluster.proxy, cluster.agents[0]["registry"]
        print(f"image {args.size:g} MiB in {args.layers} random layers; reference {reference.addr}, "
              f"proxy {proxy}, agent {agent}, {args.origins} origins x{args.replicas}", flush=True)
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})", flush=True)
            rounds.append(one_round(dockerd, reference.addr, proxy, agent, root, args.size, args.layers,
                                    flip=bool(i % 2), timeline=args.timeline))
    finally:
        dockerd.stop()
        reference.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    summary = {}
    for op in ("push", "pull"):
        ref_s = statistics.median(r[f"reference_{op}_s"] for r in rounds)
        kr_s = statistics.median(r[f"kraken_{op}_s"] for r in rounds)
        ratio = kr_s / ref_s
        summary[op] = {"reference_s": ref_s, "kraken_s": kr_s, "ratio": ratio, "target": TARGETS[op],
                       "met": ratio <= TARGETS[op]}
        what = "docker push" if op == "push" else "cold docker pull"
        print(f"{what:16s}: docker-registry {ref_s:6.2f} s, kraken {kr_s:6.2f} s "
              f"({'proxy' if op == 'push' else 'through the agent'}), ratio {ratio:.2f}x "
              f"(target <= {TARGETS[op]}x: {'met' if ratio <= TARGETS[op] else 'NOT met'})", flush=True)
    results = {"size_mib": args.size, "layers": args.layers, "origins": args.origins, "replicas": args.replicas,
               "host": platform.node(), "rounds": rounds, "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"registry-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
