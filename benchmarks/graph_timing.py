"""The circuit graph's cost: edge attribution of a 20-unit circuit against the model's own passes.

On ``organism:smollm2-aligned`` (SmolLM2-135M-Instruct with its tuned refusal units): the circuit
is its 8 tuned heads and its first 12 tuned neurons (on any other ``--model``, e.g.
qwen2.5-coder-0.5b-instruct: 8 heads and 12 neurons spread over the layers, and the bundled
harmful and harmless validation requests); the prompts are ``--pairs`` harmful requests
(clean) and as many benign ones (corrupted) from the organism's validation data; the metric is
the refusal score. Reported: the passes the graph ran, its CPU time, the CPU time of one plain
forward and one forward+backward over the same rows (the floor), and exact path patching of
``--exact`` edges for comparison (two forwards per edge). CPU time of this process (less
disturbed than wall time by other jobs on a shared machine), median of ``--rounds`` runs.

    OMP_NUM_THREADS=1 python benchmarks/graph_timing.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from safeseek_tl.baselines.patching import pair_batches, refusal_metric
from safeseek_tl.datasets import load_bundled
from safeseek_tl.graph import circuit_nodes, edge_attribution
from safeseek_tl.graph_paths import path_patching
from safeseek_tl.models import load_model
from safeseek_tl.organisms import load_data, organism_info
from safeseek_tl.units import Circuit


def cpu_seconds(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism:smollm2-aligned")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--exact", type=int, default=10, help="edges to path-patch exactly, for comparison")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model(args.model)
    if args.model == "organism:smollm2-aligned":
        info = organism_info("smollm2-aligned")
        circuit = Circuit.from_units(loaded.shape, heads=info["tuned_heads"][:8], neurons=info["tuned_neurons"][:12])
        harmful = [r.prompt for r in load_data("alignment", "val", "smollm2-aligned")[: args.pairs]]
        benign = [r.prompt for r in load_data("benign", "val", "smollm2-aligned")[: args.pairs]]
    else:  # any other model: 20 units spread over the layers (the cost does not depend on which), the bundled request sets
        shape = loaded.shape
        layers = [round(i * (shape.n_layers - 1) / 7) for i in range(8)]
        circuit = Circuit.from_units(shape, heads=[[layer, layer % shape.n_heads] for layer in layers],
                                     neurons=[[layers[i % 8], 37 * i % shape.d_mlp] for i in range(12)])
        harmful = [r.prompt for r in load_bundled("harmful", split="validation")[: args.pairs]]
        benign = [r.prompt for r in load_bundled("harmless", split="validation")[: args.pairs]]
    metric = refusal_metric(loaded)
    ((_, _, ids, mask),) = pair_batches(loaded, harmful, benign, batch_size=args.pairs)

    def forward() -> None:
        with torch.no_grad():
            loaded.model(ids, attention_mask=mask, logits_to_keep=1)

    def forward_backward() -> None:
        # the weights are frozen: a zero leaf on the embeddings gives the backward something to reach
        def leaf(act, hook):
            return act + torch.zeros_like(act, requires_grad=True)

        with torch.enable_grad(), loaded.model.hooks(fwd_hooks=[("hook_embed", leaf)]):
            metric(loaded.model(ids, attention_mask=mask, logits_to_keep=1)[:, -1]).sum().backward()

    graph_holder = {}
    nodes = circuit_nodes(circuit)
    edges = [(s, t) for t in nodes[1:-1] for s in nodes[:-1] if t.reads_before(s)][: args.exact]
    times = {"forward": [], "forward+backward": [], "graph": [], f"path patching of {len(edges)} edges": []}
    forward()
    for _ in range(args.rounds):
        times["forward"].append(cpu_seconds(forward))
        times["forward+backward"].append(cpu_seconds(forward_backward))
        times["graph"].append(cpu_seconds(lambda: graph_holder.update(g=edge_attribution(loaded, circuit, harmful, benign, batch_size=args.pairs))))
        times[f"path patching of {len(edges)} edges"].append(cpu_seconds(lambda: path_patching(loaded, circuit, harmful, benign, edges=edges, batch_size=args.pairs)))
    graph = graph_holder["g"]
    report = {
        "model": args.model, "rows": args.pairs, "tokens per row": ids.shape[1], "units": len(circuit),
        "edges": len(graph.edges()), "possible edges": int(graph.allowed.sum()),
        "passes": graph.metadata["passes"], "threads": torch.get_num_threads(),
        "cpu seconds (median)": {name: round(statistics.median(values), 3) for name, values in times.items()},
        "strongest edges": [(s.name, t.name, round(w, 4)) for s, t, w in graph.edges()[:8]],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
