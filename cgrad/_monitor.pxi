# cgrad.monitor's per-step recording on the training thread (included into
# _core.pyx). _MonitorRing is installed directly as the optimizer's step
# pre/post hook (a bound method of a cdef class: no Python frame). With a
# built-in optimizer the gradients, old weights and update of a recorded
# step are measured by the fused updates themselves (a _StatsSink armed in
# the pre-hook, read in the post-hook: no pass of its own over memory);
# with any other, one cg_tensor_stats_many call in the pre-hook. Either way
# the numbers go straight into a preallocated ring slot, plus a few
# attribute reads of the StepReport.
# The writer thread takes finished slots in bulk (claim(): one copy per
# commit, GIL held, so it never sees half a slot); everything rare (a
# closure, the copy path of the update ratio, events, skipped steps) is
# handed to the Python Watcher (cgrad/monitor/watch.py).
from libc.math cimport NAN, sqrt, isnan

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_REALTIME


cdef inline double _wall_time() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline double _num(object x) except? -1.0:
    """float(x), NaN for None or anything that is not a number (a tensor
    gives its item())."""
    if x is None:
        return NAN
    if type(x) is float:
        return <double>x
    try:
        return float(x.item() if hasattr(x, "item") else x)
    except (TypeError, ValueError):
        return NAN


cpdef double _log_number(str key, object value) except? -1.0:
    """A value logged to a run (cgrad.monitor.Run.log, log_loss, event) as
    a float: a number, or a one-element tensor (read in C)."""
    cdef double v
    if type(value) is float:
        return <double>value
    if isinstance(value, Tensor):
        if cg_tensor_numel((<Tensor>value).c) != 1:
            raise ValueError(f"log: {key} must be a number or a one-element tensor, got a tensor "
                             f"of shape {tuple(value.shape)}")
        _check(cg_tensor_item((<Tensor>value).c, &v))
        return v
    if isinstance(value, bool) or not isinstance(value, (int, float)) and \
            not hasattr(value, "__float__"):
        raise TypeError(f"log: {key} must be a number, got {type(value).__name__} ({value!r:.60})")
    return float(value)


# ring columns (one row per recorded step) in _MonitorRing.cols order
_RING_FLOAT_COLUMNS = ("time", "loss", "grad_norm", "grad_norm_clipped", "clip_max_norm",
                       "clip_coef", "loss_scale")
_RING_INT_COLUMNS = ("step", "clipped", "skipped", "nonfinite", "has_upd")
cdef double _LR_JUMP = 2.0


cdef inline void _put_stats(double *out, const cg_stats *s) noexcept:
    out[0] = s.sum_sq
    out[1] = s.max_abs
    out[2] = <double>s.nonfinite
    out[3] = <double>s.numel
cdef double _LR_FLOOR = 0.01


cdef class _MonitorRing:
    """Preallocated per-step storage of one watched (model, optimizer): cap
    slots of (parameters x 8) statistics (gradient sum_sq, max_abs,
    nonfinite, numel, then the weights'), squared update norms, the step's
    scalars and lr per group. Slots head-tail.. are finished and not yet
    claimed; the last one may wait for its loss (see claim)."""
    cdef object watcher
    cdef list params
    cdef list groups
    cdef cg_tensor **ptrs
    cdef cg_stats *st
    cdef int *dtypes
    cdef readonly Py_ssize_t n_params, n_groups, cap
    cdef public long long head, tail, next_step, running, last_step, n_recorded
    cdef public long long every, ratio_every
    cdef public bint recording, ratio_now, sink_on
    cdef public _StatsSink sink      # the fused updates' (None: measured in the pre-hook)
    cdef public object closure_loss, next_loss, scaler, notice
    cdef public dict losses, reasons, events
    cdef public object raw, upd, f, i, lr
    cdef double[:, :, ::1] raw_v
    cdef double[:, ::1] upd_v
    cdef double[:, ::1] f_v
    cdef int64_t[:, ::1] i_v
    cdef double[:, ::1] lr_v
    cdef double[::1] prev_lr
    cdef bint have_prev_lr
    cdef double lr_peak, prev_scale
    cdef object anomaly_seen
    cdef public long long bad_layers   # layers whose last recorded gradient was non-finite

    def __cinit__(self):
        self.ptrs = NULL
        self.st = NULL
        self.dtypes = NULL

    def __init__(self, watcher, params, groups, long long cap, long long every,
                 long long ratio_every, _StatsSink sink, long long first_step, scaler=None):
        self.watcher = watcher
        self.params = list(params)
        for p in self.params:
            if not isinstance(p, Tensor):
                raise TypeError(f"_MonitorRing: parameters must be cgrad.Tensor, got "
                                f"{type(p).__name__}")
        self.groups = list(groups)
        self.n_params = len(self.params)
        self.n_groups = len(self.groups)
        if cap < 2:
            raise ValueError(f"_MonitorRing: cap must be >= 2, got {cap}")
        self.cap = cap
        self.every, self.ratio_every = every, ratio_every
        self.sink = sink
        self.sink_on = False
        if sink is not None and sink.n != self.n_params:
            raise ValueError(f"_MonitorRing: the sink holds {sink.n} parameters, the ring "
                             f"{self.n_params}")
        self.scaler = scaler
        self.next_step = first_step
        self.running = -1
        self.last_step = -1
        self.head = self.tail = self.n_recorded = 0
        self.losses, self.reasons, self.events = {}, {}, {}
        cdef Py_ssize_t n2 = 2 * self.n_params
        self.ptrs = <cg_tensor **>malloc(sizeof(cg_tensor *) * (n2 if n2 else 1))
        self.st = <cg_stats *>malloc(sizeof(cg_stats) * (n2 if n2 else 1))
        self.dtypes = <int *>malloc(sizeof(int) * (self.n_params if self.n_params else 1))
        if self.ptrs == NULL or self.st == NULL or self.dtypes == NULL:
            raise MemoryError(f"_MonitorRing: cannot allocate for {self.n_params} parameters")
        cdef Py_ssize_t k
        for k in range(self.n_params):
            self.dtypes[k] = <int>cg_tensor_dtype((<Tensor>self.params[k]).c)
        self.raw = np.zeros((cap, self.n_params, 8))
        self.upd = np.zeros((cap, self.n_params))
        self.f = np.zeros((cap, len(_RING_FLOAT_COLUMNS)))
        self.i = np.zeros((cap, len(_RING_INT_COLUMNS)), dtype=np.int64)
        self.lr = np.zeros((cap, self.n_groups))
        self.raw_v, self.upd_v, self.f_v, self.i_v, self.lr_v = \
            self.raw, self.upd, self.f, self.i, self.lr
        self.prev_lr = np.zeros(self.n_groups)
        self.have_prev_lr = False
        self.lr_peak = 0.0
        self.prev_scale = NAN
        self.anomaly_seen = anomaly_report()
        self.bad_layers = 0

    def __dealloc__(self):
        free(self.ptrs)
        free(self.st)
        free(self.dtypes)

    # -------------------------------------------------------- measuring
    cdef int _measure(self, Py_ssize_t slot) except -1:
        """One cg_tensor_stats_many over every gradient and weight into
        raw[slot] (parameter k: gradient at 0..3, weights at 4..7)."""
        cdef Py_ssize_t k, n = self.n_params
        cdef cg_tensor *c
        cdef int64_t total = 0
        cdef cg_status status
        for k in range(n):
            c = (<Tensor>self.params[k]).c
            self.ptrs[2 * k] = cg_tensor_grad(c)
            self.ptrs[2 * k + 1] = c
            total += cg_tensor_numel(c)
        if 2 * total >= NOGIL_MIN:
            with nogil:
                status = cg_tensor_stats_many(<int>(2 * n), self.ptrs, self.st)
        else:
            status = cg_tensor_stats_many(<int>(2 * n), self.ptrs, self.st)
        _check(status)
        cdef double *row = &self.raw_v[slot, 0, 0]
        for k in range(2 * n):
            _put_stats(row + 4 * k, &self.st[k])
        return 0

    cdef int _take_sink(self, Py_ssize_t slot) except -1:
        """The fused updates' numbers into raw[slot] / upd[slot]; a
        parameter no update measured is measured here: without a gradient
        the step left it alone (update 0); with one it is not the
        optimizer's (float32 masters updated for a float16 model), or a
        row-sparse update moved it: its update is unknown (NaN)."""
        cdef _StatsSink sink = self.sink
        cdef double *row = &self.raw_v[slot, 0, 0]
        cdef double[::1] u = self.upd_v[slot]
        cdef Py_ssize_t k
        cdef cg_update_stats *us
        cdef cg_stats st
        cdef cg_tensor *c
        cdef cg_tensor *g
        for k in range(self.n_params):
            if sink.seen_[k]:
                us = &sink.st[k]
                _put_stats(row + 8 * k, &us.grad)
                _put_stats(row + 8 * k + 4, &us.weight)
                u[k] = us.update_sum_sq
                continue
            c = (<Tensor>self.params[k]).c
            g = cg_tensor_grad(c)
            if g == NULL:
                memset(&st, 0, sizeof(cg_stats))
            else:
                _check(cg_tensor_stats(g, &st))
            _put_stats(row + 8 * k, &st)
            _check(cg_tensor_stats(c, &st))
            _put_stats(row + 8 * k + 4, &st)
            u[k] = 0.0 if g == NULL else NAN
        return 0

    # ------------------------------------------------------------ hooks
    def pre_hook(self, optimizer, args, kwargs):
        """Step pre-hook: statistics of the gradients about to be applied
        and of the weights before the update."""
        cdef long long step = self.next_step
        self.running = step
        self.closure_loss = None
        if step % self.every:  # (a step that raised keeps its number: recorded again)
            self.recording = False
            return None
        self.recording = True
        if self.head - self.tail >= self.cap:
            self.watcher._spill()  # the writer fell behind: hand it what is here
        self.ratio_now = self.ratio_every > 0 and self.n_recorded % self.ratio_every == 0
        self.n_recorded += 1
        self.sink_on = False
        if self.sink is not None:
            current = optimizer._stats_sink
            if current is None:  # it stays there, disarmed between steps (Watcher.remove takes it off)
                optimizer._stats_sink = current = self.sink
            if current is self.sink:  # another run's sink: measure here
                self.sink.begin(CG_MEASURE_GRAD | CG_MEASURE_WEIGHT |
                                (CG_MEASURE_UPDATE if self.ratio_now else 0))
                self.sink_on = True
        if not self.sink_on:
            self._measure(self.head % self.cap)
            if self.ratio_now:
                self.watcher._copy_weights()
        if args or kwargs:
            return self.watcher._wrap_closure(args, kwargs)
        return None

    def post_hook(self, optimizer, args, kwargs):
        """Step post-hook: the update norms, the StepReport's numbers and
        lr per group into the slot, which is then published."""
        rep = getattr(optimizer, "last_report", None)
        cdef long long step = self.next_step
        rep_step = getattr(rep, "step", None) if rep is not None else None
        if type(rep_step) is int and rep_step >= step - 1:
            step = rep_step  # the optimizer's own numbering when it has one
        self.next_step = step + 1
        if not self.recording:
            if rep is not None and getattr(rep, "skipped", False):
                self.record_skipped(step, rep)  # skipped steps are always recorded
            else:
                self._unrecorded(step)
            return
        cdef Py_ssize_t slot = self.head % self.cap
        if self.sink_on:
            self.sink.end()
            self.sink_on = False
            self._take_sink(slot)
        elif self.ratio_now:
            self.watcher._copy_update_sq(self.upd[slot])
        self._fill(slot, step, rep, self.ratio_now, True)
        self._publish(slot, step)
        if self.notice is not None:
            self.watcher._notice()  # the writer failed: warn once, here

    def report_hook(self, optimizer, rep):
        """Report hook (Optimizer.register_report_hook): a skipped step (a
        GradScaler or an UpdateGuard found inf/NaN) runs no pre/post hook,
        so it is recorded from here, whatever step ran or raised before it
        (a report of skipped=True is always a step of its own)."""
        if not getattr(rep, "skipped", False):
            return
        rep_step = getattr(rep, "step", None)
        cdef long long step = rep_step if type(rep_step) is int else self.next_step
        self.next_step = step + 1
        self.record_skipped(step, rep)

    def record_skipped(self, long long step, rep):
        """A skipped step (nothing moved: the gradients and weights can be
        read now, the update ratio is 0)."""
        if self.head - self.tail >= self.cap:
            self.watcher._spill()
        self.running = step
        cdef Py_ssize_t slot = self.head % self.cap
        self._measure(slot)
        self.upd_v[slot, :] = 0.0
        self._fill(slot, step, rep, True, False)
        self._publish(slot, step)

    cdef _fill(self, Py_ssize_t slot, long long step, rep, bint has_upd, bint moved):
        """Clip numbers, loss scale, skip and lr from the StepReport (None
        fields: what was measured), then the cheap event checks."""
        cdef Py_ssize_t k, n = self.n_params
        cdef const double *raw = &self.raw_v[slot, 0, 0] if n else NULL
        cdef double total_sq = 0.0, total_bad = 0.0
        for k in range(n):
            total_sq += raw[8 * k]
            total_bad += raw[8 * k + 2]
        cdef int64_t nonfinite = <int64_t>total_bad
        cdef double measured = INFINITY if nonfinite else sqrt(total_sq)
        cdef double before = NAN, after = NAN, max_norm = NAN, coef = NAN, scale = NAN
        cdef bint clipped = False, skipped = False
        if rep is not None:
            before = _num(getattr(rep, "grad_norm_before_clip", None))
            after = _num(getattr(rep, "grad_norm_after_clip", None))
            max_norm = _num(getattr(rep, "max_norm", None))
            coef = _num(getattr(rep, "clip_coef", None))
            clipped = bool(getattr(rep, "clipped", False))
            scale = _num(getattr(rep, "loss_scale", None))
            skipped = bool(getattr(rep, "skipped", False))
            v = getattr(rep, "nonfinite", None)
            if type(v) is int and v > nonfinite:
                nonfinite = v
        if isnan(coef) and not isnan(max_norm):
            coef = 1.0
        cdef double gn = measured if isnan(before) else before
        cdef double gnc
        if not isnan(after):
            gnc = after
        elif clipped and not isnan(coef) and not isnan(before):
            gnc = before * coef
        elif isnan(before) or not clipped:
            gnc = measured  # with no clip numbers the gradients seen are what the step applied
        else:
            gnc = NAN
        if isnan(scale) and self.scaler is not None:
            try:
                scale = _num(self.scaler.get_scale())
            except Exception:  # a disabled/uninitialised scaler has none
                scale = NAN
        cdef double *f = &self.f_v[slot, 0]
        f[2], f[3], f[4], f[5], f[6] = gn, gnc, max_norm, coef, scale
        cdef int64_t *iv = &self.i_v[slot, 0]
        iv[0] = step
        iv[1] = clipped
        iv[2] = skipped
        iv[3] = nonfinite
        iv[4] = has_upd
        if skipped:
            reason = getattr(rep, "reason", None)
            self.reasons[self.head] = reason if reason is not None else "skipped"
        # lr per group, and whether any jumped (a warm restart, a step decay)
        cdef double *lr = &self.lr_v[slot, 0] if self.n_groups else NULL
        cdef double *prev = &self.prev_lr[0] if self.n_groups else NULL
        cdef double a, b, peak = self.lr_peak, jump_a = NAN, jump_b = NAN
        cdef Py_ssize_t jump = -1
        for k in range(self.n_groups):
            lr[k] = _num((<dict>self.groups[k]).get("lr"))
            if lr[k] > peak:
                peak = lr[k]
        self.lr_peak = peak
        if self.have_prev_lr:
            for k in range(self.n_groups):
                a, b = prev[k], lr[k]
                if isnan(a) or isnan(b) or (a if a > b else b) < _LR_FLOOR * peak:
                    continue
                if (a == 0) != (b == 0) or (a != 0 and b != 0 and (a / b > _LR_JUMP or b / a > _LR_JUMP)):
                    jump, jump_a, jump_b = k, a, b
                    break
        for k in range(self.n_groups):
            prev[k] = lr[k]
        self.have_prev_lr = True
        # the rest of the event checks: only when something happened
        cdef bint dtype_changed = False
        for k in range(n):
            if <int>cg_tensor_dtype((<Tensor>self.params[k]).c) != self.dtypes[k]:
                dtype_changed = True
        cdef const char *an = cg_anomaly_report()
        cdef bint anomaly = (an[0] != 0) != (self.anomaly_seen is not None)
        if an[0] != 0 and not anomaly:
            anomaly = an.decode("utf-8", "replace") != self.anomaly_seen
        cdef bint scale_changed = not isnan(scale) and not isnan(self.prev_scale) \
            and scale != self.prev_scale
        if nonfinite or self.bad_layers or dtype_changed or anomaly or skipped \
                or scale_changed or jump >= 0:
            self.events[self.head] = self.watcher._events(
                slot, step, total_bad > 0, dtype_changed, anomaly, scale_changed, self.prev_scale,
                None if jump < 0 else (jump, jump_a, jump_b))
            if dtype_changed:
                for k in range(n):
                    self.dtypes[k] = <int>cg_tensor_dtype((<Tensor>self.params[k]).c)
            if anomaly:
                self.anomaly_seen = an.decode("utf-8", "replace") if an[0] != 0 else None
        if not isnan(scale):
            self.prev_scale = scale

    cdef _publish(self, Py_ssize_t slot, long long step):
        """The step's loss (closure, run.log(step, loss=), or a loss logged
        before the step) and time; then the slot is the writer's."""
        cdef double loss = NAN
        cdef bint have = False
        if self.losses:
            v = self.losses.pop(step, None)
            if v is not None:
                loss, have = <double>v, True
        if self.closure_loss is not None:
            loss, have = _num(self.closure_loss), True
        elif not have and self.next_loss is not None:
            loss, have = <double>self.next_loss, True
        self.next_loss = None
        cdef double *f = &self.f_v[slot, 0]
        f[0] = _wall_time()
        f[1] = loss
        if have:
            self.i_v[slot, 4] |= 2  # bit 1: has its loss
        self.running = -1
        if step > self.last_step:
            self.last_step = step
        if self.losses:
            self.losses = {s: x for s, x in self.losses.items() if s > self.last_step}
        self.head += 1

    cdef _unrecorded(self, long long step):
        """A step not recorded (every=N): only the loss bookkeeping."""
        self.running = -1
        if step > self.last_step:
            self.last_step = step
        self.next_loss = None
        if self.losses:
            self.losses.pop(step, None)
            self.losses = {s: x for s, x in self.losses.items() if s > self.last_step}

    # ------------------------------------------------------------- losses
    def log_loss(self, loss):
        """run.log_loss(loss) without a step (loss: a number or a
        one-element tensor): the step that just ran if it is still here
        without a loss, else the next one. Returns None, or (step, value)
        when that step's row was already claimed (the caller sends a late
        update)."""
        cdef double value = _log_number("loss", loss)
        cdef Py_ssize_t slot
        if self.running >= 0:
            self.losses[self.running] = value
            return None
        if self.head > 0:
            slot = (self.head - 1) % self.cap
            if not (self.i_v[slot, 4] & 2):
                self.i_v[slot, 4] |= 2
                if self.head > self.tail:
                    self.f_v[slot, 1] = value
                    return None
                return self.i_v[slot, 0], value
        self.next_loss = value
        return None

    def set_loss(self, long long step, double value):
        """A loss for a given step. Returns None, or step when its row was
        already claimed (a late update)."""
        cdef Py_ssize_t slot
        if self.head > 0:
            slot = (self.head - 1) % self.cap
            if self.i_v[slot, 0] == step:
                self.i_v[slot, 4] |= 2
                if self.head > self.tail:
                    self.f_v[slot, 1] = value
                    return None
                return step
        if step > self.last_step:
            self.losses[step] = value
            return None
        return step

    # ------------------------------------------------------------- writer
    def claim(self, bint force=False, double hold_s=0.5):
        """Writer thread: the finished slots not yet claimed, as a dict of
        fresh arrays (None when there are none). The last slot waits for
        its loss unless force or it is older than hold_s. Runs with the GIL
        held throughout, so the training thread never writes a claimed slot."""
        cdef long long start = self.tail, end = self.head
        cdef Py_ssize_t last
        if end > start and not force:
            last = (end - 1) % self.cap
            if not (self.i_v[last, 4] & 2) and _wall_time() - self.f_v[last, 0] < hold_s:
                end -= 1
        if end <= start:
            return None
        idx = np.arange(start, end) % self.cap
        out = {"raw": self.raw[idx], "upd": self.upd[idx], "f": self.f[idx], "i": self.i[idx],
               "lr": self.lr[idx], "reasons": {}, "events": []}
        cdef long long h
        if self.reasons or self.events:
            for h in range(start, end):
                r = self.reasons.pop(h, None)
                if r is not None:
                    out["reasons"][int(self.i_v[h % self.cap, 0])] = r
                e = self.events.pop(h, None)
                if e:
                    out["events"].extend(e)
        self.tail = end
        return out
