#!/usr/bin/env python3
"""PyTorch 2.6 side of dcp's train/checkpoint/resume interop test.

A tiny model is trained, checkpointed with DCP and resumed, here and by a C++
(libtorch) program written from the same spec, which reproduces it bit for bit
where possible. Runs inside the peer (tools/peer/run_in_peer.sh).

Commands:
  train_peer.py train  --dir D --world-size W --steps N --out OUT.json
      fresh model, N steps on every rank, then save D on W ranks
  train_peer.py resume --dir D --world-size W --steps K --out OUT.json
      load D on W ranks, verify it, then K more steps
  train_peer.py reference --steps N --out OUT.json
      one process, no checkpoint: N uninterrupted steps
  train_peer.py compare GOT.json WANT.json [--rtol R] [--atol A]
      the last loss, parameters, optimizer state and hyperparameters of two
      OUT.json files (e.g. one from dcp's C++ twin, tools/interop/
      train_interop) agree within |got - want| <= A + R * |want|; steps and
      key sets exactly

The spec (all float32, CPU):

Model TinyMlp(nn.Module):
  - __init__, in this order: self.register_buffer("input_scale",
    torch.tensor([1.0, 0.5, 2.0, 1.0])) (persistent), self.fc1 = nn.Linear(4, 8),
    self.fc2 = nn.Linear(8, 3).
  - forward(x) = fc2(relu(fc1(x * input_scale))).
  - Initial values (overwriting the random init, under torch.no_grad()): for
    the parameters fc1.weight, fc1.bias, fc2.weight, fc2.bias with index
    s = 0, 1, 2, 3, element i in row-major order is
    (((i * 7 + s) % 17) - 8) / 64.0 (exact in float32).
Data of training step t (1-based, the step being taken):
  x [6, 4]: x[b][j] = (((b*5 + j*3 + t) % 11) - 5) / 8.0
  y [6, 3]: y[b][k] = (((b + 2*k + t) % 7) - 3) / 4.0
Loss: torch.nn.functional.mse_loss(model(x), y) (mean).
Optimizer: torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.999),
  eps=1e-8, weight_decay=0.01), other arguments default (on CPU: the
  single-tensor implementation). One step: opt.zero_grad(); loss.backward();
  opt.step().
Checkpoint: model_sd, optim_sd = get_state_dict(model, opt) (from
  torch.distributed.checkpoint.state_dict); state = {"model": model_sd,
  "optim": optim_sd, "step": <int: steps taken>}; dcp.save(state,
  checkpoint_id=D) on W Gloo ranks, each holding the same full model (plain
  replicated tensors, no DTensor).
Loading: a fresh model and optimizer (same init); model_sd, optim_sd =
  get_state_dict(model, opt); state = {"model": model_sd, "optim": optim_sd,
  "step": 0}; dcp.load(state, checkpoint_id=D); set_state_dict(model, opt,
  model_state_dict=state["model"], optim_state_dict=state["optim"]); training
  continues with step t = state["step"] + 1. Before training, resume checks
  that every parameter's optimizer "step" equals state["step"] and that no
  parameter still equals its fresh init.

OUT.json (written by rank 0; every rank must compute identical numbers, else
the command fails):
  {"start_step": 0 for train/reference, the loaded step for resume,
   "losses": [the loss of each step taken],
   "params": {fqn: flat row-major values after the last step} for
             input_scale, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
   "optim_state": {fqn: {"step": float, "exp_avg": [...], "exp_avg_sq": [...]}},
   "param_groups": the param group's hyperparameters (a dict, without
                   "params"; tuples as lists)}
Floats are Python floats of float32 values, written with repr: exact.

Ranks are processes meeting through init_method="file://..." (Gloo, CPU), run
by the launcher of dcp_peer.py's kind: a deadline (--timeout, default 300 s
or $DCP_PEER_TIMEOUT), 20 s more for the others once one rank failed, then
SIGUSR1 (stack dump) and SIGKILL. Exit 0 if all is well, else non-zero with
one line on stderr. Test hook: DCP_PEER_TEST_FAIL_RANK=r makes rank r fail.
"""

import argparse
import json
import math
import os
import signal
import sys
import traceback
import warnings
from datetime import timedelta

import torch
import torch.nn.functional as F
from torch import nn

import dcp_peer  # tools/peer/dcp_peer.py, next to this file

PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


# --------------------------------------------------------------------------
# The training run of the spec
# --------------------------------------------------------------------------

def init_values(s: int, shape) -> torch.Tensor:
    n = math.prod(shape)
    return torch.tensor([(((i * 7 + s) % 17) - 8) / 64.0 for i in range(n)],
                        dtype=torch.float32).reshape(shape)


class TinyMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("input_scale", torch.tensor([1.0, 0.5, 2.0, 1.0]))
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)
        with torch.no_grad():
            for s, name in enumerate(PARAM_NAMES):
                p = self.get_parameter(name)
                p.copy_(init_values(s, p.shape))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.input_scale)))


def new_training():
    model = TinyMlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.01)
    return model, opt


def batch(t: int):
    x = [[(((b * 5 + j * 3 + t) % 11) - 5) / 8.0 for j in range(4)] for b in range(6)]
    y = [[(((b + 2 * k + t) % 7) - 3) / 4.0 for k in range(3)] for b in range(6)]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def train_steps(model, opt, first: int, count: int):
    """Steps first, first + 1, ..., first + count - 1; returns their losses."""
    losses = []
    for t in range(first, first + count):
        x, y = batch(t)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def save_checkpoint(model, opt, steps: int, ckpt: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd, "step": steps}, checkpoint_id=ckpt)


def load_checkpoint(model, opt, ckpt: str) -> int:
    """Loads `ckpt` into a fresh model and optimizer, checks it, returns its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    fresh = {n: p.detach().clone() for n, p in model.named_parameters()}
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd, "step": 0}
    dcp.load(state, checkpoint_id=ckpt)
    set_state_dict(model, opt, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    step = state["step"]
    if type(step) is not int or step < 1:
        raise RuntimeError(f"{ckpt}: loaded step {step!r} is not a positive int")
    osd = opt.state_dict()["state"]
    for i, name in enumerate(PARAM_NAMES):
        got = osd.get(i, {}).get("step")
        if got is None or float(got) != step:
            raise RuntimeError(f"{ckpt}: optimizer step of {name} is {got!r} after "
                               f"loading, expected the checkpoint's step {step}")
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, fresh[n])]
    if unchanged:
        raise RuntimeError(f"{ckpt}: {', '.join(unchanged)} still equal the fresh "
                           "init after loading")
    return step


def summary(model, opt, start_step: int, losses) -> dict:
    """OUT.json's content (JSON types only)."""
    optim_state = {}
    for name, p in model.named_parameters():
        st = opt.state.get(p)
        if st:
            optim_state[name] = {"step": float(st["step"]),
                                 "exp_avg": st["exp_avg"].reshape(-1).tolist(),
                                 "exp_avg_sq": st["exp_avg_sq"].reshape(-1).tolist()}
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    return {
        "start_step": start_step,
        "losses": losses,
        "params": {k: v.reshape(-1).tolist() for k, v in model.state_dict().items()},
        "optim_state": optim_state,
        "param_groups": json.loads(json.dumps(group)),  # tuples as lists
    }


# --------------------------------------------------------------------------
# Worker (one rank)
# --------------------------------------------------------------------------

def worker_main(job) -> None:
    import torch.distributed as dist
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    dcp_peer._patch_error_propagation()
    rank, world = job["rank"], job["world_size"]
    dist.init_process_group("gloo", init_method=job["init_method"], rank=rank,
                            world_size=world, timeout=timedelta(seconds=job["timeout"]))
    if os.environ.get("DCP_PEER_TEST_FAIL_RANK") == str(rank):
        raise RuntimeError("failure injected by DCP_PEER_TEST_FAIL_RANK")
    model, opt = new_training()
    if job["action"] == "train":
        start = 0
        losses = train_steps(model, opt, 1, job["steps"])
        save_checkpoint(model, opt, job["steps"], job["dir"])
    else:
        start = load_checkpoint(model, opt, job["dir"])
        losses = train_steps(model, opt, start + 1, job["steps"])
    print(f"rank {rank}: steps {start + 1}..{start + len(losses)} losses {losses}",
          flush=True)
    result = summary(model, opt, start, losses)
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(result, gathered, dst=0)
    # Every collective ends here (no destroy_process_group: see dcp_peer.py).
    dist.barrier()
    if rank == 0:
        differ = [r for r, res in enumerate(gathered) if res != result]
        if differ:
            raise RuntimeError(f"ranks {differ} computed other numbers than rank 0")
        dcp_peer._write_json(job["out"], result)


def worker_entry(job_json: str) -> None:
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    job = json.loads(job_json)
    try:
        worker_main(job)
    except BaseException as e:  # noqa: B902 - report anything, never hang
        print(f"rank {job['rank']}: FAILED\n{traceback.format_exc()}", flush=True)
        with open(os.path.join(job["rendezvous"], f"rank{job['rank']}.error"), "w") as f:
            f.write(_one_line(e))
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def _one_line(e: BaseException) -> str:
    failures = getattr(e, "failures", None)  # DCP's CheckpointException
    if isinstance(failures, dict) and failures:
        rank, (inner, _) = min(failures.items())
        return f"DCP failed on ranks {sorted(failures)}; rank {rank}: {_one_line(inner)}"
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------

def launch(action: str, args) -> str:
    """Runs the ranks; returns "" if all succeeded, else a one-line reason."""
    def make_job(rank, rendezvous):
        return {"action": action, "dir": os.path.abspath(args.dir),
                "out": os.path.abspath(args.out), "steps": args.steps,
                "rank": rank, "world_size": args.world_size,
                "timeout": args.timeout, "rendezvous": rendezvous,
                "init_method": "file://" + os.path.join(rendezvous, "init")}

    errors = {}

    def collect(rendezvous):  # each failed rank's one-line error, with its time
        for rank in range(args.world_size):
            path = os.path.join(rendezvous, f"rank{rank}.error")
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    errors[rank] = (os.stat(path).st_mtime_ns, f.read().strip())

    codes = dcp_peer.run_ranks(__file__, args.world_size, make_job, args.timeout,
                               prefix="train_peer_", collect=collect)
    failed = {r: c for r, c in enumerate(codes) if c != 0}
    if not failed and len(codes) == args.world_size:
        return ""
    if errors:  # the first rank to fail; the others often fail because of it
        rank = min(errors, key=lambda r: errors[r][0])
        return f"rank {rank}: {errors[rank][1]}"
    return ", ".join(f"rank {r} {dcp_peer._describe_code(c)}" for r, c in failed.items())


# --------------------------------------------------------------------------
# Comparing two runs
# --------------------------------------------------------------------------

def compare(got: dict, want: dict, rtol: float, atol: float) -> list:
    """Lines describing every disagreement; empty if the runs agree."""
    problems = []
    worst = [0.0]

    def close(what, a, b):
        a = a if isinstance(a, list) else [a]
        b = b if isinstance(b, list) else [b]
        if len(a) != len(b):
            problems.append(f"{what}: {len(a)} values, expected {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            worst[0] = max(worst[0], abs(x - y))
            if not abs(x - y) <= atol + rtol * abs(y):
                problems.append(f"{what}[{i}]: {x!r}, expected {y!r}")
                return

    if got["start_step"] + len(got["losses"]) != want["start_step"] + len(want["losses"]):
        problems.append("the runs end at different steps")
    if not got["losses"] or not want["losses"]:
        problems.append("a run took no step")
    else:
        close("last loss", got["losses"][-1], want["losses"][-1])
    for field in ("params", "optim_state"):
        if sorted(got[field]) != sorted(want[field]):
            problems.append(f"{field}: keys {sorted(got[field])}, expected {sorted(want[field])}")
            continue
        for key, value in want[field].items():
            if field == "params":
                close(f"params.{key}", got[field][key], value)
                continue
            for name, v in value.items():
                if name == "step" and got[field][key][name] != v:
                    problems.append(f"optim_state.{key}.step: {got[field][key][name]}, "
                                    f"expected {v}")
                elif name != "step":
                    close(f"optim_state.{key}.{name}", got[field][key][name], v)
    for key in ("lr", "betas", "eps", "weight_decay"):
        close(f"param_groups.{key}", got["param_groups"][key], want["param_groups"][key])
    if got["param_groups"]["amsgrad"] != want["param_groups"]["amsgrad"]:
        problems.append("param_groups.amsgrad differs")
    print(f"train_peer: compare: largest difference {worst[0]:.3g}")
    return problems


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage text
        print(f"train_peer: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv) -> int:
    if argv[:1] == ["_worker"]:
        worker_entry(argv[1])
    parser = _Parser(description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare")
    p.add_argument("got")
    p.add_argument("want")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-7)
    for command in ("train", "resume", "reference"):
        p = sub.add_parser(command)
        if command != "reference":
            p.add_argument("--dir", required=True, help="checkpoint directory")
            p.add_argument("--world-size", type=int, required=True)
            p.add_argument("--timeout", type=float, default=float(
                os.environ.get("DCP_PEER_TIMEOUT", dcp_peer.DEFAULT_TIMEOUT_S)))
        p.add_argument("--steps", type=int, required=True)
        p.add_argument("--out", required=True, help="result JSON")
    args = parser.parse_args(argv)
    if args.command == "compare":
        try:
            with open(args.got) as f:
                got = json.load(f)
            with open(args.want) as f:
                want = json.load(f)
            problems = compare(got, want, args.rtol, args.atol)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"train_peer: compare FAILED: {_one_line(e)}", file=sys.stderr)
            return 1
        for line in problems:
            print(f"train_peer: compare: {line}")
        if problems:
            print(f"train_peer: compare {args.got} with {args.want} FAILED: "
                  f"{len(problems)} disagreements", file=sys.stderr)
            return 1
        print(f"train_peer: compare {args.got} with {args.want} OK")
        return 0
    if args.steps < (1 if args.command == "train" else 0):
        parser.error(f"--steps {args.steps} is too small for {args.command}")
    if args.command != "reference" and args.world_size < 1:
        parser.error("--world-size must be at least 1")

    if args.command == "reference":
        try:
            model, opt = new_training()
            losses = train_steps(model, opt, 1, args.steps)
            dcp_peer._write_json(args.out, summary(model, opt, 0, losses))
        except Exception as e:  # noqa: B902 - one line on stderr
            print(f"train_peer: reference FAILED: {_one_line(e)}", file=sys.stderr)
            return 1
        print(f"train_peer: reference with {args.steps} steps OK, losses {losses}")
        return 0
    os.environ.setdefault("USE_LIBUV", "0")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    reason = launch(args.command, args)
    what = f"{args.command} with {args.world_size} ranks"
    if reason:
        print(f"train_peer: {what} FAILED: {reason}", file=sys.stderr)
        return 1
    print(f"train_peer: {what} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
