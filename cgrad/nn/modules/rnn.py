"""RNN, LSTM, GRU (multi-layer, bidirectional) and their cells, with
PyTorch's parameter names, gate order and initialisation."""
import math
import numbers
import warnings

from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn import init
from cgrad.nn._functional_layers import _gru_gates, _lstm_gates
from cgrad.nn.modules._utils import check_input, check_size, factory_device, factory_dtype
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _check_dtype(name, input, weight):
    if input.dtype != weight.dtype:
        raise TypeError(f"{name}: input dtype {input.dtype} does not match the parameters' dtype "
                        f"{weight.dtype} (convert one, e.g. module.to({input.dtype}))")


class RNNBase(Module):
    """The shared machinery of RNN, LSTM and GRU. Per layer k and direction
    (suffix '' or '_reverse'): weight_ih_lk (gates*hidden, in),
    weight_hh_lk (gates*hidden, hidden), bias_ih_lk, bias_hh_lk, all
    U(-1/sqrt(hidden), 1/sqrt(hidden))."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
        dt = factory_dtype(name, device, dtype)
        dev = factory_device(name, device)
        self.mode = mode
        self.input_size = check_size(name, "input_size", input_size)
        self.hidden_size = check_size(name, "hidden_size", hidden_size, 1)
        self.num_layers = check_size(name, "num_layers", num_layers, 1)
        self.bias = bias
        self.batch_first = batch_first
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing the "
                             f"probability of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}")
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        if proj_size != 0:
            raise NotImplementedError(f"{name}: proj_size={proj_size} is not supported yet (only 0)")
        self.proj_size = 0
        gate_size = _GATES[mode] * hidden_size
        num_directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else hidden_size * num_directions
                sfx = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, hidden_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                names = []
                for base, shape in shapes:
                    pname = f"{base}_l{layer}{sfx}"
                    setattr(self, pname, Parameter(_core.empty(*shape, dtype=dt, device=dev)))
                    names.append(pname)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _name(self):
        return type(self).__name__

    @property
    def all_weights(self):
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self):
        """Nothing to do: the weights are used where they are (as PyTorch
        on CPU, where this only matters for cuDNN)."""

    def _cell_weights(self, layer, direction):
        names = self._all_weights[layer * (2 if self.bidirectional else 1) + direction]
        ws = [getattr(self, n) for n in names]
        return ws if self.bias else ws + [None, None]

    def _run_direction(self, x, h, c, weights, reverse):
        """One layer, one direction over time-major x (L, N, in): the input
        projection of every step in one matmul, then the recurrence."""
        w_ih, w_hh, b_ih, b_hh = weights
        xp = F.linear(x, w_ih, b_ih)  # (L, N, gates*H)
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs = [None] * x.shape[0]
        for t in steps:
            gh = F.linear(h, w_hh, b_hh)
            if self.mode == "LSTM":
                h, c = _lstm_gates(xp[t] + gh, c)
            elif self.mode == "GRU":
                h = _gru_gates(xp[t], gh, h)
            elif self.mode == "RNN_TANH":
                h = (xp[t] + gh).tanh()
            else:
                h = (xp[t] + gh).relu()
            outs[t] = h
        return _core.stack(outs, 0), h, c

    def _check_hidden(self, what, hx, expected):
        if not isinstance(hx, _core.Tensor):
            raise TypeError(f"{self._name}: {what} must be a cgrad.Tensor, got {type(hx).__name__}")
        if tuple(hx.shape) != expected:
            raise ValueError(f"{self._name}: expected {what} of size {expected}, got {tuple(hx.shape)}")

    def forward(self, input, hx=None):
        check_input(self._name, input)
        if input.ndim not in (2, 3):
            raise ValueError(f"{self._name}: expected input to be 2D (unbatched) or 3D (batched), got "
                             f"input of shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{self._name}: input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got input of shape {tuple(input.shape)}")
        w0 = getattr(self, self._flat_weights_names[0])
        _check_dtype(self._name, input, w0)
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1 if not self.batch_first else 0)
        if self.batch_first:
            x = x.transpose(0, 1)
        n = x.shape[1]
        d = 2 if self.bidirectional else 1
        expected = (self.num_layers * d, n, self.hidden_size) if batched else \
            (self.num_layers * d, self.hidden_size)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            h0 = _core.zeros(self.num_layers * d, n, self.hidden_size, dtype=x.dtype, device=x.device)
            c0 = h0 if is_lstm else None
        elif is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            self._check_hidden("h_0", hx[0], expected)
            self._check_hidden("c_0", hx[1], expected)
            h0, c0 = hx
            if not batched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        else:
            self._check_hidden("hx", hx, expected)
            h0 = hx if batched else hx.unsqueeze(1)
            c0 = None
        h_n, c_n = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(d):
                k = layer * d + direction
                out, h, c = self._run_direction(layer_in, h0[k], c0[k] if is_lstm else None,
                                                self._cell_weights(layer, direction), direction == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_in = outs[0] if d == 1 else _core.cat(outs, 2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        output = layer_in.transpose(0, 1) if self.batch_first else layer_in
        h_n = _core.stack(h_n, 0)
        c_n = _core.stack(c_n, 0) if is_lstm else None
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if is_lstm else None
        return (output, (h_n, c_n)) if is_lstm else (output, h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)
    (nonlinearity='relu' for relu). RNN(input_size, hidden_size,
    num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False); forward returns (output, h_n)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        args = list(args)
        if len(args) > 3:
            nonlinearity = args.pop(3)
            if "nonlinearity" in kwargs:
                raise TypeError("RNN got multiple values for argument 'nonlinearity'")
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(mode, *args, **kwargs)


class LSTM(RNNBase):
    """Long short-term memory, gates (i, f, g, o); forward(input, (h_0, c_0))
    returns (output, (h_n, c_n))."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """Gated recurrent unit, gates (r, z, n); forward returns (output, h_n)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


class RNNCellBase(Module):
    """weight_ih (chunks*hidden, input), weight_hh (chunks*hidden, hidden),
    bias_ih, bias_hh; U(-1/sqrt(hidden), 1/sqrt(hidden))."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        dt = factory_dtype(type(self).__name__, device, dtype)
        dev = factory_device(type(self).__name__, device)
        self.input_size = check_size(type(self).__name__, "input_size", input_size)
        self.hidden_size = check_size(type(self).__name__, "hidden_size", hidden_size, 1)
        self.bias = bias
        self.weight_ih = Parameter(_core.empty(num_chunks * hidden_size, input_size, dtype=dt, device=dev))
        self.weight_hh = Parameter(_core.empty(num_chunks * hidden_size, hidden_size, dtype=dt, device=dev))
        if bias:
            self.bias_ih = Parameter(_core.empty(num_chunks * hidden_size, dtype=dt, device=dev))
            self.bias_hh = Parameter(_core.empty(num_chunks * hidden_size, dtype=dt, device=dev))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _prepare(self, input, hx, n_states):
        """(batched input, [states], was batched), states zeros when hx is None."""
        name = type(self).__name__
        check_input(name, input)
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D input of "
                             f"shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has inconsistent input_size: got input of shape "
                             f"{tuple(input.shape)}, expected last dimension {self.input_size}")
        _check_dtype(name, input, self.weight_ih)
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        if hx is None:
            states = [_core.zeros(x.shape[0], self.hidden_size, dtype=x.dtype, device=x.device)] * n_states
        else:
            states = list(hx) if n_states > 1 else [hx]
            if n_states > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != n_states):
                raise TypeError(f"{name}: hx must be a tuple of {n_states} tensors (h, c)")
            for i, s in enumerate(states):
                if not isinstance(s, _core.Tensor):
                    raise TypeError(f"{name}: hidden state {i} must be a cgrad.Tensor, got {type(s).__name__}")
                if tuple(s.shape) != expected:
                    raise ValueError(f"{name}: hidden state {i} has shape {tuple(s.shape)}, expected "
                                     f"{expected} for input of shape {tuple(input.shape)}")
            if not batched:
                states = [s.unsqueeze(0) for s in states]
        return x, states, batched

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        nl = getattr(self, "nonlinearity", "tanh")
        if nl != "tanh":
            s += f", nonlinearity={nl}"
        return s


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        cell = F.rnn_tanh_cell if self.nonlinearity == "tanh" else F.rnn_relu_cell
        out = cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return out if batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step; forward(input, (h, c)) returns (h', c')."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        x, (h, c), batched = self._prepare(input, hx, 2)
        h, c = F.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step; forward(input, h) returns h'."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        out = F.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return out if batched else out.squeeze(0)
