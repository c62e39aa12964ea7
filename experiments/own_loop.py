"""gradflow's probes in your own training loop: a PyTorch script with a Recorder.

    python experiments/own_loop.py results/own-loop/run0 --steps 200
    gradflow ls results/own-loop
    gradflow plot results/own-loop/run0

The model is any nn.Module: gradflow finds its weight layers (here the Linear
layers and the attention projections) in the order they run, and reads
activation statistics where an activation module consumes a layer's output
(the body's nn.Tanh); the embedding's torch.relu is a function, no module,
so its statistics are masked.
The config's model.depth counts the weight layers before the head, as
`gradflow run` does: 9 for the default 6 body layers.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import gradflow


class Net(nn.Module):
    """A small tanh MLP with one self-attention layer over 8 input tokens."""

    def __init__(self, d_in: int = 16, width: int = 64, depth: int = 6, n_classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.attn = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
        self.body = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())])
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):  # (batch, tokens, d_in) -> (batch, n_classes)
        h = torch.relu(self.embed(x))
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.body(h.mean(1)))


def main(path: str, steps: int, every: int, depth: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2048, 8, 16)  # a learnable synthetic task: labels from a fixed random teacher
    y = (x.mean(1) @ torch.randn(16, 10)).argmax(1)
    model = Net(depth=depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # model.depth as `gradflow run` counts it: the weight layers before the head (embed, the attention's
    # input and output projections, the body's Linears), so the runs line up with its runs of that depth
    weight_layers = sum(isinstance(m, nn.Linear) for m in model.modules()) + \
        sum(isinstance(m, nn.MultiheadAttention) for m in model.modules())  # (its in_proj is no Linear)
    config = {"model": {"name": "own_loop", "depth": weight_layers - 1}, "optim": {"lr": 0.05, "momentum": 0.9},
              "seed": 0}

    # steps=: the last step (steps - 1) is probed too, so `ls`'s `ratio end` is the trained net's
    with gradflow.Recorder(model, path, config=config, every=every, steps=steps) as rec:  # a crash: "failed"
        for step in range(steps):  # `steps` updates, as `gradflow ls` then counts them
            idx = torch.randint(0, len(x), (128,))
            opt.zero_grad()
            with rec.step(step):  # probes armed on every `every`-th step and the last
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
            rec.log(step, train_loss=loss)  # kept on the device until the run is closed
            opt.step()
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default="results/own-loop/run0")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--depth", type=int, default=6,
                        help="tanh layers in the body (default 6); the run's model.depth counts every weight "
                             "layer before the head, these and 3 more (9)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op CPU threads (default 1, as gradflow run: a model this small gains "
                             "nothing from more, and on a busy machine they wait for each other)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(args.path, args.steps, args.every, args.depth)
