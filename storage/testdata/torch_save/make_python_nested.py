"""Writes python_nested.pt for storage/torch_save_test.cc (TorchSaveTest).

Run in the PyTorch 2.6 peer (tools/peer/README.md):
  DCP_PEER_SHARE=/tmp/x tools/peer/run_in_peer.sh \
      python3 "$PWD/storage/testdata/torch_save/make_python_nested.py" /tmp/x
then copy /tmp/x/python_nested.pt here.
"""
import collections
import sys

import torch

out_dir = sys.argv[1]
base = torch.arange(15, dtype=torch.float32).reshape(3, 5)
lin = torch.nn.Linear(2, 1)
with torch.no_grad():
    lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    lin.bias.fill_(-1.0)

sd = collections.OrderedDict()
sd["weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
sd["transposed"] = base.t()          # strides (1, 5), shares base's storage
sd["row_slice"] = base[1:]           # storage offset 5
sd["col_slice"] = base[:, 1:3]       # storage offset 1, strides (5, 1)
sd["scalar"] = torch.tensor(2.5, dtype=torch.float64)
sd["ints"] = torch.tensor([-3, 0, 7], dtype=torch.int64)
sd["bf16"] = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)
sd["mask"] = torch.tensor([True, False, True])
sd["empty"] = torch.zeros(0, 4)
sd["param"] = torch.nn.Parameter(torch.ones(2))
sd["optim"] = {
    "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((2,), 0.5)}},
    "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0],
                      "name": "\u03b1\u03b2"}],
}
sd["values"] = [1, -2**40, 1.25, None, True, "text", b"\x00\xff", b""]
sd["module"] = lin.state_dict()      # an OrderedDict with _metadata
torch.save(sd, out_dir + "/python_nested.pt")

# b"" pickles as builtins.bytes(), which weights_only=True refuses.
back = torch.load(out_dir + "/python_nested.pt", weights_only=False)
assert torch.equal(back["col_slice"], base[:, 1:3])
print("wrote python_nested.pt with torch", torch.__version__)
