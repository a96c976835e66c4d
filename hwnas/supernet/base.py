"""The contract of a supernet (torch): one module that runs any architecture of its space.

A ``Supernet`` is an ``nn.Module`` built for one space, class count and input size. Training and
evaluation only use this interface, so a space gains weight sharing by implementing it:

* ``activate(arch)``: the path ``forward`` runs from now on (``SupernetError`` for an architecture outside
  the supernet: another space's, or choices it was not built for);
* ``forward(x)``: logits of the active architecture (``activate`` first);
* ``extract(arch)``: a standalone network, ``space.build``'s module for ``arch`` (width-scaled where the
  supernet is), holding the inherited weights: in eval mode it computes what the supernet computes with
  ``arch`` active;
* ``sandwich()``: the smallest and the largest architecture (the sandwich rule of BigNAS/OFA trains them
  at every step), or None where the space has no such order (NB201's ops);
* ``settings()``: JSON-able keyword arguments that rebuild it with ``hwnas.supernet.build_supernet`` (with
  the space, class count and input size, which the checkpoint stores beside them).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class Supernet(nn.Module):
    kind: ClassVar[str] = ""  # the space kind it serves

    def __init__(self, space: Any, num_classes: int, input_size: int) -> None:
        super().__init__()
        self.space, self.num_classes, self.input_size = space, int(num_classes), int(input_size)

    def activate(self, arch: Any) -> None:
        raise NotImplementedError

    def extract(self, arch: Any) -> nn.Module:
        raise NotImplementedError

    def sandwich(self) -> tuple[Any, Any] | None:
        return None

    def settings(self) -> dict[str, Any]:
        return {}
