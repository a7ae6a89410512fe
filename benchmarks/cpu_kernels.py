"""What `deterministic: true` costs on a CPU: the same work with and without the pinned AVX2
kernels (training/cpu_kernels.py), each setting in fresh processes (the libraries read their
variables when they load), alternating so that both see the same machine load.

The work has the demo model's shapes (SmolLM2-135M: hidden 576, MLP 1536, 9 heads, 3 KV heads,
vocabulary 49,152) with fewer layers and random weights, so that it needs no download or
conversion: a training step (forward and backward, batch 8 x 256 tokens) and greedy generation
(batch 8, 32 new tokens).

    .venv/bin/python benchmarks/cpu_kernels.py [--repeats 3] [--layers 4]

Prints the median seconds per setting and pinned/unpinned ratios (above 1: pinned is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_WORK = r"""
import json, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
layers = int(sys.argv[1])
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
model = LlamaForCausalLM(cfg)
ids = torch.randint(0, 49152, (8, 256))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()

step()  # warm-up: first-call allocations and kernel selection
t0 = time.perf_counter()
for _ in range(3):
    step()
train = (time.perf_counter() - t0) / 3
model.eval()
prompt = torch.randint(0, 49152, (8, 64))
with torch.no_grad():
    model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    t0 = time.perf_counter()
    model.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
    generate = time.perf_counter() - t0
print(json.dumps({"train_step": train, "generate": generate, "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def measure(pinned: bool, layers: int) -> dict:
    from peftbench.record.hardware import KERNEL_ENV_VARS
    from peftbench.training.cpu_kernels import PORTABLE_ENV

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV_VARS}
    if pinned:
        env.update(PORTABLE_ENV)
    out = subprocess.run([sys.executable, "-c", _WORK, str(layers)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting (default 3)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (default 4; SmolLM2-135M has 30)")
    args = parser.parse_args()
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(args.repeats):
        for pinned in (False, True) if i % 2 == 0 else (True, False):
            r = measure(pinned, args.layers)
            runs[pinned].append(r)
            print(f"{'pinned  ' if pinned else 'unpinned'} ({r['capability']}): train step {r['train_step']:.3f} s, "
                  f"generate {r['generate']:.3f} s", flush=True)
    print(f"\n{'median s':12} {'unpinned':>9} {'pinned':>9} {'ratio':>6}")
    for key in ("train_step", "generate"):
        free = statistics.median(r[key] for r in runs[False])
        pinned = statistics.median(r[key] for r in runs[True])
        print(f"{key:12} {free:9.3f} {pinned:9.3f} {pinned / free:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
