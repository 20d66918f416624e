"""cgrad.nn.modules: the Module base and every layer."""
from cgrad.nn.modules.module import Module
from cgrad.nn.modules.container import ModuleDict, ModuleList, Sequential
from cgrad.nn.modules.linear import Identity, Linear
from cgrad.nn.modules.flatten import Flatten, Unflatten
from cgrad.nn.modules.conv import Conv2d
from cgrad.nn.modules.pooling import AvgPool2d, MaxPool2d
from cgrad.nn.modules.sparse import Embedding, SparseLinear
from cgrad.nn.modules.dropout import Dropout
from cgrad.nn.modules.normalization import BatchNorm1d, LayerNorm
from cgrad.nn.modules.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from cgrad.nn.modules.activation import (
    ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh,
)

__all__ = [
    "Module", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear", "Flatten", "Unflatten",
    "Conv2d", "MaxPool2d", "AvgPool2d", "Embedding", "SparseLinear", "Dropout", "LayerNorm", "BatchNorm1d",
    "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell",
    "ReLU", "LeakyReLU", "ELU", "GELU", "Sigmoid", "Tanh", "Softplus", "Softmax", "LogSoftmax",
]
