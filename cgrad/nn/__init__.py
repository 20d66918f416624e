"""cgrad.nn: neural-network building blocks with PyTorch's names.

Module, Parameter, layers (Linear, Conv2d, RNN/LSTM/GRU, ...), losses,
and the functional and init namespaces."""
from cgrad.nn import functional, init, penalty, utils
from cgrad.nn.penalty import l1_penalty, l2_penalty
from cgrad.nn.parameter import Parameter
from cgrad.nn.modules import *  # noqa: F401,F403
from cgrad.nn.modules import __all__ as _modules_all
from cgrad.nn.modules.loss import *  # noqa: F401,F403
from cgrad.nn.modules.loss import __all__ as _loss_all

__all__ = ["functional", "init", "penalty", "utils", "l1_penalty", "l2_penalty", "Parameter"] + list(_modules_all) + list(_loss_all)
